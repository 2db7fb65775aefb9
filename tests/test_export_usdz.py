"""USDZ export read back by real readers: pxr (usd-core) and its ARKit compliance checker (the rules of
`usdchecker --arkit`), and Blender's USD importer. The mesh is the crisp-sphere run's textured asset."""
import io
import json
import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from studio.cli import main
from studio.export.asset import ExportMesh
from studio.export.usdz import srgb_to_linear, write_usdz

pytestmark = pytest.mark.usefixtures("small_exports")  # tests/conftest.py: small bakes and fidelity checks

ROOT = Path(__file__).resolve().parents[1]
BPY_PYTHON = ROOT / "tools" / "bpy-venv" / "bin" / "python"
"""Blender as a Python module (pip's bpy, built with USD), set up by scripts/install_dcc_tools.sh."""


@pytest.fixture(scope="module")
def textured_mesh(crisp_run) -> ExportMesh:
    """The crisp run's exported mesh (asset.glb) as the ExportMesh the writers receive: 128² albedo, glTF uvs."""
    glb = trimesh.load(crisp_run.run_dir / "asset.glb", force="mesh", process=False)
    v = np.asarray(glb.vertices, np.float32)
    uv = np.asarray(glb.visual.uv, np.float32)
    uv = np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1)  # trimesh hands out OBJ-style v (up): back to glTF's
    texture = np.asarray(glb.visual.material.baseColorTexture.convert("RGB"))
    colors = np.full((len(v), 3), 0.5, np.float32)
    return ExportMesh(v, np.asarray(glb.faces, np.int64), np.asarray(glb.vertex_normals, np.float32), colors, uv, texture)


def usd_stage(path: Path):
    from pxr import Usd

    stage = Usd.Stage.Open(str(path))
    assert stage is not None, path
    return stage


def arkit_check(path: Path) -> tuple[list, list, list]:
    """(errors, failed checks, warnings) of usd-core's ComplianceChecker with the ARKit rules (usdchecker --arkit)."""
    from pxr import UsdUtils

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in favour of UsdValidation (no ARKit rules yet)
        checker = UsdUtils.ComplianceChecker(arkit=True)
    checker.CheckCompliance(str(path))
    return checker.GetErrors(), checker.GetFailedChecks(), checker.GetWarnings()


def connected_shader(shader_input):
    """The UsdShade.Shader feeding `shader_input` and the output's name."""
    from pxr import UsdShade

    (source,) = shader_input.GetConnectedSources()[0]
    return UsdShade.Shader(source.source.GetPrim()), source.sourceName


def test_usdz_reads_back_with_the_meshs_geometry_units_and_texture(textured_mesh, tmp_path):
    from pxr import Gf, UsdGeom, UsdShade

    mesh = textured_mesh
    (path,) = write_usdz(mesh, tmp_path / "ball.usdz")
    stage = usd_stage(path)
    assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0 and UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y
    assert stage.GetDefaultPrim().GetPath() == "/Asset"
    (prim,) = [p for p in stage.Traverse() if p.IsA(UsdGeom.Mesh)]
    geom = UsdGeom.Mesh(prim)
    points = np.asarray(geom.GetPointsAttr().Get())
    counts, indices = np.asarray(geom.GetFaceVertexCountsAttr().Get()), np.asarray(geom.GetFaceVertexIndicesAttr().Get())
    assert len(points) == len(mesh.vertices) and len(counts) == len(mesh.faces) and set(counts) == {3}
    assert np.allclose(points, mesh.vertices) and np.array_equal(indices, mesh.faces.reshape(-1))
    assert len(geom.GetNormalsAttr().Get()) == len(mesh.vertices) and geom.GetNormalsInterpolation() == "vertex"
    assert geom.GetSubdivisionSchemeAttr().Get() == "none"
    extent = np.asarray(geom.GetExtentAttr().Get())
    assert np.allclose(extent, [mesh.vertices.min(0), mesh.vertices.max(0)], atol=1e-6)
    assert np.allclose(extent, np.asarray(UsdGeom.Boundable.ComputeExtentFromPlugins(geom, 0)), atol=1e-6)
    assert extent[0, 1] == pytest.approx(0.0, abs=1e-5) and (extent[1] - extent[0]).max() == pytest.approx(1.0, abs=1e-3)
    st = UsdGeom.PrimvarsAPI(prim).GetPrimvar("st")
    assert st.GetInterpolation() == "vertex"
    assert np.allclose(np.asarray(st.Get()), np.stack([mesh.uvs[:, 0], 1 - mesh.uvs[:, 1]], 1))  # t up in USD

    material, _ = UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial()
    surface = material.ComputeSurfaceSource()[0]
    assert surface.GetShaderId() == "UsdPreviewSurface"
    assert surface.GetInput("roughness").Get() == pytest.approx(0.9) and surface.GetInput("metallic").Get() == 0.0
    texture, output = connected_shader(surface.GetInput("diffuseColor"))
    assert texture.GetShaderId() == "UsdUVTexture" and output == "rgb"
    assert texture.GetInput("sourceColorSpace").Get() == "sRGB"
    reader, _ = connected_shader(texture.GetInput("st"))
    assert reader.GetShaderId() == "UsdPrimvarReader_float2" and reader.GetInput("varname").Get() == "st"
    file = texture.GetInput("file").Get()
    assert file.resolvedPath == f"{path}[albedo.png]"  # resolves inside the package

    with zipfile.ZipFile(path) as z:
        assert z.namelist() == ["asset.usdc", "albedo.png"]  # the root layer first
        image = np.asarray(Image.open(io.BytesIO(z.read("albedo.png"))).convert("RGB"))
    assert np.array_equal(image, mesh.texture)  # the albedo image itself, losslessly


