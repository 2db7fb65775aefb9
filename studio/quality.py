"""3D quality against the world's ground truth: occupancy IoU (best over yaw), surface colour.

Used by benchmarks/bench_embedded_3d.py and the quality regression test.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from representations.extract import choose_level, sample_volume
from representations.mesh import Mesh


def grid_points(resolution: int, bound: float) -> torch.Tensor:
    """[(R+1)^3, 3] grid vertices in the same order as representations.extract.sample_volume."""
    axis = torch.linspace(-bound, bound, resolution + 1)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([x, y, z], -1).reshape(-1, 3)


def rotate_y(points: torch.Tensor, angle: float) -> torch.Tensor:
    """[N, 3] points rotated by `angle` radians about +Y."""
    c, s = math.cos(angle), math.sin(angle)
    R = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=points.dtype)
    return points @ R.T


@torch.no_grad()
def scene_occupancy(scene, resolution: int = 64) -> torch.Tensor | None:
    """[(R+1)^3] bool: inside the scene's surface, at the iso-level that matches its renders (None if empty)."""
    level, _ = choose_level(scene, resolution=resolution)
    if level is None:
        return None
    return (sample_volume(scene, resolution).values.reshape(-1) > level)


def best_yaw_iou(pred: torch.Tensor, obj, resolution: int, bound: float, yaw_steps: int = 24) -> tuple[float, float]:
    """(best IoU, its yaw in degrees) of `pred` against `obj` rotated about the vertical axis."""
    pts = grid_points(resolution, bound)
    best = (0.0, 0.0)
    for i in range(yaw_steps):
        a = 2 * math.pi * i / yaw_steps
        gt = obj.occupancy(rotate_y(pts, a))
        inter = (gt & pred).sum().item()
        union = (gt | pred).sum().item()
        iou = inter / union if union else 0.0
        if iou > best[0]:
            best = (iou, math.degrees(a))
    return best


def mean_surface_color(mesh: Mesh) -> np.ndarray | None:
    """Area-weighted mean vertex colour [3] of a mesh (None if empty or uncoloured)."""
    if mesh.is_empty or mesh.colors is None:
        return None
    v, f = mesh.vertices.astype(np.float64), mesh.faces
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    face_color = mesh.colors[f].mean(axis=1)
    return (face_color * area[:, None]).sum(0) / max(area.sum(), 1e-12)


def nearest_color(rgb: np.ndarray, palette: dict[str, tuple[float, float, float]]) -> str:
    """Name of the palette colour nearest to `rgb` (Euclidean in RGB)."""
    return min(palette, key=lambda k: float(np.sum((np.asarray(palette[k]) - rgb) ** 2)))
