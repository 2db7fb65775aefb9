"""LODs (studio/export/lods.py): `studio export RUN --format glb --lods ...` writes asset_lod0.glb, ... each read
back by trimesh with about the asked faces, checked by the Khronos validator, and its fidelity reported."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import trimesh

from studio.cli import main
from test_export_tools import needs_validator, validate


def run_cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def lod_run(crisp_run, tmp_path_factory):
    """A copy of the crisp run with a 3-level chain exported (1200, 600, 200 faces)."""
    run_dir = tmp_path_factory.mktemp("lods") / "run"
    shutil.copytree(crisp_run.run_dir, run_dir)
    code = main(["export", str(run_dir), "--format", "glb", "--lods", "1200,600,200"])
    assert code == 0
    return run_dir


def test_every_level_reads_back_with_about_the_asked_faces(lod_run):
    entry = json.loads((lod_run / "metrics.json").read_text())["reexports"][-1]
    assert [lv["faces_asked"] for lv in entry["lods"]] == [1200, 600, 200]
    for i, level in enumerate(entry["lods"]):
        mesh = trimesh.load(lod_run / f"asset_lod{i}.glb", force="mesh")
        assert len(mesh.faces) == level["faces"]
        assert 0.8 * level["faces_asked"] <= level["faces"] <= 1.05 * level["faces_asked"]
        assert level["bytes"] == (lod_run / f"asset_lod{i}.glb").stat().st_size


def test_fidelity_falls_with_fewer_faces_and_stays_above_a_floor(lod_run):
    ious = [lv["export_iou"] for lv in json.loads((lod_run / "metrics.json").read_text())["reexports"][-1]["lods"]]
    assert all(iou > 0.8 for iou in ious), ious
    assert all(b <= a + 0.02 for a, b in zip(ious, ious[1:])), ious


@needs_validator
def test_every_level_passes_the_khronos_validator(lod_run):
    for i in range(3):
        assert validate(lod_run / f"asset_lod{i}.glb")["issues"]["numErrors"] == 0


@pytest.mark.parametrize("bad", ["5000,20000", "1000,50", "abc", "", "2000,2000", "1e3"])
def test_bad_lods_are_one_line_exit_2_and_nothing_written(bad, crisp_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(crisp_run.run_dir, run_dir)
    before = sorted(p.name for p in run_dir.iterdir())
    code, _, err = run_cli(["export", str(run_dir), "--format", "glb", "--lods", bad], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--lods" in err, err
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_lods_with_another_format_is_refused(crisp_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(crisp_run.run_dir, run_dir)
    code, _, err = run_cli(["export", str(run_dir), "--format", "obj", "--lods", "1000,500"], capsys)
    assert code == 2 and "--format glb" in err
    assert not list(run_dir.glob("*_lod*"))


def test_every_level_carries_the_runs_material_factors(crisp_run, tmp_path):
    """The LOD files get the run's export.metallic / export.roughness like the main GLB (they had the defaults)."""
    run_dir = tmp_path / "run"
    shutil.copytree(crisp_run.run_dir, run_dir)
    for toml in (run_dir / "config.toml", run_dir / "checkpoint" / "config.toml"):
        text = toml.read_text()
        assert "metallic = 0.0" in text and "roughness = 0.9" in text
        toml.write_text(text.replace("metallic = 0.0", "metallic = 0.4").replace("roughness = 0.9", "roughness = 0.3"))
    assert main(["export", str(run_dir), "--format", "glb", "--lods", "600,200"]) == 0
    for i in range(2):
        gltf = trimesh.load(run_dir / f"asset_lod{i}.glb", force="mesh")
        material = gltf.visual.material
        assert (material.metallicFactor, material.roughnessFactor) == pytest.approx((0.4, 0.3)), i


def test_a_generate_run_with_export_lods_writes_the_chain(tmp_path, capsys):
    """export.lods in the config (a generate run, a batch job): the levels are written with the run's assets, each
    a progress stage, and reported in metrics.json; a chain that does not decrease is refused before anything."""
    from studio.config import build_config
    from studio.events import Exporting, Finished
    from studio.run import run

    tiny = ["guidance.model=tiny-random", "camera.resolution=32", "export.mesh_resolution=40", "export.faces=1500",
            "export.texture_size=64", "export.turntable_frames=0", "log.preview_every=0", "export.formats=['glb']"]
    cfg = build_config([{"prompt": "a grey ball", "steps": 1}], [*tiny, "export.lods=[600, 200]",
                                                                "representation.blob.bias=0.0",
                                                                "representation.blob.scale=40.0",
                                                                "representation.blob.radius=0.6"])
    events = list(run(cfg, tmp_path / "out"))
    assert [e.stage for e in events if isinstance(e, Exporting)][-2:] == ["write lod 1/2", "write lod 2/2"]
    finished = events[-1]
    assert isinstance(finished, Finished)
    levels = finished.metrics["lods"]
    assert [lv["faces_asked"] for lv in levels] == [600, 200]
    for i, level in enumerate(levels):
        path = finished.run_dir / f"asset_lod{i}.glb"
        assert level["path"] == str(path) and len(trimesh.load(path, force="mesh").faces) == level["faces"]
    assert not (finished.run_dir / ".assets.tmp").exists()
    assert main(["generate", "a red cube", "--out", str(tmp_path / "bad"), "--set", "export.lods=[200, 600]"]) == 2
    assert "must decrease" in capsys.readouterr().err and not (tmp_path / "bad").exists()
