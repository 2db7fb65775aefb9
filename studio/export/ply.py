"""PLY writer: binary little-endian, positions, normals and 8-bit vertex colours."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..rundir import atomic_write_bytes
from .asset import ExportMesh


def ply_bytes(mesh: ExportMesh) -> bytes:
    """The encoded binary .ply of `mesh` (vertex colours, no texture)."""
    V, F = len(mesh.vertices), len(mesh.faces)
    header = "\n".join([
        "ply", "format binary_little_endian 1.0", "comment text3d-studio export: metres, Y up",
        f"element vertex {V}", "property float x", "property float y", "property float z",
        "property float nx", "property float ny", "property float nz",
        "property uchar red", "property uchar green", "property uchar blue",
        f"element face {F}", "property list uchar int vertex_indices", "end_header", ""]).encode()
    vdt = np.dtype([("p", "<f4", 3), ("n", "<f4", 3), ("c", "u1", 3)])
    verts = np.empty(V, vdt)
    verts["p"], verts["n"] = mesh.vertices, mesh.normals
    verts["c"] = (np.clip(mesh.colors, 0, 1) * 255 + 0.5).astype(np.uint8)
    fdt = np.dtype([("k", "u1"), ("i", "<i4", 3)])
    faces = np.empty(F, fdt)
    faces["k"], faces["i"] = 3, mesh.faces
    return header + verts.tobytes() + faces.tobytes()


def write_ply(mesh: ExportMesh, path: Path) -> list[Path]:
    """Write `path` (.ply) atomically; returns [path]."""
    atomic_write_bytes(path, ply_bytes(mesh))
    return [path]
