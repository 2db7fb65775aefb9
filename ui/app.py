"""The Gradio Blocks layout: Generate, History and Batch tabs wired to `Handlers`."""
from __future__ import annotations

from pathlib import Path

from .form import FILLED_FIELDS, MODEL_CHOICES, MODEL_EMBEDDED, form_defaults, registry_choices
from .handlers import FORM_FIELDS, Handlers, new_session
from .history import export_default, export_formats
from .jobs import JobManager
from .view import LOG_SHOW

TICK_SECONDS = 0.5
"""How often an open page asks for its run's progress."""

CSS = """
.studio-progress-track { height: 14px; border-radius: 7px; background: var(--neutral-200); overflow: hidden; }
.studio-progress-fill { height: 100%; background: var(--color-accent); transition: width 0.3s; }
.studio-progress-text { margin-top: 4px; font-variant-numeric: tabular-nums; }
.studio-rate { color: var(--body-text-color-subdued); margin-left: 1em; }
#preview img, #turntable img, #history-turntable img { width: 100%; height: 100%; object-fit: contain; }
"""


def build_app(manager: JobManager, out: Path | str):
    """The studio's Blocks (not launched)."""
    import gradio as gr

    h = Handlers(manager, out)
    choices = registry_choices()
    with gr.Blocks(title="Text-to-3D studio", analytics_enabled=False) as demo:
        session = gr.State(new_session)
        gr.Markdown("# Text-to-3D studio\nType a prompt, watch the asset form, download it.")
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                form, buttons, live = _generate_tab(gr, choices, form_defaults())
            with gr.Tab("History", id="history") as history_tab:
                hist = _history_tab(gr)
            with gr.Tab("Batch", id="batch"):
                batch = _batch_tab(gr)
        timer = gr.Timer(TICK_SECONDS)
        form_inputs = [form[k] for k in FORM_FIELDS]

        buttons["generate"].click(h.generate, [session, *form_inputs], [session, buttons["message"]])
        form["prompt"].submit(h.generate, [session, *form_inputs], [session, buttons["message"]])
        buttons["stop"].click(h.stop, [session], [buttons["message"]])
        buttons["seed"].click(h.randomise_seed, None, [form["seed"]])
        filled = [form[k] for k in FILLED_FIELDS]
        form["preset"].change(h.preset_values, [form["preset"]], [*filled, buttons["message"]])
        form["distillation"].input(h.loss_values, [form["preset"], form["distillation"]],
                                   [form["guidance_scale"], buttons["message"]])
        timer.tick(h.tick, [session], live, concurrency_limit=None, show_progress="hidden")

        refresh_outputs = [hist["table"], hist["gallery"], hist["run"]]
        hist["refresh"].click(h.history, None, refresh_outputs)
        history_tab.select(h.history, None, refresh_outputs)
        hist["run"].change(h.open_run, [hist["run"]],
                           [hist["details"], hist["viewer"], hist["turntable"], hist["files"], hist["message"]])
        hist["reexport"].click(h.reexport, [hist["run"], hist["format"], hist["faces"], hist["texture_size"]],
                              [hist["files"], hist["message"]])
        hist["again"].click(h.run_again, [session, hist["run"]], [session, buttons["message"], tabs], show_progress="hidden")

        def pick(evt):  # a thumbnail click opens that run
            return h.gallery_run(evt.index)

        pick.__annotations__ = {"evt": gr.SelectData}  # real class, not a string: gradio injects the event by it

        hist["gallery"].select(pick, None, [hist["run"]])

        batch["run"].click(h.batch, [session, batch["prompts"], batch["upload"], *form_inputs],
                           [session, batch["message"]])
        timer.tick(h.batch_tick, [session], [batch["table"], batch["files"]],
                   concurrency_limit=None, show_progress="hidden")
        demo.load(h.history, None, refresh_outputs)
    return demo


