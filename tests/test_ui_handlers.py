"""The web studio's handlers as a shared server uses them, without a browser: a fresh page's values, per-run limits,
prompt warnings, errors logged on the server, accounts and whose runs each user sees, Stop -> Resume, and the
partial asset of a stopped run. Real runs use the tiny random model at 32 px."""
import json
import logging
import time
from pathlib import Path

import pytest

from studio.errors import UserError
from studio.rundir import read_status
from ui import access, history
from ui.form import FormValues, build_run_config
from ui.handlers import FORM_FIELDS, TICK_OUTPUTS, Handlers, new_session
from ui.jobs import JobManager
from ui.limits import ServerLimits, check_run

pytestmark = pytest.mark.usefixtures("small_exports")  # tests/conftest.py: small bakes and fidelity checks

SMALL = ("camera.resolution = 32\nexport.mesh_resolution = 24\nexport.turntable_frames = 2\n"
         "export.turntable_size = 24\nexport.texture_size = 64\nexport.fidelity_views = 0\nlog.preview_every = 2\n"
         "log.checkpoint_every = 2\nrepresentation.blob.bias = 0.0")


def page_values(**changes) -> list:
    """What a fresh page sends: the components inside closed accordions (model path, Advanced) arrive as None."""
    values = {k: getattr(FormValues(), k) for k in FORM_FIELDS}
    values.update({"negative_prompt": None, "model_path": None, "advanced": None, **changes})
    return [values[k] for k in FORM_FIELDS]


def tiny(prompt="a red cube", steps=4, **kw) -> list:
    return page_values(prompt=prompt, steps=steps, model_choice="Hub id", model_path="tiny-random", advanced=SMALL, **kw)


def tick_values(h: Handlers, session: dict) -> dict:
    return dict(zip(TICK_OUTPUTS, h.tick(session)))


def wait_ended(jobs: JobManager, job_id: str, timeout: float = 180) -> None:
    assert jobs.wait(job_id, timeout=timeout).ended, jobs.view(job_id)


# ---- a fresh page ----------------------------------------------------------------------------------------------
def test_a_fresh_page_with_closed_sections_builds_a_run():
    """Generate on a fresh page: the Advanced box and the model path were never drawn and arrive as None."""
    cfg = build_run_config(FormValues.from_page(FORM_FIELDS, tuple(page_values(prompt="a blue sphere"))))
    assert cfg.prompt == "a blue sphere" and cfg.guidance.model == "" and cfg.negative_prompt == ""


def test_generate_and_batch_from_a_fresh_page_queue(tmp_path):
    jobs = JobManager(tmp_path)
    h = Handlers(jobs, tmp_path)
    session, message, timer = h.generate("", new_session(), *page_values(prompt="a blue sphere", steps=1))
    assert session["job"] and message == "" and timer.active is True  # the status line says "Queued"
    jobs.cancel(session["job"])
    session, message, _ = h.batch("", new_session(), "a red cube\na green cone", None, *page_values(steps=1))
    assert message == "Queued 2 job(s)." and session["batch"]
    jobs.close()


def test_a_closed_page_session_is_forgotten_and_the_app_wires_it(tmp_path):
    """Each page session has a small server-side record; Gradio deletes a closed tab's state (an hour later) and
    calls the State's delete_callback: the record goes with it (it used to stay for the server's life)."""
    import gradio as gr

    from ui.app import build_app

    jobs = JobManager(tmp_path)
    h = Handlers(jobs, tmp_path)
    sessions = [h.generate("", new_session(), *page_values(prompt="", steps=1))[0] for _ in range(3)]
    assert len(h._follow) == 3
    for session in sessions:
        h.forget_session(session)
    h.forget_session(None)  # a state Gradio never filled
    assert h._follow == {}
    demo = build_app(jobs, tmp_path)
    states = [b for b in demo.blocks.values() if isinstance(b, gr.State)]
    assert any(getattr(s, "delete_callback", None) is not None and s.delete_callback.__name__ == "forget_session"
               for s in states)
    jobs.close()


