"""STL and 3MF for printing (studio/export/printable.py, printability.py, stl.py, threemf.py), each read back by a
real reader: trimesh (STL), manifold3d, lib3mf (3MF colour), headless Blender (STL import, skipped without it).
The printability numbers are checked on shapes whose answers are known (a cube, a thin plate, a table)."""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import trimesh

from studio.cli import main
from studio.export.asset import ExportMesh
from studio.export.printability import printability, wall_thickness
from studio.export.printable import print_solid
from studio.export.stl import stl_bytes, write_stl
from studio.export.threemf import write_3mf

ROOT = Path(__file__).resolve().parents[1]
BLENDER = shutil.which("blender")


def export_mesh(tm: trimesh.Trimesh, color=(0.5, 0.5, 0.5)) -> ExportMesh:
    """An ExportMesh (metres, Y up) of a trimesh, one colour."""
    v, f = tm.vertices.astype(np.float32), tm.faces.astype(np.int64)
    return ExportMesh(v, f, np.zeros_like(v), np.tile(np.float32(color), (len(v), 1)))


def seam_split(tm: trimesh.Trimesh) -> trimesh.Trimesh:
    """The same surface with every face's corners their own vertices: what UV seams do to a textured mesh."""
    return trimesh.Trimesh(tm.vertices[tm.faces].reshape(-1, 3), np.arange(3 * len(tm.faces)).reshape(-1, 3),
                           process=False)


def read_stl(path: Path) -> trimesh.Trimesh:
    return trimesh.load(path, file_type="stl")  # trimesh merges the STL's corner copies by position


def assert_printable(tm: trimesh.Trimesh, height_mm: float) -> None:
    """Watertight, one consistently oriented outward volume, `height_mm` tall (within 1 %), resting on z = 0."""
    assert tm.is_watertight and tm.is_winding_consistent and tm.is_volume and tm.body_count == 1
    assert tm.volume > 0  # outward
    assert tm.extents[2] == pytest.approx(height_mm, rel=0.01)
    assert tm.bounds[0, 2] == pytest.approx(0.0, abs=1e-3)


def manifold_accepts(tm: trimesh.Trimesh) -> bool:
    import manifold3d

    mesh = manifold3d.Mesh(np.ascontiguousarray(tm.vertices, np.float32), np.ascontiguousarray(tm.faces, np.uint32))
    return manifold3d.Manifold(mesh).status() == manifold3d.Error.NoError


