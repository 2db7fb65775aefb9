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
    "stl": "studio.export.stl:write_stl",
    "3mf": "studio.export.threemf:write_3mf",
    "usdz": "studio.export.usdz:write_usdz",
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

