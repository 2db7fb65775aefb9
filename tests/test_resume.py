"""Resuming runs: a run stopped at step k and resumed ends where the uninterrupted run ends; `studio resume`."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from representations.nerf import NeRF
from studio.cli import main
from studio.config import build_config
from studio.errors import UserError
from studio.events import Finished, Progress, Started
from studio.run import resume, run

pytestmark = pytest.mark.usefixtures("small_exports")  # tests/conftest.py: small bakes and fidelity checks

FAST = ["guidance.model=tiny-random", "camera.resolution=32", "export.mesh_resolution=32", "export.formats=['glb']",
        "export.turntable_frames=0", "log.preview_every=3", "log.checkpoint_every=3", "log.log_every=1"]


def cfg_for(steps=6, extra=()):
    return build_config([{"prompt": "a red cube", "steps": steps}], [*FAST, *extra])


def stop_after(events, step: int):
    """Iterate a run's events and close the generator right after Progress(step); the run directory."""
    run_dir = None
    for ev in events:
        if isinstance(ev, Started):
            run_dir = ev.run_dir
        if isinstance(ev, Progress) and ev.step == step:
            break
    events.close()
    return run_dir


def status(run_dir) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def checkpoint(run_dir, name="scene") -> dict:
    return load_file(str(run_dir / "checkpoint" / f"{name}.safetensors"))


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{what} {k}: {m}")


def snapshot(run_dir) -> dict:
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def resumed_equals_uninterrupted(tmp_path, extra=()):
    """(uninterrupted run dir, resumed run dir): 6 steps straight vs stopped after step 3 and resumed."""
    straight = list(run(cfg_for(6, extra), tmp_path / "straight"))[-1].run_dir
    run_dir = stop_after(run(cfg_for(6, extra), tmp_path / "stopped"), 3)
    assert status(run_dir)["status"] == "cancelled"
    assert json.loads((run_dir / "checkpoint" / "meta.json").read_text())["step"] == 3  # written at the Stop
    return straight, run_dir