def _generate_tab(gr, choices: dict, d: dict) -> tuple[dict, dict, list]:
    """The form (filled with the defaults `d`), its buttons, and the live outputs (handlers.TICK_OUTPUTS order)."""
    form: dict = {}
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            form["prompt"] = gr.Textbox(label="Prompt", placeholder="a red cube", elem_id="prompt")
            form["negative_prompt"] = gr.Textbox(label="Negative prompt", elem_id="negative-prompt")
            with gr.Row():
                form["representation"] = gr.Dropdown(choices["representation"], value=_first(choices["representation"], d["representation"]),
                                                     label="Representation", elem_id="representation")
                form["distillation"] = gr.Dropdown(choices["distillation"], value=_first(choices["distillation"], d["distillation"]),
                                                   label="Distillation", elem_id="distillation")
                form["preset"] = gr.Dropdown(choices["preset"], value="none", label="Preset", elem_id="preset")
            with gr.Row():
                form["steps"] = gr.Number(d["steps"], label="Steps", precision=0, minimum=1, elem_id="steps")
                form["seed"] = gr.Number(0, label="Seed", precision=0, elem_id="seed")
                seed_button = gr.Button("Random seed", size="sm", elem_id="randomise")
            with gr.Row():
                form["guidance_scale"] = gr.Number(d["guidance_scale"], label="Guidance scale (CFG)",
                                                   elem_id="guidance-scale")
                form["resolution"] = gr.Number(d["resolution"], label="Render resolution (px)", precision=0, minimum=8,
                                               elem_id="resolution")
            with gr.Row():
                form["pgc"] = gr.Checkbox(d["pgc"], label="PGC (pixel-wise gradient clipping)", elem_id="pgc")
                form["pgc_threshold"] = gr.Number(d["pgc_threshold"], label="PGC threshold", elem_id="pgc-threshold")
            form["model_choice"] = gr.Radio(list(MODEL_CHOICES), value=MODEL_EMBEDDED, label="Diffusion model",
                                            elem_id="model-choice")
            form["model_path"] = gr.Textbox(label="Model folder or hub id", placeholder="stabilityai/stable-diffusion-2-1-base",
                                            elem_id="model-path")
            with gr.Accordion("Advanced: TOML overrides (key = value, one a line)", open=False, elem_id="advanced-box"):
                form["advanced"] = gr.Textbox(lines=4, show_label=False, elem_id="advanced",
                                              placeholder="camera.batch_size = 2\nexport.mesh_resolution = 96")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
                stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop")
            message = gr.Markdown(elem_id="message")
        with gr.Column(scale=3, min_width=360):
            status = gr.Markdown("No run yet: type a prompt and press Generate.", elem_id="status")
            progress = gr.HTML(elem_id="progress")
            preview = gr.Image(label="Preview (several viewpoints)", type="filepath", interactive=False, height=200,
                               elem_id="preview")
            with gr.Row():
                plot = gr.LinePlot(x="step", y="loss", label="Loss", height=220, elem_id="loss-plot")
                log = gr.Textbox(label="Log", lines=LOG_SHOW, max_lines=LOG_SHOW, interactive=False, elem_id="log")
            with gr.Row():
                viewer = gr.Model3D(label="3D asset", height=360, elem_id="viewer")
                turntable = gr.Image(label="Turntable", type="filepath", interactive=False, height=360, elem_id="turntable")
            files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
    buttons = {"generate": generate, "stop": stop, "seed": seed_button, "message": message}
    return form, buttons, [status, progress, preview, plot, log, viewer, turntable, files, stop]


def _history_tab(gr) -> dict:
    c: dict = {}
    with gr.Row():
        c["refresh"] = gr.Button("Refresh", size="sm", elem_id="history-refresh")
        c["run"] = gr.Dropdown([], label="Open a run", elem_id="history-run", scale=4)
    c["gallery"] = gr.Gallery(label="Runs", columns=6, height=220, allow_preview=False, elem_id="history-gallery")
    c["table"] = gr.Dataframe(headers=["prompt", "status", "settings", "time", "folder"], interactive=False,
                              elem_id="history-table")
    with gr.Row():
        with gr.Column(scale=2):
            c["details"] = gr.Markdown(elem_id="history-details")
            with gr.Row():
                c["format"] = gr.Dropdown(export_formats(), value="glb", label="Format", elem_id="history-format")
                c["faces"] = gr.Number(value=export_default("faces"), precision=0, minimum=0, label="Faces",
                                       elem_id="history-faces")
                c["texture_size"] = gr.Number(value=export_default("texture_size"), precision=0, minimum=0,
                                              label="Texture size (0 = vertex colours)", elem_id="history-texture")
                c["reexport"] = gr.Button("Re-export", elem_id="history-reexport")
                c["again"] = gr.Button("Run again", variant="primary", elem_id="history-again")
            c["message"] = gr.Markdown(elem_id="history-message")
            c["files"] = gr.File(label="Files", file_count="multiple", interactive=False, elem_id="history-files")
        with gr.Column(scale=3):
            with gr.Row():
                c["viewer"] = gr.Model3D(label="3D asset", height=320, elem_id="history-viewer")
                c["turntable"] = gr.Image(label="Turntable", type="filepath", interactive=False, height=320,
                                          elem_id="history-turntable")
    return c


def _batch_tab(gr) -> dict:
    c: dict = {}
    gr.Markdown("One prompt a line, or a `.txt` / `.toml` prompt file (as `studio batch`). "
                "Prompts take the Generate tab's settings; TOML `[[job]]` tables carry their own.")
    with gr.Row():
        c["prompts"] = gr.Textbox(lines=6, label="Prompts", placeholder="a red cube\na blue sphere", elem_id="batch-prompts")
        c["upload"] = gr.File(label="Prompt file", file_types=[".txt", ".toml"], type="filepath", elem_id="batch-upload")
    c["run"] = gr.Button("Run batch", variant="primary", elem_id="batch-run")
    c["message"] = gr.Markdown(elem_id="batch-message")
    c["table"] = gr.Dataframe(headers=["#", "prompt", "status", "steps", "folder"], interactive=False, elem_id="batch-table")
    c["files"] = gr.File(label="Finished jobs", file_count="multiple", interactive=False, elem_id="batch-files")
    return c


def _first(options: list[str], preferred: str) -> str | None:
    return preferred if preferred in options else (options[0] if options else None)

