"""The Gradio Blocks layout: Generate, History and Batch tabs wired to `Handlers`.

Layout rule: the prompt, Generate / Stop and the run's status and progress sit together at the top of the
Generate tab; settings come below, the model and the Advanced box collapsed. One timer per page polls the
run, and only while something of this page is queued or running (an idle tab costs nothing).
"""
from __future__ import annotations

from pathlib import Path

from .access import Users
from .form import FILLED_FIELDS, MODEL_CHOICES, MODEL_EMBEDDED, form_defaults, registry_choices
from .handlers import FORM_FIELDS, TICK_OUTPUTS, Handlers, new_session
from .history import export_default, export_formats
from .jobs import JobManager
from .limits import ServerLimits
from .view import LOG_SHOW

TICK_SECONDS = 1.0
"""How often a page with a run in progress asks for its progress."""

VIEWER_NOTE = ("<small>Drag to turn the asset. The viewer needs WebGL; where it stays blank (a browser without WebGL, "
               "or a machine too busy to draw), the turntable beside it shows the same asset.</small>")
"""Said under every 3D viewer (docs/ui.md#generate: when the viewer draws nothing)."""

CSS = """
.studio-progress-track { height: 14px; border-radius: 7px; background: var(--neutral-200); overflow: hidden; }
.studio-progress-fill { height: 100%; background: var(--color-accent); transition: width 0.3s; }
.studio-progress-text { margin-top: 4px; font-variant-numeric: tabular-nums; }
.studio-rate { color: var(--body-text-color-subdued); margin-left: 1em; }
#preview img, #turntable img, #history-turntable img { width: 100%; height: 100%; object-fit: contain; }
#status { min-height: 1.5em; }
"""


def build_app(manager: JobManager, out: Path | str, limits: ServerLimits | None = None, users: Users | None = None,
              base: tuple[dict, ...] = ()):
    """The studio's Blocks (not launched)."""
    import gradio as gr

    h = Handlers(manager, out, limits, users, base)
    choices = registry_choices()
    with gr.Blocks(title="Text-to-3D studio", analytics_enabled=False) as demo:
        session = gr.State(new_session, delete_callback=h.forget_session)  # Gradio drops a closed tab's state
        gr.Markdown("# Text-to-3D studio\nType a prompt, press Generate, watch the asset form, download it.")
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                form, buttons, live = _generate_tab(gr, choices, form_defaults(base=tuple(base)), h)
            with gr.Tab("History", id="history") as history_tab:
                hist = _history_tab(gr, h)
            with gr.Tab("Batch", id="batch", render_children=True):  # drawn with the page: text typed at once stays
                batch = _batch_tab(gr)
        timer = gr.Timer(TICK_SECONDS, active=False)
        live.update(batch_table=batch["table"], batch_files=batch["files"], timer=timer)
        form_inputs = [form[k] for k in FORM_FIELDS]
        quiet = {"show_progress": "hidden", "api_visibility": "private"}  # the page's own events; scripts use ui/api.py

        def user_fn(fn):
            """fn(user, *inputs) as a Gradio handler: Gradio passes the request, whose username is the login."""
            def handler(request, *args):
                return fn(getattr(request, "username", None) or "", *args)

            handler.__annotations__ = {"request": gr.Request}  # a real class: gradio injects the request by it
            handler.__name__ = fn.__name__
            return handler

        msg = buttons["message"]
        buttons["generate"].click(user_fn(h.generate), [session, *form_inputs], [session, msg, timer], **quiet)
        form["prompt"].submit(user_fn(h.generate), [session, *form_inputs], [session, msg, timer], **quiet)
        buttons["stop"].click(h.stop, [session], [msg], **quiet)
        buttons["resume"].click(user_fn(h.resume_current), [session], [session, msg, timer], **quiet)
        buttons["partial"].click(user_fn(h.partial_asset), [session], [live["viewer"], live["files"], msg], **quiet)
        buttons["seed"].click(h.randomise_seed, None, [form["seed"]], **quiet)
        form["prompt"].change(h.prompt_hint, [form["prompt"], form["model_choice"]], [buttons["hint"]],
                              trigger_mode="always_last", **quiet)
        form["model_choice"].change(h.model_path_visible, [form["model_choice"]], [form["model_path"]], **quiet)
        filled = [form[k] for k in FILLED_FIELDS]
        form["preset"].change(h.preset_values, [form["preset"]], [*filled, msg], **quiet)
        form["distillation"].input(h.loss_values, [form["preset"], form["distillation"]],
                                   [form["guidance_scale"], msg], **quiet)
        timer.tick(h.tick, [session], [live[k] for k in TICK_OUTPUTS], concurrency_limit=None, **quiet)

        refresh_outputs = [hist["table"], hist["gallery"], hist["run"]]
        hist["refresh"].click(user_fn(h.history), None, refresh_outputs, **quiet)
        history_tab.select(user_fn(h.history), None, refresh_outputs, **quiet)
        hist["run"].change(user_fn(h.open_run), [hist["run"]],
                           [hist["details"], hist["viewer"], hist["turntable"], hist["files"], hist["message"],
                            hist["resume"]], **quiet)
        hist["reexport"].click(user_fn(h.reexport), [hist["run"], hist["format"], hist["faces"], hist["texture_size"]],
                               [hist["files"], hist["message"]], api_visibility="private")
        hist["again"].click(user_fn(h.run_again), [session, hist["run"]], [session, msg, tabs, timer], **quiet)
        hist["resume"].click(user_fn(h.resume_run), [session, hist["run"]], [session, hist["message"], tabs, timer],
                             **quiet)
        if hist.get("share") is not None:
            hist["share"].input(user_fn(h.share), [hist["run"], hist["share"]], [hist["message"]], **quiet)

        def pick(request, evt):  # a thumbnail click opens that run
            return h.gallery_run(getattr(request, "username", None) or "", evt.index)

        pick.__annotations__ = {"request": gr.Request, "evt": gr.SelectData}
        hist["gallery"].select(pick, None, [hist["run"]], **quiet)

        batch["run"].click(user_fn(h.batch), [session, batch["prompts"], batch["upload"], *form_inputs],
                           [session, batch["message"], timer], **quiet)
        demo.load(user_fn(h.history), None, refresh_outputs, **quiet)
        from .api import register

        register(gr, h)
    demo.studio_handlers = h  # the server wires the file guard to the handlers' record of shown files
    return demo


