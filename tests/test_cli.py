"""The `studio` command end to end, with the small random model at 32 px and a few steps."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import trimesh

import representations
from studio.cli import main

pytestmark = pytest.mark.usefixtures("small_exports")  # tests/conftest.py: small bakes and fidelity checks

VALID_KINDS = ", ".join(sorted(representations.REGISTRY))

FAST = ["--model", "tiny-random", "--set", "camera.resolution=32", "--set", "export.mesh_resolution=32",
        "--set", "export.turntable_frames=4", "--set", "export.turntable_size=32", "--set", "log.preview_every=2"]
DENSE = ["--set", "representation.blob.bias=0.0"]  # start from a solid blob, so even 2 random steps leave a surface


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args, message", [
    (["generate", ""], "prompt is empty"),
    (["generate", "a cube", "--representation", "octree"], f"unknown representation 'octree'; valid: {VALID_KINDS}"),
    (["generate", "a cube", "--distillation", "xyz"], "unknown distillation 'xyz'; valid:"),
    (["generate", "a cube", "--steps", "0"], "steps = 0 is out of range; allowed: 1 .. 1000000"),
    (["generate", "a cube", "--set", "camera.fovv=3"], "valid keys: radius"),
    (["generate", "a cube", "--set", "steps"], "--set expects key=value"),
    (["generate", "a cube", "--preset", "nope"], "unknown preset 'nope'"),
    (["generate", "a cube", "--config", "/nonexistent/config.toml"], "does not exist"),
    (["generate", "a cube", "--model", "/nonexistent/model-folder"], "/nonexistent/model-folder"),
    (["generate", "a cube", "--init-from", "/nonexistent/run"], "not a run directory"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    out_dir = tmp_path / "out"
    code, out, err = run_cli(args + ["--out", str(out_dir)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_generate_writes_a_finished_run(tmp_path, capsys):
    code, out, err = run_cli(["generate", "a red cube", "--steps", "4", "--out", str(tmp_path), *FAST, *DENSE], capsys)
    assert code == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path and run_dir.is_dir()
    assert "RANDOM" in err  # the random model says so plainly
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    for name in ("config.toml", "log.jsonl", "metrics.json", "turntable.gif", "checkpoint/scene.safetensors"):
        assert (run_dir / name).exists(), name
    assert len(list((run_dir / "previews").glob("*.png"))) >= 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["steps_per_second"] > 0
    logs = [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines()]
    assert logs[-1]["step"] == 4 and all("loss" in l for l in logs)
    assert metrics["mesh_faces"] > 0
    mesh = trimesh.load(run_dir / "asset.glb", force="mesh")
    assert len(mesh.faces) == metrics["export_faces"] > 0  # cleaned and simplified (docs/export.md)
    assert mesh.visual.kind == "texture" and mesh.visual.material.baseColorTexture is not None
    assert f"glb: {run_dir / 'asset.glb'}" in out
    for fmt in ("obj", "ply"):
        assert len(trimesh.load(run_dir / f"asset.{fmt}", force="mesh").faces) == metrics["export_faces"]
    assert stage_lines(err) == [f"{i}/9: {name}" for i, name in enumerate(EXPORT_STAGES, 1)]


EXPORT_STAGES = ["extract mesh", "simplify", "unwrap UVs", "bake texture", "fidelity check",
                 "write glb", "write obj", "write ply", "turntable"]


def stage_lines(err: str) -> list[str]:
    """"I/N: stage" of each `export I/N: stage (S s so far)` line on stderr."""
    return [line.removeprefix("export ").rsplit(" (", 1)[0] for line in err.splitlines()
            if line.startswith("export ") and line.endswith(" s so far)")]


def test_export_stages_print_after_the_bar_on_a_tty():
    import io

    from studio.events import Exporting, Progress
    from studio.progress import _print_event

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    _print_event(Progress(2, 2, 0.5, 1.0, 0.0), stream, True, 1)
    _print_event(Exporting("unwrap UVs", 3, 7, 12.34), stream, True, 1)
    bar, line = stream.getvalue().split("\n")[:2]
    assert bar.startswith("\r[") and line == "export 3/7: unwrap UVs (12.3 s so far)"


def test_config_toml_reproduces_the_run(tmp_path, capsys):
    code, out, _ = run_cli(["generate", "a blue sphere", "--steps", "3", "--seed", "5", "--out", str(tmp_path / "a"),
                            *FAST], capsys)
    first = Path(out.strip().splitlines()[-1])
    code, out, _ = run_cli(["generate", "--config", str(first / "config.toml"), "--out", str(tmp_path / "b")], capsys)
    second = Path(out.strip().splitlines()[-1])
    assert code == 0
    assert (first / "config.toml").read_text() == (second / "config.toml").read_text()
    losses = lambda d: [json.loads(l)["loss"] for l in (d / "log.jsonl").read_text().splitlines()]  # noqa: E731
    assert losses(first) == pytest.approx(losses(second), rel=1e-5)


def test_batch_runs_every_job_and_survives_a_failing_one(tmp_path, capsys):
    batch = tmp_path / "jobs.toml"
    opts = 'model = "tiny-random"\nsteps = 2\nset = ["camera.resolution=32", "export.mesh_resolution=32", "export.turntable_frames=0"]\n'
    batch.write_text(
        f'[[job]]\nprompt = "a red cube"\n{opts}\n'
        f'[[job]]\nprompt = "a broken job"\nsteps = 2\nmodel = "{tmp_path}/missing-model"\n\n'
        f'[[job]]\nprompt = "a green cone"\nseed = 4\n{opts}'
    )
    code, out, _ = run_cli(["batch", str(batch), "--out", str(tmp_path / "out")], capsys)
    assert code == 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [j["status"] for j in manifest["jobs"]] == ["finished", "failed", "finished"]
    assert "missing-model" in manifest["jobs"][1]["error"]
    for job in (manifest["jobs"][0], manifest["jobs"][2]):
        assert json.loads((Path(job["run_dir"]) / "status.json").read_text())["status"] == "finished"
    assert out.strip().splitlines()[-1].endswith("manifest.json")


def test_text_batch_file(tmp_path, capsys):
    batch = tmp_path / "prompts.txt"
    batch.write_text("a red cube\n\n# a comment\na blue sphere\na green cone\n")
    from studio.batch import read_jobs
    assert [j["prompt"] for j in read_jobs(batch)] == ["a red cube", "a blue sphere", "a green cone"]


@pytest.mark.parametrize("content, message", [
    ("", "has no prompts"),
    ("[[job]]\nprompt = 'x'\nstepz = 3\n", "unknown key 'stepz'"),
    ("[[job]\nprompt = 'x'\n", "not valid TOML"),
    ("[[job]]\nprompt = 'x'\nsteps = -1\n", "job 1: steps = -1 is out of range"),
])
def test_malformed_batch_file(tmp_path, capsys, content, message):
    suffix = ".txt" if content == "" else ".toml"
    batch = tmp_path / f"jobs{suffix}"
    batch.write_text(content)
    code, _, err = run_cli(["batch", str(batch), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_init_from_a_run_that_the_representation_cannot_use_is_a_user_error(tmp_path, capsys):
    code, out, _ = run_cli(["generate", "a red cube", "--steps", "2", "--out", str(tmp_path / "a"), *FAST, *DENSE], capsys)
    source = out.strip().splitlines()[-1]
    code, out, err = run_cli(["generate", "a red cube", "--steps", "2", "--init-from", source,
                              "--out", str(tmp_path / "b"), *FAST], capsys)
    assert code == 2 and "cannot be initialised from another run" in err, err
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_export_rewrites_a_format(tmp_path, capsys):
    code, out, _ = run_cli(["generate", "a red cube", "--steps", "2", "--out", str(tmp_path), *FAST, *DENSE,
                            "--set", 'export.formats=["glb"]'], capsys)
    run_dir = Path(out.strip().splitlines()[-1])
    assert not (run_dir / "asset.ply").exists()
    code, out, err = run_cli(["export", str(run_dir), "--format", "ply", "--resolution", "32"], capsys)
    assert code == 0 and out.strip().splitlines()[-1] == str(run_dir / "asset.ply")
    assert stage_lines(err) == ["1/5: extract mesh", "2/5: simplify", "3/5: unwrap UVs", "4/5: bake texture",
                                "5/5: write ply"]  # the run's texture, no fidelity check on a re-export
    assert len(trimesh.load(run_dir / "asset.ply").faces) > 0


def test_export_of_a_non_run_is_a_user_error(tmp_path, capsys):
    code, _, err = run_cli(["export", str(tmp_path), "--format", "glb"], capsys)
    assert code == 2 and "no checkpoint" in err


def test_a_bad_out_fails_before_the_model_loads(tmp_path, capsys):
    """--out a file used to give a traceback after the model had loaded (a minute with a real one); now one line
    at once: the bad --model given too is never reached."""
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    code, _, err = run_cli(["generate", "a cube", "--model", "/nonexistent/model", "--out", str(taken / "runs")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{taken} is a file, not a folder" in err and "model" not in err.split("--out")[0]
    assert taken.read_text() == "mine"


def test_export_to_a_missing_folder_fails_before_loading_the_scene(tmp_path, capsys, crisp_run):
    code, _, err = run_cli(["export", str(crisp_run.run_dir), "--format", "obj", "--out", str(tmp_path / "no/x.obj")],
                           capsys)
    assert code == 2 and "does not exist; create it" in err and len(err.strip().splitlines()) == 1


def test_a_hub_id_without_network_is_one_short_line(tmp_path):
    """An id neither on disk nor cached, and no network (the hub endpoint refuses connections): diffusers' two
    warning lines and a ~600-character error that pointed to a stack trace not shown used to come out."""
    import os

    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path / "cache"),
           "HF_HUB_OFFLINE": "0", "OMP_NUM_THREADS": "1"}
    exe = Path(sys.executable).with_name("studio")
    out = subprocess.run([str(exe), "generate", "a red cube", "--model", "someone/not-a-model",
                          "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and len(lines[0]) < 200, out.stderr
    assert "'someone/not-a-model' is neither a local folder nor in the local hub cache" in lines[0]
    assert "download it where there is network, pass a folder, or omit --model" in lines[0]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_console_script_help_and_error_exit_code(tmp_path):
    exe = Path(sys.executable).with_name("studio")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "generate" in out.stdout
    out = subprocess.run([str(exe), "generate", "x", "--steps", "-3", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip() == "error: steps = -3 is out of range; allowed: 1 .. 1000000"
