"""Export pipeline: clean-up, simplification, UV bake, writers read back, fidelity, and `studio export`."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from representations.mesh import Mesh
from studio.cli import main
from studio.config import ExportConfig
from studio.export.asset import ExportMesh
from studio.export.bake import bake_albedo, pad_gutters, rasterize_uv
from studio.export.clean import drop_floaters, orient_outward, placement, vertex_normals
from studio.export.fidelity import compare
from studio.export.simplify import simplify
from studio.export.unwrap import unwrap

pytestmark = pytest.mark.usefixtures("small_exports")  # tests/conftest.py: small bakes and fidelity checks


def sphere(radius=1.0, centre=(0, 0, 0), subdivisions=3) -> Mesh:
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return Mesh((s.vertices + centre).astype(np.float32), s.faces.astype(np.int64), None)


def signed_volume(v, f):
    a, b, c = (v[f[:, i]].astype(np.float64) for i in range(3))
    return np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6


def colour_field(points: torch.Tensor) -> torch.Tensor:
    """A smooth albedo that differs everywhere: [N, 3] -> [N, 3] in [0, 1]."""
    return torch.stack([(points[:, 0] + 1) / 2, (points[:, 1] + 1) / 2, 0.5 + 0.5 * torch.sin(3 * points[:, 2])], 1).clamp(0, 1)


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of texture [T, T, 3] uint8 at glTF uvs [N, 2] -> [N, 3] in [0, 1]."""
    tex = torch.from_numpy(texture).float().div(255).permute(2, 0, 1)[None]
    grid = torch.from_numpy(uv).float()[None, None] * 2 - 1
    return torch.nn.functional.grid_sample(tex, grid, align_corners=False)[0, :, 0].t().numpy()


# ---- clean-up -------------------------------------------------------------------------------------------
def test_floaters_are_dropped_and_the_main_part_kept():
    big, small = sphere(0.5), sphere(0.05, centre=(0.8, 0, 0), subdivisions=1)
    both = Mesh(np.concatenate([big.vertices, small.vertices]),
                np.concatenate([big.faces, small.faces + len(big.vertices)]), None)
    kept = drop_floaters(both, 0.05)
    assert len(kept.faces) == len(big.faces) and np.abs(kept.vertices).max() <= 0.5 + 1e-5
    assert kept.faces.max() == len(kept.vertices) - 1


def test_inside_out_parts_are_flipped_outward():
    a, b = sphere(0.3, (-0.5, 0, 0)), sphere(0.3, (0.5, 0, 0))
    b_inverted = b.faces[:, [0, 2, 1]]
    mesh = Mesh(np.concatenate([a.vertices, b.vertices]), np.concatenate([a.faces, b_inverted + len(a.vertices)]), None)
    fixed = orient_outward(mesh)
    for part in (fixed.faces[: len(a.faces)], fixed.faces[len(a.faces):]):
        assert signed_volume(fixed.vertices, part) > 0
    n = vertex_normals(fixed.vertices, fixed.faces)
    centres = np.where(fixed.vertices[:, :1] < 0, [[-0.5, 0, 0]], [[0.5, 0, 0]])
    radial = (fixed.vertices - centres) / np.linalg.norm(fixed.vertices - centres, axis=1, keepdims=True)
    assert np.allclose(np.linalg.norm(n, axis=1), 1, atol=1e-5) and (n * radial).sum(1).min() > 0.98


def test_simplify_reaches_the_face_budget_and_keeps_the_silhouette():
    dense = sphere(0.7, subdivisions=5)  # 20480 faces
    light = simplify(dense, 2000)
    assert 1500 <= len(light.faces) <= 2000 and np.array_equal(np.unique(light.faces), np.arange(len(light.vertices)))
    r = np.linalg.norm(light.vertices, axis=1)
    assert np.abs(r - 0.7).max() < 0.02  # vertices stay on the surface
    assert signed_volume(light.vertices, light.faces) == pytest.approx(signed_volume(dense.vertices, dense.faces), rel=0.03)
    assert simplify(dense, 0) is dense and simplify(light, 5000) is light


def test_placement_puts_the_object_on_the_ground_at_the_documented_size():
    v = np.array([[-0.2, -0.4, 0.1], [0.6, 0.2, 0.3], [0.0, 0.0, -0.1]], np.float32)
    p = placement(v, 1.5)
    out = p.apply(v)
    lo, hi = out.min(0), out.max(0)
    assert hi[1] - lo[1] <= 1.5 + 1e-6 and (hi - lo).max() == pytest.approx(1.5)
    assert lo[1] == pytest.approx(0) and (lo[0] + hi[0]) / 2 == pytest.approx(0) and (lo[2] + hi[2]) / 2 == pytest.approx(0)
    assert np.allclose(p.invert(out), v, atol=1e-6)