def test_nerf_sds_resumed_after_a_kill_matches_the_uninterrupted_run(tmp_path):
    straight, run_dir = resumed_equals_uninterrupted(tmp_path)
    # what a killed process leaves: status 'running', log lines after the last checkpoint
    st = status(run_dir)
    (run_dir / "status.json").write_text(json.dumps({**st, "status": "running"}))
    with open(run_dir / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "loss": 123.0}) + "\n" + '{"step": 5, "lo')  # killed mid-line

    events = list(resume(run_dir))
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    assert [e.step for e in events if isinstance(e, Progress)] == [4, 5, 6]
    assert status(run_dir)["status"] == "finished" and (run_dir / "asset.glb").exists()
    assert events[-1].metrics["resumed_from_step"] == 3
    steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    straight_log = [json.loads(line)["loss"] for line in (straight / "log.jsonl").read_text().splitlines()]
    resumed_log = [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert resumed_log == pytest.approx(straight_log, rel=1e-5)
    scene = checkpoint(run_dir)
    assert any(k.startswith("optim.") for k in scene)  # Adam moments are part of the state
    assert_same_tensors(scene, checkpoint(straight), "scene")


def test_vsd_resumed_continues_its_lora(tmp_path):
    straight, run_dir = resumed_equals_uninterrupted(tmp_path, ["distillation.kind='vsd'"])
    at_stop = checkpoint(run_dir, "distillation")
    list(resume(run_dir))
    assert status(run_dir)["status"] == "finished"
    lora = checkpoint(run_dir, "distillation")
    assert any(k.startswith("lora.") for k in lora) and any(k.startswith("optim.") for k in lora)
    assert not all(torch.equal(lora[k], at_stop[k]) for k in lora if k.startswith("lora."))  # it kept training
    assert_same_tensors(lora, checkpoint(straight, "distillation"), "distillation")
    assert_same_tensors(checkpoint(run_dir), checkpoint(straight), "scene")


def test_cli_resume_extends_a_finished_run_and_keeps_its_assets_until_done(tmp_path, capsys):
    run_dir = list(run(cfg_for(2), tmp_path))[-1].run_dir
    old_glb = (run_dir / "asset.glb").read_bytes()

    stop_after(resume(run_dir, steps=4), 3)  # training further, then stopped: the old assets stay
    assert status(run_dir)["status"] == "cancelled"
    assert (run_dir / "asset.glb").read_bytes() == old_glb
    assert not (run_dir / ".assets.tmp").exists()

    assert main(["resume", str(run_dir)]) == 0  # config.toml now says 4 steps
    out = capsys.readouterr().out
    assert str(run_dir) in out and "glb:" in out
    assert status(run_dir)["status"] == "finished"
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 4
    assert json.loads((run_dir / "checkpoint" / "meta.json").read_text())["step"] == 4
    assert (run_dir / "asset.glb").read_bytes() != old_glb
    assert "steps = 4" in (run_dir / "config.toml").read_text()


def test_bad_resumes_exit_2_and_change_nothing(tmp_path, capsys):
    run_dir = list(run(cfg_for(1, ["log.preview_every=0"]), tmp_path))[-1].run_dir
    before = snapshot(run_dir)
    for argv, fix in [([], "pass --steps N with N > 1"), (["--steps", "1"], "pass --steps N with N > 1"),
                      (["--steps", "0"], "positive number")]:
        assert main(["resume", str(run_dir), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert fix in err and len(err.splitlines()) == 1
    assert snapshot(run_dir) == before

    toml = run_dir / "config.toml"
    toml.write_text(toml.read_text().replace("hidden = 32", "hidden = 16"))  # no longer the checkpoint's scene
    before = snapshot(run_dir)
    assert main(["resume", str(run_dir), "--steps", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not fit" in err and "was config.toml edited?" in err and len(err.splitlines()) == 1
    assert snapshot(run_dir) == before

    empty = tmp_path / "no-checkpoint"
    empty.mkdir()
    (empty / "config.toml").write_text((run_dir / "config.toml").read_text())
    assert main(["resume", str(empty)]) == 2
    assert "has no checkpoint" in capsys.readouterr().err
    assert sorted(p.name for p in empty.iterdir()) == ["config.toml"]
    assert main(["resume", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_gaussians_resume_densifies_the_same_gaussians_and_old_checkpoints_load():
    """The densification statistics gathered since the last densify are part of the state."""
    from representations.cameras import orbit_cameras
    from representations.gaussians import Gaussians, GaussiansConfig
    from representations.shading import Shading, front_light

    full = lambda v: torch.full((2,), float(v))  # noqa: E731
    c = orbit_cameras(torch.tensor([-60.0, 80.0]), full(15), full(2.7), full(47), 24, 24)
    cfg = GaussiansConfig(num_init=64, densify_from=1, densify_every=3, densify_fraction=0.25)

    def step(rep, i):
        torch.manual_seed(100 + i)  # the split offsets draw from torch's RNG
        out = rep.render(c[i % 2:i % 2 + 1], Shading(front_light(c.position[i % 2:i % 2 + 1])))
        out.alpha.mean().backward()
        rep.after_backward(i)

    torch.manual_seed(0)
    rep = Gaussians(cfg, 10)
    for i in range(5):  # densified at step 3, statistics of step 4 pending
        step(rep, i)
    state = rep.state_tensors()
    assert int(state["densify.grad_count"]) == 1 and state["densify.grad_sum"].shape == (rep.count,)
    fresh, old = Gaussians(cfg, 10), Gaussians(cfg, 10)
    fresh.load_state_tensors(state)
    old.load_state_tensors({k: v for k, v in state.items() if not k.startswith("densify.")})  # loads, stats reset
    assert old.count == rep.count and old._grad_count == 0
    for i in range(5, 7):  # the next densify is at step 6
        step(rep, i)
        step(fresh, i)
    assert fresh.count == rep.count
    for name in ("means", "log_scales", "opacity_logits", "sh_dc"):
        torch.testing.assert_close(getattr(fresh, name), getattr(rep, name), msg=name)


def test_first_ctrl_c_stops_at_a_step_boundary_with_a_checkpoint(tmp_path):
    import io
    import os
    import signal

    from studio.progress import report

    def interrupted(events):
        for ev in events:
            yield ev
            if isinstance(ev, Progress) and ev.step == 2:
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in the terminal sends, here during step 3

    stream = io.StringIO()
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background shell may start us with SIGINT ignored
    try:
        with pytest.raises(KeyboardInterrupt):
            report(interrupted(run(cfg_for(50, ["log.checkpoint_every=0"]), tmp_path)), stream)
        restored = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, inherited)
    (run_dir,) = tmp_path.iterdir()
    assert status(run_dir)["status"] == "cancelled"
    assert json.loads((run_dir / "checkpoint" / "meta.json").read_text())["step"] == 3  # step 3 was finished
    assert f"studio resume {run_dir}" in stream.getvalue()
    assert restored is signal.default_int_handler  # the handler is put back


def sigterm_at(args: list[str], prefix: str) -> tuple[int, str]:
    """Run the studio CLI with `args`, send SIGTERM when a stderr line starts with `prefix`; (exit code, stderr)."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "studio.cli", *args], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith(prefix):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.communicate(timeout=120)[1]
    return proc.returncode, "".join(lines) + rest


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_and_the_run_resumes(tmp_path):
    """`docker stop`, systemd and Kubernetes send SIGTERM: the CLI finishes the step, checkpoints, says
    'cancelled' and exits 130; without the handler the process died at once and status.json stayed 'running'."""
    args = ["generate", "a red cube", "--steps", "2000", "--out", str(tmp_path),
            *[a for item in FAST for a in ("--set", item)], "--set", "log.checkpoint_every=0"]
    code, rest = sigterm_at(args, "step ")  # non-TTY progress: a line every 100 steps
    assert code == 130, rest
    assert "SIGTERM: stopping after this step" in rest and "studio resume" in rest
    (run_dir,) = tmp_path.iterdir()
    done = json.loads((run_dir / "checkpoint" / "meta.json").read_text())["step"]
    assert status(run_dir)["status"] == "cancelled" and status(run_dir)["checkpoint_step"] == done >= 100
    final = list(resume(run_dir, steps=done + 2))[-1]
    assert final.metrics["resumed_from_step"] == done and status(run_dir)["status"] == "finished"


def test_sigterm_during_the_export_stops_inside_it_and_resume_exports(tmp_path):
    """The last step's checkpoint is saved before the export starts, so a stop there need not wait for the stage
    (the UV unwrap, the bake, the turntable: tens of seconds at the defaults): the first SIGTERM stops at once,
    with no asset and no temporary folder left, 'cancelled'; `studio resume` then only exports. Before, the first
    signal waited for the end of the stage."""
    args = ["generate", "a red cube", "--steps", "2", "--out", str(tmp_path),
            *[a for item in FAST for a in ("--set", item)], "--set", "export.texture_size=512",
            "--set", "export.mesh_resolution=64", "--set", "export.turntable_frames=24"]
    code, rest = sigterm_at(args, "export 1/")
    assert code == 130, rest
    assert "SIGTERM: stopping now" in rest and "turntable" not in rest  # stopped inside, not after, the export
    assert "studio resume" in rest
    (run_dir,) = tmp_path.iterdir()
    assert status(run_dir)["status"] == "cancelled" and status(run_dir)["checkpoint_step"] == 2
    assert not list(run_dir.glob("asset*")) and not (run_dir / ".assets.tmp").exists()
    assert main(["resume", str(run_dir)]) == 0
    assert status(run_dir)["status"] == "finished" and (run_dir / "asset.glb").is_file()
    assert json.loads((run_dir / "metrics.json").read_text())["resumed_from_step"] == 2


def test_sigterm_stops_studio_export_at_once_and_writes_nothing(tmp_path):
    """`studio export` had no handler: SIGTERM killed it without its cleanup. Now it stops at once like Ctrl-C
    (exit 130), no file appears half-written, and the folder's lock goes with it."""
    run_dir = list(run(cfg_for(1), tmp_path))[-1].run_dir
    code, rest = sigterm_at(["export", str(run_dir), "--format", "obj", "--texture-size", "1024", "--resolution", "96"],
                            "export 1/")
    assert code == 130 and "SIGTERM: stopping now" in rest, rest
    assert not list(run_dir.glob("asset.obj")) and not list(run_dir.glob(".asset*"))
    assert main(["export", str(run_dir), "--format", "obj"]) == 0 and (run_dir / "asset.obj").is_file()


@pytest.mark.slow
def test_two_resumes_at_once_the_second_is_refused_before_anything_changes(tmp_path, capsys):
    """The lock is taken before the checks and the model load: a second `studio resume` a moment after the first
    gets exit 2 and one line, and the first ends alone (before the lock, both trained: duplicate log lines, a
    crash in the other's .assets.tmp, `failed` beside a finished asset)."""
    import subprocess
    import sys

    from studio.reexport import export_run

    run_dir = stop_after(run(cfg_for(400, ["log.checkpoint_every=1"]), tmp_path), 2)
    first = subprocess.Popen([sys.executable, "-m", "studio.cli", "resume", str(run_dir)], stderr=subprocess.PIPE,
                             text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        for line in first.stderr:  # the first resume is training
            if line.startswith("step "):
                break
        log_before = (run_dir / "log.jsonl").read_text()
        assert main(["resume", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"process {first.pid}" in err  # "still running" or "in use" by it
        with pytest.raises(UserError, match="in use"):
            export_run(run_dir, "obj")
        assert (run_dir / "log.jsonl").read_text().startswith(log_before)  # the refused ones wrote nothing
    finally:
        first.terminate()
        first.communicate(timeout=120)
    assert status(run_dir)["status"] == "cancelled"  # SIGTERM: the first one stopped cleanly
    steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # one writer: no step twice
    list(resume(run_dir, steps=steps[-1] + 1))  # the lock went with the process
    assert status(run_dir)["status"] == "finished"


def test_two_resumes_in_one_process_the_second_is_refused(tmp_path):
    """The web UI resumes in its own process, where the pid check cannot tell the two apart: the lock does."""
    run_dir = stop_after(run(cfg_for(6), tmp_path), 2)
    first = resume(run_dir)
    assert isinstance(next(first), Started)
    with pytest.raises(UserError, match="in use by another studio run"):
        next(resume(run_dir))
    first.close()  # cancelled, lock released
    assert isinstance(list(resume(run_dir))[-1], Finished)


@pytest.mark.parametrize("killed_at", ["after moving the old one aside", "while writing the new one"])
def test_a_kill_inside_a_checkpoint_write_resumes_from_the_whole_checkpoint(tmp_path, killed_at):
    """save_checkpoint swaps checkpoint.tmp in by two renames; a kill between them left only checkpoint.old (whole),
    which resume ignored ("no checkpoint"). Now the whole one is put back and the run resumes bit-exactly."""
    import shutil

    reference = list(run(cfg_for(6), tmp_path / "ref"))[-1].run_dir
    run_dir = stop_after(run(cfg_for(6), tmp_path / "killed"), 3)  # checkpoint at step 3
    ckpt = run_dir / "checkpoint"
    if killed_at == "after moving the old one aside":
        ckpt.rename(run_dir / "checkpoint.old")  # and checkpoint.tmp (a newer write) half-written
        shutil.copytree(run_dir / "checkpoint.old", run_dir / "checkpoint.tmp")
        (run_dir / "checkpoint.tmp" / "meta.json").unlink()
    else:
        shutil.copytree(ckpt, run_dir / "checkpoint.tmp")
        (run_dir / "checkpoint.tmp" / "scene.safetensors").write_bytes(b"half")
        (run_dir / "checkpoint.tmp" / "meta.json").unlink()
    events = list(resume(run_dir))
    assert events[0].total_steps == 6 and [e.step for e in events if isinstance(e, Progress)] == [4, 5, 6]
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint"]
    for key, value in checkpoint(reference).items():
        torch.testing.assert_close(checkpoint(run_dir)[key], value, rtol=0, atol=0, msg=key)


def test_a_run_still_running_in_another_process_is_refused(tmp_path, capsys):
    import subprocess
    import sys

    run_dir = list(run(cfg_for(1, ["log.preview_every=0"]), tmp_path))[-1].run_dir
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        st = status(run_dir)
        (run_dir / "status.json").write_text(json.dumps({**st, "status": "running", "pid": other.pid}))
        before = snapshot(run_dir)
        assert main(["resume", str(run_dir)]) == 2
        assert f"still running (process {other.pid})" in capsys.readouterr().err
        assert snapshot(run_dir) == before
    finally:
        other.kill()
        other.wait()


class FailingNeRF(NeRF):
    """A real NeRF whose step 3 raises (an out-of-memory, a bug): the run is marked failed."""

    def before_step(self, step):
        if step == 3:
            raise RuntimeError("boom at step 3")
        super().before_step(step)


def test_a_failed_run_resumes_from_its_last_periodic_checkpoint(tmp_path, monkeypatch):
    import representations

    monkeypatch.setitem(representations.REGISTRY, "nerf", "tests.test_resume:FailingNeRF")
    with pytest.raises(RuntimeError, match="boom"):
        list(run(cfg_for(5, ["log.checkpoint_every=2", "log.preview_every=0"]), tmp_path))
    (run_dir,) = tmp_path.iterdir()
    st = status(run_dir)
    assert st["status"] == "failed" and st["checkpoint_step"] == 2  # no checkpoint of the half-done step 4
    monkeypatch.undo()
    events = list(resume(run_dir))
    assert [e.step for e in events if isinstance(e, Progress)] == [3, 4, 5]
    assert status(run_dir)["status"] == "finished"


# ---- damaged run folders: one line naming the file and the fix, nothing changed (issue 19) -----------------
@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run of 3 steps stopped after step 1 (checkpoint at step 1): resumable. Copy it before damaging it."""
    return stop_after(run(cfg_for(3, ["log.preview_every=0"]), tmp_path_factory.mktemp("stopped")), 1)


def damaged_copy(stopped_run, tmp_path, name: str, data: bytes | None):
    """A copy of the stopped run with RUN_DIR/name overwritten by `data` (deleted when None)."""
    import shutil

    run_dir = shutil.copytree(stopped_run, tmp_path / "run")
    path = run_dir / name
    path.unlink() if data is None else path.write_bytes(data)
    return run_dir, path


def one_error_line(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def but_lock(snap: dict) -> dict:
    return {k: v for k, v in snap.items() if k.name != ".lock"}  # the lock file holds the pid of its last holder


def half(path) -> bytes:
    return path.read_bytes()[: path.stat().st_size // 2]


START_AGAIN = "start again with studio generate --config"


@pytest.mark.parametrize("name, damage, fix", [
    ("checkpoint/scene.safetensors", half, START_AGAIN),
    ("checkpoint/scene.safetensors", lambda p: b"not a checkpoint at all", START_AGAIN),
    ("checkpoint/distillation.safetensors", lambda p: b"", START_AGAIN),
    ("checkpoint/rng.safetensors", half, START_AGAIN),
    ("checkpoint/meta.json", lambda p: b'{"step": ', START_AGAIN),
    ("checkpoint/meta.json", lambda p: b'{"step": "one"}', START_AGAIN),
    ("config.toml", lambda p: p.read_bytes()[:-40] + b"\n[camera\n", "or copy {run}/checkpoint/config.toml over it"),
    ("config.toml", lambda p: b"\xff\xfe garbage", "or copy {run}/checkpoint/config.toml over it"),
    ("config.toml", None, "copy {run}/checkpoint/config.toml there"),
    ("status.json", lambda p: p.read_bytes()[:10], "delete it and resume again"),
    ("status.json", lambda p: b'["running"]', "delete it and resume again"),
])
def test_a_damaged_run_folder_resumes_with_one_line_and_changes_nothing(stopped_run, tmp_path, capsys, name,
                                                                         damage, fix):
    """A truncated or garbage checkpoint file, meta.json, config.toml or status.json used to give a traceback
    (some after the model had loaded); now one line naming the file and what to do, before anything changes."""
    run_dir, path = damaged_copy(stopped_run, tmp_path, name, None if damage is None else damage(stopped_run / name))
    before = snapshot(run_dir)
    err = one_error_line(["resume", str(run_dir)], capsys)
    assert str(path) in err and fix.format(run=run_dir) in err, err
    assert snapshot(run_dir) == before


def test_following_the_fix_of_a_damaged_status_or_checkpoint_resumes_the_run(stopped_run, tmp_path, capsys):
    import shutil

    run_dir, status_path = damaged_copy(stopped_run, tmp_path, "status.json", b"{")
    one_error_line(["resume", str(run_dir)], capsys)
    status_path.unlink()  # "delete it and resume again"
    assert main(["resume", str(run_dir)]) == 0 and status(run_dir)["status"] == "finished"
    capsys.readouterr()

    # a kill after the swap, before checkpoint.old was removed, then the new checkpoint damaged: the old one is whole
    run_dir = shutil.copytree(stopped_run, tmp_path / "two-copies")
    shutil.copytree(run_dir / "checkpoint", run_dir / "checkpoint.old")
    scene = run_dir / "checkpoint" / "scene.safetensors"
    scene.write_bytes(half(scene))
    err = one_error_line(["resume", str(run_dir)], capsys)
    assert (f"{scene} is unreadable" in err and
            f"{run_dir / 'checkpoint.old'} is a whole checkpoint (step 1): replace {run_dir / 'checkpoint'} with it" in err)
    shutil.rmtree(run_dir / "checkpoint")
    (run_dir / "checkpoint.old").rename(run_dir / "checkpoint")
    assert main(["resume", str(run_dir)]) == 0 and status(run_dir)["status"] == "finished"


@pytest.mark.parametrize("name, damage, fix", [
    ("checkpoint/scene.safetensors", half, START_AGAIN),
    ("checkpoint/config.toml", lambda p: b"[representation\n", "or copy {run}/config.toml over it"),
    ("checkpoint/config.toml", None, "copy {run}/config.toml there"),
])
def test_a_damaged_checkpoint_exports_with_one_line(stopped_run, tmp_path, capsys, name, damage, fix):
    run_dir, path = damaged_copy(stopped_run, tmp_path, name, None if damage is None else damage(stopped_run / name))
    before = snapshot(run_dir)
    err = one_error_line(["export", str(run_dir), "--format", "ply"], capsys)
    assert str(path) in err and fix.format(run=run_dir) in err, err
    assert but_lock(snapshot(run_dir)) == but_lock(before)


def edit_toml(path, *keys: str) -> None:
    """Delete the dotted `keys` from the TOML file `path`, as a user editing it by hand would."""
    import tomllib

    import tomli_w

    tree = tomllib.loads(path.read_text())
    for key in keys:
        *sections, leaf = key.split(".")
        node = tree
        for name in sections:
            node = node[name]
        del node[leaf]
    path.write_text(tomli_w.dumps(tree))


def test_a_key_deleted_from_config_toml_is_the_runs_not_the_default(stopped_run, tmp_path):
    """`steps` deleted from a run's config.toml used to resume with the default 800 steps instead of the run's 3:
    keys the file lacks now come from the checkpoint's copy, and only when that lacks them too (a run of an older
    studio) from the defaults; the resumed run writes config.toml whole again."""
    import shutil

    from studio.config import LogConfig, RunConfig
    from studio.resume import check_resumable

    run_dir = shutil.copytree(stopped_run, tmp_path / "run")
    edit_toml(run_dir / "config.toml", "steps", "camera.resolution", "representation.kind", "log.log_every")
    edit_toml(run_dir / "checkpoint" / "config.toml", "log.log_every")  # as if written before log_every existed
    cfg, done = check_resumable(run_dir, None)
    assert (cfg.steps, cfg.camera.resolution, cfg.representation.kind, done) == (3, 32, "nerf", 1)
    assert cfg.log.log_every == LogConfig().log_every and RunConfig().steps != 3
    events = list(resume(run_dir))
    assert [e.step for e in events if isinstance(e, Progress)] == [2, 3] and isinstance(events[-1], Finished)
    assert "steps = 3" in (run_dir / "config.toml").read_text() and "resolution = 32" in (run_dir / "config.toml").read_text()


def test_a_key_deleted_from_the_checkpoints_config_is_taken_from_the_runs_on_export(stopped_run, tmp_path):
    import shutil

    from studio.config import ExportConfig
    from studio.reexport import load_scene

    run_dir = shutil.copytree(stopped_run, tmp_path / "run")
    edit_toml(run_dir / "checkpoint" / "config.toml", "steps", "export.mesh_resolution")
    cfg, _ = load_scene(run_dir)
    assert (cfg.steps, cfg.export.mesh_resolution) == (3, 32) and ExportConfig().mesh_resolution != 32


def test_a_full_disk_fails_with_one_line_and_no_finished_asset(tmp_path):
    """The disk fills at the first checkpoint (here: a file size limit, RLIMIT_FSIZE, which fails writes like a
    full disk): one line naming the file and the fix, exit 1, the folder says failed, no asset. (safetensors wraps
    the write error in its own type: it was a traceback.)"""
    import resource
    import signal
    import subprocess
    import sys

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (600_000, 600_000))

    args = [sys.executable, "-m", "studio.cli", "generate", "a red cube", "--steps", "4", "--out", str(tmp_path),
            *[a for item in FAST for a in ("--set", item)], "--set", "log.checkpoint_every=2",
            "--set", "representation.grid.log2_table=12"]
    full = subprocess.run(args, capture_output=True, text=True, preexec_fn=small_files,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    err = full.stderr.strip().splitlines()
    assert full.returncode == 1 and err[-1].startswith("error: File too large while writing "), full.stderr
    assert "Traceback" not in full.stderr
    (run_dir,) = tmp_path.iterdir()
    assert "checkpoint.tmp/scene.safetensors; free some space" in err[-1]
    assert status(run_dir)["status"] == "failed" and not list(run_dir.glob("asset*"))
