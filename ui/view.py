"""Pure mapping from run events to what the page shows. No gradio, no torch, no file I/O.

`JobView` is everything the page knows about one job; `apply_event` folds a `studio.events` event into
it; the `*_text` / `*_html` functions turn it into the values of the page's components.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

from studio import events
from studio.events import Finished, Preview, Progress, Started
from studio.progress import format_eta

ACTIVE = ("queued", "starting", "running", "exporting", "stopping")
"""Statuses of a job that has not ended."""
ENDED = ("finished", "cancelled", "failed")
"""Statuses of a job that has ended (the same words as status.json)."""
LOG_KEEP = 200
"""Log lines kept per job (the page shows the last LOG_SHOW)."""
LOG_SHOW = 9
"""Log lines shown: as many as the log box has rows, so the newest is always in view."""
MAX_PLOT_POINTS = 400
"""The loss plot is thinned to at most this many points."""


@dataclass
class JobView:
    """One job as the page sees it."""

    job_id: str
    """Opaque id; only the session that submitted the job holds it."""
    prompt: str
    """The job's prompt."""
    status: str = "queued"
    """queued | starting | running | stopping | finished | cancelled | failed."""
    queue_position: int = 0
    """1-based place among the jobs waiting for the same device (0 = not waiting)."""
    step: int = 0
    """Finished steps."""
    total: int = 0
    """Steps of the run."""
    rate: float = 0.0
    """Steps per second."""
    eta: float = math.inf
    """Seconds to the last step."""
    losses: list[tuple[int, float]] = field(default_factory=list)
    """(step, total loss) of every step so far."""
    preview_path: str | None = None
    """The latest preview grid PNG."""
    preview_step: int = 0
    """Step of the latest preview."""
    log: list[str] = field(default_factory=list)
    """Log lines, newest last."""
    run_dir: str | None = None
    """The run directory once it exists."""
    assets: dict[str, str] = field(default_factory=dict)
    """Written files by kind (glb, obj, ply, turntable, ...) once finished."""
    error: str = ""
    """Why the job failed."""
    export_stage: str = ""
    """The export stage in progress (extract mesh, unwrap UVs, ...), while exporting."""
    export_index: int = 0
    """1-based number of that stage."""
    export_count: int = 0
    """Stages of this export."""
    export_seconds: float = 0.0
    """Seconds the export has taken so far."""
    checkpoint_step: int = 0
    """The step of the newest checkpoint on disk (a cancelled or failed run resumes from it; 0 = none)."""
    version: int = 0
    """Bumped on every change, so the page redraws only what changed."""

    @property
    def ended(self) -> bool:
        return self.status in ENDED


def add_log(view: JobView, line: str) -> None:
    view.log.append(line)
    del view.log[:-LOG_KEEP]
    view.version += 1


def apply_event(view: JobView, ev, log_every: int = 10) -> JobView:
    """Fold one run event into `view` (in place; returned for convenience)."""
    if isinstance(ev, Started):
        view.status = "running" if view.status != "stopping" else view.status
        view.run_dir, view.total = str(ev.run_dir), ev.total_steps
        if ev.model_note:
            add_log(view, ev.model_note)
        add_log(view, f"run directory: {ev.run_dir}")
    elif isinstance(ev, Progress):
        view.step, view.total, view.rate, view.eta = ev.step, ev.total_steps, ev.steps_per_second, ev.eta_seconds
        view.losses.append((ev.step, float(ev.loss)))
        if ev.step % max(1, log_every) == 0 or ev.step == ev.total_steps or ev.step == 1:
            add_log(view, f"step {ev.step}/{ev.total_steps} loss {ev.loss:.4f} {ev.steps_per_second:.2f} it/s "
                          f"eta {format_eta(ev.eta_seconds)}")
    elif isinstance(ev, events.RolledBack):
        view.losses = [(s, loss) for s, loss in view.losses if s <= ev.to_step]  # the curve goes on from there
        add_log(view, f"step {ev.at_step}: {ev.reason}; back to step {ev.to_step} with learning rates x{ev.lr_scale:g}")
    elif isinstance(ev, Preview):
        if ev.path is not None:
            view.preview_path, view.preview_step = str(ev.path), ev.step
    elif isinstance(ev, getattr(events, "Exporting", ())):
        if view.status != "stopping":
            view.status = "exporting"
        view.export_stage, view.export_index, view.export_count = ev.stage, ev.index, ev.count
        view.export_seconds = ev.seconds
        add_log(view, f"export {ev.index}/{ev.count}: {ev.stage}")
    elif isinstance(ev, Finished):
        view.status = "finished"
        view.run_dir = str(ev.run_dir)
        view.assets = {k: str(v) for k, v in ev.assets.items()}
        warning = ev.metrics.get("mesh_warning")
        add_log(view, f"finished in {ev.metrics.get('total_seconds', 0):.1f} s" + (f"; warning: {warning}" if warning else ""))
    view.version += 1
    return view


