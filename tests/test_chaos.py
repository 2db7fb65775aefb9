"""Chaos: `kill -9` at random points of a run (model load, training steps, checkpoint writes, export stages), then
what a user does next (`studio resume`, or `studio generate` again when the run had no checkpoint yet), until
it finishes. The asset's bytes equal those of a run that was never interrupted."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from studio.checkpoint import complete_checkpoint
from studio.rundir import read_status

TINY = ["guidance.model=tiny-random", "camera.resolution=32", "export.mesh_resolution=32", "export.texture_size=64",
        "export.formats=['glb']", "export.turntable_frames=0", "export.fidelity_views=0", "log.preview_every=0",
        "log.checkpoint_every=2", "log.log_every=1"]
STEPS = 12
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def generate(out) -> list[str]:
    return [sys.executable, "-m", "studio.cli", "generate", "a red cube", "--steps", str(STEPS), "--out", str(out),
            *[a for s in TINY for a in ("--set", s)]]


def resume(run_dir) -> list[str]:
    return [sys.executable, "-m", "studio.cli", "resume", str(run_dir)]


def kill_at(cmd: list[str], target: tuple[str, int], delay: float) -> tuple[int, str]:
    """Start `cmd`, SIGKILL it `delay` s after its stderr shows the `target` line ("step", n) or ("export", k)
    (("start", 0): `delay` s after it starts); (its exit code: -9 when the kill hit it, its stderr so far)."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=ENV)
    seen = []
    try:
        if target[0] == "start":
            time.sleep(delay)
        else:
            prefix = f"{target[0]} {target[1]}/"
            for line in proc.stderr:
                seen.append(line)
                if line.startswith(prefix):
                    time.sleep(delay)
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    return proc.returncode, "".join(seen)


def the_run(out):
    runs = list(out.iterdir()) if out.exists() else []
    assert len(runs) <= 1, runs
    return runs[0] if runs else None


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_gives_the_asset_of_an_uninterrupted_run(tmp_path):
    reference = subprocess.run(generate(tmp_path / "ref"), capture_output=True, text=True, env=ENV)
    assert reference.returncode == 0, reference.stderr
    expected = (the_run(tmp_path / "ref") / "asset.glb").read_bytes()

    rng = random.Random(int(os.environ.get("STUDIO_CHAOS_SEED", "19")))  # another seed explores other kill points
    out, kills, history = tmp_path / "chaos", 0, []
    for attempt in range(20):
        run_dir = the_run(out)
        if run_dir is not None and complete_checkpoint(run_dir / "checkpoint") is None:
            shutil.rmtree(run_dir)  # killed before its first whole checkpoint: what `studio resume` says to do
            run_dir = None
        cmd = generate(out) if run_dir is None else resume(run_dir)
        if kills < 5:
            done_steps = 0 if run_dir is None else json.loads((run_dir / "checkpoint" / "meta.json").read_text())["step"]
            targets = [("start", 0)] + [("step", n) for n in range(done_steps + 1, STEPS)] + [
                ("export", k) for k in range(1, 5)]  # points this process will pass
            target = rng.choice(targets)
            delay = rng.uniform(0.5, 3.0) if target[0] == "start" else rng.uniform(0.0, 0.05)
            code, err = kill_at(cmd, target, delay)
            history.append((cmd[3], target, round(delay, 3), code))
            if code == 0:
                break  # it finished before the kill
            assert code == -signal.SIGKILL, (history, err)
            kills += 1
            continue
        done = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
        assert done.returncode == 0, (history, done.stderr)
        break
    assert kills >= 3, history  # a resume may finish before its kill (a resume after the last step only exports)
    run_dir = the_run(out)
    assert read_status(run_dir)["status"] == "finished", history
    assert (run_dir / "asset.glb").read_bytes() == expected, history
    steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1)), (history, steps)
    assert not list(run_dir.glob("checkpoint.*")) and not (run_dir / ".assets.tmp").exists()