# ---- the print solid --------------------------------------------------------------------------------------
def test_a_seam_split_mesh_with_a_hole_and_a_flipped_face_becomes_one_closed_outward_solid(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    faces = sphere.faces.copy()
    faces[5] = faces[5, [0, 2, 1]]  # one face wound the wrong way
    broken = seam_split(trimesh.Trimesh(sphere.vertices, np.delete(faces, [40, 41], 0), process=False))  # a hole
    assert not trimesh.Trimesh(broken.vertices, broken.faces).is_watertight
    solid = print_solid(export_mesh(broken), height_mm=30.0)
    assert solid.manifold and solid.repairs["holes_filled"] >= 1 and solid.repairs["welded_vertices"] > 0
    (path,) = write_stl(export_mesh(broken), tmp_path / "ball.stl", height_mm=30.0)
    back = read_stl(path)
    assert_printable(back, 30.0)
    assert manifold_accepts(back)


def test_faces_on_an_edge_shared_by_four_faces_are_dropped_and_the_holes_closed():
    v = np.array([[0, 0, 0], [0, 1, 0], [1, 0.5, 0.5], [1, 0.5, -0.5], [-1, 0.5, 0.5], [-1, 0.5, -0.5]]) * 0.1
    tets = []
    for apex in ([2, 3], [4, 5]):  # two tetrahedra hinged on the edge 0-1
        t = trimesh.Trimesh(v[[0, 1, *apex]], [[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
        t.fix_normals()
        tets.append(t)
    both = trimesh.util.concatenate(tets)
    solid = print_solid(export_mesh(both), height_mm=20.0)
    assert solid.manifold and solid.repairs["dropped_faces"] == 4 and solid.repairs["holes_filled"] == 2
    tm = trimesh.Trimesh(solid.vertices, solid.faces)
    assert tm.is_watertight and tm.is_winding_consistent and solid.volume_mm3 > 0
    assert tm.volume == pytest.approx(solid.volume_mm3)


def test_y_up_metres_become_z_up_millimetres_at_the_asked_height():
    tall = trimesh.creation.box((0.1, 0.4, 0.2))  # Y up: 0.4 m tall, 0.2 m deep
    solid = print_solid(export_mesh(tall), height_mm=80.0)
    assert np.ptp(solid.vertices, 0) == pytest.approx([20.0, 40.0, 80.0])  # x, depth -> y, height -> z
    assert solid.vertices[:, 2].min() == pytest.approx(0.0)
    assert solid.vertices[:, :2].max(0) == pytest.approx(-solid.vertices[:, :2].min(0))  # centred on the bed
    assert solid.volume_mm3 == pytest.approx(20 * 40 * 80)


# ---- printability numbers on known shapes -----------------------------------------------------------------
def test_printability_of_a_cube_and_a_thin_plate():
    cube = printability(print_solid(export_mesh(trimesh.creation.box((0.02, 0.02, 0.02))), height_mm=20.0))
    assert cube["watertight"] and cube["manifold"] and cube["volume_mm3"] == pytest.approx(8000.0)
    assert cube["size_mm"] == pytest.approx([20, 20, 20]) and cube["min_wall_mm"] == pytest.approx(20.0)
    assert cube["overhang_share"] == 0.0  # the bottom lies on the bed
    plate = printability(print_solid(export_mesh(trimesh.creation.box((0.04, 0.04, 0.002))), height_mm=40.0))
    assert plate["min_wall_mm"] == pytest.approx(2.0) and plate["volume_mm3"] == pytest.approx(40 * 40 * 2)


def test_overhang_share_of_a_table_is_its_tops_underside():
    """A 10 x 10 x 20 mm leg under a 30 x 30 x 5 mm top: the top's underside (900 - 100 mm^2) overhangs."""
    import manifold3d

    leg = manifold3d.Manifold.cube((10, 10, 20)).translate((10, 10, 0))
    top = manifold3d.Manifold.cube((30, 30, 5)).translate((0, 0, 20))
    m = (leg + top).to_mesh()
    v = np.asarray(m.vert_properties)[:, :3] / 1000.0  # mm -> m, Z up -> Y up: (x, y, z) -> (x, z, -y)
    tm = trimesh.Trimesh(np.stack([v[:, 0], v[:, 2], -v[:, 1]], 1), np.asarray(m.tri_verts), process=False)
    report = printability(print_solid(export_mesh(tm), height_mm=25.0))
    area = 2 * 30 * 30 + 4 * 30 * 5 + 4 * 10 * 20  # the top's 2 faces and rims, the leg's sides (its ends hidden)
    assert report["overhang_share"] == pytest.approx(800 / area, abs=1e-4)
    assert report["volume_mm3"] == pytest.approx(10 * 10 * 20 + 30 * 30 * 5)
    assert report["min_wall_mm"] == pytest.approx(5.0)  # the top's thickness


def test_wall_rays_measure_a_sphere_through_its_centre():
    s = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    walls = wall_thickness(s.vertices, s.faces, samples=64)
    assert np.all(np.isfinite(walls)) and walls == pytest.approx(20.0, rel=0.01)


# ---- files, read back -------------------------------------------------------------------------------------
def test_stl_is_binary_with_outward_normals(tmp_path):
    solid = print_solid(export_mesh(trimesh.creation.icosphere(subdivisions=1, radius=0.5)), height_mm=10.0)
    data = stl_bytes(solid)
    assert len(data) == 84 + 50 * len(solid.faces)
    rec = np.frombuffer(data[84:], np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]))
    centroid = rec["v"].mean(1) - rec["v"].reshape(-1, 3).mean(0)
    assert (np.einsum("ij,ij->i", rec["n"], centroid) > 0).all()


def test_3mf_reads_back_in_lib3mf_with_its_colours_in_millimetres(tmp_path):
    lib3mf = pytest.importorskip("lib3mf")
    box = trimesh.creation.box((0.02, 0.02, 0.02))
    mesh = export_mesh(box, (1.0, 0.0, 0.0))
    mesh.colors[box.vertices[:, 1] > 0] = (0.0, 0.0, 1.0)  # the top is blue, the bottom red
    (path,) = write_3mf(mesh, tmp_path / "box.3mf", height_mm=20.0)
    wrapper = lib3mf.get_wrapper()
    model = wrapper.CreateModel()
    model.QueryReader("3mf").ReadFromFile(str(path))
    assert model.GetUnit() == lib3mf.ModelUnit.MilliMeter
    objects = model.GetMeshObjects()
    assert objects.MoveNext()
    obj = objects.GetCurrentMeshObject()
    assert obj.GetTriangleCount() == 12 and obj.GetVertexCount() == 8
    seen = set()
    for t in range(obj.GetTriangleCount()):
        props = obj.GetTriangleProperties(t)
        group = model.GetColorGroupByID(props.ResourceID)
        tri = obj.GetTriangle(t).Indices[:]
        for vi, pid in zip(tri, props.PropertyIDs[:]):
            c = group.GetColor(pid)
            z = obj.GetVertex(vi).Coordinates[2]
            assert (c.Red, c.Blue) == ((0, 255) if z > 10 else (255, 0))
            seen.add((c.Red, c.Green, c.Blue))
    assert seen == {(255, 0, 0), (0, 0, 255)}


# ---- a finished run and `studio export` -------------------------------------------------------------------
def run_cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_studio_export_stl_and_3mf_at_the_print_height_with_a_report(crisp_run, tmp_path, capsys):
    stl = tmp_path / "ball.stl"
    code, out, _ = run_cli(["export", str(crisp_run.run_dir), "--format", "stl", "--print-height", "5cm",
                            "--out", str(stl)], capsys)
    assert code == 0 and out.strip().splitlines()[-1] == str(stl)
    back = read_stl(stl)
    assert_printable(back, 50.0)
    assert manifold_accepts(back)
    entry = json.loads((crisp_run.run_dir / "metrics.json").read_text())["reexports"][-1]
    report = entry["print"]
    assert entry["format"] == "stl" and report["watertight"] and report["manifold"]
    assert report["size_mm"][2] == pytest.approx(50.0, rel=0.01)
    assert report["volume_mm3"] == pytest.approx(back.volume, rel=1e-3)
    assert 0 < report["min_wall_mm"] <= 50.0 and 0 <= report["overhang_share"] < 0.5
    tmf = tmp_path / "ball.3mf"
    code, _, _ = run_cli(["export", str(crisp_run.run_dir), "--format", "3mf", "--print-height", "20",
                          "--out", str(tmf)], capsys)
    assert code == 0 and tmf.stat().st_size > 0
    entry = json.loads((crisp_run.run_dir / "metrics.json").read_text())["reexports"][-1]
    assert entry["format"] == "3mf" and entry["print"]["size_mm"][2] == pytest.approx(20.0, rel=0.01)


@pytest.mark.parametrize("value, message", [
    ("tall", "--print-height 'tall'"), ("-5mm", "--print-height '-5mm'"), ("0", "allowed 1 .. 2000 mm"),
    ("5km", "--print-height '5km'"), ("nan", "--print-height 'nan'"), ("3m", "allowed 1 .. 2000 mm"),
])
def test_bad_print_heights_are_one_line_exit_2_and_write_nothing(crisp_run, tmp_path, capsys, value, message):
    before = sorted(p.name for p in Path(crisp_run.run_dir).iterdir())
    metrics = (crisp_run.run_dir / "metrics.json").read_bytes()
    code, out, err = run_cli(["export", str(crisp_run.run_dir), "--format", "stl", f"--print-height={value}",
                              "--out", str(tmp_path / "x.stl")], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in Path(crisp_run.run_dir).iterdir()) == before and not any(tmp_path.iterdir())
    assert (crisp_run.run_dir / "metrics.json").read_bytes() == metrics


def test_print_height_with_a_mesh_format_that_is_not_printed_is_refused(crisp_run, capsys):
    code, _, err = run_cli(["export", str(crisp_run.run_dir), "--format", "glb", "--print-height", "50mm"], capsys)
    assert code == 2 and "applies to --format stl or 3mf" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_run_that_writes_stl_and_3mf_reports_printability(tmp_path):
    from studio.config import build_config
    from studio.run import run

    from conftest import CRISP_SPHERE  # tests/ is on the path (rootdir conftest)

    cfg = build_config([{"prompt": "a grey ball", "steps": 1}], [
        "guidance.model=tiny-random", "camera.resolution=32", "export.mesh_resolution=32", "export.faces=800",
        "export.texture_size=0", "export.fidelity_views=0", "export.turntable_frames=0", "log.preview_every=0",
        'export.formats=["stl", "3mf"]', "export.print_height_mm=30.0", *CRISP_SPHERE])
    finished = list(run(cfg, tmp_path))[-1]
    assert set(finished.assets) >= {"stl", "3mf"}
    report = json.loads((finished.run_dir / "metrics.json").read_text())["print"]
    assert report["watertight"] and report["manifold"] and report["size_mm"][2] == pytest.approx(30.0, rel=0.01)
    assert_printable(read_stl(finished.assets["stl"]), 30.0)


# ---- Blender --------------------------------------------------------------------------------------------
@pytest.mark.skipif(BLENDER is None, reason="blender not installed: run scripts/install_dcc_tools.sh")
@pytest.mark.slow
def test_blender_imports_the_stl_z_up_at_its_height(tmp_path):
    ball = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    ball.apply_translation((0, 0.5, 0))
    (path,) = write_stl(export_mesh(ball), tmp_path / "ball.stl", height_mm=50.0)
    out = subprocess.run([BLENDER, "-b", "--factory-startup", "--python", str(ROOT / "tools" / "blender_check.py"),
                          "--", str(path)], capture_output=True, text=True, timeout=300)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("BLENDER_CHECK ")]
    assert out.returncode == 0 and lines, out.stdout[-2000:] + out.stderr[-2000:]
    seen = json.loads(lines[-1][len("BLENDER_CHECK "):])
    assert seen["objects"] == 1 and seen["faces"] == len(ball.faces) and seen["vertices"] == len(ball.vertices)
    assert seen["min_z"] == pytest.approx(0.0, abs=1e-3) and seen["dimensions"][0][2] == pytest.approx(50.0, rel=0.01)
