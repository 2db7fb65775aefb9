"""NeRF for text-to-3D (DreamFusion / Magic3D coarse stage), sized for a 2-core CPU.

Field: hash grid (representations/hashgrid.py) -> a small ReLU MLP (fused with the encoder) -> raw density
and albedo logits. By default the MLP is two independent branches: density reads the first feature of each
level, albedo the second (see NeRFConfig.split_features for why). density = trunc_exp(raw + blob(x)), with
the blob `bias + scale * (1 - |x| / radius)` making the centre denser than the edges; the default start is
a faint fog (~2-3% opacity through the centre, ~0 at the box edges). albedo = sigmoid(logits).

Rendering:
1. march (representations/occupancy.py): fixed-step samples inside the box, only in occupied cells of an
   occupancy grid, dropped once the grid predicts the ray is opaque; packed, sorted by ray.
2. composite (representations/volume.py): weights from density; per ray: opacity, depth, albedo.
3. deferred Lambertian shading: ONE normal per pixel, at the composited surface point
   x_s = o + d * depth / opacity, from tetrahedral finite differences of the raw density (4 extra field
   evaluations per covered pixel, instead of a normal per sample). rgb = shade(albedo, normal) at that
   point, composited over the background. This matches the look of the analytic Lambertian renders the
   embedded model was trained on, and costs ~4 / (samples per ray) of the field evaluations.
   The surface point is detached: normals get gradients through the field around x_s, not through x_s.
   Where the field is still a semi-transparent fog the "surface" point lies inside it and its normal is
   unreliable; normals become good as the density sharpens (mean cos 0.95 to the truth on a fitted sphere).
4. regularisers (RenderOut.terms, already weighted, means over pixels): orientation (DreamFusion),
   opacity sparsity, opacity entropy.

Gradients never flow into sample positions (the hash encoder has no positional gradient).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import HashFieldRates, MarchedVolumeConfig, RenderOut, Representation
from .cameras import Cameras
from .hashgrid import HashGrid, HashGridConfig, hash_mlp
from .mesh import Mesh
from .occupancy import OccupancyGrid, march
from .regularizers import volume_terms
from .shading import Shading, shade
from .volume import accumulate, render_weights

DENSITY_ACTIVATIONS = ("trunc_exp", "softplus")
NORMAL_METHODS = ("surface_fd", "none")

_TETRA = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])
"""Tetrahedron vertices for 4-point finite-difference gradients: grad ~ sum_k v_k f(x + eps v_k) / (4 eps)."""


@dataclass
class NeRFConfig(MarchedVolumeConfig, HashFieldRates):
    """Hash-grid NeRF: field sizes, initialisation, optimisation, regularisers and sampling."""

    kind: str = "nerf"
    """Registry key."""
    grid: HashGridConfig = field(default_factory=HashGridConfig)
    """Multi-resolution hash encoding sizes."""
    hidden: int = 32
    """Width of the MLP's hidden layers (per branch when split_features)."""
    hidden_layers: int = 1
    """Number of hidden layers of the MLP (ReLU)."""
    split_features: bool = True
    """Density reads the first half of each level's features, albedo the second half (two independent MLP
    branches, run as one block-diagonal MLP). With a shared table Adam's statistics are dominated by the
    density gradients while the shape forms, and colour barely learns; split, colour learns from the start."""
    density_activation: str = "trunc_exp"
    """'trunc_exp' (exp, with the input clamped at 15 and its gradient kept) or 'softplus'."""
    # the opacity regularisers are off for the NeRF (on by default for the voxel grid and the Gaussians);
    # these fields are documented in base.SoftOpacityConfig / MarchedVolumeConfig
    sparsity_weight: float = 0.0
    entropy_weight: float = 0.0
    normal_tv_weight: float = 20.0
    """Weight of the total variation of the rendered normal map (see base.MarchedVolumeConfig). With the embedded
    model and SDS (600 steps, seed 0; 2026-11-30) it turns the speckled, porous density into a solid, smoothly
    lit surface: 3D IoU with the true shape, cube/sphere/cone/torus, 0.48/0.60/0.46/0.20 at 0 -> 0.75/0.56/0.55/0.48
    at 20 (cube: 0.62 at 10, 0.63 at 40, 0.59 at 100). Tuned against SDS's gradients at 64 px: fitting images with
    a pixel MSE it dominates and shrinks the shape (a sphere of radius 0.6 fitted in 40 steps at 32 px came out ~0.39),
    so set it to 0 for image fitting; at other resolutions or with other models, re-tune it."""
    albedo_tv_weight: float = 100.0
    """Weight of the total variation of the rendered albedo inside the silhouette (see base.MarchedVolumeConfig).
    With the embedded model (primitives-v3) and SDS at guidance 3 (600 steps, seeds 0-2; 2026-11-30) the
    distillation otherwise paints shading into the albedo (dark blotches, a dark disc where the torus's hole should
    be) instead of making the geometry: 3D IoU with the true shape, mean over 12 runs, 0.71 -> 0.72, the tori
    0.48/0.50/0.57 -> 0.66/0.59/0.51, and the true shape scores highest in 12 of 12 (was 11); at guidance 7.5 it
    did not help (torus seed 0: 0.47 at 20, 0.50 at 100).
    It flattens textures: for textured prompts with a real model, lower it (e.g. 1-10) or set it to 0."""
    coherence_weight: float = 0.0
    """Weight of the density-coherence term mean|a(x) - a(x + r)| over marched samples x and random offsets r
    (a = one step's opacity 1 - exp(-density * step)): discourages isolated specks and pinholes."""
    coherence_samples: int = 4096
    """Marched samples per step that the coherence term compares with a neighbour."""
    coherence_radius: float = 0.03
    """Standard deviation (world units) of the neighbour's offset in the coherence term."""
    occ_fraction: float = 0.125
    """Fraction of all cells re-measured at an update (occupied cells always are)."""
    occ_decay: float = 0.7
    """Per-update decay of a cell's remembered density: d <- max(decay * d, new)."""
    occ_dilation: int = 1
    """Cells by which the occupied set is grown, so surfaces can expand between updates."""
    early_stop_depth: float = 20.0
    """Drop samples behind where the grid predicts optical depth > this (0 disables). The grid's densities
    are rough (a decaying max over random points per cell), hence the large value: on a fitted sphere, 20
    changed no pixel's opacity by more than 1e-4 and saved ~40% of the samples (10 changed a few by 0.03)."""
    early_stop_lag_cells: float = 2.0
    """... counting the grid's optical depth only up to this many cells before the sample (safety margin)."""
    normals: str = "surface_fd"
    """'surface_fd': finite-difference normal at each pixel's composited surface point; 'none': no normals."""
    normal_eps: float = 0.04
    """Finite-difference step of the normals (world units; ~one pixel footprint at 64 px). Smaller steps
    see the hash grid's fine-level noise (fitting a shaded sphere: mean cos to the true normal 0.37 at 0.02,
    0.81 at 0.04)."""

    def __post_init__(self) -> None:
        if isinstance(self.grid, dict):
            self.grid = HashGridConfig(**self.grid)
        if self.density_activation not in DENSITY_ACTIVATIONS:
            valid = ", ".join(DENSITY_ACTIVATIONS)
            raise ValueError(f"unknown density_activation {self.density_activation!r}; valid: {valid}")
        if self.normals not in NORMAL_METHODS:
            raise ValueError(f"unknown normals {self.normals!r}; valid: {', '.join(NORMAL_METHODS)}")