def status_text(view: JobView | None) -> str:
    """One line saying where the job is."""
    if view is None:
        return "No run yet: type a prompt and press Generate."
    if view.status == "queued":
        return f"Queued: position {view.queue_position} in line for this device." if view.queue_position else "Queued."
    if view.status == "starting":
        return "Starting: loading the model..."
    if view.status == "running":
        return f"Running: step {view.step}/{view.total}."
    if view.status == "exporting":
        return f"Exporting: {view.export_stage} ({view.export_index}/{view.export_count}) after {view.total} steps."
    if view.status == "stopping":
        return "Stopping after the current step..."
    if view.status == "finished":
        return f"Finished: {view.total} steps. Files are below."
    resumable = " Resume continues it from its checkpoint." if can_resume(view) else ""
    if view.status == "cancelled":
        return f"Cancelled at step {view.step}/{view.total or '?'}.{resumable}"
    return f"Failed: {view.error or 'see the log'}{resumable}"


def can_resume(view: JobView | None) -> bool:
    """Whether the job ended early with a checkpoint to continue from."""
    return (view is not None and view.status in ("cancelled", "failed") and view.run_dir is not None
            and view.checkpoint_step > 0)


def progress_html(view: JobView | None) -> str:
    """A progress bar with step/total, steps per second and ETA."""
    if view is None:
        return _bar(0, "idle", "")
    fraction = view.step / view.total if view.total else 0.0
    if view.status == "finished":
        fraction = 1.0
    label = f"{view.step}/{view.total or '?'}"
    detail = ""
    if view.status == "exporting" and view.export_count:  # the bar now counts export stages
        fraction = (view.export_index - 1) / view.export_count
        label = f"export {view.export_index}/{view.export_count}"
        detail = f"{view.export_stage} · {view.export_seconds:.0f} s so far"
    elif view.status in ("running", "stopping") and view.step:
        detail = f"{view.rate:.2f} it/s · ETA {format_eta(view.eta)}"
    elif view.status == "queued" and view.queue_position:
        detail = f"queue position {view.queue_position}"
    return _bar(fraction, label, detail, view.status)


def _bar(fraction: float, label: str, detail: str, status: str = "idle") -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return (f'<div class="studio-progress" data-status="{html.escape(status)}">'
            f'<div class="studio-progress-track"><div class="studio-progress-fill" style="width:{pct:.1f}%"></div></div>'
            f'<div class="studio-progress-text"><span class="studio-step">{html.escape(label)}</span> '
            f'<span class="studio-rate">{html.escape(detail)}</span></div></div>')


def log_text(view: JobView | None, show: int = LOG_SHOW) -> str:
    """The last log lines."""
    return "" if view is None else "\n".join(view.log[-show:])


def loss_points(view: JobView | None, max_points: int = MAX_PLOT_POINTS) -> list[tuple[int, float]]:
    """(step, loss) thinned to at most `max_points` (the last point always kept)."""
    if view is None or not view.losses:
        return []
    pts = view.losses
    stride = max(1, math.ceil(len(pts) / max_points))
    thinned = pts[::stride]
    if thinned[-1] != pts[-1]:
        thinned.append(pts[-1])
    return thinned


def can_stop(view: JobView | None) -> bool:
    """Whether the Stop button does anything."""
    return view is not None and view.status in ("queued", "starting", "running", "exporting")
