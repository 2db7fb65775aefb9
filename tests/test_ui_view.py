"""The web studio without a browser: event-to-UI mapping, form -> RunConfig, run folders -> downloads,
and the per-device job queue driving real runs (tiny random model, 32 px)."""
import json
import socket
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import distillation
import representations
from studio.cli import main
from studio.config import preset_layer
from studio.errors import UserError
from studio.events import Finished, Preview, Progress, Started
from studio.rundir import read_status
from ui import history, view
from ui.form import FormValues, build_run_config, form_defaults, registry_choices
from ui.server import parse_auth

pytestmark = pytest.mark.usefixtures("small_exports")  # tests/conftest.py: small bakes and fidelity checks

SMALL = ("camera.resolution = 32\nexport.mesh_resolution = 24\nexport.turntable_frames = 2\n"
         "export.turntable_size = 24\nlog.preview_every = 2\nrepresentation.blob.bias = 0.0")


def small_form(prompt="a red cube", steps=3, **kw) -> FormValues:
    return FormValues(prompt=prompt, steps=steps, model_choice="Hub id", model_path="tiny-random", advanced=SMALL, **kw)


# ---- view: events -> page values ------------------------------------------------------------------------------
def test_events_fold_into_the_view(tmp_path):
    v = view.JobView("id", "a red cube")
    assert view.status_text(v).startswith("Queued") and view.can_stop(v)
    v.status = "running"
    view.apply_event(v, Started(tmp_path, 10, "model: tiny"))
    assert v.run_dir == str(tmp_path) and v.total == 10 and "model: tiny" in view.log_text(v)
    for step in (1, 2, 3):
        view.apply_event(v, Progress(step, 10, 0.5 * step, 2.0, (10 - step) / 2.0), log_every=2)
    view.apply_event(v, Preview(2, np.zeros((8, 8, 3), np.uint8), tmp_path / "step_000002.png"))
    assert v.step == 3 and v.losses == [(1, 0.5), (2, 1.0), (3, 1.5)]
    assert v.preview_path.endswith("step_000002.png") and v.preview_step == 2
    bar = view.progress_html(v)
    assert "3/10" in bar and "width:30.0%" in bar and "2.00 it/s" in bar and "ETA 00:04" in bar
    assert view.status_text(v) == "Running: step 3/10."
    log = view.log_text(v).splitlines()
    assert [line.split()[1] for line in log if line.startswith("step")] == ["1/10", "2/10"]  # every log_every + first
    before = v.version
    view.apply_event(v, Finished(tmp_path, {"glb": tmp_path / "asset.glb"}, {"total_seconds": 1.5}))
    assert v.version > before and v.ended and not view.can_stop(v)
    assert v.assets == {"glb": str(tmp_path / "asset.glb")} and "width:100.0%" in view.progress_html(v)


def test_a_rollback_shows_in_the_log_and_the_curve_goes_on_from_the_checkpoint(tmp_path):
    from studio.events import RolledBack

    v = view.JobView("id", "a red cube", status="running")
    for step in range(1, 7):
        view.apply_event(v, Progress(step, 10, float(step), 2.0, 1.0))
    view.apply_event(v, RolledBack(6, 4, "loss is nan", 0.5))
    assert [s for s, _ in v.losses] == [1, 2, 3, 4]
    assert "step 6: loss is nan; back to step 4 with learning rates x0.5" in view.log_text(v)


def test_statuses_read_plainly():
    v = view.JobView("id", "p", status="queued", queue_position=2)
    assert "position 2" in view.status_text(v) and "queue position 2" in view.progress_html(v)
    v.status, v.step, v.total = "cancelled", 4, 50
    assert view.status_text(v) == "Cancelled at step 4/50."
    v.status, v.error = "failed", "boom"
    assert view.status_text(v) == "Failed: boom"
    assert view.status_text(None).startswith("No run yet")


