"""One run at a time per device: a queue and a worker thread per device, driving `studio.run.run` in-process.

Each job is a `JobView` the worker updates under a lock; the page reads copies by job id (only the
session that submitted a job knows its id). Stop sets a flag the worker checks after every event, i.e.
after every step: it closes the run generator (status.json says 'cancelled') and frees the scene. The manager
remembers the last KEEP_ENDED ended jobs and forgets older ones, so a long-lived server's memory stays flat.
"""
from __future__ import annotations

import copy
import gc
import threading
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .view import JobView, add_log, apply_event

KEEP_ENDED = 100
"""Ended jobs a JobManager remembers (for /status, the page and Resume); older ones are forgotten, the oldest-ended
first, while their run folders stay (History lists them). A job's view holds its loss curve and log, ~120 KB for
800 steps: remembering every job grew a shared server by that much per run, for ever."""


@dataclass
class Job:
    """A submitted run: its config, where it runs and what the page sees."""

    cfg: object
    """The validated RunConfig."""
    device: str
    """The device key the job waits for ('cpu', 'cuda:0', ...)."""
    view: JobView
    """What the page shows (mutated by the worker under the manager's lock)."""
    session: str = ""
    """The browser session that submitted it."""
    batch: str = ""
    """Batch id, if it came from the Batch tab."""
    owner: str = ""
    """The logged-in user who submitted it ('' without accounts); recorded in the run folder's access.json."""
    resume_dir: Path | None = None
    """A run folder to continue from its checkpoint (studio.run.resume) instead of a fresh run of `cfg`."""
    stop: threading.Event = field(default_factory=threading.Event)
    """Set by Stop."""


def device_key(cfg) -> str:
    """The device a config runs on, as a queue key ('auto' resolved like the run does)."""
    from studio.models import resolve_device

    dev = resolve_device(cfg.guidance.device)
    return f"cuda:{dev.index or 0}" if dev.type == "cuda" else dev.type


