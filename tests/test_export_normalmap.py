"""Baked normal map (issue 22, studio/export/normalmap.py): glTF TANGENT + normalTexture that the Khronos validator
accepts, a map that carries the fine surface's normals onto a simplified mesh (decoded as a glTF viewer does), the
mirrored-chart sign, and the "bake normals" / "printability report" stages in the export plans."""
import dataclasses

import numpy as np
import pytest
import trimesh

from studio.config import ConfigError, ExportConfig
from studio.export.asset import ExportMesh
from studio.export.glb import write_glb
from studio.export.normalmap import (bake_normal_map, closest_points, decode_normals, fine_surface, texel_frames,
                                     vertex_tangents)
from studio.export.stages import NORMALS, PRINT_REPORT, mesh_plan, write_plan

from test_export_pbr import glb_json_and_bin, png_chunks
from test_export_tools import needs_validator, validate


def sphere_uvs(v: np.ndarray) -> np.ndarray:
    """[V, 2] equirectangular-ish UVs (glTF v down) of a unit-ish sphere's vertices [V, 3]: one chart, fine for tests."""
    u = (np.arctan2(v[:, 2], v[:, 0]) / (2 * np.pi) + 0.5) * 0.9 + 0.05
    w = np.arccos(np.clip(v[:, 1] / np.linalg.norm(v, axis=1), -1, 1)) / np.pi * 0.9 + 0.05
    return np.stack([u, w], 1)


def bumpy_plane(n: int, amp: float = 0.08) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices [V, 3], faces [F, 3], uvs [V, 2]) of a height field z = amp sin sin over [0, 1]², n x n grid."""
    x, y = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="xy")
    z = amp * np.sin(2 * np.pi * x * 2) * np.sin(2 * np.pi * y * 2)
    v = np.stack([x.ravel(), y.ravel(), z.ravel()], 1)
    i = np.arange(n * n).reshape(n, n)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    uv = np.stack([x.ravel(), 1 - y.ravel()], 1) * 0.9 + 0.05  # +u = +x, image up (-v) = +y
    return v, f, uv


def true_normals(p: np.ndarray, amp: float = 0.08) -> np.ndarray:
    """Exact unit normals of bumpy_plane's height field at points [N, 3] (by x, y)."""
    k = 4 * np.pi
    dzdx = amp * k * np.cos(k * p[:, 0]) * np.sin(k * p[:, 1])
    dzdy = amp * k * np.sin(k * p[:, 0]) * np.cos(k * p[:, 1])
    n = np.stack([-dzdx, -dzdy, np.ones(len(p))], 1)
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def mapped_and_vertex_error(v, f, uv, fine, size=64, mirror=False):
    """(mean angle of the decoded normal map, mean angle of the interpolated vertex normals) against the true
    normals, in degrees, at the texel centres the coarse mesh covers."""
    from studio.export.bake import rasterize_uv
    from studio.export.clean import vertex_normals
    import torch

    n = vertex_normals(v, f).astype(np.float64)
    tangents = vertex_tangents(v, f, uv, n)
    image = bake_normal_map(v, f, uv, n, tangents, fine, size, 2)
    face_id, bary = rasterize_uv(torch.from_numpy(uv), torch.from_numpy(f).long(), size)
    filled = (face_id >= 0).numpy()
    fid, b = face_id.numpy()[filled], bary.numpy()[filled].astype(np.float64)
    t, bt, nn = texel_frames(f, n, tangents, fid, b)
    local = decode_normals(image[filled])
    mapped = local[:, :1] * t + local[:, 1:2] * bt + local[:, 2:] * nn
    p = np.einsum("nc,ncd->nd", b, v[f[fid]])
    face, bary_f = closest_points(fine, p)
    q = np.einsum("nc,ncd->nd", bary_f, fine.vertices[fine.faces[face]])
    truth = true_normals(q)
    angle = lambda a: np.degrees(np.arccos(np.clip((a * truth).sum(1), -1, 1))).mean()  # noqa: E731
    return angle(mapped), angle(nn), tangents


def test_the_map_carries_the_fine_normals_much_better_than_the_coarse_vertex_normals():
    fv, ff, _ = bumpy_plane(121)
    fine = fine_surface(fv, ff)
    v, f, uv = bumpy_plane(9)  # 128 faces for 28 800
    mapped, vertex, tangents = mapped_and_vertex_error(v, f, uv, fine)
    print(f"mean angular error: normal map {mapped:.2f} deg, vertex normals {vertex:.2f} deg")
    assert mapped < vertex / 3 and mapped < 3.0
    assert np.all(tangents[:, 3] == 1.0)


