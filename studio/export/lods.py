"""Levels of detail: a chain of GLBs (asset_lod0.glb, asset_lod1.glb, ...), each simplified from the cleaned
full-resolution mesh (not from the previous level), unwrapped and baked like the main export, placed with the main
export's placement (the levels line up), and checked against the scene's renders (silhouette IoU). With
export.normal_map each level gets its own normal map baked from the same cleaned mesh."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import UserError
from .stages import Stages

LOD_MIN_FACES = 100
"""The smallest face count a level may ask for."""


def lod_stage(level: int, count: int) -> str:
    """The stage name of writing level `level` (0-based) of `count`: "write lod 1/3"."""
    return f"write lod {level + 1}/{count}"


def lod_plan(lods: list[int]) -> list[str]:
    """The stages `lod_stages` yields for face counts `lods`, in order."""
    return [lod_stage(i, len(lods)) for i in range(len(lods))]


def lod_path(main: Path, level: int) -> Path:
    """Level `level`'s file beside the main GLB: asset.glb -> asset_lod0.glb."""
    return Path(main).with_name(f"{Path(main).stem}_lod{level}.glb")


def lods_problem(lods: list[int]) -> str | None:
    """Why face counts `lods` are not a LOD chain (strictly decreasing, each >= LOD_MIN_FACES), or None."""
    if any(isinstance(n, bool) or not isinstance(n, int) or n < LOD_MIN_FACES for n in lods):
        return f"each level needs a whole number of at least {LOD_MIN_FACES} faces"
    if any(a <= b for a, b in zip(lods, lods[1:])):
        return "the face counts must decrease from level to level, e.g. 20000,5000,1000"
    return None


def parse_lods(text: str) -> list[int]:
    """--lods "20000,5000,1000" -> [20000, 5000, 1000]; UserError (one line) for anything else."""
    try:
        lods = [int(part) for part in str(text).split(",")]
    except ValueError:
        lods = None
    problem = "give face counts like 20000,5000,1000" if not lods else lods_problem(lods)
    if problem:
        raise UserError(f"--lods {str(text)[:40]!r}: {problem}")
    return lods


def level_mesh(cleaned, faces: int, cfg, place, albedo):
    """(ExportMesh in metres, its scene-frame vertices) of `cleaned` simplified to about `faces` triangles."""
    from .asset import ExportMesh
    from .bake import bake_albedo
    from .clean import orient_outward, vertex_normals
    from .pipeline import bake_normals, vertex_colors
    from .simplify import simplify
    from .unwrap import unwrap

    mesh = orient_outward(simplify(cleaned, faces))
    colors = vertex_colors(mesh, cleaned, albedo)
    normals = vertex_normals(mesh.vertices, mesh.faces)
    verts, tri, keep, uvs, texture = mesh.vertices, mesh.faces, np.arange(len(mesh.vertices)), None, None
    normal_texture = tangents = None
    if cfg.texture_size > 0:
        keep, tri, uvs = unwrap(mesh.vertices, mesh.faces, cfg.texture_size, cfg.texture_padding)
        verts = mesh.vertices[keep]
        texture = bake_albedo(verts, tri, uvs, cfg.texture_size, cfg.texture_padding, albedo, colors[keep])
        if cfg.normal_map:  # each level carries the same fine surface's normals
            normal_texture, tangents = bake_normals(verts, tri, uvs, normals[keep], cleaned, cfg)
    return ExportMesh(place.apply(verts), tri, normals[keep], colors[keep], uvs, texture,
                      metallic=cfg.metallic, roughness=cfg.roughness, normal_texture=normal_texture,
                      tangents=tangents), verts


def lod_stages(prepared, scene, cfg, lods: list[int], main: Path, views: int, size: int) -> Stages[list[dict]]:
    """Write one GLB per face count in `lods` beside `main` (lod_path), yielding lod_stage before each; returns one
    entry per level: asked and written faces, vertices, path, bytes, seconds and (views > 0) the fidelity check."""
    from . import writer
    from .fidelity import fidelity
    from .pipeline import albedo_field

    albedo = albedo_field(scene)
    levels = []
    for i, faces in enumerate(lods):
        yield lod_stage(i, len(lods))
        t0 = time.perf_counter()
        out, verts = level_mesh(prepared.cleaned, faces, cfg, prepared.placement, albedo)
        path = writer("glb")(out, lod_path(main, i))[0]
        entry = {"level": i, "faces_asked": faces, "faces": int(len(out.faces)), "vertices": int(len(out.vertices)),
                 "path": str(path), "bytes": Path(path).stat().st_size}
        if views > 0:
            entry.update(fidelity(scene, verts, out.faces, out.uvs, out.texture, out.colors, views, size))
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        levels.append(entry)
    return levels
