"""PBR glTF (issue 22): material factors from the config, the albedo PNG tagged sRGB, and albedo that is not
baked-in lighting (the exported mesh lit by a Lambertian light agrees with the studio's own lit render)."""
import dataclasses
import io
import json
import struct

import numpy as np
import pytest
import torch
import trimesh

from representations.shading import Shading, front_light, shade
from studio.export.asset import ExportMesh
from studio.export.glb import glb_bytes, write_glb

from test_export_tools import needs_validator, validate

pytestmark = pytest.mark.usefixtures("small_exports")  # tests/conftest.py: small bakes and fidelity checks


def glb_json_and_bin(data: bytes) -> tuple[dict, bytes]:
    """The JSON and BIN chunks of a .glb file."""
    n = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20:20 + n])
    return doc, data[20 + n + 8:]


def png_chunks(png: bytes) -> list[bytes]:
    """The chunk types of a PNG file, in order."""
    out, i = [], 8
    while i + 8 <= len(png) and (not out or out[-1] != b"IEND"):
        length = struct.unpack(">I", png[i:i + 4])[0]
        out.append(png[i + 4:i + 8])
        i += 12 + length
    return out


@pytest.fixture
def textured():
    s = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    v, f = s.vertices.astype(np.float32), s.faces.astype(np.int64)
    uv = (v[:, :2] + 0.5).clip(0, 1).astype(np.float32)
    tex = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    return ExportMesh(v, f, (v / 0.5).astype(np.float32), np.full((len(v), 3), 0.5, np.float32), uv, tex)


def test_material_factors_come_from_the_mesh_and_the_texture_png_says_srgb(textured):
    mesh = dataclasses.replace(textured, metallic=0.25, roughness=0.4)
    doc, blob = glb_json_and_bin(glb_bytes(mesh))
    pbr = doc["materials"][0]["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == pytest.approx(0.25) and pbr["roughnessFactor"] == pytest.approx(0.4)
    view = doc["bufferViews"][doc["images"][0]["bufferView"]]
    png = blob[view.get("byteOffset", 0):view.get("byteOffset", 0) + view["byteLength"]]
    chunks = png_chunks(png)
    assert b"sRGB" in chunks and chunks.index(b"sRGB") < chunks.index(b"IDAT")
    from PIL import Image

    img = Image.open(io.BytesIO(png))
    assert img.info.get("srgb") == 0  # perceptual intent, read back by Pillow
    assert np.array_equal(np.asarray(img.convert("RGB")), mesh.texture)  # the pixels are unchanged


def test_export_config_factors_reach_the_glb(crisp_run):
    from studio.config import ExportConfig

    assert (ExportConfig().metallic, ExportConfig().roughness) == (0.0, 0.9)
    doc, _ = glb_json_and_bin((crisp_run.run_dir / "asset.glb").read_bytes())
    pbr = doc["materials"][0]["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and pbr["roughnessFactor"] == pytest.approx(0.9)


def test_factors_outside_zero_one_are_refused():
    from studio.config import ConfigError, build_config

    for key in ("export.metallic=1.5", "export.roughness=-0.1"):
        with pytest.raises(ConfigError):
            build_config([{"prompt": "x"}], [key])


@needs_validator
def test_pbr_glb_passes_the_validator_with_no_errors_or_warnings(tmp_path, textured):
    path = write_glb(dataclasses.replace(textured, metallic=0.3, roughness=0.6), tmp_path / "pbr.glb")[0]
    issues = validate(path)["issues"]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]


def lit_mesh(vertices, faces, normals, uvs, texture, cams, lights, background):
    """(Lambertian render [B, 3, H, W], coverage [B, 1, H, W]) of a textured mesh, shaded like the studio."""
    from representations.ops.raster import clip_from_cameras, interpolate, rasterize
    from studio.export.fidelity import render_mesh_albedo

    albedo, cov = render_mesh_albedo(vertices, faces, cams, uvs, texture, None, background)
    tri = torch.from_numpy(faces).long()
    rast = rasterize(clip_from_cameras(torch.from_numpy(vertices).float(), cams), tri, (cams.height, cams.width),
                     backend="torch")
    n = interpolate(torch.from_numpy(normals).float(), rast, tri, backend="torch")  # [B, H, W, 3]
    n = torch.nn.functional.normalize(n, dim=-1)
    B, H, W = n.shape[:3]
    rgb = shade(albedo.permute(0, 2, 3, 1).reshape(B, -1, 3), n.reshape(B, -1, 3), Shading(lights, "lambertian"))
    rgb = rgb.reshape(B, H, W, 3).permute(0, 3, 1, 2)
    bg = torch.tensor(background).view(1, 3, 1, 1)
    return rgb * cov + bg * (1 - cov), cov


def test_lit_export_agrees_with_the_studios_lit_render_and_the_texture_carries_no_shading(crisp_run):
    from studio.export.fidelity import compare, eval_cameras
    from studio.reexport import load_scene

    _, scene = load_scene(crisp_run.run_dir)
    scene.eval()
    glb = trimesh.load(crisp_run.run_dir / "asset.glb", force="mesh", process=False)
    cams = eval_cameras(48, 3)
    up = torch.tensor([[0.0, 1.0, 0.0]])
    side = torch.nn.functional.normalize(torch.tensor([[1.0, -0.3, 0.4]]), dim=-1)
    lights = torch.cat([front_light(cams.position), up.expand(len(cams), 3), side.expand(len(cams), 3)])
    cams3 = cams[torch.arange(len(cams)).repeat(3)]
    with torch.no_grad():
        ref = scene.render(cams3, Shading(lights, "lambertian"))
    scale = crisp_run.metrics["export_scale"]
    # back to the scene frame: the GLB is (scene - offset) * scale with the bounding box's bottom centre at the
    # origin; the crisp sphere is centred, so the box centre goes back to (0, 0, 0)
    v = np.asarray(glb.vertices, np.float32) / scale
    verts = (v - (v.min(0) + v.max(0)) / 2).astype(np.float32)
    tex = np.array(glb.visual.material.baseColorTexture.convert("RGB"))
    uv = np.asarray(glb.visual.uv, np.float32)
    uv = np.stack([uv[:, 0], 1 - uv[:, 1]], 1)
    normals = np.asarray(glb.vertex_normals, np.float32)
    background = tuple(float(x) for x in scene.cfg.background)
    rgb, cov = lit_mesh(verts, np.asarray(glb.faces), normals, uv, tex, cams3, lights, background)
    scores = compare(rgb, cov, ref.rgb.float(), ref.alpha.float(), background)
    print("lit export vs studio lit render:", scores)
    assert scores["export_iou"] > 0.85 and scores["export_color_error"] < 0.08
    # the texture alone: texels of upward- and downward-facing surface (front_light is raised 30 degrees) alike
    from test_export import sample_texture

    c = sample_texture(tex, uv).mean(1)
    ny = normals[:, 1]
    top, bottom = c[ny > 0.5].mean(), c[ny < -0.5].mean()
    print("texture brightness up / down:", top, bottom)
    assert abs(top - bottom) < 0.05



@pytest.mark.skipif(__import__("shutil").which("blender") is None, reason="blender not installed")
def test_blender_imports_the_pbr_glb_with_an_srgb_base_colour(crisp_run):
    from test_export_tools import blender_import

    seen = blender_import(crisp_run.run_dir / "asset.glb")
    assert seen["texture_colorspaces"] and all(c == "sRGB" for c in seen["texture_colorspaces"]), seen
