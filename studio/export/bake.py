"""Texture baking: rasterise the UV layout, sample the representation's albedo at each texel's surface point,
then pad the gutters so bilinear filtering and mip-maps never read the empty background at a seam."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def rasterize_uv(uvs: Tensor, faces: Tensor, size: int, chunk: int = 1 << 20) -> tuple[Tensor, Tensor]:
    """Which triangle covers each texel centre of a `size`² atlas, and where.

    uvs [V, 2] in [0, 1] (u -> column, v -> row), faces [F, 3] int64.
    Returns face_id [size, size] int64 (-1 = empty) and bary [size, size, 3] float32.
    """
    px = uvs.double() * size - 0.5  # texel (row i, col j) has its centre at (j, i) in these units
    tri = px[faces]  # [F, 3, 2]
    lo = tri.amin(1).ceil().clamp(0, size - 1).long()
    hi = tri.amax(1).floor().clamp(0, size - 1).long()
    w = (hi[:, 0] - lo[:, 0] + 1).clamp(min=0)
    h = (hi[:, 1] - lo[:, 1] + 1).clamp(min=0)
    face_id = torch.full((size * size,), -1, dtype=torch.long)
    bary = torch.zeros(size * size, 3, dtype=torch.float32)
    counts = w * h
    ends = torch.cumsum(counts, 0)
    f0 = 0
    while f0 < len(faces):  # faces in groups of about `chunk` candidate texels
        f1 = int(torch.searchsorted(ends, ends[f0] - counts[f0] + chunk, right=True).clamp(min=f0 + 1))
        fids = torch.repeat_interleave(torch.arange(f0, f1), counts[f0:f1])
        if len(fids):
            start = torch.repeat_interleave(ends[f0:f1] - counts[f0:f1], counts[f0:f1])
            off = torch.arange(int(start[0]), int(start[0]) + len(fids)) - start
            x = lo[fids, 0] + off % w[fids]
            y = lo[fids, 1] + torch.div(off, w[fids], rounding_mode="floor")
            b = _barycentric(tri[fids], torch.stack([x, y], -1).double())
            inside = (b >= -1e-9).all(-1)
            pix = (y * size + x)[inside]
            face_id[pix] = fids[inside]
            bary[pix] = b[inside].float()
        f0 = f1
    return face_id.view(size, size), bary.view(size, size, 3)


def _barycentric(tri: Tensor, p: Tensor) -> Tensor:
    """[N, 3] barycentric coordinates of points p [N, 2] in triangles tri [N, 3, 2] (degenerate -> -1)."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    ok = den.abs() > 1e-12
    den = torch.where(ok, den, torch.ones_like(den))
    l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    out = torch.stack([1 - l1 - l2, l1, l2], -1)
    return torch.where(ok[:, None], out, torch.full_like(out, -1.0))


@torch.no_grad()
def pad_gutters(image: Tensor, filled: Tensor, iterations: int) -> Tensor:
    """Grow the filled texels outward `iterations` times (mean of filled neighbours), then fill the rest.

    image [H, W, C] float, filled [H, W] bool. The remaining empty texels get the mean filled colour.
    """
    img = torch.where(filled[..., None], image, torch.zeros_like(image)).permute(2, 0, 1)[None]  # [1, C, H, W]
    mask = filled[None, None].to(img.dtype)
    kernel = torch.ones(1, 1, 3, 3, dtype=img.dtype)
    C = img.shape[1]
    for _ in range(iterations):
        total = F.conv2d(img, kernel.expand(C, 1, 3, 3), padding=1, groups=C)
        count = F.conv2d(mask, kernel, padding=1)
        grow = (mask == 0) & (count > 0)
        img = torch.where(grow, total / count.clamp(min=1), img)
        mask = torch.where(grow, torch.ones_like(mask), mask)
    out = img[0].permute(1, 2, 0)
    if bool(filled.any()):
        mean = image[filled].mean(0)
        out = torch.where(mask[0, 0, ..., None] > 0, out, mean)
    return out


@torch.no_grad()
def bake_albedo(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, size: int, padding: int,
                albedo: Callable[[Tensor], Tensor] | None, colors: np.ndarray | None = None) -> np.ndarray:
    """[size, size, 3] uint8 albedo texture of the mesh (vertices [V, 3] in the scene frame, faces [F, 3], uvs [V, 2]).

    `albedo` maps scene points [N, 3] -> [N, 3] in [0, 1] (the representation's own field); without it the
    per-vertex `colors [V, 3]` are interpolated instead.
    """
    f = torch.from_numpy(faces).long()
    face_id, bary = rasterize_uv(torch.from_numpy(uvs), f, size)
    filled = face_id >= 0
    fid, b = face_id[filled], bary[filled]  # [N], [N, 3]
    if albedo is not None:
        v = torch.from_numpy(vertices).float()
        pts = (v[f[fid]] * b[..., None]).sum(1)
        rgb = torch.cat([albedo(pts[s:s + 65536]).float().cpu() for s in range(0, len(pts), 65536)] or [torch.zeros(0, 3)])
    else:
        c = torch.from_numpy(colors).float()
        rgb = (c[f[fid]] * b[..., None]).sum(1)
    image = torch.zeros(size, size, 3)
    image[filled] = rgb.clamp(0, 1)
    image = pad_gutters(image, filled, padding)
    return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
