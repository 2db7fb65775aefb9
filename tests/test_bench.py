"""The quality benchmark's measures (checked on ground-truth objects) and `studio-bench` end to end."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from representations.cameras import Cameras
from representations.shading import Shading
from measure import metrics as q
from measure import quality as bq
from measure import report
from measure.cli import main
from measure.color import ciede2000, delta_e_rgb, srgb_to_lab
from world import get_object
from world.objects import House, SDFObject
from world.render import render_object

pytestmark = pytest.mark.usefixtures("small_exports")  # tests/conftest.py: small bakes and fidelity checks


def test_ciede2000_matches_published_pairs():
    # Sharma, Wu & Dalal (2005), test data rows 1, 2, 3, 7, 17 and 8.
    lab1 = torch.tensor([[50, 2.6772, -79.7751], [50, 3.1571, -77.2803], [50, 2.8361, -74.0200],
                         [50, 0, 0], [50, 2.5, 0], [50, 2.49, -0.001]], dtype=torch.float64)
    lab2 = torch.tensor([[50, 0, -82.7485], [50, 0, -82.7485], [50, 0, -82.7485],
                         [50, -1, 2], [50, 0, -2.5], [50, -2.49, 0.0009]], dtype=torch.float64)
    expected = torch.tensor([2.0425, 2.8615, 3.4412, 2.3669, 4.3065, 7.1792], dtype=torch.float64)
    assert torch.allclose(ciede2000(lab1, lab2), expected, atol=1e-4)
    assert torch.allclose(ciede2000(lab2, lab1), expected, atol=1e-4)  # symmetric


def test_srgb_to_lab_reference_colours():
    lab = srgb_to_lab(torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert torch.allclose(lab[0], torch.tensor([100.0, 0, 0], dtype=torch.float64), atol=1e-3)
    assert torch.allclose(lab[1], torch.tensor([53.24, 80.09, 67.20], dtype=torch.float64), atol=0.02)
    assert torch.allclose(lab[2], torch.zeros(3, dtype=torch.float64), atol=1e-6)
    red, orange, blue = torch.tensor([0.86, 0.12, 0.12]), torch.tensor([0.96, 0.51, 0.08]), torch.tensor([0.14, 0.31, 0.84])
    assert delta_e_rgb(red, red) < 1e-6 and delta_e_rgb(red, orange) < delta_e_rgb(red, blue)


def test_best_yaw_iou_recovers_a_rotation_and_tells_shapes_apart():
    res, bound = 24, 1.0
    pts = q.grid_points(res, bound)
    house = get_object("house")
    turned = house.occupancy(q.rotate_y(pts, math.radians(60)))  # a house turned by 60 degrees
    iou, yaw = q.best_yaw_iou(turned, house, res, bound, yaw_steps=12)
    assert iou > 0.97 and yaw == pytest.approx(60.0)
    assert q.best_yaw_iou(turned, get_object("sphere"), res, bound)[0] < 0.8


def test_size_free_iou_recovers_a_scale_and_still_tells_shapes_apart():
    res, bound = 32, 1.0
    pts = q.grid_points(res, bound)
    cube = get_object("cube")
    big = cube.occupancy(q.rotate_y(pts, math.radians(30)) / 1.2)  # a cube turned by 30 degrees, 1.2x too big
    assert q.best_yaw_iou(big, cube, res, bound)[0] < 0.75  # plain IoU punishes the size
    sized, yaw, scale = q.size_free_iou(big, cube, res, bound)
    assert sized > 0.95 and yaw % 90 == pytest.approx(30.0) and scale == pytest.approx(1.2)
    assert q.size_free_iou(big, get_object("sphere"), res, bound)[0] < 0.85


def test_chamfer_is_zero_on_itself_and_grows_with_an_offset():
    pts = q.truth_surface(get_object("sphere"), n=2000)
    assert np.linalg.norm(pts, axis=1) == pytest.approx(0.6, abs=0.01)  # on the true sphere
    assert q.chamfer(pts, pts) == 0.0
    shifted = pts + np.array([0.1, 0.0, 0.0])
    assert 0.05 < q.chamfer(pts, shifted) <= 0.2 + 1e-6


def test_front_count_on_a_circle():
    assert q.front_count([False] * 6) == 0
    assert q.front_count([True, True, False, False, False, True]) == 1  # wraps around
    assert q.front_count([True, False, False, True, False, False]) == 2
    assert q.front_count([True] * 4) == 1


class TruthScene:
    """A world object behind the Representation's render() signature: the measures' ground-truth input."""

    def __init__(self, obj: SDFObject, color) -> None:
        self.obj, self.color = obj, color

    def render(self, cams: Cameras, shading: Shading):
        return render_object(self.obj, self.color, cams, shading)


class JanusHouse(SDFObject):
    """Two houses back to back: a door on the front AND on the back (the multi-face failure)."""

    def __init__(self) -> None:
        super().__init__("janus")
        self.house = House()

    def sdf(self, points):
        return torch.minimum(self.house.sdf(points), self.house.sdf(points * points.new_tensor([-1.0, 1.0, -1.0])))

    def albedo(self, points, color):
        front = self.house.albedo(points, color)
        back = self.house.albedo(points * points.new_tensor([-1.0, 1.0, -1.0]), color)
        return torch.minimum(front, back)


def test_multi_face_score_counts_fronts():
    color = (0.86, 0.12, 0.12)
    house = get_object("house")
    assert q.multi_face_score(TruthScene(house, color), house, color, size=32) == {"fronts": 1, "fronts_truth": 1}
    assert q.multi_face_score(TruthScene(JanusHouse(), color), house, color, size=32)["fronts"] == 2
    assert q.multi_face_score(TruthScene(get_object("cube"), color), house, color, size=32)["fronts"] == 0


def test_silhouette_and_colour_of_the_truth_against_itself_and_a_wrong_shape():
    cams = q.eval_cameras(size=32, n=4)
    red, blue = (0.86, 0.12, 0.12), (0.14, 0.31, 0.84)
    cube = get_object("cube")
    rgb, alpha = q.render_albedo(TruthScene(cube, red), cams)
    t_rgb, t_alpha = q.truth_albedo(cube, red, cams)
    assert q.mask_iou(alpha > 0.5, t_alpha > 0.5) > 0.95
    s_rgb, s_alpha = q.truth_albedo(get_object("torus"), blue, cams)
    assert q.mask_iou(s_alpha > 0.5, t_alpha > 0.5) < 0.8
    fg, fg_blue = q.mean_foreground(rgb, alpha), q.mean_foreground(s_rgb, s_alpha)
    assert delta_e_rgb(fg, q.mean_foreground(t_rgb, t_alpha)) < 2.0 and delta_e_rgb(fg, fg_blue) > 30.0


def test_plan_jobs_quick_covers_every_shape_and_full_crosses_pgc():
    quick = bq.plan_jobs(True, ["nerf", "voxel"], ["sds", "vsd", "csm"], [True], [0], [])
    assert len(quick) == 6 and {j.shape for j in quick} == {s for s, _ in bq.QUICK_CAPTIONS}
    full = bq.plan_jobs(False, ["nerf"], ["sds"], [True, False], [0, 1], ["cube", "sphere"])
    assert len(full) == 2 * 2 * 2 * len(bq.FULL_COLORS) and len({j.key for j in full}) == len(full)


def test_splice_replaces_only_its_section(tmp_path):
    doc = tmp_path / "b.md"
    doc.write_text("# B\n\nkeep me\n")
    report.splice(doc, "x", "one")
    report.splice(doc, "y", "other")
    report.splice(doc, "x", "two")
    text = doc.read_text()
    assert "keep me" in text and "two" in text and "one" not in text and "other" in text
    assert text.count("<!-- x:begin -->") == 1


def test_bench_quality_unknown_kind_is_a_user_error(capsys, tmp_path):
    assert main(["quality", "--representations", "octree", "--out", str(tmp_path)]) == 2
    assert "unknown representation 'octree'" in capsys.readouterr().err


def test_bench_quality_end_to_end_writes_tables_and_resumes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["quality", "--quick", "--representations", "nerf", "--distillations", "sds", "--steps", "2",
            "--workers", "1",
            "--model", "tiny-random", "--out", str(tmp_path / "q"), "--doc", str(tmp_path / "bench.md"),
            "--set", "camera.resolution=32", "--set", "export.mesh_resolution=24", "--set", "export.turntable_frames=0",
            "--set", "representation.blob.bias=0.0"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (tmp_path / "q" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["status"] == "finished" and rows[0]["shape"] == "cube"
    assert 0.0 <= rows[0]["iou"] <= 1.0 and rows[0]["peak_rss_mb"] > 0
    for name in ("quality-quick.csv", "quality-quick.json", "quality-quick.md", "quality-quick-iou.png"):
        assert (tmp_path / "q" / name).exists(), name
    doc = (tmp_path / "bench.md").read_text()
    assert "| nerf + sds |" in doc and "bench-quality-quick-iou.png" in doc
    assert (tmp_path / "docs/images/bench-quality-quick-iou.png").exists()
    capsys.readouterr()
    assert main(args) == 0  # resumes: the finished job is not run again
    assert len((tmp_path / "q" / "results.jsonl").read_text().splitlines()) == 1
    changed = args[:-1] + ["representation.blob.bias=0.5"]
    assert main(changed) == 0  # another setup: the old row is stale, the job runs again
    rows = [json.loads(line) for line in (tmp_path / "q" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["setup"] != rows[1]["setup"]
    summary = json.loads((tmp_path / "q" / "quality-quick.json").read_text())
    assert rows[1]["run_dir"] in json.dumps(summary) and rows[0]["run_dir"] not in json.dumps(summary)


def test_bench_quality_parallel_workers_run_every_job_once(tmp_path, capsys):
    """--quick's default: two single-threaded worker processes; every job lands once, and a rerun resumes."""
    args = ["quality", "--quick", "--representations", "nerf", "--distillations", "sds", "--steps", "2",
            "--seeds", "0", "1", "--model", "tiny-random", "--out", str(tmp_path / "q"),
            "--set", "camera.resolution=32", "--set", "export.mesh_resolution=24", "--set", "export.turntable_frames=0"]
    assert main(args) == 0
    assert "2 at a time" in capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "q" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in rows) == [0, 1] and all(r["status"] == "finished" for r in rows)
    assert len({r["run_dir"] for r in rows}) == 2
    assert main(args) == 0
    assert len((tmp_path / "q" / "results.jsonl").read_text().splitlines()) == 2