class _TruncExp(torch.autograd.Function):
    """exp(min(x, 15)) whose gradient is exp(min(x, 15)) everywhere (so clamped inputs can come back)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        y = torch.exp(x.clamp(max=15.0))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return g * y


class NeRF(Representation):
    """Hash-grid NeRF with an occupancy grid, deferred Lambertian shading and its own Adam optimiser."""

    Config = NeRFConfig

    def __init__(self, cfg: NeRFConfig | None = None, total_steps: int = 1000) -> None:
        cfg = NeRFConfig() if cfg is None else cfg
        super().__init__(cfg, total_steps)
        self.cfg: NeRFConfig = cfg
        self.encoder = HashGrid(cfg.grid, cfg.bound)
        width = cfg.hidden * (2 if cfg.split_features else 1)
        dims = [self.encoder.out_dim] + [width] * cfg.hidden_layers + [4]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self._masks = _branch_masks(dims, cfg.grid.features) if cfg.split_features else None
        self._zero_initial_output()
        self.occupancy = OccupancyGrid(
            cfg.occ_resolution, cfg.bound, cfg.occ_threshold, cfg.occ_decay, cfg.occ_dilation
        )
        self.step_size = 2.0 * math.sqrt(3.0) * cfg.bound / cfg.samples_per_ray
        self.optimizer = torch.optim.Adam(
            [
                {"params": [self.encoder.table], "lr": cfg.lr_grid},
                {"params": [p for layer in self.layers for p in layer.parameters()], "lr": cfg.lr_mlp},
            ],
            betas=(0.9, 0.99),
            eps=1e-15,
            **_fast_adam_flags(),
        )
        self.last_sample_count = 0
        """Field samples evaluated by the last render (for logs and benchmarks)."""

    @torch.no_grad()
    def _zero_initial_output(self) -> None:
        """Set the last bias so the MLP outputs ~0 at start (the table starts ~0): density = the blob, albedo grey.

        Scaling the last layer down instead would also zero the output, but slows early learning: every
        table update reaches the density through those weights.
        """
        weights = self._weights()
        h = torch.zeros(self.encoder.out_dim)
        for W, layer in zip(weights[:-1], self.layers[:-1]):
            h = torch.relu(F.linear(h, W, layer.bias))
        self.layers[-1].bias.sub_(F.linear(h, weights[-1], self.layers[-1].bias))

    def _weights(self) -> list[Tensor]:
        """The MLP's weight matrices, block-diagonal (masked) when the features are split."""
        if self._masks is None:
            return [layer.weight for layer in self.layers]
        return [layer.weight * m.to(layer.weight) for layer, m in zip(self.layers, self._masks)]

    # -- the field ---------------------------------------------------------------------------
    def _mlp(self, points: Tensor) -> Tensor:
        """points [N, 3] -> MLP outputs, channels first [4, N] (row 0: raw density, rows 1-3: albedo logits)."""
        return hash_mlp(self.encoder, self._weights(), [layer.bias for layer in self.layers], points)

    def _blob(self, points: Tensor) -> Tensor:
        """[N, 3] -> [N] the fixed density bias (centre denser than the edges)."""
        c = self.cfg
        return c.density_bias + c.blob_scale * (1.0 - points.norm(dim=-1) / c.blob_radius)

    def _activate(self, raw: Tensor) -> Tensor:
        if self.cfg.density_activation == "trunc_exp":
            return _TruncExp.apply(raw)
        return F.softplus(raw)

    def _field(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """points [N, 3] -> (density [N], albedo [3, N] channels first)."""
        out = self._mlp(points)
        return self._activate(out[0] + self._blob(points)), torch.sigmoid(out[1:])

    def _raw_density(self, points: Tensor) -> Tensor:
        """points [N, 3] -> [N] pre-activation density (monotonic in the density)."""
        return self._mlp(points)[0] + self._blob(points)

    def density(self, points: Tensor, chunk: int = 65536) -> Tensor:
        """[N, 3] world points -> [N] density (differentiable when grad is enabled)."""
        parts = [self._activate(self._raw_density(points[s : s + chunk])) for s in range(0, len(points), chunk)]
        return torch.cat(parts) if parts else points.new_zeros(0)

    def albedo_at(self, points: Tensor, chunk: int = 65536) -> Tensor:
        """[N, 3] world points -> [N, 3] albedo in [0, 1]."""
        parts = [torch.sigmoid(self._mlp(points[s : s + chunk])[1:]).t() for s in range(0, len(points), chunk)]
        return torch.cat(parts) if parts else points.new_zeros(0, 3)

    def surface_normals(self, points: Tensor) -> Tensor:
        """[S, 3] points -> [S, 3] unit normals -grad(raw density) by tetrahedral finite differences."""
        S = points.shape[0]
        tetra = _TETRA.to(points)
        probe = (points[None, :, :] + self.cfg.normal_eps * tetra[:, None, :]).reshape(-1, 3)
        raw = self._raw_density(probe).view(4, S)
        grad = tetra.t() @ raw  # [3, S], proportional to the gradient
        n = -grad.t()
        return n / torch.sqrt((n * n).sum(-1, keepdim=True) + 1e-20)

    # -- the per-step protocol ---------------------------------------------------------------
    @torch.no_grad()
    def update_occupancy(self, full: bool = False) -> None:
        """Re-measure the occupancy grid from the current density (all cells if `full`)."""
        self.occupancy.update(lambda p: self.density(p), 1.0 if full else self.cfg.occ_fraction)

    def before_step(self, step: int) -> None:
        """Update the occupancy grid every `occ_update_every` steps (and before the first render)."""
        if not self.occupancy.initialized or step % self.cfg.occ_update_every == 0:
            self.update_occupancy()

    def after_backward(self, step: int) -> None:
        """Adam step, then zero the gradients."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

    # -- rendering ---------------------------------------------------------------------------
    def render(self, cams: Cameras, shading: Shading) -> RenderOut:
        """Render B views [B, *, H, W]. Training mode jitters samples along each ray (uses torch's RNG)."""
        if not self.occupancy.initialized:
            self.update_occupancy(full=True)
        c = self.cfg
        B, H, W = len(cams), cams.height, cams.width
        R = B * H * W
        origins, dirs = cams.rays()
        o, d = origins.reshape(R, 3), dirs.reshape(R, 3)
        jitter = torch.rand(R, device=o.device, dtype=o.dtype) if self.training else None
        samples = march(
            o, d, c.bound, self.step_size, self.occupancy, jitter,
            stop_optical_depth=c.early_stop_depth if c.early_stop_depth > 0 else None,
            stop_lag=c.early_stop_lag_cells * self.occupancy.cell_size,
        )
        self.last_sample_count = samples.t.numel()
        sigma, albedo = self._field(samples.points)
        weights, _ = render_weights(sigma, samples.step, samples.ray_ids)
        values = torch.cat([torch.ones_like(samples.t)[None], samples.t[None], albedo]).t()  # [N, 5]
        per_ray = accumulate(weights, values, samples.ray_ids, R)  # [R, 5]
        alpha, depth, albedo_pm = per_ray[:, 0].clamp(0.0, 1.0), per_ray[:, 1], per_ray[:, 2:5]

        normal = o.new_zeros(R, 3)
        if c.normals == "surface_fd":
            sel = (alpha > c.normal_min_alpha).nonzero().squeeze(1)
            if sel.numel() > 0:
                surf = (o[sel] + d[sel] * (depth[sel] / alpha[sel])[:, None]).detach()
                normal = normal.index_put((sel,), self.surface_normals(surf))

        bg = torch.tensor(c.background, dtype=o.dtype, device=o.device)
        a = alpha[:, None]
        base = (albedo_pm / a.clamp(min=1e-6)).clamp(0.0, 1.0)
        lit = shade(base.view(B, H * W, 3), normal.view(B, H * W, 3), shading).reshape(R, 3)
        rgb = lit * a + bg * (1.0 - a)
        albedo_img = albedo_pm + bg * (1.0 - a)

        terms = volume_terms(c, alpha, normal if c.normals != "none" else None, d, (B, H, W), base)
        if c.coherence_weight > 0 and self.training and len(sigma) > 0:
            terms["coherence"] = c.coherence_weight * self._coherence(samples.points, sigma)

        def img(x: Tensor) -> Tensor:  # [R, C] -> [B, C, H, W]
            return x.view(B, H, W, -1).permute(0, 3, 1, 2).contiguous()

        return RenderOut(
            rgb=img(rgb),
            alpha=img(a),
            depth=img(depth[:, None]),
            normal=img(normal * a) if c.normals != "none" else None,
            albedo=img(albedo_img),
            terms=terms,
        )

    def _coherence(self, points: Tensor, sigma: Tensor) -> Tensor:
        """points [N, 3] marched samples with densities sigma [N] -> mean |a(x) - a(x + r)| over a random subset
        (a = 1 - exp(-sigma * step), r ~ N(0, coherence_radius^2)); uses torch's RNG."""
        c = self.cfg
        idx = torch.randint(len(points), (min(c.coherence_samples, len(points)),), device=points.device)
        near = points[idx].detach() + c.coherence_radius * torch.randn_like(points[idx])
        a = -torch.expm1(-sigma[idx] * self.step_size)
        b = -torch.expm1(-self.density(near) * self.step_size)
        return (a - b).abs().mean()

    # -- export --------------------------------------------------------------------------------
    def extract_mesh(self, resolution: int = 128) -> Mesh:
        """Marching cubes at the density level whose silhouettes best match the rendered opacity."""
        from .extract import extract_mesh

        return extract_mesh(self, resolution)


def _branch_masks(dims: list[int], features: int) -> list[Tensor]:
    """Block-diagonal masks [out, in] for an MLP with layer sizes `dims` split into a density and an albedo branch.

    Input channel c = level * features + f belongs to the density branch when f < features / 2; hidden units
    are split in halves; output row 0 (density) is density, rows 1-3 (albedo) are albedo.
    """
    def groups(n: int, kind: str) -> Tensor:
        if kind == "input":
            return (torch.arange(n) % features) >= features // 2
        if kind == "output":
            return torch.arange(n) >= 1
        return torch.arange(n) >= n // 2

    masks = []
    for i in range(len(dims) - 1):
        g_in = groups(dims[i], "input" if i == 0 else "hidden")
        g_out = groups(dims[i + 1], "output" if i == len(dims) - 2 else "hidden")
        masks.append((g_out[:, None] == g_in[None, :]).float())
    return masks


def _fast_adam_flags() -> dict[str, bool]:
    """fused=True (one kernel for all parameters) where this torch supports it, else foreach."""
    try:
        torch.optim.Adam([nn.Parameter(torch.zeros(1))], fused=True)
        return {"fused": True}
    except (RuntimeError, TypeError, ValueError):
        return {"foreach": True}


__all__ = ["NeRFConfig", "NeRF", "DENSITY_ACTIVATIONS", "NORMAL_METHODS"]