def test_unwrap_in_a_child_process_equals_in_process_and_reports_errors():
    """unwrap() runs xatlas in a forked child (its teardown can deadlock): same result, errors still raised."""
    from studio.export.unwrap import unwrap_here

    m = sphere(0.5, subdivisions=2)
    for a, b in zip(unwrap(m.vertices, m.faces, 128, 2), unwrap_here(m.vertices, m.faces, 128, 2)):
        assert np.array_equal(a, b)
    with pytest.raises(RuntimeError, match="Index out of range"):
        unwrap(m.vertices, np.array([[0, 1, len(m.vertices) + 5]]), 128, 2)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["while unwrapping", "while sending"])
def test_the_unwrap_child_does_not_outlive_a_killed_parent(tmp_path, when):
    """kill -9 of the studio during the UV unwrap: the forked xatlas child used to block for ever in its send
    (it held the pipe's reading end itself), orphaned with ~430 MB. Now it ends within seconds."""
    import signal
    import subprocess
    import sys
    import time

    # "while sending": the parent sleeps instead of reading, so the child is in its (> pipe buffer) send when killed
    script = (
        "import os, sys, time, trimesh\n"
        "import multiprocessing.connection as c\n"
        f"if {when == 'while sending'!r}:\n"
        "    c.Connection.recv = lambda self: time.sleep(600)\n"
        "from studio.export.unwrap import unwrap\n"
        "m = trimesh.creation.icosphere(subdivisions=5)\n"
        "print(os.getpid(), flush=True)\n"
        "unwrap(m.vertices, m.faces, 1024, 2)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())

    def children() -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]

    deadline = time.monotonic() + 60
    while not (kids := children()):
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.05)
    if when == "while sending":
        time.sleep(4)  # the unwrap (~1 s) is done: the child is blocked sending its ~1 MB result
    os.kill(pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{k}") and "Z" not in open(f"/proc/{k}/stat").read().split()[2] for k in kids):
        assert time.monotonic() < deadline, f"unwrap child {kids} outlived its killed parent"
        time.sleep(0.1)


# ---- UV bake -------------------------------------------------------------------------------------------
def test_uv_raster_covers_the_charts_and_reconstructs_texel_centres():
    m = sphere(0.5, subdivisions=2)
    vmap, faces, uvs = unwrap(m.vertices, m.faces, 128, 2)
    assert vmap.max() < len(m.vertices) and faces.max() < len(uvs) and uvs.min() >= 0 and uvs.max() <= 1
    size = 128
    face_id, bary = rasterize_uv(torch.from_numpy(uvs), torch.from_numpy(faces), size)
    t = uvs[faces] * size
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum()
    assert (face_id >= 0).sum().item() == pytest.approx(area, rel=0.05)
    filled = (face_id >= 0).nonzero()
    fid, b = face_id[filled[:, 0], filled[:, 1]], bary[filled[:, 0], filled[:, 1]]
    uv_at = (torch.from_numpy(uvs)[torch.from_numpy(faces)[fid]] * b[..., None].double()).sum(1)
    centres = torch.stack([filled[:, 1], filled[:, 0]], 1).double().add(0.5) / size
    assert torch.allclose(uv_at, centres, atol=1e-5) and (b >= -1e-6).all()


def test_gutter_padding_grows_charts_and_fills_the_rest():
    img = torch.zeros(12, 12, 3)
    filled = torch.zeros(12, 12, dtype=torch.bool)
    img[4, 4] = torch.tensor([1.0, 0.5, 0.0])
    img[0, 11] = torch.tensor([0.0, 0.0, 1.0])
    filled[4, 4] = filled[0, 11] = True
    out = pad_gutters(img, filled, 2)
    assert torch.equal(out[4, 4], img[4, 4]) and torch.equal(out[0, 11], img[0, 11])
    assert torch.allclose(out[2:7, 2:7], img[4, 4].expand(5, 5, 3))  # two rings around the centre texel
    assert torch.allclose(out[0:3, 9:12], img[0, 11].expand(3, 3, 3))
    assert torch.allclose(out[11, 0], img[filled].mean(0)) and torch.allclose(out[7, 4], img[filled].mean(0))


def test_baked_texture_reproduces_the_albedo_field_at_the_vertices():
    m = sphere(0.6, subdivisions=3)
    vmap, faces, uvs = unwrap(m.vertices, m.faces, 256, 4)
    v = m.vertices[vmap]
    tex = bake_albedo(v, faces, uvs, 256, 4, colour_field)
    truth = colour_field(torch.from_numpy(v)).numpy()
    assert tex.shape == (256, 256, 3) and tex.dtype == np.uint8
    assert np.abs(sample_texture(tex, uvs) - truth).mean() < 0.01
    # without a field: the vertex colours are interpolated instead
    tex2 = bake_albedo(v, faces, uvs, 256, 4, None, truth)
    assert np.abs(sample_texture(tex2, uvs) - truth).mean() < 0.01


# ---- writers, read back ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def textured():
    m = sphere(0.5, subdivisions=2)
    vmap, faces, uvs = unwrap(m.vertices, m.faces, 64, 2)
    v = m.vertices[vmap]
    tex = bake_albedo(v, faces, uvs, 64, 2, colour_field)
    colors = colour_field(torch.from_numpy(v)).numpy()
    return ExportMesh(v + np.float32([0, 0.5, 0]), faces, vertex_normals(v, faces), colors, uvs, tex)


def test_glb_reads_back_with_its_texture(tmp_path, textured):
    from studio.export.glb import write_glb

    (path,) = write_glb(textured, tmp_path / "a.glb")
    loaded = trimesh.load(path, force="mesh", process=False)
    assert np.allclose(loaded.vertices, textured.vertices, atol=1e-6) and np.array_equal(loaded.faces, textured.faces)
    image = loaded.visual.material.baseColorTexture
    assert image.size == (64, 64) and np.array_equal(np.asarray(image.convert("RGB")), textured.texture)
    assert np.allclose(loaded.visual.uv[:, 1], 1 - textured.uvs[:, 1], atol=1e-6)  # trimesh reports OBJ-style v
    assert np.allclose(glb_attribute(path, "NORMAL"), textured.normals, atol=1e-6)  # our smooth normals, stored


def glb_attribute(path, name: str) -> np.ndarray:
    """[V, 3] float32 vertex attribute `name` of the first primitive, read from the GLB with pygltflib."""
    import pygltflib

    g = pygltflib.GLTF2().load(str(path))
    acc = g.accessors[getattr(g.meshes[0].primitives[0].attributes, name)]
    view = g.bufferViews[acc.bufferView]
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    return np.frombuffer(g.binary_blob()[start:start + acc.count * 12], np.float32).reshape(-1, 3)


def test_obj_reads_back_with_mtl_and_png(tmp_path, textured):
    from studio.export.obj import write_obj

    paths = write_obj(textured, tmp_path / "thing.obj")
    assert [p.name for p in paths] == ["thing.obj", "thing.mtl", "thing_albedo.png"] and all(p.exists() for p in paths)
    loaded = trimesh.load(paths[0], force="mesh", process=False, maintain_order=True)
    assert len(loaded.faces) == len(textured.faces)
    image = np.asarray(loaded.visual.material.image.convert("RGB"))
    assert np.array_equal(image, textured.texture)
    # the colour each vertex's UV points at is the field's colour there
    uv_gltf = np.stack([loaded.visual.uv[:, 0], 1 - loaded.visual.uv[:, 1]], 1)
    truth = colour_field(torch.from_numpy(loaded.vertices - [0, 0.5, 0]).float()).numpy()
    assert np.abs(sample_texture(textured.texture, uv_gltf) - truth).mean() < 0.03


def test_ply_reads_back_with_vertex_colours(tmp_path, textured):
    from studio.export.ply import write_ply

    (path,) = write_ply(textured, tmp_path / "a.ply")
    loaded = trimesh.load(path, process=False)
    assert np.allclose(loaded.vertices, textured.vertices) and np.array_equal(loaded.faces, textured.faces)
    assert np.abs(loaded.visual.vertex_colors[:, :3] / 255.0 - textured.colors).max() <= 0.5 / 255 + 1e-6


# ---- fidelity -------------------------------------------------------------------------------------------
def test_compare_scores_silhouettes_and_colour():
    a = torch.zeros(1, 1, 4, 4)
    a[..., :2, :] = 1  # 8 pixels
    b = torch.zeros(1, 1, 4, 4)
    b[..., 1:3, :] = 1  # 8 pixels, 4 shared
    rgb_a = torch.full((1, 3, 4, 4), 0.2)
    rgb_b = torch.full((1, 3, 4, 4), 0.5)
    m = compare(rgb_a, a, rgb_b, b)
    assert m["export_iou"] == pytest.approx(4 / 12, abs=1e-4) and m["export_color_error"] == pytest.approx(0.3, abs=1e-4)
    # a half-transparent reference pixel is compared by its own colour, not its blend with white
    half = torch.full((1, 1, 4, 4), 0.6)
    blended = 0.6 * 0.2 + 0.4 * torch.ones(1, 3, 4, 4)
    assert compare(rgb_a, torch.ones_like(a), blended, half)["export_color_error"] == pytest.approx(0.0, abs=1e-4)


@pytest.mark.slow
def test_a_finished_run_writes_textured_assets_and_a_passing_fidelity_check(crisp_run):
    run_dir, m = crisp_run.run_dir, crisp_run.metrics
    assert set(crisp_run.assets) >= set(ExportConfig().formats)  # the default formats (stl / 3mf are asked for)
    assert (run_dir / "asset.mtl").exists() and (run_dir / "asset_albedo.png").exists()
    assert json.loads((run_dir / "metrics.json").read_text())["export_iou"] == m["export_iou"]
    assert m["export_iou"] >= 0.9 and m["export_color_error"] < 0.05, m
    assert m["export_faces"] <= 1500 and max(m["export_size_m"]) == pytest.approx(1.0, abs=1e-3)
    glb = trimesh.load(run_dir / "asset.glb", force="mesh", process=False)
    assert glb.vertices[:, 1].min() == pytest.approx(0, abs=1e-5)  # resting on the ground, Y up
    assert np.abs(glb.vertices[:, [0, 2]].max(0) + glb.vertices[:, [0, 2]].min(0)).max() < 1e-4  # centred
    assert glb.visual.material.baseColorTexture.size == (128, 128)


def test_export_config_defaults_are_the_documented_ones():
    from studio.config import ExportConfig

    fields = ExportConfig.__dataclass_fields__
    assert fields["texture_size"].default == 1024 and fields["faces"].default == 20000 and fields["size"].default == 1.0


# ---- studio export ----------------------------------------------------------------------------------------
def run_cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_studio_export_writes_the_requested_faces_and_texture_size(crisp_run, tmp_path, capsys):
    out_file = tmp_path / "small.obj"
    code, out, _ = run_cli(["export", str(crisp_run.run_dir), "--format", "obj", "--faces", "400",
                            "--texture-size", "32", "--out", str(out_file)], capsys)
    assert code == 0 and out.strip().splitlines()[-1] == str(out_file)
    loaded = trimesh.load(out_file, force="mesh", process=False)
    assert 200 <= len(loaded.faces) <= 400
    assert loaded.visual.material.image.size == (32, 32)
    metrics = json.loads((crisp_run.run_dir / "metrics.json").read_text())
    entry = metrics["reexports"][-1]  # the re-export is on record; the generation's metrics are kept
    assert entry["path"] == str(out_file) and entry["format"] == "obj" and entry["faces"] == 400
    assert entry["texture_size"] == 32 and 200 <= entry["export_faces"] <= 400
    assert metrics["steps"] == crisp_run.metrics["steps"]


@pytest.mark.parametrize("argv, message", [
    (["--format", "splat"], "needs a Gaussian scene"),
    (["--format", "glb", "--faces", "5"], "export.faces"),
    (["--format", "glb", "--texture-size", "-1"], "export.texture_size"),
    (["--format", "glb", "--out", "x.obj"], "must end in .glb"),
])
def test_studio_export_bad_input_is_one_line_and_writes_nothing(crisp_run, tmp_path, capsys, argv, message):
    before = sorted(p.name for p in Path(crisp_run.run_dir).iterdir())
    argv = [a if a != "x.obj" else str(tmp_path / "x.obj") for a in argv]
    code, _, err = run_cli(["export", str(crisp_run.run_dir), *argv], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in Path(crisp_run.run_dir).iterdir()) == before and not any(tmp_path.iterdir())


@pytest.mark.slow
def test_the_fidelity_check_catches_an_over_simplified_export():
    """The same crisp sphere simplified to ~12 faces no longer matches its renders: IoU drops, a warning is set."""
    import representations
    from studio.config import ExportConfig
    from studio.export.pipeline import FIDELITY_WARN_IOU, prepare

    cls = representations.get("nerf")
    scene = cls(cls.Config(blob={"bias": 0.0, "scale": 40.0, "radius": 0.6}), 100)
    cfg = dict(mesh_resolution=32, texture_size=32, fidelity_views=2, fidelity_size=32)
    good = prepare(scene, ExportConfig(faces=2000, **cfg)).stats
    bad = prepare(scene, ExportConfig(faces=12, **cfg)).stats
    assert good["export_iou"] >= FIDELITY_WARN_IOU and "export_warning" not in good, good
    assert bad["export_faces"] <= 20 and bad["export_iou"] < FIDELITY_WARN_IOU <= good["export_iou"], bad
    assert "differs from the renders" in bad["export_warning"]
