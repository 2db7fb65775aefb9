"""Dense voxel grid (DVGO-style) for text-to-3D, sized for a 2-core CPU.

Field: two dense grids over [-bound, bound]^3 whose values sit at the grid VERTICES (align_corners): a raw
density grid [1, R, R, R] and a colour grid [C, R, R, R]. A point reads both by trilinear interpolation
(one `grid_sample` call on the concatenated grids). Post-activation: the RAW density is interpolated and
activated afterwards (density = exp(raw), the input clamped at 15), which gives sharp surfaces inside a
single voxel at low resolution. Colour: sigmoid of the interpolated features (C = 3), or a shallow MLP on
them (`hidden > 0`).

Initialisation: the density grid starts as the same blob as the NeRF (`blob`: `bias + scale * (1 - |x| /
radius)`), evaluated at the vertices; colours start grey.

Progressive upscaling: the grids start at `resolution_start` and are resampled (trilinear) up to
`resolution` in `upscale_times` steps, evenly spread until `upscale_until` of the run; each upscale rebuilds
the optimiser (the Adam moments are resampled too, so the step size does not jump).

Rendering is the ray-marched volumes' (representations/marched.py), as for the NeRF: occupancy-grid ray
marching (the occupancy grid is re-measured from the voxel density; every cell, the grid is cheap to read),
emission-absorption compositing, deferred Lambertian shading with one finite-difference normal per pixel,
one voxel wide, at the composited surface point. The occupancy threshold is low: a voxel only learns where
samples land, so the occupied set must reach beyond the visible surface for the surface to grow.

Regularisers (RenderOut.terms, already weighted): total variation of the raw density and colour grids
(DVGO), orientation, opacity sparsity and entropy (the last two against wispy floaters).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Representation, RepresentationConfig
from .marched import BlobConfig, MarchedVolume, blob
from .occupancy import MarchConfig, OccupancyConfig, RaySamples
from .optim import adam
from .regularizers import VolumeRegularizers


@dataclass
class VoxelConfig(RepresentationConfig):
    """Dense voxel grid: sizes, upscaling, learning rates, the starting blob, sampling and regularisers."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"resolution": (8, 512), "resolution_start": (8, 512),
        "upscale_times": (0, 8), "upscale_until": (0.0, 1.0), "features": (1, 64), "hidden": (0, 1024),
        "lr_density": (1e-08, 1.0), "lr_color": (1e-08, 1.0), "tv_weight": (0.0, 1000000.0),
        "normal_min_alpha": (0.0, 1.0)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    kind: str = "voxel"
    """Registry key."""
    resolution: int = 64
    """Final grid resolution (vertices per axis)."""
    resolution_start: int = 32
    """Grid resolution at the start of the run (progressive upscaling; equal to `resolution` disables it)."""
    upscale_times: int = 2
    """Number of upscales from resolution_start to resolution (geometric in the side length)."""
    upscale_until: float = 0.5
    """Fraction of the run by which the final resolution is reached; upscales are spread evenly before it."""
    features: int = 3
    """Channels of the colour grid (must be 3 when hidden = 0: they are the albedo logits)."""
    hidden: int = 0
    """Width of the optional shallow colour MLP (features -> hidden -> 3); 0 = no MLP."""
    lr_density: float = 0.1
    """Adam learning rate of the raw density grid (DVGO uses 0.1)."""
    lr_color: float = 0.05
    """Adam learning rate of the colour grid (and MLP)."""
    tv_weight: float = 0.01
    """Weight of the grids' total variation (mean squared neighbour difference; the colour grid's counts 1/10)."""
    blob: BlobConfig = field(default_factory=BlobConfig)
    """The starting density of the grid's vertices."""
    march: MarchConfig = field(default_factory=lambda: MarchConfig(early_stop_depth=0.0))
    """Where the samples go along each ray."""
    occupancy: OccupancyConfig = field(default_factory=lambda: OccupancyConfig(
        update_every=8, threshold=0.01, fraction=1.0, decay=0.0))
    """The occupancy grid (empty-space skipping), re-measured everywhere at every update."""
    regularizers: VolumeRegularizers = field(default_factory=VolumeRegularizers)
    """Weights of the regularisers of the rendered images."""
    normal_min_alpha: float = 1e-3
    """Pixels with lower opacity get no normal (shaded with ambient light only)."""

    def training_bytes(self, pixels: int) -> float:
        """About 4 KB a pixel at 128 samples a ray (measured like NeRF's), plus the grids with their Adam moments."""
        return 4e3 * pixels * self.march.samples_per_ray / 128 + 12.0 * self.resolution ** 3 * (1 + self.features)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden == 0 and self.features != 3:
            raise ValueError("voxel: features must be 3 when hidden = 0 (they are the albedo logits)")
        if self.resolution_start > self.resolution or self.resolution_start < 2:
            raise ValueError("voxel: need 2 <= resolution_start <= resolution")


