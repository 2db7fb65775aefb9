"""3D quality against the world's ground truth: occupancy IoU (best over yaw), Chamfer distance, silhouette
IoU over held-out views, foreground colour error (CIEDE2000) and a multi-face ("Janus") score.

Ground truth and result are aligned by the yaw found by `best_yaw_iou`: the result at point p is compared with
the true object at rotate_y(p, yaw). Used by `studio-bench quality` and benchmarks/bench_embedded_3d.py.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from representations.cameras import Cameras, orbit_cameras
from representations.extract import choose_level, sample_volume
from representations.mesh import Mesh
from representations.shading import Shading, front_light
from studio.export.fidelity import eval_cameras, render_albedo  # noqa: F401 - the export check's views, shared

LUMA = torch.tensor([0.299, 0.587, 0.114])


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
    iou, yaw, _ = size_free_iou(pred, obj, resolution, bound, yaw_steps, scales=(1.0,))
    return iou, yaw


def size_free_iou(pred: torch.Tensor, obj, resolution: int, bound: float, yaw_steps: int = 24,
                  scales: tuple[float, ...] = (0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25)
                  ) -> tuple[float, float, float]:
    """(best IoU, its yaw in degrees, its scale) of `pred` against `obj` turned about the vertical axis AND scaled
    about the origin: separates a right shape at the wrong size from a wrong shape (a diagnostic; the goal is
    plain IoU)."""
    pts = grid_points(resolution, bound)
    best = (0.0, 0.0, 1.0)
    for i in range(yaw_steps):
        turned = rotate_y(pts, 2 * math.pi * i / yaw_steps)
        for s in scales:
            gt = obj.occupancy(turned / s)
            union = (gt | pred).sum().item()
            iou = (gt & pred).sum().item() / union if union else 0.0
            if iou > best[0]:
                best = (iou, math.degrees(2 * math.pi * i / yaw_steps), s)
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


def yaw_matrix(yaw_deg: float) -> torch.Tensor:
    """[4, 4] homogeneous rotation about +Y (the rotation that `rotate_y` applies)."""
    a = math.radians(yaw_deg)
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, 0.0, s, 0.0], [0.0, 1.0, 0.0, 0.0], [-s, 0.0, c, 0.0], [0.0, 0.0, 0.0, 1.0]])


def object_frame(cams: Cameras, yaw_deg: float) -> Cameras:
    """The same views expressed in the true object's frame (the result at p matches the object at R p)."""
    return Cameras(yaw_matrix(yaw_deg).to(cams.c2w) @ cams.c2w, cams.fov_y, cams.height, cams.width)


def truth_albedo(obj, color: tuple[float, float, float], cams: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """(albedo [B, 3, H, W] over white, alpha [B, 1, H, W]) of a world object, unlit."""
    from world.render import render_object

    out = render_object(obj, color, cams, Shading(front_light(cams.position), "albedo"))
    return out.rgb, out.alpha


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two boolean masks of any (equal) shape; 0 when both are empty."""
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 0.0


def mean_foreground(rgb: torch.Tensor, alpha: torch.Tensor, thresh: float = 0.5) -> torch.Tensor | None:
    """[3] mean colour of the pixels whose alpha exceeds `thresh` (None if there are none)."""
    mask = alpha[:, 0] > thresh
    if not mask.any():
        return None
    return rgb.permute(0, 2, 3, 1)[mask].mean(0)


def surface_points(mesh: Mesh, n: int = 4096, seed: int = 0) -> np.ndarray:
    """[n, 3] points sampled uniformly (by area) on a mesh's surface."""
    v, f = mesh.vertices.astype(np.float64), mesh.faces
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    rng = np.random.default_rng(seed)
    tri = rng.choice(len(f), size=n, p=area / area.sum())
    u, w = rng.random((2, n))
    flip = u + w > 1
    u[flip], w[flip] = 1 - u[flip], 1 - w[flip]
    a, b, c = v[f[tri, 0]], v[f[tri, 1]], v[f[tri, 2]]
    return a + u[:, None] * (b - a) + w[:, None] * (c - a)


def truth_surface(obj, n: int = 4096, resolution: int = 96, bound: float = 1.0, seed: int = 0) -> np.ndarray:
    """[n, 3] points on a world object's surface (marching cubes of its SDF, then area sampling)."""
    from skimage.measure import marching_cubes as mc

    pts = grid_points(resolution, bound)
    sdf = obj.sdf(pts).reshape(resolution + 1, resolution + 1, resolution + 1).numpy()
    spacing = 2 * bound / resolution
    verts, faces, _, _ = mc(sdf, 0.0, spacing=(spacing,) * 3)
    return surface_points(Mesh(verts - bound, faces.astype(np.int64)), n, seed)


def chamfer(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> float:
    """Symmetric Chamfer distance: mean nearest-neighbour distance a->b plus b->a (world units)."""
    ta, tb = torch.from_numpy(a).float(), torch.from_numpy(b).float()

    def one_way(x: torch.Tensor, y: torch.Tensor) -> float:
        exact = "donot_use_mm_for_euclid_dist"  # no |x|^2 - 2xy + |y|^2 cancellation: identical sets give 0
        return torch.cat([torch.cdist(x[i:i + chunk], y, compute_mode=exact).min(1).values
                          for i in range(0, len(x), chunk)]).mean().item()

    return one_way(ta, tb) + one_way(tb, ta)


def door_score(rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] fraction of foreground pixels darker than 0.55 x the median foreground luminance (the house's door).

    rgb [B, 3, H, W] in [0, 1], mask [B, H, W] bool foreground."""
    lum = (rgb * LUMA.to(rgb)[:, None, None]).sum(1)
    out = []
    for l, m in zip(lum, mask):
        v = l[m]
        out.append((v < 0.55 * v.median()).float().mean() if v.numel() > 20 else torch.tensor(0.0))
    return torch.stack(out)


def front_count(visible: list[bool]) -> int:
    """Number of separate runs of True in a circular sequence (all True counts as 1)."""
    n = len(visible)
    if all(visible):
        return 1
    return sum(1 for i in range(n) if visible[i] and not visible[i - 1])


def multi_face_score(scene, obj, color, views: int = 12, size: int = 64) -> dict:
    """How many fronts (doors) the result shows around a low orbit, with the threshold set on the truth.

    The true object shows exactly 1; a Janus result shows 2 or more; 0 means no front at all."""
    az = torch.arange(views, dtype=torch.float32) * (360.0 / views)
    full = lambda v: torch.full((views,), float(v))  # noqa: E731
    cams = orbit_cameras(torch.where(az > 180, az - 360, az), full(8.0), full(2.6), full(47.5), size, size)
    rgb, alpha = render_albedo(scene, cams)
    t_rgb, t_alpha = truth_albedo(obj, color, cams)
    truth = door_score(t_rgb, t_alpha[:, 0] > 0.5)
    thresh = 0.5 * truth.max().item()
    pred = door_score(rgb, alpha[:, 0] > 0.5)
    return {"fronts": front_count([bool(x) for x in pred > thresh]),
            "fronts_truth": front_count([bool(x) for x in truth > thresh])}

