"""DCC-ready export: clean, simplify, unwrap, bake, write (GLB / OBJ+MTL+PNG / PLY, splat.ply for Gaussians),
and check the written mesh against the representation's renders. Importing this package does not import torch.

FORMATS is the explicit registry of mesh writers: format -> "module:function" taking (ExportMesh, path) and
returning the written paths (the main file first). `splat` is not a mesh format: it writes the scene's
Gaussians (see pipeline.write_splat).
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import UserError

FORMATS: dict[str, str] = {
    "glb": "studio.export.glb:write_glb",
    "obj": "studio.export.obj:write_obj",
    "ply": "studio.export.ply:write_ply",
}
SCENE_FORMATS = ("splat",)
"""Formats written from the scene itself rather than from its mesh."""
ALL_FORMATS = (*FORMATS, *SCENE_FORMATS)


def writer(fmt: str):
    """The writer function of mesh format `fmt`; UserError naming the valid formats otherwise."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; valid: {', '.join(ALL_FORMATS)}")
    module, name = FORMATS[fmt].split(":")
    return getattr(importlib.import_module(module), name)


def default_path(run_dir: Path, fmt: str) -> Path:
    """Where format `fmt` goes in a run directory: asset.<fmt>, or splat.ply."""
    return Path(run_dir) / ("splat.ply" if fmt == "splat" else f"asset.{fmt}")


def write_mesh(mesh, path: Path, fmt: str | None = None) -> Path:
    """Write a plain representations.Mesh as is (vertex colours, no clean-up or texture). Returns the path.

    The quick path used by benchmarks; runs and `studio export` use pipeline.export_scene.
    """
    import numpy as np

    from .asset import ExportMesh
    from .clean import vertex_normals

    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower()
    write = writer(fmt)
    if mesh.is_empty:
        raise UserError("the extracted mesh is empty (the scene has no surface); run more steps or check the prompt")
    colors = mesh.colors if mesh.colors is not None else np.full((len(mesh.vertices), 3), 0.8, np.float32)
    write(ExportMesh(mesh.vertices, mesh.faces, vertex_normals(mesh.vertices, mesh.faces), colors), path)
    return path
