"""Occupancy grid for empty-space skipping, and the ray marcher that samples only occupied cells.

The grid keeps, per cell of a G^3 grid over [-bound, bound]^3, a decaying maximum of the density seen at
random points of the cell (Instant-NGP / nerfacc style: `d <- max(decay * d, new)`). A cell is occupied
when that value exceeds `min(threshold, mean)` (the mean keeps a near-empty start from being all empty);
the occupied set is then dilated by `dilation` cells so surfaces can grow into their neighbourhood. A grid
with nothing above the level marks every cell occupied (a field that went empty can still come back).

The marcher puts candidate samples at a fixed step along each ray inside the box (jittered per ray while
training), keeps those in occupied cells, optionally drops those behind where the grid's density predicts
the ray is already opaque (early termination), and returns them packed and sorted by ray.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class OccupancyConfig:
    """The occupancy grid of a ray-marched volume: its size and how it is re-measured."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"resolution": (8, 512), "update_every": (1, 100000),
        "threshold": (0.0, 1000000.0), "fraction": (1e-06, 1.0), "decay": (0.0, 1.0), "dilation": (0, 8)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    resolution: int = 64
    """Cells per axis of the occupancy grid (empty-space skipping)."""
    update_every: int = 16
    """Steps between occupancy updates (before_step)."""
    threshold: float = 0.5
    """Density above which a cell is occupied (capped by the grid's mean density, for near-empty starts)."""
    fraction: float = 0.125
    """Fraction of all cells re-measured at an update (occupied cells always are; 1 = every cell)."""
    decay: float = 0.7
    """Per-update decay of a cell's remembered density: d <- max(decay * d, new)."""
    dilation: int = 1
    """Cells by which the occupied set is grown, so surfaces can expand between updates."""


@dataclass
class MarchConfig:
    """Where a ray-marched volume puts its samples."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"samples_per_ray": (4, 4096),
        "early_stop_depth": (0.0, 1000000.0), "early_stop_lag_cells": (0.0, 1000.0)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    samples_per_ray: int = 128
    """Marching step = box diagonal / samples_per_ray (128: ~0.027 world units for bound 1)."""
    early_stop_depth: float = 20.0
    """Drop samples behind where the occupancy grid predicts optical depth > this (0 disables)."""
    early_stop_lag_cells: float = 2.0
    """... counting the grid's optical depth only up to this many cells before the sample (a safety margin)."""