def test_a_mirrored_chart_gets_w_minus_one_and_still_decodes_right():
    fv, ff, _ = bumpy_plane(121)
    fine = fine_surface(fv, ff)
    v, f, uv = bumpy_plane(9)
    uv = uv.copy()
    uv[:, 0] = 1 - uv[:, 0]  # u runs against x: a mirrored chart
    mapped, vertex, tangents = mapped_and_vertex_error(v, f, uv, fine)
    print(f"mirrored chart: normal map {mapped:.2f} deg, vertex normals {vertex:.2f} deg")
    assert np.all(tangents[:, 3] == -1.0)
    assert mapped < vertex / 3 and mapped < 3.0


@pytest.fixture
def mapped_mesh():
    s = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    fine = fine_surface(trimesh.creation.icosphere(subdivisions=5, radius=0.5).vertices,
                        trimesh.creation.icosphere(subdivisions=5, radius=0.5).faces)
    v, f = s.vertices, s.faces.astype(np.int64)
    uv = sphere_uvs(v)
    n = v / np.linalg.norm(v, axis=1, keepdims=True)
    tangents = vertex_tangents(v, f, uv, n)
    image = bake_normal_map(v, f, uv, n, tangents, fine, 32, 2)
    tex = np.full((32, 32, 3), 128, np.uint8)
    return ExportMesh(v.astype(np.float32), f, n.astype(np.float32), np.full((len(v), 3), 0.5, np.float32),
                      uv.astype(np.float32), tex, normal_texture=image, tangents=tangents)


@needs_validator
def test_a_normal_mapped_glb_passes_the_validator_with_tangents_and_a_linear_png(tmp_path, mapped_mesh):
    path = write_glb(mapped_mesh, tmp_path / "n.glb")[0]
    issues = validate(path)["issues"]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
    doc, blob = glb_json_and_bin(path.read_bytes())
    prim = doc["meshes"][0]["primitives"][0]
    acc = doc["accessors"][prim["attributes"]["TANGENT"]]
    assert acc["type"] == "VEC4" and acc["componentType"] == 5126
    view = doc["bufferViews"][acc["bufferView"]]
    t = np.frombuffer(blob[view["byteOffset"]:view["byteOffset"] + view["byteLength"]], "<f4").reshape(-1, 4)
    assert np.allclose(np.linalg.norm(t[:, :3], axis=1), 1, atol=1e-5) and set(np.unique(t[:, 3])) <= {-1.0, 1.0}
    normal = doc["materials"][prim["material"]]["normalTexture"]
    img = doc["images"][doc["textures"][normal["index"]]["source"]]
    iv = doc["bufferViews"][img["bufferView"]]
    chunks = png_chunks(blob[iv["byteOffset"]:iv["byteOffset"] + iv["byteLength"]])
    assert not {b"sRGB", b"gAMA", b"iCCP"} & set(chunks)
    plain = write_glb(dataclasses.replace(mapped_mesh, normal_texture=None, tangents=None), tmp_path / "p.glb")[0]
    doc, _ = glb_json_and_bin(plain.read_bytes())
    assert "TANGENT" not in doc["meshes"][0]["primitives"][0]["attributes"]
    assert "normalTexture" not in doc["materials"][0]


def test_the_plans_list_bake_normals_and_the_printability_report():
    assert NORMALS in mesh_plan(ExportConfig(normal_map=True, texture_size=64))
    assert NORMALS not in mesh_plan(ExportConfig(texture_size=64))
    assert write_plan(["glb", "stl"]) == ["write glb", "write stl", PRINT_REPORT]
    assert PRINT_REPORT not in write_plan(["glb", "obj"])
    with pytest.raises(ConfigError) as e:
        ExportConfig(normal_map=True, texture_size=0).validate()
    assert len(str(e.value).splitlines()) == 1


def test_a_run_with_export_normal_map_bakes_the_main_glb_and_every_lod(tmp_path, capsys):
    from studio.cli import main
    from studio.config import build_config
    from studio.events import Exporting
    from studio.run import run

    cfg = build_config([{"prompt": "a grey ball", "steps": 1}], [
        "guidance.model=tiny-random", "camera.resolution=32", "export.mesh_resolution=40", "export.faces=1500",
        "export.texture_size=64", "export.fidelity_views=0", "export.turntable_frames=0", "log.preview_every=0",
        "export.formats=['glb']", "export.normal_map=true", "export.lods=[600, 200]",
        "representation.blob.bias=0.0", "representation.blob.scale=40.0", "representation.blob.radius=0.6"])
    events = list(run(cfg, tmp_path / "out"))
    assert NORMALS in [e.stage for e in events if isinstance(e, Exporting)]
    for name in ("asset.glb", "asset_lod0.glb", "asset_lod1.glb"):
        doc, _ = glb_json_and_bin((events[-1].run_dir / name).read_bytes())
        assert "normalTexture" in doc["materials"][0], name
    code = main(["generate", "a cube", "--out", str(tmp_path / "bad"), "--set", "export.normal_map=true",
                 "--set", "export.texture_size=0"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "normal_map" in err, err