class VoxelGrid(MarchedVolume):
    """Dense density + colour grids with post-activation interpolation and its own Adam optimiser."""

    Config = VoxelConfig
    chunk = 262144

    def __init__(self, cfg: VoxelConfig | None = None, total_steps: int = 1000) -> None:
        cfg = VoxelConfig() if cfg is None else cfg
        super().__init__(cfg, total_steps)
        self.cfg: VoxelConfig = cfg
        R = cfg.resolution_start
        self.density_grid = nn.Parameter(blob(self.vertices(R), cfg.blob).view(1, R, R, R))
        # albedo logits start at 0 (grey); MLP features start small and random, else its first layer gets
        # no gradient (dL/dW = delta * features^T = 0) until the grid has moved
        color = torch.zeros(cfg.features, R, R, R) if cfg.hidden == 0 else 0.1 * torch.randn(cfg.features, R, R, R)
        self.color_grid = nn.Parameter(color)
        self.mlp = (nn.Sequential(nn.Linear(cfg.features, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 3))
                    if cfg.hidden > 0 else None)
        self.optimizer = self._make_optimizer()
        self._upscaled = False

    # -- grid helpers --------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return self.density_grid.shape[-1]

    def vertices(self, R: int) -> Tensor:
        """[R^3, 3] world positions of the grid vertices, x-major (index (i, j, k) -> i * R^2 + j * R + k)."""
        b = self.cfg.bound
        axis = torch.linspace(-b, b, R)
        return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        groups = [{"params": [self.density_grid], "lr": self.cfg.lr_density},
                  {"params": [self.color_grid] + (list(self.mlp.parameters()) if self.mlp else []),
                   "lr": self.cfg.lr_color}]
        return adam(groups)

    def schedule(self) -> dict[int, int]:
        """{step: new resolution} of the progressive upscaling."""
        c = self.cfg
        if c.upscale_times <= 0 or c.resolution_start == c.resolution or self._upscaled:
            return {}
        out = {}
        for k in range(1, c.upscale_times + 1):
            step = max(1, round(k / c.upscale_times * c.upscale_until * self.total_steps))
            res = round(c.resolution_start * (c.resolution / c.resolution_start) ** (k / c.upscale_times))
            out[step] = res
        return out

    @torch.no_grad()
    def upscale(self, R: int) -> None:
        """Resample both grids (and their Adam moments) to R vertices per axis; rebuild the optimiser."""
        old = {p: dict(self.optimizer.state.get(p, {})) for p in (self.density_grid, self.color_grid)}

        def resize(x: Tensor) -> Tensor:
            return F.interpolate(x[None], size=(R, R, R), mode="trilinear", align_corners=True)[0]

        new_d = nn.Parameter(resize(self.density_grid.data))
        new_c = nn.Parameter(resize(self.color_grid.data))
        moved = {new_d: old[self.density_grid], new_c: old[self.color_grid]}
        self.density_grid, self.color_grid = new_d, new_c
        state = {p: {k: (resize(v) if torch.is_tensor(v) and v.dim() == 4 else v) for k, v in s.items()}
                 for p, s in moved.items()}
        mlp_state = {p: self.optimizer.state[p] for p in (self.mlp.parameters() if self.mlp else [])
                     if p in self.optimizer.state}
        self.optimizer = self._make_optimizer()
        for p, s in {**state, **mlp_state}.items():
            if s:
                self.optimizer.state[p] = s
        self.update_occupancy()

    # -- the field -----------------------------------------------------------------------------
    def _sample(self, points: Tensor, with_color: bool = True) -> tuple[Tensor, Tensor | None]:
        """points [N, 3] -> (raw density [N], colour features [C, N] or None), trilinear on the vertices."""
        grid = torch.cat([self.density_grid, self.color_grid]) if with_color else self.density_grid
        uvw = (points / self.cfg.bound).flip(-1).view(1, -1, 1, 1, 3)  # grid_sample wants (z, y, x)
        v = F.grid_sample(grid[None], uvw, mode="bilinear", padding_mode="border", align_corners=True)
        v = v.view(grid.shape[0], -1)
        return v[0], (v[1:] if with_color else None)

    def _albedo(self, feat: Tensor) -> Tensor:
        """[C, N] features -> [3, N] albedo in [0, 1]."""
        if self.mlp is None:
            return torch.sigmoid(feat)
        return torch.sigmoid(self.mlp(feat.t())).t()

    def raw_density(self, points: Tensor) -> Tensor:
        """[N, 3] world points -> [N] raw density, trilinear on the vertices."""
        return self._sample(points, with_color=False)[0]

    def raw_field(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """[N, 3] world points -> (raw density [N], albedo [3, N] channels first)."""
        raw, feat = self._sample(points)
        return raw, self._albedo(feat)

    def normal_step(self) -> float:
        """One voxel."""
        return 2.0 * self.cfg.bound / (self.resolution - 1)

    def total_variation(self) -> Tensor:
        """Mean squared difference of neighbouring vertices: density + colour / 10 (scalar)."""
        def tv(g: Tensor) -> Tensor:
            return sum(g.diff(dim=d).square().mean() for d in (1, 2, 3))

        return tv(self.density_grid) + 0.1 * tv(self.color_grid)

    def with_field_terms(self, terms: dict[str, Tensor], samples: RaySamples, sigma: Tensor) -> dict[str, Tensor]:
        """'tv' (the grids' total variation), then the volume terms."""
        if self.cfg.tv_weight > 0:
            return {"tv": self.cfg.tv_weight * self.total_variation(), **terms}
        return terms

    # -- the per-step protocol -------------------------------------------------------------------
    def before_step(self, step: int) -> None:
        """Upscale the grids on schedule; else update the occupancy grid every `occupancy.update_every` steps."""
        res = self.schedule().get(step)
        if res is not None and res > self.resolution:
            self.upscale(res)
        else:
            super().before_step(step)

    def load_state_tensors(self, state: dict[str, Tensor]) -> None:
        """Resize the grids to the saved resolution first (the run may have upscaled), then load."""
        saved = state.get("model.density_grid")
        if saved is not None and saved.shape[-1] != self.resolution:
            self._reset_resolution(saved.shape[-1])
        super().load_state_tensors(state)

    def _reset_resolution(self, R: int) -> None:
        """Fresh (zero) grids of R vertices per axis and a fresh optimiser."""
        dev = self.density_grid.device
        self.density_grid = nn.Parameter(torch.zeros(1, R, R, R, device=dev))
        self.color_grid = nn.Parameter(torch.zeros(self.cfg.features, R, R, R, device=dev))
        self.optimizer = self._make_optimizer()

    @torch.no_grad()
    def init_from(self, source: Representation) -> None:
        """Copy another scene's density (as raw = log density) and albedo (as logits) onto the grid vertices."""
        if self.mlp is not None:
            raise NotImplementedError("voxel with a colour MLP cannot be initialised from another run")
        R = self.cfg.resolution
        if R != self.resolution:
            self._reset_resolution(R)
        pts = self.vertices(R).to(self.density_grid)
        dens = source.density(pts).clamp(min=1e-6)
        alb = source.albedo_at(pts).clamp(1e-3, 1 - 1e-3)
        self.density_grid.copy_(dens.log().view(1, R, R, R))
        self.color_grid.copy_(torch.logit(alb).t().reshape(3, R, R, R))
        self._upscaled = True  # already at the final resolution: no upscaling
        self.update_occupancy()


__all__ = ["VoxelConfig", "VoxelGrid"]
