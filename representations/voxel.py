"""Dense voxel grid (DVGO-style) for text-to-3D, sized for a 2-core CPU.

Field: two dense grids over [-bound, bound]^3 whose values sit at the grid VERTICES (align_corners): a raw
density grid [1, R, R, R] and a colour grid [C, R, R, R]. A point reads both by trilinear interpolation
(one `grid_sample` call on the concatenated grids). Post-activation: the RAW density is interpolated and
activated afterwards (density = exp(raw), the input clamped at 15), which gives sharp surfaces inside a
single voxel at low resolution. Colour: sigmoid of the interpolated features (C = 3), or a shallow MLP on
them (`hidden > 0`).

Initialisation: the density grid starts as the same blob as the NeRF, `density_bias + blob_scale *
(1 - |x| / blob_radius)`, evaluated at the vertices; colours start grey.

Progressive upscaling: the grids start at `resolution_start` and are resampled (trilinear) up to
`resolution` in `upscale_times` steps, evenly spread until `upscale_until` of the run; each upscale rebuilds
the optimiser (the Adam moments are resampled too, so the step size does not jump).

Rendering is the NeRF's: occupancy-grid ray marching (empty-space skipping; the occupancy grid is
re-measured from the voxel density), emission-absorption compositing, deferred Lambertian shading with one
finite-difference normal per pixel at the composited surface point.

Regularisers (RenderOut.terms, already weighted): total variation of the raw density and colour grids
(DVGO), orientation, opacity sparsity and entropy (the last two against wispy floaters).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import MarchedVolumeConfig, RenderOut, Representation
from .cameras import Cameras
from .mesh import Mesh
from .nerf import _TETRA, _fast_adam_flags, _TruncExp
from .occupancy import OccupancyGrid, march
from .regularizers import volume_terms
from .shading import Shading, shade
from .volume import accumulate, render_weights


@dataclass
class VoxelConfig(MarchedVolumeConfig):
    """Dense voxel grid: sizes, upscaling, initialisation, optimisation, regularisers and sampling."""

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
    """Weight of the total-variation term: mean squared difference of neighbouring raw density values
    (the colour grid gets tv_weight / 10). Smooths the grid and removes isolated floaters."""
    # the other shared fields (blob, regularisers, sampling) are documented in base.MarchedVolumeConfig
    occ_update_every: int = 8
    """Steps between occupancy updates (every cell is re-measured: the grid is cheap to read)."""
    occ_threshold: float = 0.01
    """Density above which an occupancy cell is occupied (capped by the mean density). Low, because a voxel
    only learns where samples land: the occupied set must reach beyond the visible surface so it can grow."""

    def __post_init__(self) -> None:
        if self.hidden == 0 and self.features != 3:
            raise ValueError("voxel: features must be 3 when hidden = 0 (they are the albedo logits)")
        if self.resolution_start > self.resolution or self.resolution_start < 2:
            raise ValueError("voxel: need 2 <= resolution_start <= resolution")


class VoxelGrid(Representation):
    """Dense density + colour grids with post-activation interpolation and its own Adam optimiser."""

    Config = VoxelConfig

    def __init__(self, cfg: VoxelConfig | None = None, total_steps: int = 1000) -> None:
        cfg = VoxelConfig() if cfg is None else cfg
        super().__init__(cfg, total_steps)
        self.cfg: VoxelConfig = cfg
        R = cfg.resolution_start
        self.density_grid = nn.Parameter(self._blob(self.vertices(R)).view(1, R, R, R))
        # albedo logits start at 0 (grey); MLP features start small and random, else its first layer gets
        # no gradient (dL/dW = delta * features^T = 0) until the grid has moved
        color = torch.zeros(cfg.features, R, R, R) if cfg.hidden == 0 else 0.1 * torch.randn(cfg.features, R, R, R)
        self.color_grid = nn.Parameter(color)
        self.mlp = (nn.Sequential(nn.Linear(cfg.features, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 3))
                    if cfg.hidden > 0 else None)
        self.occupancy = OccupancyGrid(cfg.occ_resolution, cfg.bound, cfg.occ_threshold, decay=0.0, dilation=1)
        self.step_size = 2.0 * math.sqrt(3.0) * cfg.bound / cfg.samples_per_ray
        self.optimizer = self._make_optimizer()
        self._upscaled = False
        self.last_sample_count = 0
        """Field samples evaluated by the last render (for logs and benchmarks)."""

    # -- grid helpers --------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return self.density_grid.shape[-1]

    def vertices(self, R: int) -> Tensor:
        """[R^3, 3] world positions of the grid vertices, x-major (index (i, j, k) -> i * R^2 + j * R + k)."""
        b = self.cfg.bound
        axis = torch.linspace(-b, b, R)
        return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)

    def _blob(self, points: Tensor) -> Tensor:
        c = self.cfg
        return c.density_bias + c.blob_scale * (1.0 - points.norm(dim=-1) / c.blob_radius)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        groups = [{"params": [self.density_grid], "lr": self.cfg.lr_density},
                  {"params": [self.color_grid] + (list(self.mlp.parameters()) if self.mlp else []),
                   "lr": self.cfg.lr_color}]
        return torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15, **_fast_adam_flags())

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

    def density(self, points: Tensor, chunk: int = 262144) -> Tensor:
        """[N, 3] world points -> [N] density (differentiable when grad is enabled)."""
        parts = [_TruncExp.apply(self._sample(points[s:s + chunk], False)[0]) for s in range(0, len(points), chunk)]
        return torch.cat(parts) if parts else points.new_zeros(0)

    def albedo_at(self, points: Tensor, chunk: int = 262144) -> Tensor:
        """[N, 3] world points -> [N, 3] albedo in [0, 1]."""
        parts = [self._albedo(self._sample(points[s:s + chunk])[1]).t() for s in range(0, len(points), chunk)]
        return torch.cat(parts) if parts else points.new_zeros(0, 3)

    def surface_normals(self, points: Tensor) -> Tensor:
        """[S, 3] points -> [S, 3] unit normals -grad(raw density), tetrahedral differences one voxel wide."""
        S = points.shape[0]
        eps = 2.0 * self.cfg.bound / (self.resolution - 1)
        tetra = _TETRA.to(points)
        probe = (points[None, :, :] + eps * tetra[:, None, :]).reshape(-1, 3)
        raw = self._sample(probe, False)[0].view(4, S)
        n = -(tetra.t() @ raw).t()
        return n / torch.sqrt((n * n).sum(-1, keepdim=True) + 1e-20)

    def total_variation(self) -> Tensor:
        """Mean squared difference of neighbouring vertices: density + colour / 10 (scalar)."""
        def tv(g: Tensor) -> Tensor:
            return sum(g.diff(dim=d).square().mean() for d in (1, 2, 3))

        return tv(self.density_grid) + 0.1 * tv(self.color_grid)

    # -- the per-step protocol -------------------------------------------------------------------
    @torch.no_grad()
    def update_occupancy(self) -> None:
        """Re-measure every occupancy cell from the voxel density."""
        self.occupancy.update(lambda p: self.density(p), 1.0)

    def before_step(self, step: int) -> None:
        """Upscale the grids on schedule; update the occupancy grid every `occ_update_every` steps."""
        res = self.schedule().get(step)
        if res is not None and res > self.resolution:
            self.upscale(res)
        elif not self.occupancy.initialized or step % self.cfg.occ_update_every == 0:
            self.update_occupancy()

    def after_backward(self, step: int) -> None:
        """Adam step, then zero the gradients."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

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

    # -- rendering ---------------------------------------------------------------------------------
    def render(self, cams: Cameras, shading: Shading) -> RenderOut:
        """Render B views [B, *, H, W]. Training mode jitters samples along each ray (uses torch's RNG)."""
        if not self.occupancy.initialized:
            self.update_occupancy()
        c = self.cfg
        B, H, W = len(cams), cams.height, cams.width
        R = B * H * W
        origins, dirs = cams.rays()
        o, d = origins.reshape(R, 3), dirs.reshape(R, 3)
        jitter = torch.rand(R, device=o.device, dtype=o.dtype) if self.training else None
        samples = march(o, d, c.bound, self.step_size, self.occupancy, jitter)
        self.last_sample_count = samples.t.numel()
        raw, feat = self._sample(samples.points)
        sigma, albedo = _TruncExp.apply(raw), self._albedo(feat)
        weights, _ = render_weights(sigma, samples.step, samples.ray_ids)
        values = torch.cat([torch.ones_like(samples.t)[None], samples.t[None], albedo]).t()  # [N, 5]
        per_ray = accumulate(weights, values, samples.ray_ids, R)
        alpha, depth, albedo_pm = per_ray[:, 0].clamp(0.0, 1.0), per_ray[:, 1], per_ray[:, 2:5]

        normal = o.new_zeros(R, 3)
        sel = (alpha > c.normal_min_alpha).nonzero().squeeze(1)
        if sel.numel() > 0:
            surf = (o[sel] + d[sel] * (depth[sel] / alpha[sel])[:, None]).detach()
            normal = normal.index_put((sel,), self.surface_normals(surf))

        bg = torch.tensor(c.background, dtype=o.dtype, device=o.device)
        a = alpha[:, None]
        base = (albedo_pm / a.clamp(min=1e-6)).clamp(0.0, 1.0)
        lit = shade(base.view(B, H * W, 3), normal.view(B, H * W, 3), shading).reshape(R, 3)
        rgb = lit * a + bg * (1.0 - a)

        terms: dict[str, Tensor] = {}
        if c.tv_weight > 0:
            terms["tv"] = c.tv_weight * self.total_variation()
        terms.update(volume_terms(c, alpha, normal, d, (B, H, W), base))

        def img(x: Tensor) -> Tensor:  # [R, C] -> [B, C, H, W]
            return x.view(B, H, W, -1).permute(0, 3, 1, 2).contiguous()

        return RenderOut(rgb=img(rgb), alpha=img(a), depth=img(depth[:, None]), normal=img(normal * a),
                         albedo=img(albedo_pm + bg * (1.0 - a)), terms=terms)

    # -- export --------------------------------------------------------------------------------------
    def extract_mesh(self, resolution: int = 128) -> Mesh:
        """Marching cubes at the density level whose silhouettes best match the rendered opacity."""
        from .extract import extract_mesh

        return extract_mesh(self, resolution)


__all__ = ["VoxelConfig", "VoxelGrid"]
