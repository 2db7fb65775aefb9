"""ExportMesh: the cleaned, textured mesh every writer receives. No torch needed."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ExportMesh:
    """A mesh ready for DCC tools: metres, Y-up, centred in X/Z, resting on the ground plane (min y = 0).

    UVs follow glTF: (0, 0) is the top-left corner of `texture`, v grows downwards (row index).
    """

    vertices: np.ndarray
    """[V, 3] float32 positions in metres."""
    faces: np.ndarray
    """[F, 3] int64 vertex indices, counter-clockwise seen from outside."""
    normals: np.ndarray
    """[V, 3] float32 smooth unit vertex normals."""
    colors: np.ndarray
    """[V, 3] float32 per-vertex albedo in [0, 1] (used by PLY)."""
    uvs: np.ndarray | None = None
    """[V, 2] float32 texture coordinates in [0, 1] (glTF convention), or None before unwrapping."""
    texture: np.ndarray | None = None
    """[T, T, 3] uint8 baked albedo texture (row 0 = v 0), or None."""
    metallic: float = 0.0
    """metallicFactor of the PBR material (export.metallic)."""
    roughness: float = 0.9
    """roughnessFactor of the PBR material (export.roughness)."""
    normal_texture: np.ndarray | None = None
    """[T, T, 3] uint8 baked tangent-space normal map, linear (studio/export/normalmap.py), or None."""
    tangents: np.ndarray | None = None
    """[V, 4] float32 glTF tangents (unit xyz, w = +-1) of the normal map's frame; set with `normal_texture`."""

    def __post_init__(self) -> None:
        V = len(self.vertices)
        assert self.vertices.shape == (V, 3) and self.faces.ndim == 2 and self.faces.shape[1] == 3
        assert self.normals.shape == (V, 3) and self.colors.shape == (V, 3)
        assert self.uvs is None or self.uvs.shape == (V, 2)
        assert (self.normal_texture is None) == (self.tangents is None)
        assert self.tangents is None or (self.tangents.shape == (V, 4) and self.uvs is not None)