def test_bench_quality_rejects_zero_workers(tmp_path, capsys):
    assert main(["quality", "--workers", "0", "--out", str(tmp_path)]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_regression_slice_nerf_sds_red_cube_with_the_embedded_model(tmp_path):
    """The quality benchmark's smallest slice: a change that breaks generation (wrong gradient sign, lost
    colour, an empty scene) fails here. Thresholds are loose: 120 steps measured IoU 0.56 (best other shape
    0.53), silhouette IoU 0.72, ΔE00 7.4; a broken or random gradient gives ΔE00 ≈ 38 and silhouette ≈ 0.6."""
    job = bq.QualityJob(representation="nerf", distillation="sds", pgc=True, shape="cube", color="red", seed=0)
    row = bq.run_job(job, tmp_path, preset="fast", steps=120, model="",
                     overrides=["export.turntable_frames=0", "export.mesh_resolution=48"])
    assert row["status"] == "finished", row.get("error")
    assert not row["empty"]
    assert row["iou"] > 0.4
    assert row["silhouette_iou"] > 0.6
    assert row["delta_e"] < 20.0  # red, not some other colour


def test_shown_paths_are_relative_below_the_working_directory(tmp_path, monkeypatch):
    from studio.paths import shown

    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert shown(tmp_path / "a" / "b") == str(Path("a") / "b")
    assert shown("a/b") == str(Path("a") / "b")
    assert shown(tmp_path.parent) == str(tmp_path.parent.resolve())
