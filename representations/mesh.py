"""A plain triangle mesh, the hand-off between representations and export. No torch needed."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Mesh:
    """Triangle mesh in world units (Y-up)."""

    vertices: np.ndarray
    """[V, 3] float32 positions."""
    faces: np.ndarray
    """[F, 3] int64 vertex indices, counter-clockwise seen from outside."""
    colors: np.ndarray | None = None
    """[V, 3] float32 per-vertex albedo in [0, 1], or None."""

    @classmethod
    def empty(cls) -> "Mesh":
        """A mesh with no vertices and no faces (what an empty scene extracts to)."""
        return cls(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.float32))

    @property
    def is_empty(self) -> bool:
        return len(self.faces) == 0
