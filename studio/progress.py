"""Driving `run()` from a terminal: a progress bar on a TTY, plain log lines otherwise."""
from __future__ import annotations

import sys
from pathlib import Path

from .events import Finished, Preview, Progress, Started


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


def run_with_progress(cfg, out: str | Path, stream=None) -> Finished:
    """Run to completion, reporting to `stream` (stderr). Returns the Finished event."""
    from .run import run

    return report(run(cfg, out), stream)


def resume_with_progress(run_dir: str | Path, steps: int | None = None, stream=None) -> Finished:
    """Resume the run in `run_dir` (studio.run.resume) to completion, reporting like `run_with_progress`."""
    from .run import resume

    return report(resume(run_dir, steps), stream)


def report(events, stream=None) -> Finished:
    """Drive a run's event generator to the end, reporting to `stream` (stderr); closes it on the way out."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    every = 1
    finished = None
    try:
        for ev in events:
            if isinstance(ev, Started):
                every = max(1, ev.total_steps // 20)
                print(ev.model_note, file=stream)
                print(f"run directory: {ev.run_dir}", file=stream)
            elif isinstance(ev, Progress):
                if tty:
                    end = "\n" if ev.step == ev.total_steps else ""
                    print("\r" + bar_line(ev), end=end, file=stream, flush=True)
                elif ev.step % every == 0 or ev.step == ev.total_steps:
                    print(f"step {ev.step}/{ev.total_steps} loss {ev.loss:.4f} "
                          f"{ev.steps_per_second:.2f} it/s eta {format_eta(ev.eta_seconds)}", file=stream, flush=True)
            elif isinstance(ev, Preview) and ev.path is not None and not tty:
                print(f"preview: {ev.path}", file=stream)
            elif isinstance(ev, Finished):
                finished = ev
    finally:
        events.close()
    assert finished is not None
    return finished