def test_loss_plot_is_thinned_but_keeps_the_last_point():
    v = view.JobView("id", "p", losses=[(i, float(i)) for i in range(1, 1002)])
    pts = view.loss_points(v, max_points=100)
    assert len(pts) <= 101 and pts[0] == (1, 1.0) and pts[-1] == (1001, 1001.0)
    assert view.loss_points(view.JobView("id", "p")) == []


# ---- form -> RunConfig ------------------------------------------------------------------------------------------
def test_form_maps_to_the_run_config():
    cfg = build_run_config(small_form(steps=5, seed=7, guidance_scale=12.5, resolution=40, pgc=False,
                                      negative_prompt="blurry", pgc_threshold=0.2))
    assert (cfg.prompt, cfg.steps, cfg.seed, cfg.negative_prompt) == ("a red cube", 5, 7, "blurry")
    assert cfg.distillation.guidance_scale == 12.5 and cfg.pgc.enabled is False and cfg.pgc.threshold == 0.2
    assert cfg.camera.resolution == 32  # the advanced box wins over the form field, like --set over flags
    assert cfg.export.mesh_resolution == 24 and cfg.guidance.model == "tiny-random"


def test_blank_fields_keep_the_preset_and_loss_defaults():
    fast = preset_layer("fast")
    cfg = build_run_config(FormValues(prompt="a cube", preset="fast"))
    assert cfg.steps == fast["steps"] and cfg.distillation.guidance_scale == form_defaults()["guidance_scale"]
    assert form_defaults("fast")["steps"] == fast["steps"]