def _generate_tab(gr, choices: dict, d: dict, h: Handlers) -> tuple[dict, dict, dict]:
    """The form (filled with the defaults `d`), its buttons, and the live outputs by TICK_OUTPUTS name."""
    from studio import vocabulary

    form: dict = {}
    vocab = vocabulary.embedded()
    # top band: prompt, the buttons, and what the run is doing, always together
    with gr.Row(equal_height=True):
        form["prompt"] = gr.Textbox(label="Prompt", placeholder="a red cube", value="", elem_id="prompt", scale=5,
                                    lines=1)
        with gr.Column(scale=1, min_width=160):
            generate = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Row():
                stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop", size="sm")
                resume = gr.Button("Resume", visible=False, elem_id="resume", size="sm")
    hint = gr.Markdown("", elem_id="prompt-hint")
    if vocab is not None:
        gr.Examples(vocab.examples(8), inputs=[form["prompt"]], label="Examples (what the embedded model knows)",
                    elem_id="examples")
    status = gr.Markdown("No run yet: type a prompt and press Generate.", elem_id="status")
    progress = gr.HTML(elem_id="progress")
    message = gr.Markdown("", elem_id="message")
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            with gr.Accordion("Settings", open=True, elem_id="settings-box"):
                with gr.Row():
                    form["representation"] = gr.Dropdown(choices["representation"], value=_first(choices["representation"], d["representation"]),
                                                         label="Representation", elem_id="representation")
                    form["distillation"] = gr.Dropdown(choices["distillation"], value=_first(choices["distillation"], d["distillation"]),
                                                       label="Distillation", elem_id="distillation")
                    form["preset"] = gr.Dropdown(choices["preset"], value="none", label="Preset", elem_id="preset")
                with gr.Row():
                    form["steps"] = gr.Number(d["steps"], label=f"Steps (at most {h.limits.max_steps})", precision=0,
                                              elem_id="steps")
                    form["seed"] = gr.Number(0, label="Seed", precision=0, elem_id="seed")
                    seed_button = gr.Button("Random seed", size="sm", elem_id="randomise")
                with gr.Row():
                    form["guidance_scale"] = gr.Number(d["guidance_scale"], label="Guidance scale (CFG)",
                                                       elem_id="guidance-scale")
                    form["resolution"] = gr.Number(d["resolution"], label=f"Render resolution (px, at most {h.limits.max_resolution})",
                                                   precision=0, elem_id="resolution")
                with gr.Row():
                    form["pgc"] = gr.Checkbox(d["pgc"], label="PGC (pixel-wise gradient clipping)", elem_id="pgc")
                    form["pgc_threshold"] = gr.Number(d["pgc_threshold"], label="PGC threshold", elem_id="pgc-threshold")
                form["negative_prompt"] = gr.Textbox(label="Negative prompt", value="", elem_id="negative-prompt")
            with gr.Accordion("Diffusion model", open=False, elem_id="model-box"):
                form["model_choice"] = gr.Radio(list(MODEL_CHOICES) if h.limits.allow_custom_models else [MODEL_EMBEDDED],
                                                value=MODEL_EMBEDDED, label="Diffusion model", elem_id="model-choice")
                form["model_path"] = gr.Textbox(label="Model folder or hub id", value="", visible=False,
                                                placeholder="stabilityai/stable-diffusion-2-1-base", elem_id="model-path")
            with gr.Accordion("Advanced: TOML overrides (key = value, one a line)", open=False, elem_id="advanced-box"):
                form["advanced"] = gr.Textbox(lines=4, show_label=False, value="", elem_id="advanced",
                                              placeholder="camera.batch_size = 2\nexport.mesh_resolution = 96")
            if vocab is not None:
                with gr.Accordion("What the embedded model knows", open=False, elem_id="vocabulary-box"):
                    gr.Markdown(vocab.markdown(), elem_id="vocabulary")
            with gr.Row():
                plot = gr.LinePlot(x="step", y="loss", label="Loss", height=200, elem_id="loss-plot")
            log = gr.Textbox(label="Log", lines=LOG_SHOW, max_lines=LOG_SHOW, interactive=False, elem_id="log")
        with gr.Column(scale=3, min_width=360):
            preview = gr.Image(label="Preview (several viewpoints)", type="filepath", interactive=False, height=200,
                               elem_id="preview")
            with gr.Row():
                viewer = gr.Model3D(label="3D asset", height=360, elem_id="viewer", clear_color=(1.0, 1.0, 1.0, 1.0))
                turntable = gr.Image(label="Turntable", type="filepath", interactive=False, height=360, elem_id="turntable")
            gr.Markdown(VIEWER_NOTE, elem_id="viewer-note")
            partial = gr.Button("Export what it has (partial GLB)", visible=False, size="sm", elem_id="partial")
            files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
    buttons = {"generate": generate, "stop": stop, "resume": resume, "partial": partial, "seed": seed_button,
               "message": message, "hint": hint}
    live = {"status": status, "progress": progress, "preview": preview, "plot": plot, "log": log, "viewer": viewer,
            "turntable": turntable, "files": files, "stop": stop, "resume": resume, "partial": partial}
    return form, buttons, live


