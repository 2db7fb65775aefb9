"""Writing meshes to GLB / OBJ / PLY with trimesh, and re-exporting a finished run."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from representations.mesh import Mesh

from .errors import UserError
from .rundir import atomic_write_bytes

FORMATS = ("glb", "obj", "ply")


def to_trimesh(mesh: Mesh):
    """representations.Mesh -> trimesh.Trimesh with RGBA uint8 vertex colours (no processing/merging)."""
    import trimesh

    colors = None
    if mesh.colors is not None:
        rgb = (np.clip(mesh.colors, 0, 1) * 255 + 0.5).astype(np.uint8)
        colors = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    return trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, vertex_colors=colors, process=False)


def mesh_bytes(mesh: Mesh, fmt: str) -> bytes:
    """Encoded file contents of `mesh` in format `fmt`."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if mesh.is_empty:
        raise UserError("the extracted mesh is empty (the scene has no surface); run more steps or check the prompt")
    tm = to_trimesh(mesh)
    data = tm.export(file_type=fmt)
    return data.encode() if isinstance(data, str) else data


def write_mesh(mesh: Mesh, path: Path, fmt: str | None = None) -> Path:
    """Write `mesh` to `path` atomically (format from the suffix unless given). Returns the path."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower()
    atomic_write_bytes(path, mesh_bytes(mesh, fmt))
    return path
