"""USDZ writer for AR Quick Look and USD pipelines: one UsdGeom.Mesh with a UsdPreviewSurface material, packaged
as an ARKit usdz (a usdc root layer + the albedo PNG, 64-byte aligned, uncompressed).

The stage is in metres (metersPerUnit = 1), Y up, its defaultPrim is /Asset (kind component):

    /Asset                      Xform
      /Mesh                     Mesh: points, triangles, vertex normals, primvars:st (or primvars:displayColor)
      /Materials/albedo         Material: UsdPreviewSurface (roughness 0.9, metallic 0, like the GLB)
        /PreviewSurface           diffuseColor <- Texture.rgb (or <- a displayColor reader without a texture)
        /Texture                  UsdUVTexture: albedo.png, sourceColorSpace sRGB
        /PrimvarReader            UsdPrimvarReader_float2 "st"

Our UVs are glTF's (v down, row 0 at v 0); USD's st has t up, so st = (u, 1 - v). pxr (usd-core) is imported here
only, when a usdz is written.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..rundir import atomic_write_bytes
from .asset import ExportMesh

ROOT, MESH, MATERIAL = "/Asset", "/Asset/Mesh", "/Asset/Materials/albedo"
"""Prim paths of the default prim, the mesh and its material."""
TEXTURE_FILE = "albedo.png"
"""Name of the albedo image inside the package."""
ROUGHNESS, METALLIC = 0.9, 0.0
"""The material's constants (the GLB writer's)."""


def usd_st(uvs: np.ndarray) -> np.ndarray:
    """[V, 2] glTF uvs (v down) -> USD st (t up), float32."""
    return np.stack([uvs[:, 0], 1.0 - uvs[:, 1]], 1).astype(np.float32)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded colours in [0, 1] -> linear (displayColor is linear; the texture is tagged sRGB instead)."""
    c = np.clip(c, 0.0, 1.0).astype(np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def define_mesh(stage, mesh: ExportMesh, textured: bool):
    """The UsdGeom.Mesh of `mesh` at MESH: triangles, vertex normals, extent, st or displayColor."""
    from pxr import Gf, Sdf, UsdGeom, Vt

    geom = UsdGeom.Mesh.Define(stage, MESH)
    points = np.ascontiguousarray(mesh.vertices, np.float32)
    geom.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(points))
    geom.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(mesh.faces), 3, np.int32)))
    geom.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(np.ascontiguousarray(mesh.faces.reshape(-1), np.int32)))
    geom.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(mesh.normals, np.float32)))
    geom.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
    geom.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)  # a polygon mesh, not a subdivision cage
    geom.CreateOrientationAttr(UsdGeom.Tokens.rightHanded)  # counter-clockwise seen from outside
    geom.CreateDoubleSidedAttr(False)
    lo, hi = points.min(0), points.max(0)
    geom.CreateExtentAttr(Vt.Vec3fArray([Gf.Vec3f(*map(float, lo)), Gf.Vec3f(*map(float, hi))]))
    api = UsdGeom.PrimvarsAPI(geom)
    if textured:
        st = api.CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.vertex)
        st.Set(Vt.Vec2fArray.FromNumpy(usd_st(mesh.uvs)))
    else:
        color = geom.CreateDisplayColorPrimvar(UsdGeom.Tokens.vertex)
        color.Set(Vt.Vec3fArray.FromNumpy(srgb_to_linear(mesh.colors)))
    return geom


def define_material(stage, texture_file: str | None):
    """The UsdPreviewSurface material at MATERIAL; diffuseColor from `texture_file` (sRGB) through the st primvar,
    else from the mesh's displayColor primvar."""
    from pxr import Sdf, UsdShade

    material = UsdShade.Material.Define(stage, MATERIAL)
    surface = UsdShade.Shader.Define(stage, f"{MATERIAL}/PreviewSurface")
    surface.CreateIdAttr("UsdPreviewSurface")
    surface.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(ROUGHNESS)
    surface.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(METALLIC)
    diffuse = surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f)
    material.CreateSurfaceOutput().ConnectToSource(surface.ConnectableAPI(), "surface")
    reader = UsdShade.Shader.Define(stage, f"{MATERIAL}/PrimvarReader")
    if texture_file is None:
        reader.CreateIdAttr("UsdPrimvarReader_float3")
        reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("displayColor")
        diffuse.ConnectToSource(reader.CreateOutput("result", Sdf.ValueTypeNames.Float3))
        return material
    reader.CreateIdAttr("UsdPrimvarReader_float2")
    reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")
    texture = UsdShade.Shader.Define(stage, f"{MATERIAL}/Texture")
    texture.CreateIdAttr("UsdUVTexture")
    texture.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(texture_file)
    texture.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set("sRGB")
    texture.CreateInput("wrapS", Sdf.ValueTypeNames.Token).Set("repeat")
    texture.CreateInput("wrapT", Sdf.ValueTypeNames.Token).Set("repeat")
    texture.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(
        reader.CreateOutput("result", Sdf.ValueTypeNames.Float2))
    diffuse.ConnectToSource(texture.CreateOutput("rgb", Sdf.ValueTypeNames.Float3))
    return material


def write_stage(mesh: ExportMesh, folder: Path) -> Path:
    """Write the stage (asset.usdc) and its texture (albedo.png, when textured) into `folder`; the .usdc path."""
    from PIL import Image
    from pxr import Kind, Usd, UsdGeom, UsdShade

    textured = mesh.uvs is not None and mesh.texture is not None
    if textured:
        Image.fromarray(mesh.texture).save(folder / TEXTURE_FILE, format="PNG")
    path = folder / "asset.usdc"
    stage = Usd.Stage.CreateNew(str(path))
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
    root = UsdGeom.Xform.Define(stage, ROOT).GetPrim()
    stage.SetDefaultPrim(root)
    Usd.ModelAPI(root).SetKind(Kind.Tokens.component)
    geom = define_mesh(stage, mesh, textured)
    material = define_material(stage, TEXTURE_FILE if textured else None)
    UsdShade.MaterialBindingAPI.Apply(geom.GetPrim()).Bind(material)
    stage.GetRootLayer().Save()
    return path


def usdz_bytes(mesh: ExportMesh) -> bytes:
    """The encoded .usdz package of `mesh`: asset.usdc first (the root layer), then albedo.png, stored uncompressed
    and 64-byte aligned by Sdf.ZipFileWriter (what ARKit requires)."""
    from pxr import Sdf

    with tempfile.TemporaryDirectory(prefix="usdz-") as tmp:
        usdc = write_stage(mesh, Path(tmp))
        package = Path(tmp) / "asset.usdz"
        writer = Sdf.ZipFileWriter.CreateNew(str(package))
        for file in (usdc, Path(tmp) / TEXTURE_FILE):
            if file.exists():
                writer.AddFile(str(file), file.name)
        writer.Save()
        return package.read_bytes()


def write_usdz(mesh: ExportMesh, path: Path) -> list[Path]:
    """Write `path` (.usdz) atomically; returns [path]."""
    atomic_write_bytes(Path(path), usdz_bytes(mesh))
    return [Path(path)]
