"""What each button and timer tick does, as plain methods over a JobManager and the output folder.

Gradio is imported only for `gr.skip()` / component updates. Every handler that takes user input turns
a bad value into a readable message in the page (never a traceback).
"""
from __future__ import annotations

import random
import uuid
from pathlib import Path

from studio.errors import UserError

from . import history, view
from .form import FILLED_FIELDS, FormValues, build_run_config, form_defaults
from .jobs import JobManager

FORM_FIELDS = ("prompt", "negative_prompt", "representation", "distillation", "preset", "steps", "seed",
               "guidance_scale", "resolution", "pgc", "pgc_threshold", "model_choice", "model_path", "advanced")
"""The Generate form's inputs, in the order the page passes them."""
BUSY = "**Your run is still going:** press Stop first, or wait until it ends."
TICK_OUTPUTS = ("status", "progress", "preview", "plot", "log", "viewer", "turntable", "files", "stop")
"""What a timer tick updates on the Generate tab, in order."""


def new_session() -> dict:
    """Per-browser-session state: its id and its current job and batch. Only button handlers write it; ticks
    only read it (a tick writing it back could undo a Generate that landed while the tick ran)."""
    return {"id": uuid.uuid4().hex, "job": None, "batch": None}


def error_message(e: Exception) -> str:
    """A readable one-paragraph message for the page."""
    from studio.cli import is_user_error

    if is_user_error(e):
        return f"**Error:** {e}"
    return f"**Something went wrong:** {type(e).__name__}: {e}"


def loss_frame(points: list[tuple[int, float]]):
    """[N] rows of (step, loss) with numeric dtypes (an empty object frame would make the plot categorical)."""
    import pandas as pd

    return pd.DataFrame({"step": pd.Series([p[0] for p in points], dtype="int64"),
                         "loss": pd.Series([p[1] for p in points], dtype="float64")})


