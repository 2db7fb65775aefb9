"""The studio's HTTP API for scripts (docs/ui.md#http-api): submit a run, poll it, download its files, cancel it.

The same JobManager, limits and accounts as the page: a script logged in as a user (gradio_client's
`auth=(user, password)`) sees only its own jobs. Endpoints (Gradio named endpoints, so both gradio_client and
plain HTTP through /gradio_api/call/NAME work):

    /submit   (prompt, steps, seed, representation, distillation, preset, overrides) -> {"job": ID, "warnings": [...]}
    /status   (job) -> {"status", "step", "total", "queue_position", "export_stage", "files", "error", ...}
    /download (job, file) -> the file (asset.glb by default; any name /status lists under "files")
    /cancel   (job) -> {"cancelled": bool}

Bad input raises gr.Error with the same one-line message the page shows. No module-level gradio import: the
endpoints are built by `register(gr, handlers)` inside the Blocks.
"""
from pathlib import Path

from studio.errors import UserError

from . import history, view
from .handlers import Handlers


def job_status(h: Handlers, user: str, job: str) -> dict:
    """The /status answer of a job this user submitted (UserError for anyone else's or an unknown id)."""
    v = _own_view(h, user, job)
    files = [p.name for p in history.downloads(v.run_dir)] if v.status == "finished" else []
    return {"job": v.job_id, "prompt": v.prompt, "status": v.status, "step": v.step, "total": v.total,
            "queue_position": v.queue_position, "steps_per_second": round(v.rate, 3),
            "export_stage": v.export_stage if v.status == "exporting" else "",
            "run": Path(v.run_dir).name if v.run_dir else "", "files": files, "error": v.error,
            "checkpoint_step": v.checkpoint_step, "text": view.status_text(v)}


def _own_view(h: Handlers, user: str, job: str):
    v = h.manager.view(job)
    if v is None or (h.users.enabled and h.manager.owner(job) != user):
        raise UserError(f"no job {job!r} of yours on this server; use the id /submit returned")
    return v


def job_file(h: Handlers, user: str, job: str, name: str) -> str:
    """The path of one download of a finished job of this user."""
    v = _own_view(h, user, job)
    if v.status != "finished":
        raise UserError(f"job {job} is {v.status}, not finished; poll /status until it says finished")
    by_name = {p.name: p for p in history.downloads(v.run_dir)}
    name = name or "asset.glb"
    if name not in by_name:
        raise UserError(f"job {job} has no file {name!r}; it has: {', '.join(by_name)}")
    return h.serve(by_name[name], user)


def register(gr, h: Handlers) -> None:
    """Add the API endpoints to the Blocks being built."""

    def guarded(fn, *args):
        try:
            return fn(*args)
        except UserError as e:
            raise gr.Error(str(e), print_exception=False) from None

    def submit(prompt: str, steps: int = 0, seed: int = 0, representation: str = "", distillation: str = "",
               preset: str = "", overrides: str = "", request: gr.Request = None) -> dict:
        """Queue a run. steps 0 = the default; overrides: `key = value` lines, as the page's Advanced box."""
        from .form import FormValues

        values = FormValues(prompt=prompt, steps=steps or None, seed=seed, representation=representation,
                            distillation=distillation, preset=preset, advanced=overrides, guidance_scale=None,
                            resolution=None, pgc_threshold=None)
        from .handlers import FORM_FIELDS

        def go():
            cfg = h.form_config(tuple(getattr(values, k) for k in FORM_FIELDS))
            job = h.manager.submit(cfg, owner=_user(request))
            return {"job": job, "status": "queued", "warnings": h.prompt_notes(cfg.prompt, cfg.guidance.model)}

        return guarded(go)

    def status(job: str, request: gr.Request = None) -> dict:
        """Where a job is: queued / starting / running / exporting / finished / cancelled / failed."""
        return guarded(job_status, h, _user(request), job)

    def cancel(job: str, request: gr.Request = None) -> dict:
        """Stop a job (a queued one leaves the queue; a running one stops after its step, resumable)."""
        return guarded(lambda: {"cancelled": bool(_own_view(h, _user(request), job) and h.manager.cancel(job))})

    gr.api(submit, api_name="submit")
    gr.api(status, api_name="status", concurrency_limit=None)
    gr.api(cancel, api_name="cancel")

    def download(job: str, name: str, request: gr.Request):
        return guarded(job_file, h, _user(request), job, name)

    job_box, name_box = gr.Textbox(visible=False), gr.Textbox(visible=False, value="asset.glb")
    out_file = gr.File(visible=False)
    trigger = gr.Button(visible=False)
    trigger.click(download, [job_box, name_box], [out_file], api_name="download", show_progress="hidden")


def _user(request) -> str:
    return getattr(request, "username", None) or ""
