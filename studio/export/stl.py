"""STL writer: binary STL of the print solid (studio/export/printable.py): watertight, outward, millimetres, Z up."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..rundir import atomic_write_bytes
from .asset import ExportMesh
from .printable import DEFAULT_PRINT_HEIGHT_MM, PrintSolid, print_solid


def stl_bytes(solid: PrintSolid) -> bytes:
    """The binary .stl of `solid`: 80-byte header, triangle count, then per triangle its unit normal, three corners
    (float32, mm) and a zero attribute word."""
    tri = solid.vertices[solid.faces]  # [F, 3, 3]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
    rec = np.zeros(len(tri), np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")]))
    rec["n"], rec["v"] = n, tri
    header = b"text3d-studio print solid: millimetres, Z up".ljust(80, b" ")
    return header + np.uint32(len(tri)).tobytes() + rec.tobytes()


def write_stl(mesh: ExportMesh, path: Path, height_mm: float = DEFAULT_PRINT_HEIGHT_MM) -> list[Path]:
    """Write the print solid of `mesh` at `height_mm` as `path` (.stl) atomically; returns [path]."""
    atomic_write_bytes(path, stl_bytes(print_solid(mesh, height_mm)))
    return [path]
