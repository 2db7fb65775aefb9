"""What each button and timer tick does, as plain methods over a JobManager and the output folder.

Gradio is imported only for `gr.skip()` / component updates. Every handler that takes user input turns a bad
value into one readable line in the page (never a traceback); an unexpected error is also logged, with its
traceback, on the server (logger "studio.ui"). Handlers that act for a person take the logged-in user name
first ('' on a server without accounts): each user sees, resumes and downloads only their own runs.
"""
from __future__ import annotations

import logging
import random
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from studio.errors import UserError, is_user_error
from studio.memory import check_memory

from . import history, view
from .access import Users, may_see, set_shared
from .form import FILLED_FIELDS, FormValues, build_run_config, form_defaults
from .jobs import JobManager
from .limits import ServerLimits, check_batch, check_run

log = logging.getLogger("studio.ui")

FORM_FIELDS = ("prompt", "negative_prompt", "representation", "distillation", "preset", "steps", "seed",
               "guidance_scale", "resolution", "pgc", "pgc_threshold", "model_choice", "model_path", "advanced")
"""The Generate form's inputs, in the order the page passes them."""
BUSY = "**Your run is still going:** press Stop first, or wait until it ends."
TICK_OUTPUTS = ("status", "progress", "preview", "plot", "log", "viewer", "turntable", "files", "stop", "resume",
                "partial", "batch_table", "batch_files", "timer")
"""What a timer tick updates (Generate tab, then Batch tab, then the timer itself), in order."""


def new_session() -> dict:
    """Per-browser-session state: its id. Which job and batch the session follows is kept server-side
    (`Handlers._follow`), so a tick always reads the newest, whatever state its request carried."""
    return {"id": uuid.uuid4().hex, "job": None, "batch": None}


def error_message(e: Exception) -> str:
    """One readable line for the page; an unexpected error (a bug, not bad input) is logged with its traceback."""
    if is_user_error(e):
        return f"**Error:** {e}"
    log.error("handler failed: %s: %s", type(e).__name__, e, exc_info=e)
    first = (str(e).splitlines() or [""])[0][:200]
    return f"**Something went wrong:** {type(e).__name__}: {first} (the server log has the details)"


def loss_frame(points: list[tuple[int, float]]):
    """[N] rows of (step, loss) with numeric dtypes (an empty object frame would make the plot categorical)."""
    import pandas as pd

    return pd.DataFrame({"step": pd.Series([p[0] for p in points], dtype="int64"),
                         "loss": pd.Series([p[1] for p in points], dtype="float64")})


@dataclass
class _Follow:
    """What one browser session follows (server-side, see new_session)."""

    job: str | None = None
    """Its current job id."""
    batch: str | None = None
    """Its current batch id."""
    shown: dict = field(default_factory=dict)
    """What its page shows already, by output name (so a tick resends only what changed)."""