# ---- limits ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, words", [
    ({"steps": 1_000_000_000}, ["steps 1000000000", "limit of 3000", "--max-steps"]),
    ({"resolution": 100000}, ["render resolution 100000", "--max-resolution"]),
    ({"guidance_scale": -50}, ["guidance scale -50", ">= 0"]),
    ({"guidance_scale": 1e9}, ["--max-guidance"]),
    ({"prompt": "a red cube " * 500}, ["characters", "at most 300"]),
    ({"steps": 0}, ["steps = 0 is out of range"]),
    ({"steps": float("inf")}, ["steps must be a number"]),
    ({"advanced": "steps = 999999"}, ["steps 999999", "--max-steps"]),  # no layer gets around a limit
    ({"advanced": "camera.batch_size = 64"}, ["camera.batch_size 64", "--max-batch-size"]),
    ({"advanced": "export.texture_size = 8192"}, ["--max-texture-size"]),
    ({"advanced": 'init_from = "/etc"'}, ["init_from /etc", "a run of this studio"]),
])
def test_out_of_bounds_input_is_one_line_and_queues_nothing(tmp_path, changes, words):
    jobs = JobManager(tmp_path)
    h = Handlers(jobs, tmp_path)
    session, message, _ = h.generate("", new_session(), *page_values(**{"prompt": "a red cube", **changes}))
    assert session["job"] is None and message.startswith("**Error:**") and "\n" not in message, message
    for w in words:
        assert w in message, message
    assert not jobs.batch_views("") and not any(tmp_path.iterdir())


def test_limits_are_the_servers_choice(tmp_path):
    cfg = build_run_config(FormValues.from_page(FORM_FIELDS, tuple(page_values(prompt="a cube", steps=500))))
    check_run(cfg, ServerLimits())
    with pytest.raises(UserError, match="--max-steps"):
        check_run(cfg, ServerLimits(max_steps=100))
    hub = build_run_config(FormValues.from_page(FORM_FIELDS, tuple(page_values(prompt="a cube", model_choice="Hub id",
                                                                               model_path="someone/sd"))))
    with pytest.raises(UserError, match="embedded model only"):
        check_run(hub, ServerLimits(allow_custom_models=False))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "checkpoint").mkdir(parents=True)
    (elsewhere / "checkpoint" / "scene.safetensors").write_bytes(b"")
    refine = build_run_config(FormValues.from_page(FORM_FIELDS, tuple(page_values(
        prompt="a cube", advanced=f'init_from = "{elsewhere}"'))))
    with pytest.raises(UserError, match="a run of this studio"):  # no reading of server folders outside --out
        check_run(refine, ServerLimits(), tmp_path / "out")
    h = Handlers(JobManager(tmp_path), tmp_path, ServerLimits(max_batch_jobs=2))
    _, message, _ = h.batch("", new_session(), "a\nb\nc", None, *page_values())
    assert "3 jobs" in message and "--max-batch-jobs" in message


