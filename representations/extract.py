"""Mesh extraction for any density field: density volume -> iso-level chosen from the renders -> marching cubes.

The iso-level decides how fat the mesh is, and users notice when the mesh differs from the renders. So the
level is chosen to reproduce the RENDERED opacity: for a few views, the rendered silhouette (alpha > 0.5) is
compared with the silhouette a level implies (a pixel is covered when the maximum density along its ray
exceeds the level) and the level with the best IoU wins. The ray maxima are read from the same sampled
density volume that marching cubes uses, so the mesh's silhouette is what was scored.

Works with any Representation that implements `density`, `albedo_at` and `render`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .cameras import Cameras, ring_cameras
from .mesh import Mesh
from .occupancy import ray_box
from .shading import Shading, front_light


@dataclass
class DensityVolume:
    """Density sampled at the vertices of a regular grid over [-bound, bound]^3."""

    values: Tensor
    """[G, G, G] float32; values[i, j, k] is the density at (x_i, y_j, z_k), x_i = -bound + i * 2 * bound / (G - 1)."""
    bound: float
    """Half-size of the box."""

    @property
    def spacing(self) -> float:
        return 2.0 * self.bound / (self.values.shape[0] - 1)


@torch.no_grad()
def sample_volume(rep, resolution: int = 128, chunk: int = 65536) -> DensityVolume:
    """Evaluate `rep.density` at the (resolution + 1)^3 vertices of a grid over the representation's box."""
    bound = float(rep.cfg.bound)
    G = resolution + 1
    axis = torch.linspace(-bound, bound, G)
    values = torch.empty(G, G, G)
    flat = values.view(-1)
    yz = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)  # [G*G, 2]
    per = max(1, chunk // (G * G))
    for i0 in range(0, G, per):
        xs = axis[i0 : i0 + per]
        pts = torch.cat([xs.repeat_interleave(G * G)[:, None], yz.repeat(len(xs), 1)], dim=1)
        flat[i0 * G * G : (i0 + len(xs)) * G * G] = rep.density(pts).float().clamp(min=0)
    return DensityVolume(values, bound)


@torch.no_grad()
def ray_max_density(volume: DensityVolume, cams: Cameras, chunk: int = 1 << 20) -> Tensor:
    """[B, H, W] maximum of the (trilinearly interpolated) volume along each pixel's ray, 0 off the box."""
    B, H, W = len(cams), cams.height, cams.width
    o, d = (x.reshape(-1, 3) for x in cams.rays())
    t0, t1 = ray_box(o, d, volume.bound)
    step = 0.5 * volume.spacing
    n = int(math.ceil(2.0 * math.sqrt(3.0) * volume.bound / step)) + 1
    grid = volume.values[None, None]  # [1, 1, D=x, H=y, W=z]
    out = torch.zeros(len(o))
    rays_per = max(1, chunk // n)
    s = torch.arange(n, dtype=o.dtype)
    for r0 in range(0, len(o), rays_per):
        sl = slice(r0, r0 + rays_per)
        t = t0[sl, None] + s[None, :] * step  # [r, n]
        inside = t <= t1[sl, None]
        p = o[sl, None, :] + t[..., None] * d[sl, None, :]  # [r, n, 3]
        uvw = (p / volume.bound).flip(-1)  # grid_sample wants (W=z, H=y, D=x)
        v = F.grid_sample(grid, uvw[None, :, :, None, :], mode="bilinear", align_corners=True)[0, 0, :, :, 0]
        out[sl] = torch.where(inside, v, torch.zeros(())).amax(dim=1)
    return out.view(B, H, W)


@torch.no_grad()
def rendered_silhouettes(rep, cams: Cameras) -> Tensor:
    """[B, H, W] bool: where the representation renders alpha > 0.5 (eval mode, unlit)."""
    was_training = rep.training
    rep.eval()
    try:
        out = rep.render(cams, Shading(front_light(cams.position), mode="albedo"))
    finally:
        rep.train(was_training)
    return out.alpha[:, 0] > 0.5


def default_cameras(size: int = 64) -> Cameras:
    """Views used to choose the level: 6 around the object at 15 deg elevation, plus one from above-front."""
    ring = ring_cameras(6, size, elevation_deg=15.0)
    top = ring_cameras(1, size, elevation_deg=60.0)
    return Cameras(torch.cat([ring.c2w, top.c2w]), torch.cat([ring.fov_y, top.fov_y]), size, size)


@torch.no_grad()
def choose_level(rep, cams: Cameras | None = None, volume: DensityVolume | None = None,
                 resolution: int = 128) -> tuple[float | None, float]:
    """The iso-level whose implied silhouettes best match the rendered ones, and that IoU.

    Returns (None, 0.0) when nothing renders opaque (an empty field). The search is exact over the
    candidate levels that change the implied silhouette (every distinct per-ray maximum).
    """
    cams = default_cameras() if cams is None else cams
    volume = sample_volume(rep, resolution) if volume is None else volume
    sil = rendered_silhouettes(rep, cams).reshape(-1)
    if not bool(sil.any()):
        return None, 0.0
    peak = ray_max_density(volume, cams).reshape(-1)
    order = torch.argsort(peak, descending=True)
    sorted_peak, sorted_sil = peak[order], sil[order].double()
    k = torch.arange(1, len(peak) + 1, dtype=torch.float64)  # covering the k rays with the highest maxima
    tp = torch.cumsum(sorted_sil, 0)
    iou = tp / (sil.sum() + k - tp)
    valid = torch.ones_like(iou, dtype=torch.bool)
    valid[:-1] = sorted_peak[:-1] > sorted_peak[1:]  # only cut between distinct values
    valid &= sorted_peak > 0
    if not bool(valid.any()):
        return None, 0.0
    iou = torch.where(valid, iou, torch.full_like(iou, -1.0))
    best = int(torch.argmax(iou))
    hi = float(sorted_peak[best])
    lo = float(sorted_peak[best + 1]) if best + 1 < len(sorted_peak) else 0.0
    level = math.sqrt(hi * lo) if lo > 0 else 0.5 * hi  # between the two maxima, in log space
    return level, float(iou[best])


@torch.no_grad()
def marching_cubes(volume: DensityVolume, level: float) -> Mesh:
    """Iso-surface {density = level} as a closed mesh (the volume is padded with zeros), without colours.

    Faces wind counter-clockwise seen from outside (positive signed volume). Empty -> zero faces.
    """
    from skimage.measure import marching_cubes as skimage_mc

    vol = volume.values.numpy()
    if not np.isfinite(level) or level <= 0 or float(vol.max()) <= level:
        return Mesh.empty()
    padded = np.pad(vol, 1, mode="constant", constant_values=0.0)
    h = volume.spacing
    verts, faces, _, _ = skimage_mc(padded, level=level, spacing=(h, h, h), allow_degenerate=False)
    verts = (verts - h - volume.bound).astype(np.float32)
    faces = faces.astype(np.int64)
    if len(faces) and _signed_volume(verts, faces) < 0:
        faces = faces[:, [0, 2, 1]]
    return Mesh(verts, faces, None)


def _signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (verts[faces[:, i]].astype(np.float64) for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


@torch.no_grad()
def extract_mesh(rep, resolution: int = 128, level: float | None = None, cams: Cameras | None = None,
                 chunk: int = 65536) -> Mesh:
    """Coloured mesh of a density representation: sample, choose the level from the renders, marching cubes.

    `level` overrides the choice. Vertex colours are `rep.albedo_at(vertices)`. Empty field -> zero faces.
    """
    volume = sample_volume(rep, resolution)
    if level is None:
        level, _ = choose_level(rep, cams, volume)
    if level is None:
        return Mesh.empty()
    mesh = marching_cubes(volume, level)
    if mesh.is_empty:
        return mesh
    pts = torch.from_numpy(mesh.vertices)
    colors = torch.cat([rep.albedo_at(pts[s : s + chunk]) for s in range(0, len(pts), chunk)])
    mesh.colors = colors.clamp(0.0, 1.0).float().numpy()
    return mesh


__all__ = ["DensityVolume", "sample_volume", "ray_max_density", "rendered_silhouettes", "default_cameras",
           "choose_level", "marching_cubes", "extract_mesh"]