def _history_tab(gr, h: Handlers) -> dict:
    c: dict = {}
    with gr.Row():
        c["refresh"] = gr.Button("Refresh", size="sm", elem_id="history-refresh")
        c["run"] = gr.Dropdown([], label="Open a run", elem_id="history-run", scale=4)
    c["gallery"] = gr.Gallery(label="Runs", columns=6, height=220, allow_preview=False, elem_id="history-gallery")
    c["table"] = gr.Dataframe(headers=["prompt", "status", "settings", "started", "folder"], interactive=False,
                              elem_id="history-table")
    with gr.Row():
        with gr.Column(scale=2):
            c["details"] = gr.Markdown(elem_id="history-details")
            with gr.Row():
                c["resume"] = gr.Button("Resume", visible=False, variant="primary", elem_id="history-resume")
                c["again"] = gr.Button("Run again", variant="primary", elem_id="history-again")
            with gr.Row():
                c["format"] = gr.Dropdown(export_formats(), value="glb", label="Format", elem_id="history-format")
                c["faces"] = gr.Number(value=export_default("faces"), precision=0, label="Faces",
                                       elem_id="history-faces")
                c["texture_size"] = gr.Number(value=export_default("texture_size"), precision=0,
                                              label="Texture size (0 = vertex colours)", elem_id="history-texture")
                c["reexport"] = gr.Button("Re-export", elem_id="history-reexport")
            c["share"] = (gr.Checkbox(False, label="Shared with every user (admins)", elem_id="history-share")
                          if h.users.admins else None)
            c["message"] = gr.Markdown(elem_id="history-message")
            c["files"] = gr.File(label="Files", file_count="multiple", interactive=False, elem_id="history-files")
        with gr.Column(scale=3):
            with gr.Row():
                c["viewer"] = gr.Model3D(label="3D asset", height=320, elem_id="history-viewer",
                                         clear_color=(1.0, 1.0, 1.0, 1.0))
                c["turntable"] = gr.Image(label="Turntable", type="filepath", interactive=False, height=320,
                                          elem_id="history-turntable")
            gr.Markdown(VIEWER_NOTE, elem_id="history-viewer-note")
    return c


def _batch_tab(gr) -> dict:
    c: dict = {}
    gr.Markdown("One prompt a line, or a `.txt` / `.toml` prompt file (as `studio batch`). "
                "Prompts take the Generate tab's settings; TOML `[[job]]` tables carry their own.")
    with gr.Row():
        c["prompts"] = gr.Textbox(lines=6, label="Prompts", value="", placeholder="a red cube\na blue sphere",
                                  elem_id="batch-prompts")
        c["upload"] = gr.File(label="Prompt file", file_types=[".txt", ".toml"], type="filepath", elem_id="batch-upload")
    c["run"] = gr.Button("Run batch", variant="primary", elem_id="batch-run")
    c["message"] = gr.Markdown(elem_id="batch-message")
    c["table"] = gr.Dataframe(headers=["#", "prompt", "status", "steps", "folder"], interactive=False, elem_id="batch-table")
    c["files"] = gr.File(label="Finished jobs", file_count="multiple", interactive=False, elem_id="batch-files")
    return c


def _first(options: list[str], preferred: str) -> str | None:
    return preferred if preferred in options else (options[0] if options else None)