def test_usdz_passes_the_arkit_compliance_check_and_a_broken_package_fails(textured_mesh, tmp_path):
    (path,) = write_usdz(textured_mesh, tmp_path / "ball.usdz")
    errors, failed, warned = arkit_check(path)
    assert errors == [] and failed == [], (errors, failed)
    for message in warned:
        warnings.warn(f"usdchecker --arkit warning: {message}")
    assert warned == []  # none today: a new warning is worth a look, not silence
    compressed = tmp_path / "compressed.usdz"  # ARKit needs stored (uncompressed), aligned entries
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(compressed, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    errors, failed, _ = arkit_check(compressed)
    assert errors or failed


def test_a_mesh_without_texture_carries_linear_vertex_colours(tmp_path):
    from pxr import UsdGeom, UsdShade

    s = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    v, f = s.vertices.astype(np.float32), s.faces.astype(np.int64)
    colors = np.random.default_rng(0).random((len(v), 3)).astype(np.float32)
    (path,) = write_usdz(ExportMesh(v, f, (v / 0.5).astype(np.float32), colors), tmp_path / "plain.usdz")
    stage = usd_stage(path)  # a prim is valid while its stage lives
    prim = stage.GetPrimAtPath("/Asset/Mesh")
    color = UsdGeom.PrimvarsAPI(prim).GetPrimvar("displayColor")
    assert color.GetInterpolation() == "vertex" and not UsdGeom.PrimvarsAPI(prim).HasPrimvar("st")
    assert np.allclose(np.asarray(color.Get()), srgb_to_linear(colors), atol=1e-6)
    assert srgb_to_linear(np.array([0.0, 0.5, 1.0])) == pytest.approx([0.0, 0.21404, 1.0], abs=1e-5)
    surface = UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial()[0].ComputeSurfaceSource()[0]
    reader, _ = connected_shader(surface.GetInput("diffuseColor"))
    assert reader.GetShaderId() == "UsdPrimvarReader_float3" and reader.GetInput("varname").Get() == "displayColor"
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == ["asset.usdc"]
    errors, failed, _ = arkit_check(path)
    assert errors == [] and failed == [], (errors, failed)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(textured_mesh, tmp_path, monkeypatch):
    import studio.export.usdz as usdz

    path = tmp_path / "ball.usdz"
    path.write_bytes(b"old")

    def broken(mesh, folder):
        raise OSError("disk full")

    monkeypatch.setattr(usdz, "write_stage", broken)
    with pytest.raises(OSError):
        write_usdz(textured_mesh, path)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["ball.usdz"]


def test_studio_export_writes_usdz_and_prints_its_stage(crisp_run, tmp_path, capsys):
    out_file = tmp_path / "ball.usdz"
    code = main(["export", str(crisp_run.run_dir), "--format", "usdz", "--out", str(out_file)])
    out, err = capsys.readouterr()
    assert code == 0 and out.strip().splitlines()[-1] == str(out_file)
    assert "write usdz" in err, err
    entry = json.loads((crisp_run.run_dir / "metrics.json").read_text())["reexports"][-1]
    assert entry["format"] == "usdz" and entry["path"] == str(out_file)
    from pxr import UsdGeom

    stage = usd_stage(out_file)
    geom = UsdGeom.Mesh(stage.GetPrimAtPath("/Asset/Mesh"))
    assert len(geom.GetFaceVertexCountsAttr().Get()) == entry["export_faces"]
    assert len(geom.GetPointsAttr().Get()) == entry["export_vertices"]


def usd_blender() -> list[str] | None:
    """A command that runs tools/blender_check.py in a Blender with USD: pip's bpy, else a system Blender."""
    if BPY_PYTHON.exists():
        return [str(BPY_PYTHON), str(ROOT / "tools" / "blender_check.py")]
    if shutil.which("blender"):
        return [shutil.which("blender"), "-b", "--factory-startup", "--python", str(ROOT / "tools" / "blender_check.py")]
    return None


@pytest.mark.skipif(usd_blender() is None, reason="no Blender: run scripts/install_dcc_tools.sh")
def test_blender_imports_the_usdz_with_its_texture(textured_mesh, tmp_path):
    (path,) = write_usdz(textured_mesh, tmp_path / "ball.usdz")
    out = subprocess.run([*usd_blender(), "--", str(path)], capture_output=True, text=True, timeout=300)
    if out.returncode == 3 and "BLENDER_CHECK_UNSUPPORTED" in out.stdout:
        pytest.skip(out.stdout.strip().splitlines()[-1] + ": run scripts/install_dcc_tools.sh (pip's bpy)")
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("BLENDER_CHECK ")]
    assert out.returncode == 0 and lines, out.stdout[-2000:] + out.stderr[-2000:]
    seen = json.loads(lines[-1][len("BLENDER_CHECK "):])
    assert seen["objects"] == 1 and seen["faces"] == len(textured_mesh.faces), seen
    assert seen["vertices"] == len(textured_mesh.vertices), seen
    assert seen["uv_layers"] == 1 and seen["textures"] == [["albedo.png", 128, 128]], seen
    assert seen["texture_colorspaces"] == ["sRGB"], seen
    # Blender is Z-up: the Y-up stage arrives standing on its ground plane, longest side 1 m
    assert seen["min_z"] == pytest.approx(0.0, abs=1e-4) and max(seen["dimensions"][0]) == pytest.approx(1.0, abs=1e-3)