class JobManager:
    """Queues and workers; all public methods are thread-safe."""

    def __init__(self, out: Path | str, keep_ended: int = KEEP_ENDED) -> None:
        self.out = Path(out)
        self.keep_ended = keep_ended
        """How many ended jobs to remember (see KEEP_ENDED)."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._waiting: dict[str, list[str]] = {}
        self._ended: deque[str] = deque()
        """Ids of the remembered ended jobs, the oldest-ended first."""
        self._workers: dict[str, threading.Thread] = {}
        self._closed = False

    # ---- the page's side -------------------------------------------------------------------------------
    def submit(self, cfg, session: str = "", batch: str = "", device: str | None = None, owner: str = "",
               resume_dir: Path | str | None = None) -> str:
        """Queue a run of `cfg` (or, with `resume_dir`, the continuation of that run folder, whose config `cfg` is);
        returns its job id."""
        job_id = uuid.uuid4().hex
        device = device or device_key(cfg)
        view = JobView(job_id, cfg.prompt, run_dir=None if resume_dir is None else str(resume_dir))
        job = Job(cfg, device, view, session, batch, owner, None if resume_dir is None else Path(resume_dir))
        with self._lock:
            self._jobs[job_id] = job
            self._waiting.setdefault(device, []).append(job_id)
            self._renumber(device)
            if device not in self._workers:
                t = threading.Thread(target=self._work, args=(device,), name=f"studio-worker-{device}", daemon=True)
                self._workers[device] = t
                t.start()
            self._wake.notify_all()
        return job_id

    def cancel(self, job_id: str | None) -> bool:
        """Stop a job: a queued one leaves the queue, a running one stops after its current step."""
        with self._lock:
            job = self._jobs.get(job_id or "")
            if job is None or job.view.ended:
                return False
            job.stop.set()
            if job.view.status == "queued":
                self._waiting[job.device].remove(job_id)
                self._renumber(job.device)
                job.view.status = "cancelled"
                add_log(job.view, "cancelled before it started")
                if job.resume_dir is None:
                    job.view.run_dir = str(self._record_unstarted(job))
                self._has_ended(job_id)
            else:
                job.view.status = "stopping"
                job.view.version += 1
            return True

    def view(self, job_id: str | None) -> JobView | None:
        """A copy of the job's view (None for an unknown id)."""
        with self._lock:
            job = self._jobs.get(job_id or "")
            return None if job is None else copy.deepcopy(job.view)

    def owner(self, job_id: str | None) -> str | None:
        """Who submitted the job (None for an unknown id)."""
        with self._lock:
            job = self._jobs.get(job_id or "")
            return None if job is None else job.owner

    def version(self, job_id: str | None) -> int | None:
        """The job view's change counter (None for an unknown id): cheap, for "anything new?" checks."""
        with self._lock:
            job = self._jobs.get(job_id or "")
            return None if job is None else job.view.version

    def stamp(self, job_id: str | None, batch: str = "") -> tuple[tuple, bool]:
        """(a value that changes whenever the job or any job of the batch changes, whether any of them has not
        ended): the cheap "anything new?" check of a page tick, without copying a view."""
        with self._lock:
            jobs = [j for j in ([self._jobs.get(job_id or "")] + [j for j in self._jobs.values() if batch and j.batch == batch])
                    if j is not None]
            return tuple((j.view.job_id, j.view.version) for j in jobs), any(not j.view.ended for j in jobs)

    def active_run_dirs(self) -> set[str]:
        """Run folders of jobs that have not ended (a folder in this set must not be resumed again)."""
        with self._lock:
            return {str(Path(j.view.run_dir).resolve()) for j in self._jobs.values()
                    if j.view.run_dir and not j.view.ended}

    def batch_views(self, batch: str) -> list[JobView]:
        """Copies of a batch's job views, in submission order."""
        with self._lock:
            return [copy.deepcopy(j.view) for j in self._jobs.values() if batch and j.batch == batch]

    def wait(self, job_id: str, timeout: float | None = None) -> JobView | None:
        """Block until the job has ended (for tests and scripts); returns its final view (None for an unknown or
        forgotten id)."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            job = self._jobs.get(job_id)  # held: the job may be forgotten by the time this wakes
            if job is None:
                return None
            while not job.view.ended:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._wake.wait(left)
            return copy.deepcopy(job.view)

    def close(self, timeout: float = 30.0) -> None:
        """Stop every job and wait (up to `timeout` s) for the workers, so running runs record 'cancelled'."""
        with self._lock:
            ids = list(self._jobs)
            self._closed = True
            self._wake.notify_all()
            workers = list(self._workers.values())
        for job_id in ids:
            self.cancel(job_id)
        for t in workers:
            t.join(timeout)

    # ---- the worker's side ------------------------------------------------------------------------------
    def _record_unstarted(self, job: Job) -> Path:
        """A run folder for a job cancelled while it waited: its config.toml and status 'cancelled', so History lists
        it and Run again can queue it (nothing was trained: no checkpoint, no assets)."""
        from studio.config import config_to_toml
        from studio.rundir import atomic_write_text, create_run_dir, write_status

        from .access import record_owner

        run_dir = create_run_dir(self.out, job.cfg.prompt)
        atomic_write_text(run_dir / "config.toml", config_to_toml(job.cfg))
        record_owner(run_dir, job.owner)
        write_status(run_dir, "cancelled", prompt=job.cfg.prompt, checkpoint_step=0,
                     note="cancelled while it waited in the queue")
        return run_dir

    def _has_ended(self, job_id: str) -> None:
        """Remember that a job ended (under the lock); forget the oldest-ended jobs past `keep_ended`."""
        self._ended.append(job_id)
        while len(self._ended) > self.keep_ended:
            self._jobs.pop(self._ended.popleft(), None)

    def _renumber(self, device: str) -> None:
        for pos, job_id in enumerate(self._waiting.get(device, []), 1):
            view = self._jobs[job_id].view
            if view.queue_position != pos:
                view.queue_position = pos
                view.version += 1

    def _next(self, device: str) -> Job | None:
        with self._lock:
            while not self._waiting.get(device) and not self._closed:
                self._wake.wait()
            if self._closed:
                return None
            job = self._jobs[self._waiting[device].pop(0)]
            self._renumber(device)
            job.view.status, job.view.queue_position = "starting", 0
            job.view.version += 1
            return job

    def _work(self, device: str) -> None:
        while (job := self._next(device)) is not None:
            self._execute(job)

    def _execute(self, job: Job) -> None:
        from studio.errors import RunFailed, is_user_error
        from studio.events import Started
        from studio.run import resume, run

        from .access import record_owner

        events = None
        try:
            events = run(job.cfg, self.out) if job.resume_dir is None else resume(job.resume_dir)
            for ev in events:
                if isinstance(ev, Started):
                    record_owner(ev.run_dir, job.owner)
                with self._lock:
                    apply_event(job.view, ev, job.cfg.log.log_every)
                if job.stop.is_set():
                    break
        except Exception as e:  # noqa: BLE001 - shown in the page; the worker lives on
            with self._lock:
                job.view.status = "failed"
                stated = is_user_error(e) or isinstance(e, RunFailed)  # a reason in one line, not a bug
                job.view.error = str(e) if stated else f"{type(e).__name__}: {e}"
                add_log(job.view, "failed: " + job.view.error)
                if not stated:
                    add_log(job.view, traceback.format_exc(limit=3).strip().splitlines()[-1])
        finally:
            if events is not None:
                events.close()  # a run stopped mid-way records status 'cancelled' in its folder
            del events
            _free_memory()
            checkpoint = _checkpoint_step(job.view.run_dir)
            with self._lock:
                if not job.view.ended:
                    job.view.status = "cancelled"
                    add_log(job.view, f"cancelled at step {job.view.step}")
                job.view.checkpoint_step = checkpoint
                job.view.version += 1
                self._has_ended(job.view.job_id)
                self._wake.notify_all()


def _checkpoint_step(run_dir: str | None) -> int:
    """The step of the run folder's checkpoint (0 when it has none)."""
    import json

    if not run_dir:
        return 0
    try:
        return int(json.loads((Path(run_dir) / "checkpoint" / "meta.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _free_memory() -> None:
    """Drop the finished run's tensors (and the CUDA cache, if torch uses CUDA)."""
    gc.collect()
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()