class Handlers:
    """The page's event handlers, bound to one JobManager and output folder."""

    def __init__(self, manager: JobManager, out: Path | str) -> None:
        self.manager = manager
        self.out = Path(out).resolve()
        self._shown: dict[str, dict] = {}
        """What each session's page shows already, by session id (kept server-side, see new_session)."""

    # ---- Generate tab ---------------------------------------------------------------------------------------
    def generate(self, session: dict, *values) -> tuple[dict, str]:
        """Validate the form and queue the run; (session, message)."""
        session = dict(session or new_session())
        try:
            cfg = build_run_config(FormValues(**dict(zip(FORM_FIELDS, values))))
        except Exception as e:  # noqa: BLE001 - any bad input is shown, the page stays up
            return session, error_message(e)
        if self._active(session.get("job")):
            return session, BUSY
        session.update(job=self.manager.submit(cfg, session=session["id"]))
        return session, ""

    def _active(self, job_id: str | None) -> bool:
        v = self.manager.view(job_id)
        return v is not None and not v.ended

    def stop(self, session: dict) -> str:
        """Stop this session's run."""
        if not self.manager.cancel((session or {}).get("job")):
            return "Nothing to stop."
        return "Stopping after the current step..."

    @staticmethod
    def preset_values(preset: str) -> list:
        """The kinds and numbers a preset sets, for the form (+ an empty message, or why it failed)."""
        import gradio as gr

        try:
            d = form_defaults(preset)
        except Exception as e:  # noqa: BLE001
            return [gr.skip()] * len(FILLED_FIELDS) + [error_message(e)]
        return [d[k] for k in FILLED_FIELDS] + [""]

    @staticmethod
    def loss_values(preset: str, kind: str) -> list:
        """The guidance scale of the chosen loss (under the preset)."""
        import gradio as gr

        try:
            return [form_defaults(preset, kind)["guidance_scale"], ""]
        except Exception as e:  # noqa: BLE001
            return [gr.skip(), error_message(e)]

    @staticmethod
    def randomise_seed() -> int:
        return random.randrange(0, 2**31 - 1)

    def tick(self, session: dict) -> list:
        """The Generate tab's live values, `gr.skip()` for whatever has not changed since the last tick."""
        import gradio as gr

        session = session or new_session()
        shown = self._shown.setdefault(session["id"], {})
        stamp = (session.get("job"), self.manager.version(session.get("job")))
        if shown.get("_stamp") == stamp:  # nothing happened since the last tick: no copy, nothing resent
            return [gr.skip() for _ in TICK_OUTPUTS]
        shown["_stamp"] = stamp
        v = self.manager.view(session.get("job"))
        values = {
            "status": view.status_text(v),
            "progress": view.progress_html(v),
            "preview": v.preview_path if v else None,
            "plot": tuple(view.loss_points(v)),
            "log": view.log_text(v),
            "viewer": None, "turntable": None, "files": None,
            "stop": view.can_stop(v),
        }
        if v is not None and v.status == "finished":
            values.update(viewer=_str(history.viewer_file(v.run_dir)), turntable=_str(history.turntable_file(v.run_dir)),
                          files=tuple(str(p) for p in history.downloads(v.run_dir)))
        out = []
        for key in TICK_OUTPUTS:
            if key in shown and shown[key] == values[key]:
                out.append(gr.skip())
                continue
            shown[key] = values[key]
            out.append(self._component_value(key, values[key]))
        return out

    @staticmethod
    def _component_value(key: str, value):
        import gradio as gr

        if key == "plot":
            return loss_frame(list(value))
        if key == "files":
            return list(value) if value else None
        if key == "stop":
            return gr.update(interactive=value)
        return value

    # ---- History tab ----------------------------------------------------------------------------------------
    def history(self) -> tuple:
        """(table rows, gallery items, run dropdown update)."""
        import gradio as gr

        rows = history.list_runs(self.out)
        gallery = [(str(r.thumbnail), f"{r.prompt} · {r.status}") for r in rows if r.thumbnail]
        choices = [(f"{r.prompt} · {r.status} · {r.run_dir.name}", str(r.run_dir)) for r in rows]
        return history.table(rows), gallery, gr.update(choices=choices)

    def gallery_run(self, index: int) -> str | None:
        """The run folder of the index-th gallery thumbnail."""
        rows = [r for r in history.list_runs(self.out) if r.thumbnail]
        return str(rows[index].run_dir) if 0 <= index < len(rows) else None

    def run_path(self, value: str | None) -> Path:
        """A run folder chosen in the page, checked to lie inside the output folder."""
        if not value:
            raise UserError("choose a run first")
        path = Path(value).resolve()
        if self.out not in path.parents or not history.is_run_dir(path):
            raise UserError(f"{value} is not a run in {self.out}")
        return path

    def open_run(self, value: str | None) -> tuple:
        """(details, viewer, turntable, files, message) of a run from the History list."""
        try:
            path = self.run_path(value)
        except UserError as e:
            return "", None, None, None, error_message(e)
        return (history.details_markdown(path), _str(history.viewer_file(path)), _str(history.turntable_file(path)),
                [str(p) for p in history.downloads(path)] or None, "")

    def reexport(self, value: str | None, fmt: str, faces: float | None = None,
                 texture_size: float | None = None) -> tuple:
        """Re-export a run with the CLI's `studio export` function (and its --faces / --texture-size);
        (files, message)."""
        from studio.reexport import export_run

        try:
            path = self.run_path(value)
            written = export_run(path, fmt, faces=None if faces is None else int(faces),
                                 texture_size=None if texture_size is None else int(texture_size))
        except Exception as e:  # noqa: BLE001
            return None, error_message(e)
        return [str(p) for p in history.downloads(path)] or None, f"Wrote `{written}`."

    def run_again(self, session: dict, value: str | None) -> tuple:
        """Queue a run with the same config.toml; (session, message, tabs update)."""
        import gradio as gr

        from studio.config import config_from_toml

        session = dict(session or new_session())
        try:
            cfg = config_from_toml((self.run_path(value) / "config.toml").read_text())
        except Exception as e:  # noqa: BLE001
            return session, error_message(e), gr.skip()
        if self._active(session.get("job")):
            return session, BUSY, gr.update(selected="generate")
        session.update(job=self.manager.submit(cfg, session=session["id"]))
        return session, f"Queued again: {cfg.prompt}", gr.update(selected="generate")

    # ---- Batch tab ------------------------------------------------------------------------------------------
    def batch(self, session: dict, text: str, upload: str | None, *values) -> tuple[dict, str]:
        """Queue every prompt (pasted, or from an uploaded .txt / .toml file); (session, message)."""
        session = dict(session or new_session())
        try:
            configs = self._batch_configs(text, upload, FormValues(**dict(zip(FORM_FIELDS, values))))
        except Exception as e:  # noqa: BLE001
            return session, error_message(e)
        batch_id = uuid.uuid4().hex
        for cfg in configs:
            self.manager.submit(cfg, session=session["id"], batch=batch_id)
        session.update(batch=batch_id)
        return session, f"Queued {len(configs)} job(s)."

    @staticmethod
    def _batch_configs(text: str, upload: str | None, base: FormValues) -> list:
        from studio.batch import build_job_configs, read_jobs

        configs = []
        if upload and Path(upload).suffix.lower() == ".toml":
            configs += build_job_configs(read_jobs(Path(upload)))
        elif upload:
            text = (text or "") + "\n" + Path(upload).read_text(errors="replace")
        prompts = [p.strip() for p in (text or "").splitlines() if p.strip() and not p.strip().startswith("#")]
        for i, prompt in enumerate(prompts, 1):
            try:
                configs.append(build_run_config(base, prompt=prompt))
            except UserError as e:
                raise UserError(f"prompt {i} ({prompt!r}): {e}") from None
        if not configs:
            raise UserError("paste prompts (one a line) or upload a .txt or .toml prompt file")
        return configs

    def batch_tick(self, session: dict) -> list:
        """(table, files) for the Batch tab; skips when nothing changed."""
        import gradio as gr

        session = session or new_session()
        views = self.manager.batch_views(session.get("batch") or "")
        key = tuple((v.job_id, v.version) for v in views)
        shown = self._shown.setdefault(session["id"], {})
        if shown.get("_batch") == key:
            return [gr.skip(), gr.skip()]
        shown["_batch"] = key
        rows = [[i, v.prompt, v.status, f"{v.step}/{v.total or '?'}", Path(v.run_dir).name if v.run_dir else ""]
                for i, v in enumerate(views, 1)]
        files = [str(z) for v in views if v.status == "finished" and (z := history.run_zip(v.run_dir))]
        return [rows, files or None]


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
