"""Driving `run()` from a terminal: a progress bar on a TTY, plain log lines otherwise; a line per export stage."""
from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from .events import Exporting, Finished, Preview, Progress, RolledBack, Started


def format_eta(seconds: float) -> str:
    if seconds == float("inf"):
        return "--:--"
    m, s = divmod(int(seconds + 0.5), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def bar_line(p: Progress, width: int = 30) -> str:
    filled = int(width * p.step / p.total_steps)
    return (f"[{'#' * filled}{'.' * (width - filled)}] {p.step}/{p.total_steps} "
            f"{p.steps_per_second:5.2f} it/s ETA {format_eta(p.eta_seconds)} loss {p.loss:.4f}")


def export_line(ev: Exporting) -> str:
    """One export stage as a line: `export 3/7: unwrap UVs (12.3 s so far)`."""
    return f"export {ev.index}/{ev.count}: {ev.stage} ({ev.seconds:.1f} s so far)"


def run_with_progress(cfg, out: str | Path, stream=None) -> Finished:
    """Run to completion, reporting to `stream` (stderr). Returns the Finished event."""
    from .run import run

    return report(run(cfg, out), stream)


def resume_with_progress(run_dir: str | Path, steps: int | None = None, stream=None) -> Finished:
    """Resume the run in `run_dir` (studio.run.resume) to completion, reporting like `run_with_progress`."""
    from .run import resume

    return report(resume(run_dir, steps), stream)


def report(events, stream=None) -> Finished:
    """Drive a run's event generator to the end, reporting to `stream` (stderr); closes it on the way out.

    The first Ctrl-C (or SIGTERM) stops the run at the next step boundary by closing the generator (so it is
    'cancelled' with a checkpoint that `studio resume` continues), then raises KeyboardInterrupt; during the export
    (the last step's checkpoint is saved) and at a second Ctrl-C it stops at once, inside the stage."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    every = 1
    finished = None
    run_dir = None
    try:
        with StopOnInterrupt(stream) as stop:
            for ev in events:
                if isinstance(ev, Exporting):  # trained and checkpointed: a stop need not wait for the stage
                    stop.at_once = True
                _print_event(ev, stream, tty, every)
                if isinstance(ev, Started):
                    every, run_dir = max(1, ev.total_steps // 20), ev.run_dir
                elif isinstance(ev, Finished):
                    finished = ev
                if stop.requested and finished is None:
                    events.close()
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        events.close()
        if run_dir is not None and (Path(run_dir) / "checkpoint").exists():
            print(f"stopped; continue with: studio resume {run_dir}", file=stream)
        raise
    finally:
        events.close()
    assert finished is not None
    return finished


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Ctrl-C, and what `docker stop`, systemd and Kubernetes send: both stop the run the same way."""


class StopOnInterrupt:
    """Within (main thread only): the first SIGINT or SIGTERM sets `requested` instead of raising, unless `at_once`
    is set; the second raises KeyboardInterrupt at once."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.requested = False
        self.at_once = False
        """Set when nothing is lost by stopping mid-way (the export): the first signal raises KeyboardInterrupt."""
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopOnInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)

    def _handle(self, signum, frame) -> None:
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if self.requested or self.at_once:
            print(f"\n{what}: stopping now", file=self.stream, flush=True)
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{what}: stopping after this step or export stage (again to stop at once)", file=self.stream, flush=True)


def _print_event(ev, stream, tty: bool, every: int) -> None:
    """One event as terminal output (a progress bar line on a TTY, plain lines otherwise; a line per export stage)."""
    if isinstance(ev, Started):
        print(ev.model_note, file=stream)
        print(f"run directory: {ev.run_dir}", file=stream)
    elif isinstance(ev, Progress):
        if tty:
            end = "\n" if ev.step == ev.total_steps else ""
            print("\r" + bar_line(ev), end=end, file=stream, flush=True)
        elif ev.step % every == 0 or ev.step == ev.total_steps:
            print(f"step {ev.step}/{ev.total_steps} loss {ev.loss:.4f} "
                  f"{ev.steps_per_second:.2f} it/s eta {format_eta(ev.eta_seconds)}", file=stream, flush=True)
    elif isinstance(ev, RolledBack):
        print(f"\nstep {ev.at_step}: {ev.reason}; back to step {ev.to_step} with learning rates x{ev.lr_scale:g}",
              file=stream, flush=True)
    elif isinstance(ev, Exporting):  # on a TTY too: the bar ended its line at the last step
        print(export_line(ev), file=stream, flush=True)
    elif isinstance(ev, Preview) and ev.path is not None and not tty:
        print(f"preview: {ev.path}", file=stream)