@pytest.mark.parametrize("values, message", [
    (FormValues(prompt=""), "prompt is empty"),
    (FormValues(prompt="a cube", advanced="camera.fovv = 3"), "valid keys: radius"),
    (FormValues(prompt="a cube", advanced="[camera]\nresolution = 3"), "dotted keys"),
    (FormValues(prompt="a cube", advanced="steps"), "key=value"),
    (FormValues(prompt="a cube", representation="octree"), "unknown representation 'octree'"),
    (FormValues(prompt="a cube", model_choice="Local folder", model_path="/nonexistent/sd"), "does not exist"),
    (FormValues(prompt="a cube", model_choice="Hub id", model_path=" "), "hub id"),
    (FormValues(prompt="a cube", steps=2.5), "whole number"),
])
def test_bad_form_input_is_one_readable_error(values, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        build_run_config(values)


def test_choices_come_from_the_registries():
    c = registry_choices()
    assert c["representation"] == sorted(representations.REGISTRY)
    assert c["distillation"] == sorted(distillation.REGISTRY)
    assert "fast" in c["preset"] and c["preset"][0] == "none"


def test_auth_and_bad_cli_input(tmp_path, capsys):
    assert parse_auth("alice:se:cret") == ("alice", "se:cret") and parse_auth(None) is None
    code = main(["ui", "--auth", "alice", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "USER:PASS" in err[0]
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_a_busy_port_is_one_line_exit_2(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code = main(["ui", "--port", str(busy.getsockname()[1]), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pass another --port" in err[0], err
    assert not (tmp_path / "b").exists()  # nothing written


# ---- run folders -> downloads -----------------------------------------------------------------------------------
def test_obj_zip_carries_its_material_and_texture(tmp_path):
    (tmp_path / "config.toml").write_text('prompt = "a mug"\nsteps = 3\n')
    (tmp_path / "asset.obj").write_text("mtllib asset.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nusemtl m\nf 1 2 3\n")
    (tmp_path / "asset.mtl").write_text("newmtl m\nKd 1 1 1\nmap_Kd -s 1 1 1 asset_texture.png\n")
    Image.new("RGB", (4, 4), (200, 10, 10)).save(tmp_path / "asset_texture.png")
    (tmp_path / "asset.glb").write_bytes(b"glTF")
    (tmp_path / "splat.ply").write_bytes(b"ply\n")
    files = history.downloads(tmp_path)
    assert [f.name for f in files] == ["asset.glb", "asset-obj.zip", "splat.ply"]
    with zipfile.ZipFile(files[1]) as z:
        assert sorted(z.namelist()) == ["asset.mtl", "asset.obj", "asset_texture.png"]
        assert z.read("asset.obj") == (tmp_path / "asset.obj").read_bytes()
    assert history.viewer_file(tmp_path).name == "asset.glb"


def test_history_lists_runs_with_status_and_settings(tmp_path):
    for name, status, prompt in [("a-20260101-000000", "finished", "a cube"), ("b-20260101-000001", "cancelled", "a ball")]:
        d = tmp_path / name
        (d / "previews").mkdir(parents=True)
        (d / "config.toml").write_text(f'prompt = "{prompt}"\nsteps = 9\nseed = 4\n[representation]\nkind = "nerf"\n')
        (d / "status.json").write_text(json.dumps({"status": status, "time": "2026-01-01T00:00:00"}))
        Image.new("RGB", (4, 4)).save(d / "previews" / "step_000009.png")
        time.sleep(0.01)
    (tmp_path / "not-a-run").mkdir()
    rows = history.list_runs(tmp_path)
    assert [(r.prompt, r.status) for r in rows] == [("a ball", "cancelled"), ("a cube", "finished")]
    assert rows[0].thumbnail.name == "step_000009.png" and "nerf · ? · 9 steps · seed 4" == rows[0].settings
    assert history.table(rows)[1][:2] == ["a cube", "finished"]
    assert rows[0].time == "2026-01-01 00:00:01" and rows[1].time == "2026-01-01 00:00:00"  # the start, from the name


def test_handlers_show_errors_and_skip_unchanged_values(tmp_path):
    import gradio as gr

    from ui.handlers import FORM_FIELDS, TICK_OUTPUTS, Handlers, new_session
    from ui.jobs import JobManager

    h = Handlers(JobManager(tmp_path), tmp_path)
    session, message, _ = h.generate("", new_session(), *[getattr(FormValues(prompt=""), k) for k in FORM_FIELDS])
    assert message.startswith("**Error:**") and "prompt is empty" in message and session["job"] is None
    first = h.tick(session)
    assert len(first) == len(TICK_OUTPUTS) and first[0].startswith("No run yet")  # ticks never write the session
    assert first[-1].active is False  # nothing to follow: the page's timer stops
    again = h.tick(session)
    assert all(isinstance(x, type(gr.skip())) for x in again)  # nothing changed: nothing resent
    with pytest.raises(UserError, match="not one of your runs"):
        h.run_path(str(tmp_path.parent))


# ---- the job queue with real runs -------------------------------------------------------------------------------
@pytest.mark.slow
def test_one_run_per_device_queue_and_stop(tmp_path):
    from ui.handlers import BUSY, FORM_FIELDS, Handlers, new_session
    from ui.jobs import JobManager

    jobs = JobManager(tmp_path)
    running = jobs.submit(build_run_config(small_form("a long run", steps=500)), session="s1")
    second = jobs.submit(build_run_config(small_form("a blue ball", steps=2)), session="s2")
    third = jobs.submit(build_run_config(small_form("a green cone", steps=2)), session="s3")
    deadline = time.monotonic() + 120
    while jobs.view(running).step < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert jobs.view(running).status == "running"
    assert [(jobs.view(j).status, jobs.view(j).queue_position) for j in (second, third)] == [("queued", 1), ("queued", 2)]
    h = Handlers(jobs, tmp_path)
    form = [getattr(small_form("another"), k) for k in FORM_FIELDS]
    session = h._set_job(new_session(), job=running)
    assert h.generate("", session, *form)[1] == BUSY  # one run per user at a time
    assert jobs.cancel(second)  # leaving the queue moves the others up
    assert jobs.view(second).status == "cancelled" and jobs.view(third).queue_position == 1
    unstarted = Path(jobs.view(second).run_dir)  # kept in History (Run again), but nothing was trained
    assert read_status(unstarted)["status"] == "cancelled" and (unstarted / "config.toml").is_file()
    assert not (unstarted / "checkpoint").exists() and not (unstarted / "asset.glb").exists()
    assert jobs.cancel(running)
    cancelled = jobs.wait(running, timeout=60)
    assert cancelled.status == "cancelled" and 2 <= cancelled.step < 500
    assert read_status(Path(cancelled.run_dir))["status"] == "cancelled"  # the folder says so, too
    assert not jobs.cancel(running)  # an ended job cannot be stopped again
    jobs.close()
    assert jobs.wait(third, timeout=60).status == "cancelled"


def test_ui_help_imports_neither_gradio_nor_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom studio.cli import main\nimport ui\n"
            "try:\n    main(['ui', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'gradio') if m in sys.modules))\n")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert "--auth USER:PASS" in out.stdout and out.stdout.strip().splitlines()[-1] == "[]"


def test_batch_jobs_from_pasted_text_and_prompt_files(tmp_path):
    from ui.handlers import Handlers

    base = small_form("ignored", steps=4)
    txt = tmp_path / "prompts.txt"
    txt.write_text("a green cone\n\n# skipped\n")
    configs = Handlers._batch_configs("a red cube\n", str(txt), base)
    assert [c.prompt for c in configs] == ["a red cube", "a green cone"] and {c.steps for c in configs} == {4}
    toml = tmp_path / "jobs.toml"
    toml.write_text('[[job]]\nprompt = "a mug"\nsteps = 7\nset = ["guidance.model=tiny-random"]\n')
    (cfg,) = Handlers._batch_configs("", str(toml), base)
    assert (cfg.prompt, cfg.steps, cfg.guidance.model) == ("a mug", 7, "tiny-random")  # TOML jobs carry their own
    with pytest.raises(UserError, match="paste prompts"):
        Handlers._batch_configs(" \n# only a comment\n", None, base)
    toml.write_text('[[job]]\nprompt = "a mug"\ncolour = "red"\n')
    with pytest.raises(UserError, match="unknown key 'colour'"):
        Handlers._batch_configs("", str(toml), base)


def test_a_run_that_fails_reads_plainly(tmp_path):
    from ui.jobs import JobManager

    not_a_model = tmp_path / "empty-model"
    not_a_model.mkdir()
    cfg = build_run_config(FormValues(prompt="a cube", steps=2, model_choice="Local folder", model_path=str(not_a_model)))
    jobs = JobManager(tmp_path / "out")
    v = jobs.wait(jobs.submit(cfg), timeout=120)
    jobs.close()
    assert v.status == "failed" and str(not_a_model) in v.error and "Traceback" not in v.error
    assert view.status_text(v).startswith("Failed: ") and v.run_dir is None  # nothing half-written
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_reexport_takes_the_faces_and_texture_size_of_the_page(crisp_run, tmp_path):
    """History's Re-export passes the page's face count and texture size to the CLI's export function."""
    import shutil

    import trimesh
    from PIL import Image

    from ui.handlers import Handlers
    from ui.jobs import JobManager

    run_dir = tmp_path / crisp_run.run_dir.name
    shutil.copytree(crisp_run.run_dir, run_dir)
    h = Handlers(JobManager(tmp_path), tmp_path.resolve())
    files, message = h.reexport("", str(run_dir), "obj", 400.0, 32.0)
    assert message.startswith("Wrote") and files
    mesh = trimesh.load(run_dir / "asset.obj", force="mesh", process=False)
    assert 300 <= len(mesh.faces) <= 420  # the page's 400, not the run's 1500
    assert Image.open(run_dir / "asset_albedo.png").size == (32, 32)
    files, message = h.reexport("", str(run_dir), "glb", 2.0, 32.0)
    assert message.startswith("**Error:**")  # too few faces: a readable message, no traceback


def test_docs_limits_table():
    """docs/ui.md lists every `studio ui` limit flag with its real default (regenerate with ui.limits.limits_markdown)."""
    import re

    from ui.limits import limits_markdown

    text = (Path(__file__).resolve().parents[1] / "docs" / "ui.md").read_text()
    table = re.search(r"<!-- limits-table[^>]*-->\n(.*?)\n<!-- /limits-table -->", text, re.S).group(1)
    assert table == limits_markdown(), "docs/ui.md's limits table is stale: paste ui.limits.limits_markdown()"
