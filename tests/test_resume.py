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


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_and_the_run_resumes(tmp_path):
    """`docker stop`, systemd and Kubernetes send SIGTERM: the CLI finishes the step, checkpoints, says
    'cancelled' and exits 130; without the handler the process died at once and status.json stayed 'running'."""
    import signal
    import subprocess
    import sys

    args = [sys.executable, "-m", "studio.cli", "generate", "a red cube", "--steps", "2000", "--out", str(tmp_path),
            *[a for item in FAST for a in ("--set", item)], "--set", "log.checkpoint_every=0"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = []
    for line in proc.stderr:  # non-TTY progress: a line every 100 steps
        lines.append(line)
        if line.startswith("step "):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, "".join(lines) + rest
    assert "SIGTERM: stopping after this step" in rest and "studio resume" in rest
    (run_dir,) = tmp_path.iterdir()
    done = json.loads((run_dir / "checkpoint" / "meta.json").read_text())["step"]
    assert status(run_dir)["status"] == "cancelled" and status(run_dir)["checkpoint_step"] == done >= 100
    final = list(resume(run_dir, steps=done + 2))[-1]
    assert final.metrics["resumed_from_step"] == done and status(run_dir)["status"] == "finished"


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