def test_studio_ui_limit_flags_and_bad_values(tmp_path, capsys):
    from studio.cli import build_parser, main
    from ui.server import limits_from_args

    args = build_parser().parse_args(["ui", "--max-steps", "50", "--max-resolution", "96", "--embedded-only"])
    limits = limits_from_args(args)
    assert (limits.max_steps, limits.max_resolution, limits.allow_custom_models) == (50, 96, False)
    assert main(["ui", "--max-steps", "0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-steps must be positive" in err[0] and not (tmp_path / "x").exists()
    bad = tmp_path / "defaults.toml"
    bad.write_text("[camera]\nfovv = 3\n")
    assert main(["ui", "--defaults", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "unknown key 'camera.fovv'" in capsys.readouterr().err


def test_server_defaults_fill_the_form_and_the_runs(tmp_path):
    from ui.form import form_defaults

    base = ({"steps": 42, "camera": {"resolution": 48}},)
    assert form_defaults(base=base)["steps"] == 42 and form_defaults(base=base)["resolution"] == 48
    h = Handlers(JobManager(tmp_path), tmp_path, base=base)
    cfg = h.form_config(tuple(page_values(prompt="a cube", steps=None, resolution=None)))
    assert (cfg.steps, cfg.camera.resolution) == (42, 48)


# ---- prompt warnings -------------------------------------------------------------------------------------------
def test_prompt_warnings_say_what_the_embedded_model_cannot_draw(tmp_path):
    h = Handlers(JobManager(tmp_path), tmp_path)
    assert h.prompt_hint("a red cube", "Embedded model") == ""
    mug = h.prompt_hint("a ceramic mug", "Embedded model")
    assert "ceramic" in mug and "mug" in mug
    scene = h.prompt_hint("a red cube on top of a blue sphere", "Embedded model")
    assert "cube" in scene and "sphere" in scene and "top" in scene and scene.count("⚠") >= 2
    assert h.prompt_hint("a ceramic mug", "Hub id") == ""  # a real model knows mugs
    assert "77" in h.prompt_hint(" ".join(["a very red and shiny cube"] * 20), "Hub id")
    session, message, _ = h.generate("", new_session(), *page_values(prompt="a ceramic mug", steps=1))
    assert session["job"] and "ceramic" in message  # queued, with the warning on the page
    h.manager.close()


# ---- errors ----------------------------------------------------------------------------------------------------
def test_an_unexpected_error_is_one_line_on_the_page_and_a_traceback_in_the_log(tmp_path, caplog, monkeypatch):
    h = Handlers(JobManager(tmp_path), tmp_path)

    def broken(*a, **k):
        raise AttributeError("'NoneType' object has no attribute 'splitlines'")

    monkeypatch.setattr("ui.handlers.build_run_config", broken)
    with caplog.at_level(logging.ERROR, logger="studio.ui"):
        _, message, _ = h.generate("", new_session(), *page_values(prompt="a cube"))
    assert message.startswith("**Something went wrong:** AttributeError") and "\n" not in message
    (record,) = [r for r in caplog.records if r.name == "studio.ui"]
    assert record.exc_info is not None and "splitlines" in record.getMessage()


# ---- accounts --------------------------------------------------------------------------------------------------
def test_accounts_from_flags_a_file_and_the_environment(tmp_path):
    f = tmp_path / "users.txt"
    f.write_text("# the team\nalice:pw-a\nbob:p:w\n")
    users = access.load_users(["carol:c"], f, ["alice"], env={access.AUTH_ENV: "dave:d, erin:e"})
    assert users.passwords == {"carol": "c", "alice": "pw-a", "bob": "p:w", "dave": "d", "erin": "e"}
    assert users.check("bob", "p:w") and not users.check("bob", "p") and not users.check("zed", "")
    assert users.admins == {"alice"}
    with pytest.raises(UserError, match="line 1"):
        f.write_text("alice\n")
        access.load_users([], f, env={})
    with pytest.raises(UserError, match="not a user"):
        access.load_users(["a:b"], None, ["root"], env={})
    with pytest.raises(UserError, match="cannot read"):
        access.load_users([], tmp_path / "missing.txt", env={})
    assert access.host_warning("0.0.0.0", access.Users()).startswith("WARNING")
    assert access.host_warning("127.0.0.1", access.Users()) is None
    assert access.host_warning("0.0.0.0", users) is None


def make_run(out: Path, name: str, owner: str, status: str = "finished") -> Path:
    d = out / name
    d.mkdir(parents=True)
    (d / "config.toml").write_text(f'prompt = "{name}"\nsteps = 3\n')
    (d / "status.json").write_text(json.dumps({"status": status}))
    (d / "asset.glb").write_bytes(b"glTF")
    access.record_owner(d, owner)
    return d


def test_each_user_sees_only_their_own_runs_and_shared_ones(tmp_path):
    users = access.Users({"alice": "a", "bob": "b", "root": "r"}, frozenset({"root"}))
    h = Handlers(JobManager(tmp_path), tmp_path, users=users)
    a = make_run(tmp_path, "alices-cube-20260101-000000", "alice")
    b = make_run(tmp_path, "bobs-ball-20260101-000001", "bob")
    folders = lambda user: [row[4] for row in h.history(user)[0]]  # noqa: E731
    assert folders("alice") == [a.name] and folders("bob") == [b.name]
    assert folders("root") == [b.name, a.name] and folders("") == []
    with pytest.raises(UserError, match="not one of your runs"):
        h.run_path(str(a), "bob")
    assert h.open_run("bob", str(a))[4].startswith("**Error:**")
    assert h.reexport("bob", str(a), "glb")[1].startswith("**Error:**")
    assert "only an admin" in h.share("alice", str(a), True)
    assert h.share("root", str(a), True).startswith("Shared")
    assert folders("bob") == [b.name, a.name]  # shared with everyone
    assert Handlers(JobManager(tmp_path), tmp_path).history("")[0]  # no accounts: one person's server sees all


def test_obj_zip_packs_only_files_of_the_run_folder(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    run = tmp_path / "run"
    run.mkdir()
    (run / "asset.obj").write_text("mtllib asset.mtl\nv 0 0 0\n")
    (run / "asset.mtl").write_text(f"newmtl m\nmap_Kd {secret}\nmap_Ks ../secret.txt\nmap_Bump ok.png\n")
    (run / "ok.png").write_bytes(b"png")
    (run / "link.png").symlink_to(secret)
    (run / "asset.mtl").write_text((run / "asset.mtl").read_text() + "map_d link.png\n")
    assert [p.name for p in history.obj_bundle(run)] == ["asset.obj", "asset.mtl", "ok.png"]


# ---- stop, resume, partial asset, history ----------------------------------------------------------------------
@pytest.mark.slow
def test_stop_then_resume_from_the_page_and_the_partial_asset(tmp_path):
    jobs = JobManager(tmp_path)
    h = Handlers(jobs, tmp_path)
    session, _, _ = h.generate("", new_session(), *tiny("a long red cube", steps=400))
    deadline = time.monotonic() + 120
    while jobs.view(session["job"]).step < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert h.stop(session) == ""  # the status line says "Stopping...", no message lingers after
    wait_ended(jobs, session["job"])
    v = tick_values(h, session)
    assert v["status"].startswith("Cancelled at step") and "Resume" in v["status"]
    assert v["resume"]["visible"] is True and v["partial"]["visible"] is True and v["timer"].active is False
    viewer, files, message = h.partial_asset("", session)
    assert Path(viewer).name.startswith("partial-step-") and "not finished" in message
    run_dir = Path(jobs.view(session["job"]).run_dir)
    assert read_status(run_dir)["status"] == "cancelled" and not (run_dir / "asset.glb").exists()
    stopped_at = jobs.view(session["job"]).checkpoint_step
    assert stopped_at >= 3

    row = history.list_runs(tmp_path)[0]
    assert row.status == "cancelled" and row.checkpoint_step == stopped_at
    assert h.open_run("", str(run_dir))[5]["visible"] is True  # History offers Resume
    session, message, timer = h._resume("", session, str(run_dir))
    assert message == f"Resuming from step {stopped_at}." and timer.active is True
    assert h._resume("", new_session(), str(run_dir))[1].startswith("**Error:**")  # not twice at once
    jobs.cancel(session["job"])
    wait_ended(jobs, session["job"])
    jobs.close()


@pytest.mark.slow
def test_a_resumed_run_finishes_in_its_folder(tmp_path):
    jobs = JobManager(tmp_path)
    h = Handlers(jobs, tmp_path)
    session, _, _ = h.generate("", new_session(), *tiny("a red cube", steps=6))
    while jobs.view(session["job"]).step < 2:
        time.sleep(0.02)
    h.stop(session)
    wait_ended(jobs, session["job"])
    first = jobs.view(session["job"])
    if first.status == "finished":
        pytest.skip("the run finished before Stop landed (machine too fast for this test)")
    session, message, _ = h.resume_current("", session)
    assert message.startswith("Resuming")
    wait_ended(jobs, session["job"])
    done = jobs.view(session["job"])
    assert done.status == "finished" and done.run_dir == first.run_dir and done.step == 6
    assert read_status(Path(done.run_dir))["status"] == "finished" and (Path(done.run_dir) / "asset.glb").is_file()
    jobs.close()


def test_history_reads_start_time_faces_and_owner(tmp_path):
    d = make_run(tmp_path, "a-red-cube-20261204-101112", "alice")
    (d / "metrics.json").write_text(json.dumps({"mesh_faces": 59412, "export_faces": 20000, "total_seconds": 3}))
    text = history.details_markdown(d)
    assert "20000 faces exported" in text and "59412" not in text and "started 2026-12-04 10:11:12" in text
    assert history.list_runs(tmp_path)[0].time == "2026-12-04 10:11:12"
    assert access.read_access(d) == {"owner": "alice", "shared": False}


def test_the_file_guard_knows_where_gradio_caches_a_file(tmp_path):
    """ServedFiles must compute the very path Gradio serves a handed-out file from, or the guard guards nothing."""
    from gradio import processing_utils, utils

    from ui.fileguard import FILE_ROUTE, ServedFiles, cached_copy

    f = tmp_path / "asset.glb"
    f.write_bytes(b"glTF one user's asset")
    served_path = processing_utils.save_file_to_cache(f, utils.get_upload_folder())
    assert cached_copy(f) == served_path
    served = ServedFiles(admins=frozenset({"root"}))
    served.add(f, "alice")
    assert served.may_fetch(served_path, "alice") and served.may_fetch(served_path, "root")
    assert not served.may_fetch(served_path, "bob") and not served.may_fetch(served_path, None)
    assert served.may_fetch(str(tmp_path / "gradio-own.js"), None)  # not handed out by the studio
    for route in (f"/gradio_api/file={served_path}", f"/file={served_path}", f"/file/{served_path}"):
        assert FILE_ROUTE.search(route).group(1) == served_path
    assert FILE_ROUTE.search("/gradio_api/upload") is None