class Handlers:
    """The page's event handlers, bound to one JobManager, output folder, limits and accounts."""

    def __init__(self, manager: JobManager, out: Path | str, limits: ServerLimits | None = None,
                 users: Users | None = None, base: tuple[dict, ...] = ()) -> None:
        self.manager = manager
        self.out = Path(out).resolve()
        self.limits = limits or ServerLimits()
        self.users = users or Users()
        self.base = tuple(base)
        """The server's config layers under every form (`studio ui --defaults FILE`)."""
        self._follow: dict[str, _Follow] = {}
        self._lock = threading.Lock()
        from .fileguard import ServedFiles

        self.served = ServedFiles(self.users.admins) if self.users.enabled else None
        """Which user was shown which file (only with accounts; ui/fileguard.py refuses the others)."""

    def serve(self, path: Path | str | None, user: str) -> str | None:
        """`path` as a value for a Gradio component shown to `user` (see `servable`; recorded for the file guard)."""
        if path is None:
            return None
        value = servable(path)
        if self.served is not None:
            self.served.add(value, user)
        return value

    def forget_session(self, session: dict | None) -> None:
        """Drop the server-side record of a page session (Gradio calls this when it deletes the session's state,
        an hour after its tab closed), so a long-running server does not keep one per page ever opened."""
        if isinstance(session, dict):
            with self._lock:
                self._follow.pop(session.get("id"), None)

    def _session(self, session: dict | None) -> tuple[dict, _Follow]:
        session = dict(session or new_session())
        with self._lock:
            return session, self._follow.setdefault(session["id"], _Follow())

    def _set_job(self, session: dict, job: str | None = None, batch: str | None = None) -> dict:
        """Point the session (its state and the server-side record) at a new job or batch."""
        _, follow = self._session(session)
        with self._lock:
            if job is not None:
                follow.job = job
                session["job"] = job
            if batch is not None:
                follow.batch = batch
                session["batch"] = batch
        return session

    # ---- Generate tab ---------------------------------------------------------------------------------------
    def form_config(self, values: tuple, prompt: str | None = None):
        """The validated, limit-checked RunConfig of the page's form values (FORM_FIELDS order)."""
        cfg = build_run_config(FormValues.from_page(FORM_FIELDS, values), prompt=prompt, base=self.base, validate=False)
        check_run(cfg, self.limits, self.out)  # the server's limits first: tighter than the config's own ranges
        cfg.validate()
        check_memory(cfg)
        return cfg

    def generate(self, user: str, session: dict, *values) -> tuple:
        """Validate the form and queue the run; (session, message, timer)."""
        session, follow = self._session(session)
        try:
            cfg = self.form_config(values)
            if self._active(follow.job):
                return session, BUSY, _timer(True)
            notes = self.prompt_notes(cfg.prompt, cfg.guidance.model)
            session = self._set_job(session, job=self.manager.submit(cfg, session=session["id"], owner=user))
        except Exception as e:  # noqa: BLE001 - any bad input is shown, the page stays up
            return session, error_message(e), _skip()
        return session, _notes_markdown(notes, ""), _timer(True)  # the status line says "Queued"; this is for warnings

    @staticmethod
    def prompt_notes(prompt: str, model: str = "") -> list[str]:
        """Warnings about a prompt: words the embedded model does not know, several objects or colours, relations,
        more than the text encoder's 77 tokens."""
        from studio import vocabulary

        notes = []
        if not model:
            vocab = vocabulary.embedded()
            if vocab is not None:
                notes += vocab.prompt_warnings(prompt)
        token = vocabulary.prompt_token_warning(prompt)
        if token:
            notes.append(token)
        return notes

    def prompt_hint(self, prompt: str | None, model_choice: str | None) -> str:
        """The warnings under the prompt box while typing ('' when the prompt is fine)."""
        from .form import MODEL_EMBEDDED

        try:
            model = "" if (model_choice or MODEL_EMBEDDED) == MODEL_EMBEDDED else "custom"
            return _notes_markdown(self.prompt_notes((prompt or "").strip(), model), "") if (prompt or "").strip() else ""
        except Exception as e:  # noqa: BLE001
            return error_message(e)

    def _active(self, job_id: str | None) -> bool:
        v = self.manager.view(job_id)
        return v is not None and not v.ended

    def stop(self, session: dict) -> str:
        """Stop this session's run (the status line says 'Stopping...' until it has)."""
        _, follow = self._session(session)
        if not self.manager.cancel(follow.job):
            return "Nothing to stop."
        return ""

    def resume_current(self, user: str, session: dict) -> tuple:
        """Continue this session's cancelled or failed run from its checkpoint; (session, message, timer)."""
        _, follow = self._session(session)
        v = self.manager.view(follow.job)
        if v is None or not view.can_resume(v):
            return dict(session or new_session()), "Nothing to resume: the run has no checkpoint.", _skip()
        return self._resume(user, session, v.run_dir)

    def _resume(self, user: str, session: dict, value: str | None) -> tuple:
        from studio.resume import check_resumable

        session, follow = self._session(session)
        try:
            path = self.run_path(value, user)
            if self._active(follow.job):
                return session, BUSY, _skip()
            if str(path) in self.manager.active_run_dirs():
                raise UserError(f"{path.name} is still running or queued; wait for it or stop it first")
            cfg, done = check_resumable(path, None)
            check_run(cfg, self.limits, self.out)
            session = self._set_job(session, job=self.manager.submit(cfg, session=session["id"], owner=user,
                                                                      resume_dir=path))
        except Exception as e:  # noqa: BLE001
            return session, error_message(e), _skip()
        return session, f"Resuming from step {done}.", _timer(True)

    def partial_asset(self, user: str, session: dict) -> tuple:
        """Export the stopped run's checkpoint as `partial-step-N.glb` (never asset.glb: the run is not finished);
        (viewer, files, message)."""
        from studio.reexport import export_run

        _, follow = self._session(session)
        v = self.manager.view(follow.job)
        try:
            if v is None or not view.can_resume(v):
                raise UserError("no stopped run with a checkpoint to export")
            path = self.run_path(v.run_dir, user)
            target = path / f"partial-step-{v.checkpoint_step:06d}.glb"
            if not target.exists():
                export_run(path, "glb", target)
        except Exception as e:  # noqa: BLE001
            return _skip(), _skip(), error_message(e)
        return self.serve(target, user), [self.serve(target, user)], f"Exported the checkpoint of step {v.checkpoint_step} (not finished)."

    @staticmethod
    def model_path_visible(choice: str | None):
        """Show the folder / hub id box only when the model is not the embedded one."""
        import gradio as gr

        from .form import MODEL_EMBEDDED

        return gr.update(visible=(choice or MODEL_EMBEDDED) != MODEL_EMBEDDED)

    def preset_values(self, preset: str | None) -> list:
        """The kinds and numbers a preset sets, for the form (+ an empty message, or why it failed)."""
        try:
            d = form_defaults(preset or "", base=self.base)
        except Exception as e:  # noqa: BLE001
            return [_skip()] * len(FILLED_FIELDS) + [error_message(e)]
        return [d[k] for k in FILLED_FIELDS] + [""]

    def loss_values(self, preset: str | None, kind: str | None) -> list:
        """The guidance scale of the chosen loss (under the preset)."""
        try:
            return [form_defaults(preset or "", kind or "", base=self.base)["guidance_scale"], ""]
        except Exception as e:  # noqa: BLE001
            return [_skip(), error_message(e)]

    @staticmethod
    def randomise_seed() -> int:
        return random.randrange(0, 2**31 - 1)

    def tick(self, session: dict) -> list:
        """The live values (TICK_OUTPUTS order), `gr.skip()` for whatever has not changed since the last tick; the
        timer stops itself once nothing this session follows is running."""
        session, follow = self._session(session)
        versions, busy = self.manager.stamp(follow.job, follow.batch or "")
        stamp = (follow.job, follow.batch, versions)
        shown = follow.shown
        if shown.get("_stamp") == stamp:  # nothing happened since the last tick: no copy, nothing resent
            values = {}
        else:
            shown["_stamp"] = stamp
            v = self.manager.view(follow.job)
            batch = self.manager.batch_views(follow.batch or "")
            owner = self.manager.owner(follow.job) or (self.manager.owner(batch[0].job_id) if batch else "") or ""
            values = {**self._generate_values(v, owner), **self._batch_values(batch, owner)}
        values["timer"] = busy
        out = []
        for key in TICK_OUTPUTS:
            if key not in values or (key in shown and shown[key] == values[key]):
                out.append(_skip())
                continue
            shown[key] = values[key]
            out.append(self._component_value(key, values[key]))
        return out

    def _generate_values(self, v, user: str) -> dict:
        values = {
            "status": view.status_text(v),
            "progress": view.progress_html(v),
            "preview": self.serve(v.preview_path, user) if v and v.preview_path else None,
            "plot": tuple(view.loss_points(v)),
            "log": view.log_text(v),
            "viewer": None, "turntable": None, "files": None,
            "stop": view.can_stop(v),
            "resume": view.can_resume(v),
            "partial": view.can_resume(v),
        }
        if v is not None and v.status == "finished":
            values.update(viewer=self.serve(history.viewer_file(v.run_dir), user),
                          turntable=self.serve(history.turntable_file(v.run_dir), user),
                          files=tuple(self.serve(p, user) for p in history.downloads(v.run_dir)))
        return values

    def _batch_values(self, views: list, user: str) -> dict:
        rows = tuple(tuple([i, b.prompt, b.status, f"{b.step}/{b.total or '?'}", Path(b.run_dir).name if b.run_dir else ""])
                     for i, b in enumerate(views, 1))
        files = tuple(self.serve(z, user) for b in views if b.status == "finished" and (z := history.run_zip(b.run_dir)))
        return {"batch_table": rows, "batch_files": files}

    @staticmethod
    def _component_value(key: str, value):
        import gradio as gr

        if key == "plot":
            return loss_frame(list(value))
        if key in ("files", "batch_files"):
            return list(value) if value else None
        if key == "batch_table":
            return [list(r) for r in value]
        if key == "stop":
            return gr.update(interactive=value)
        if key in ("resume", "partial"):
            return gr.update(visible=value)
        if key == "timer":
            return _timer(value)
        return value

    # ---- History tab ----------------------------------------------------------------------------------------
    def _visible(self, user: str):
        return lambda d: may_see(d, user, self.users)

    def history(self, user: str) -> tuple:
        """(table rows, gallery items, run dropdown update) of the runs this user may see."""
        import gradio as gr

        rows = history.list_runs(self.out, visible=self._visible(user))
        gallery = [(self.serve(r.thumbnail, user), f"{r.prompt} · {r.status}") for r in rows if r.thumbnail]
        choices = [(f"{r.prompt} · {r.status} · {r.run_dir.name}", str(r.run_dir)) for r in rows]
        return history.table(rows), gallery, gr.update(choices=choices)

    def gallery_run(self, user: str, index: int) -> str | None:
        """The run folder of the index-th gallery thumbnail."""
        rows = [r for r in history.list_runs(self.out, visible=self._visible(user)) if r.thumbnail]
        return str(rows[index].run_dir) if 0 <= index < len(rows) else None

    def run_path(self, value: str | None, user: str = "") -> Path:
        """A run folder chosen in the page, checked to lie inside the output folder and to be the user's."""
        if not value:
            raise UserError("choose a run first")
        path = Path(value).resolve()
        if self.out not in path.parents or not history.is_run_dir(path) or not may_see(path, user, self.users):
            raise UserError(f"{value} is not one of your runs in this studio")
        return path

    def open_run(self, user: str, value: str | None) -> tuple:
        """(details, viewer, turntable, files, message, resume button) of a run from the History list."""
        import gradio as gr

        if not value:
            return "", None, None, None, "", gr.update(visible=False)
        try:
            path = self.run_path(value, user)
        except UserError as e:
            return "", None, None, None, error_message(e), gr.update(visible=False)
        resumable = history.checkpoint_step(path) > 0 and history.read_status(path).get("status") in ("cancelled", "failed")
        return (history.details_markdown(path), self.serve(history.viewer_file(path), user),
                self.serve(history.turntable_file(path), user),
                [self.serve(p, user) for p in history.downloads(path)] or None, "", gr.update(visible=resumable))

    def reexport(self, user: str, value: str | None, fmt: str, faces: float | None = None,
                 texture_size: float | None = None) -> tuple:
        """Re-export a run with the CLI's `studio export` function (and its --faces / --texture-size);
        (files, message)."""
        from studio.reexport import export_run

        try:
            path = self.run_path(value, user)
            faces_n = None if faces is None else int(faces)
            texture_n = None if texture_size is None else int(texture_size)
            if texture_n is not None and texture_n > self.limits.max_texture_size:
                raise UserError(f"texture size {texture_n} is above this server's limit of {self.limits.max_texture_size}")
            written = export_run(path, fmt, faces=faces_n, texture_size=texture_n)
        except Exception as e:  # noqa: BLE001
            return None, error_message(e)
        return [self.serve(p, user) for p in history.downloads(path)] or None, f"Wrote `{written.name}`."

    def run_again(self, user: str, session: dict, value: str | None) -> tuple:
        """Queue a run with the same config.toml; (session, message, tabs update, timer)."""
        import gradio as gr

        from studio.config import config_from_toml

        session, follow = self._session(session)
        try:
            cfg = config_from_toml((self.run_path(value, user) / "config.toml").read_text()).validate()
            check_run(cfg, self.limits, self.out)
            if self._active(follow.job):
                return session, BUSY, gr.update(selected="generate"), _skip()
            session = self._set_job(session, job=self.manager.submit(cfg, session=session["id"], owner=user))
        except Exception as e:  # noqa: BLE001
            return session, error_message(e), _skip(), _skip()
        return session, f"Queued again: {cfg.prompt}", gr.update(selected="generate"), _timer(True)

    def resume_run(self, user: str, session: dict, value: str | None) -> tuple:
        """History's Resume: continue a cancelled or failed run; (session, message, tabs update, timer)."""
        import gradio as gr

        session, message, timer = self._resume(user, session, value)
        started = message.startswith("Resuming")
        return session, message, gr.update(selected="generate") if started else _skip(), timer

    def share(self, user: str, value: str | None, shared: bool) -> str:
        """An admin shares a run with every user (or stops sharing it)."""
        try:
            if user not in self.users.admins:
                raise UserError("only an admin (studio ui --admin NAME) can share runs")
            path = self.run_path(value, user)
            set_shared(path, bool(shared))
        except Exception as e:  # noqa: BLE001
            return error_message(e)
        return f"{'Shared' if shared else 'No longer shared'}: {path.name}"

    # ---- Batch tab ------------------------------------------------------------------------------------------
    def batch(self, user: str, session: dict, text: str | None, upload: str | None, *values) -> tuple:
        """Queue every prompt (pasted, or from an uploaded .txt / .toml file); (session, message, timer)."""
        session, _ = self._session(session)
        try:
            configs = self._batch_configs(text, upload, FormValues.from_page(FORM_FIELDS, values), self.base)
            check_batch(len(configs), self.limits)
            for i, cfg in enumerate(configs, 1):
                try:
                    check_run(cfg, self.limits, self.out)
                except UserError as e:
                    raise UserError(f"job {i} ({cfg.prompt!r}): {e}") from None
        except Exception as e:  # noqa: BLE001
            return session, error_message(e), _skip()
        batch_id = uuid.uuid4().hex
        for cfg in configs:
            self.manager.submit(cfg, session=session["id"], batch=batch_id, owner=user)
        session = self._set_job(session, batch=batch_id)
        return session, f"Queued {len(configs)} job(s).", _timer(True)

    @staticmethod
    def _batch_configs(text: str | None, upload: str | None, base: FormValues, layers: tuple[dict, ...] = ()) -> list:
        from studio.batch import build_job_configs, read_jobs

        configs = []
        if upload and Path(upload).suffix.lower() == ".toml":
            configs += build_job_configs(read_jobs(Path(upload)))
        elif upload:
            text = (text or "") + "\n" + Path(upload).read_text(errors="replace")
        prompts = [p.strip() for p in (text or "").splitlines() if p.strip() and not p.strip().startswith("#")]
        for i, prompt in enumerate(prompts, 1):
            try:
                configs.append(build_run_config(base, prompt=prompt, base=layers))
            except UserError as e:
                raise UserError(f"prompt {i} ({prompt!r}): {e}") from None
        if not configs:
            raise UserError("paste prompts (one a line) or upload a .txt or .toml prompt file")
        return configs


def _notes_markdown(notes: list[str], head: str) -> str:
    if not notes:
        return head
    return "\n".join([head, *[f"- ⚠ {n}" for n in notes]]).strip()


def _timer(active: bool):
    import gradio as gr

    return gr.Timer(active=active)


def _skip():
    import gradio as gr

    return gr.skip()


def servable(path: Path | str) -> str:
    """A path Gradio may hand to the browser. The server does not serve --out itself (its run folders have
    guessable names); Gradio copies each file it is given into its cache under a secret-seeded hash and serves
    only that copy. It takes files under the working or temporary folder; a file elsewhere (an --out on another
    disk) is first linked or copied into a private staging folder in the temporary folder."""
    import hashlib
    import os
    import shutil
    import tempfile

    path = Path(path).resolve()
    roots = (Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve())
    if any(path.is_relative_to(r) for r in roots):
        return str(path)
    stat = path.stat()
    key = hashlib.sha256(f"{path}:{stat.st_mtime_ns}:{stat.st_size}".encode()).hexdigest()[:32]
    target = Path(tempfile.gettempdir()) / "studio-ui-serve" / key / path.name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
    return str(target)
