"""The 3D Gaussians' density and albedo voxelised on a grid, for what reads the field at very many points:
mesh extraction (marching cubes on the density), the mesh's vertex colours and large albedo queries (a
texture bake: ~10^6 texels). One voxelisation serves all three: `VoxelCache` keeps the last one until a
parameter of the Gaussians changes. Exact queries (few points, or with gradients) stay in
`Gaussians.density` / `Gaussians.albedo_at` (representations/gaussians.py).

Grid layout: G = resolution + 1 vertices per axis spanning [-bound, bound]^3 (vertex (i, j, k) at
-bound + (i, j, k) * 2 * bound / resolution), arrays indexed [x, y, z], on the CPU.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Voxels = tuple[Tensor, Tensor]
"""(density [G, G, G], albedo [G, G, G, 3]) on the grid's vertices."""


@torch.no_grad()
def voxelize(
    means: Tensor,  # [N, 3] world positions
    precisions: Tensor,  # [N, 3, 3] inverse covariances
    opacity: Tensor,  # [N] in [0, 1]
    colors: Tensor,  # [N, 3] albedo in [0, 1]
    max_scale: Tensor,  # [N] largest standard deviation (world units)
    bound: float,
    resolution: int,
    max_half_width: int = 6,
) -> Voxels:  # (density [G, G, G], albedo [G, G, G, 3]), G = resolution + 1
    """(density [G, G, G], albedo [G, G, G, 3]) of N Gaussians on the G = resolution + 1 vertices of the box.

    density = sum of opacity * exp(-d^T P d / 2) over the Gaussians; albedo = the same kernel-weighted mean
    of `colors` (grey where no Gaussian reaches). Each Gaussian is evaluated on the vertices within 3 sigma
    (3 * max_scale) of its mean, at most max_half_width vertices away, grouped by that half-width so each
    group is one dense batch. The result is on the CPU.
    """
    b = float(bound)
    G = resolution + 1
    h = 2.0 * b / resolution
    half = (3.0 * max_scale / h).ceil().clamp(1, max_half_width).long()
    centre = ((means + b) / h).round().long()
    dev = means.device
    dens = torch.zeros(G**3, device=dev)
    wcol = torch.zeros(G**3, 3, device=dev)
    strides = torch.tensor([G * G, G, 1], device=dev)
    for k in half.unique().tolist():
        ids = (half == k).nonzero().squeeze(1)
        r = torch.arange(-k, k + 1, device=dev)
        off = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), dim=-1).reshape(-1, 3)  # [O, 3]
        for s in range(0, len(ids), max(1, 2_000_000 // len(off))):
            sel = ids[s:s + max(1, 2_000_000 // len(off))]
            v = centre[sel, None, :] + off[None]  # [n, O, 3] vertex indices
            inside = ((v >= 0) & (v < G)).all(-1)
            d = v.float() * h - b - means[sel, None, :]
            quad = torch.einsum("noi,nij,noj->no", d, precisions[sel], d)
            val = opacity[sel, None] * torch.exp(-0.5 * quad) * inside
            flat = (v.clamp(0, G - 1) * strides).sum(-1).reshape(-1)
            dens.index_add_(0, flat, val.reshape(-1))
            wcol.index_add_(0, flat, (val[..., None] * colors[sel, None, :]).reshape(-1, 3))
    albedo = (wcol + 0.5e-6) / (dens[:, None] + 1e-6)
    return dens.view(G, G, G).cpu(), albedo.view(G, G, G, 3).cpu()


@torch.no_grad()
def sample_albedo(albedo: Tensor, points: Tensor, bound: float) -> Tensor:
    """albedo [G, G, G, 3] (voxelize's, vertices spanning [-bound, bound]^3), points [Q, 3] -> [Q, 3] trilinear
    samples, on the points' device and dtype; points outside the box read the nearest boundary value."""
    vol = albedo.permute(3, 0, 1, 2)[None].to(points)  # [1, 3, D=x, H=y, W=z]
    grid = (points / float(bound)).flip(-1).view(1, -1, 1, 1, 3)  # grid_sample wants (z, y, x)
    out = F.grid_sample(vol, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(3, -1).T


class VoxelCache:
    """The last voxelisation of a set of Gaussians, reused while none of their parameters has changed (a
    texture bake and a mesh extraction share it)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._voxels: Voxels | None = None

    def clear(self) -> None:
        """Forget the stored voxelisation (an optimiser step changed the parameters: a fused Adam step does
        not bump the tensors' version counters, so the key alone cannot see it)."""
        self._key, self._voxels = None, None

    def get(self, resolution: int, params: Sequence[Tensor], compute: Callable[[], Voxels]) -> Voxels:
        """compute() -> (density [G, G, G], albedo [G, G, G, 3]), or the stored result of the last call if it
        had the same resolution and the same parameter tensors (storage, in-place version counter, shape)."""
        key = (resolution, *((t.data_ptr(), t._version, tuple(t.shape)) for t in params))
        if self._voxels is None or self._key != key:
            self._key, self._voxels = key, compute()
        return self._voxels