def ray_aabb(origins: Tensor, dirs: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Slab intersection of rays with the axis-aligned box [lo, hi] (lo, hi [3]).

    origins, dirs [R, 3] -> (t_near [R], t_far [R]), distances along `dirs`; t_near is clamped to >= 0.
    A ray misses the box exactly when t_far <= t_near.
    """
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (lo - origins) * inv
    t1 = (hi - origins) * inv
    t_near = torch.minimum(t0, t1).amax(dim=-1).clamp(min=0.0)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    return t_near, t_far


def ray_box(origins: Tensor, dirs: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """`ray_aabb` for the cube [-bound, bound]^3."""
    lo = torch.full((3,), -float(bound), dtype=origins.dtype, device=origins.device)
    return ray_aabb(origins, dirs, lo, -lo)


class OccupancyGrid(nn.Module):
    """A G^3 grid of cell densities over [-bound, bound]^3, with a derived occupancy bitfield.

    Buffers (saved with the model): `density` [G, G, G] (decaying max of sampled densities),
    `occupied` [G, G, G] bool (dilated), `bounds` [2, 3] (min and max corner of the occupied cells'
    bounding box; lo > hi when nothing is occupied), `updates` (number of updates so far).
    Cell (i, j, k) covers x in [-b + i*c, -b + (i+1)*c), likewise y (j) and z (k), c = 2b / G.
    """

    def __init__(self, resolution: int = 64, bound: float = 1.0, threshold: float = 0.5,
                 decay: float = 0.7, dilation: int = 1) -> None:
        super().__init__()
        self.resolution = int(resolution)
        self.bound = float(bound)
        self.threshold = float(threshold)
        self.decay = float(decay)
        self.dilation = int(dilation)
        G = self.resolution
        self.register_buffer("density", torch.zeros(G, G, G))
        self.register_buffer("occupied", torch.ones(G, G, G, dtype=torch.bool))
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))
        self.register_buffer("bounds", torch.tensor([[-bound] * 3, [bound] * 3]))

    @property
    def cell_size(self) -> float:
        return 2.0 * self.bound / self.resolution

    @property
    def initialized(self) -> bool:
        return int(self.updates) > 0

    def cell_index(self, points: Tensor) -> Tensor:
        """points [N, 3] -> flat cell index [N] int64 (points outside are clamped to the border cells)."""
        G = self.resolution
        ijk = ((points + self.bound) * (G / (2.0 * self.bound))).floor().clamp_(0, G - 1).long()
        return (ijk[:, 0] * G + ijk[:, 1]) * G + ijk[:, 2]

    def is_occupied(self, points: Tensor) -> Tensor:
        """points [N, 3] -> [N] bool."""
        return self.occupied.view(-1)[self.cell_index(points)]

    @torch.no_grad()
    def update(self, density_fn: Callable[[Tensor], Tensor], fraction: float = 1.0,
               generator: torch.Generator | None = None, chunk: int = 65536) -> None:
        """Re-measure cells: all occupied ones plus a random `fraction` of all cells (all at the first update).

        density_fn: [N, 3] world points -> [N] density. Each measured cell gets one uniformly random point;
        its value becomes max(decay * old, new). Then the occupancy bits are recomputed.
        """
        G, dev = self.resolution, self.density.device
        n_cells = G**3
        if not self.initialized or fraction >= 1.0:
            cells = torch.arange(n_cells, device=dev)
        else:
            rand = torch.rand(n_cells, generator=generator, device=dev) < fraction
            cells = (rand | self.occupied.view(-1)).nonzero().squeeze(1)
        k = cells % G
        j = (cells // G) % G
        i = cells // (G * G)
        ijk = torch.stack([i, j, k], dim=1).to(self.density.dtype)
        jitter = torch.rand(ijk.shape, generator=generator, device=dev, dtype=ijk.dtype)
        pts = -self.bound + (ijk + jitter) * self.cell_size
        new = torch.cat([density_fn(pts[s : s + chunk]).reshape(-1) for s in range(0, len(pts), chunk)])
        flat = self.density.view(-1)
        old = flat[cells]
        flat[cells] = new if not self.initialized else torch.maximum(old * self.decay, new)
        self.updates += 1
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute `occupied` from `density`: above min(threshold, mean), dilated."""
        level = min(self.threshold, float(self.density.mean()))
        occ = self.density > level
        if not bool(occ.any()):  # an all-empty field: sample everywhere, so it can still receive gradients
            occ = torch.ones_like(occ)
        if self.dilation > 0:
            k = 2 * self.dilation + 1
            occ = F.max_pool3d(occ[None, None].float(), k, stride=1, padding=self.dilation)[0, 0] > 0
        self.occupied.copy_(occ)
        c = self.cell_size
        lo, hi = [], []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            used = occ.any(dim=other[1]).any(dim=other[0]).nonzero()
            lo.append(-self.bound + c * float(used.min()) if used.numel() else self.bound)
            hi.append(-self.bound + c * float(used.max() + 1) if used.numel() else -self.bound)
        self.bounds.copy_(torch.tensor([lo, hi], dtype=self.bounds.dtype))


@dataclass
class RaySamples:
    """Samples along rays, packed: sorted by ray, then by distance."""

    ray_ids: Tensor
    """[N] int64 index of each sample's ray (into the flattened batch of rays)."""
    t: Tensor
    """[N] distance of each sample from its ray's origin."""
    points: Tensor
    """[N, 3] world positions."""
    step: float
    """Interval length every sample represents (the marching step)."""
    n_rays: int
    """Number of rays R the samples belong to."""


def march(origins: Tensor, dirs: Tensor, bound: float, step: float,
          grid: OccupancyGrid | None = None, jitter: Tensor | None = None,
          stop_optical_depth: float | None = None, stop_lag: float = 0.0,
          chunk: int = 65536) -> RaySamples:
    """Samples at t = t_box + (k + jitter) * step along each ray, kept only in occupied cells.

    t_box is the ray's entry into [-bound, bound]^3, so skipping never moves a sample.

    origins, dirs [R, 3] (unit dirs); jitter [R] in [0, 1) (None: 0.5).
    grid: None samples the whole box [-bound, bound]^3 (the dense reference); otherwise only the
      bounding box of the occupied cells is marched, and only samples in occupied cells are kept.
    stop_optical_depth: if set (and a grid is given), drop samples once the optical depth predicted by the
      grid's cell densities, accumulated up to `stop_lag` world units before the sample, exceeds it.
    chunk: candidate samples processed at once (keeps temporaries in cache).
    """
    R, dev, dt = origins.shape[0], origins.device, origins.dtype
    empty = RaySamples(torch.zeros(0, dtype=torch.int64, device=dev), origins.new_zeros(0),
                       origins.new_zeros(0, 3), step, R)
    if grid is None:
        lo = torch.full((3,), -float(bound), dtype=dt, device=dev)
        hi = -lo
    else:
        lo, hi = grid.bounds[0].to(dt), grid.bounds[1].to(dt)
        if bool((lo >= hi).any()):
            return empty
    t_near, t_far = ray_aabb(origins, dirs, lo, hi)
    hit = (t_far > t_near).nonzero().squeeze(1)
    if hit.numel() == 0:
        return empty
    o, d = origins.index_select(0, hit), dirs.index_select(0, hit)
    tn, tf = t_near.index_select(0, hit), t_far.index_select(0, hit)
    j = torch.full_like(tn, 0.5) if jitter is None else jitter.index_select(0, hit)
    if grid is not None:  # keep the lattice of the whole box, so skipping never moves a sample
        t_box, _ = ray_box(o, d, bound)
        first = torch.ceil((tn - t_box) / step - j).clamp(min=0.0)
        tn = t_box + first * step
    M = int(math.ceil(float((tf - tn).max()) / step)) + 1
    occupied = grid.occupied.view(-1) if grid is not None else None
    cell_density = grid.density.view(-1) if grid is not None else None
    k = torch.arange(M, device=dev, dtype=dt)
    lag = max(1, int(math.ceil(stop_lag / step)))
    use_stop = grid is not None and stop_optical_depth is not None and lag < M
    rows_all, t_all = [], []
    per = max(1, chunk // M)
    for r0 in range(0, len(hit), per):
        sl = slice(r0, r0 + per)
        t = torch.addcmul(tn[sl, None], k[None, :] + j[sl, None], torch.tensor(step, dtype=dt, device=dev))  # [c, M]
        keep = t < tf[sl, None]
        if grid is not None:
            G = grid.resolution
            s = G / (2.0 * bound)
            flat = None
            for axis in range(3):
                c = torch.addcmul((o[sl, axis, None] + bound) * s, t, d[sl, axis, None] * s).floor_().clamp_(0, G - 1)
                flat = c if flat is None else torch.add(c, flat, alpha=G)
            flat = flat.long().view(-1)
            keep &= occupied.index_select(0, flat).view_as(keep)
            if use_stop:
                tau = cell_density.index_select(0, flat).view_as(keep).mul_(keep) * step
                depth = tau.cumsum(dim=1)
                keep[:, lag:] &= depth[:, : M - lag] < stop_optical_depth
        idx = keep.view(-1).nonzero().squeeze(1)
        rows_all.append(idx // M + r0)
        t_all.append(t.view(-1)[idx])
    rows = torch.cat(rows_all)
    if rows.numel() == 0:
        return empty
    ts = torch.cat(t_all)
    pts = torch.addcmul(o.index_select(0, rows), d.index_select(0, rows), ts[:, None])
    return RaySamples(hit.index_select(0, rows), ts, pts, step, R)


__all__ = ["OccupancyConfig", "MarchConfig", "ray_aabb", "ray_box", "OccupancyGrid", "RaySamples", "march"]
