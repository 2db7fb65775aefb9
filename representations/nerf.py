"""NeRF for text-to-3D (DreamFusion / Magic3D coarse stage), sized for a 2-core CPU.

Field: hash grid (representations/hashgrid.py) -> a small ReLU MLP (fused with the encoder) -> raw density
and albedo logits. density = trunc_exp(raw + blob(x)), with the blob `bias + scale * (1 - |x| / radius)`
making the centre denser than the edges (the default start is a small, visible, centred blob); albedo =
sigmoid(logits). The table starts ~0 and the last bias is set so the MLP outputs ~0: density = the blob, albedo
grey.

By default (`split_features`) the MLP is two independent branches, run as one block-diagonal MLP: density
reads the first half of each level's features, albedo the second. With a shared table Adam's statistics are
dominated by the density gradients while the shape forms, and colour barely learns; split, colour learns from
the start.

Rendering, occupancy updates, normals and mesh extraction are the ray-marched volumes' (representations/
marched.py). The NeRF's own regulariser, off by default: density coherence, mean|a(x) - a(x + r)| over marched
samples x and random offsets r (a = one step's opacity 1 - exp(-density * step)), against isolated specks and
pinholes. Gradients never flow into sample positions (the hash encoder has no positional gradient).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import RepresentationConfig
from .hashgrid import HashGrid, HashGridConfig, hash_mlp
from .marched import BlobConfig, MarchedVolume, blob, trunc_exp
from .occupancy import MarchConfig, OccupancyConfig, RaySamples
from .optim import adam
from .regularizers import VolumeRegularizers

DensityActivation = Literal["trunc_exp", "softplus"]
NormalMethod = Literal["surface_fd", "none"]
DENSITY_ACTIVATIONS = get_args(DensityActivation)
NORMAL_METHODS = get_args(NormalMethod)


@dataclass
class NeRFConfig(RepresentationConfig):
    """Hash-grid NeRF: field sizes, learning rates, the starting blob, sampling and regularisers."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"hidden": (1, 1024), "hidden_layers": (0, 8),
        "lr_grid": (1e-08, 1.0), "lr_mlp": (1e-08, 1.0), "coherence_weight": (0.0, 1000000.0),
        "coherence_samples": (1, 1_048_576), "coherence_radius": (0.0, 1.0), "normal_eps": (1e-05, 1.0),
        "normal_min_alpha": (0.0, 1.0)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    kind: str = "nerf"
    """Registry key."""
    grid: HashGridConfig = field(default_factory=HashGridConfig)
    """Multi-resolution hash encoding sizes."""
    hidden: int = 32
    """Width of the MLP's hidden layers (per branch when split_features)."""
    hidden_layers: int = 1
    """Number of hidden layers of the MLP (ReLU)."""
    split_features: bool = True
    """Density and albedo read separate halves of each level's features (two independent MLP branches)."""
    density_activation: DensityActivation = "trunc_exp"
    """The density activation (trunc_exp: exp with the input clamped at 15 and its gradient kept)."""
    lr_grid: float = 3e-2
    """Adam learning rate of the hash table (higher than GPU defaults: CPU runs have ~1-2k steps)."""
    lr_mlp: float = 1e-2
    """Adam learning rate of the MLP."""
    blob: BlobConfig = field(default_factory=BlobConfig)
    """The starting density, added to the field's raw density."""
    march: MarchConfig = field(default_factory=MarchConfig)
    """Where the samples go along each ray."""
    occupancy: OccupancyConfig = field(default_factory=OccupancyConfig)
    """The occupancy grid (empty-space skipping)."""
    regularizers: VolumeRegularizers = field(default_factory=lambda: VolumeRegularizers(
        normal_tv_weight=20.0, albedo_tv_weight=100.0, sparsity_weight=0.0, entropy_weight=0.0))
    """Weights of the regularisers (the TVs tuned for SDS with the embedded model at 64 px; base.DISTILLATION_TUNED)."""
    coherence_weight: float = 0.0
    """Weight of the density-coherence term mean|a(x) - a(x + r)| over marched samples (against specks, pinholes)."""
    coherence_samples: int = 4096
    """Marched samples per step that the coherence term compares with a neighbour."""
    coherence_radius: float = 0.03
    """Standard deviation (world units) of the neighbour's offset in the coherence term."""
    normals: NormalMethod = "surface_fd"
    """How normals are taken (surface_fd: finite differences at each pixel's composited surface point)."""
    normal_eps: float = 0.04
    """Finite-difference step of the normals (world units; ~one pixel footprint at 64 px)."""
    normal_min_alpha: float = 1e-3
    """Pixels with lower opacity get no normal (shaded with ambient light only)."""

    def training_bytes(self, pixels: int) -> float:
        """About 12 KB a pixel at 128 samples a ray (peak RSS measured at 64 and 128 px, docs/reliability.md), plus
        the hash tables."""
        return 12e3 * pixels * self.march.samples_per_ray / 128 + self.grid.table_bytes()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.density_activation not in DENSITY_ACTIVATIONS:
            valid = ", ".join(DENSITY_ACTIVATIONS)
            raise ValueError(f"unknown density_activation {self.density_activation!r}; valid: {valid}")
        if self.normals not in NORMAL_METHODS:
            raise ValueError(f"unknown normals {self.normals!r}; valid: {', '.join(NORMAL_METHODS)}")


class NeRF(MarchedVolume):
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
        self.optimizer = adam([
            {"params": [self.encoder.table], "lr": cfg.lr_grid},
            {"params": [p for layer in self.layers for p in layer.parameters()], "lr": cfg.lr_mlp},
        ])

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

    def raw_field(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """points [N, 3] -> (raw density [N], albedo [3, N] channels first)."""
        out = self._mlp(points)
        return out[0] + blob(points, self.cfg.blob), torch.sigmoid(out[1:])

    def raw_density(self, points: Tensor) -> Tensor:
        """points [N, 3] -> [N] pre-activation density (monotonic in the density)."""
        return self._mlp(points)[0] + blob(points, self.cfg.blob)

    def activate(self, raw: Tensor) -> Tensor:
        if self.cfg.density_activation == "trunc_exp":
            return trunc_exp(raw)
        return F.softplus(raw)

    def normal_step(self) -> float:
        return self.cfg.normal_eps

    @property
    def has_normals(self) -> bool:
        return self.cfg.normals == "surface_fd"

    def with_field_terms(self, terms: dict[str, Tensor], samples: RaySamples, sigma: Tensor) -> dict[str, Tensor]:
        """The volume terms, then 'coherence' (training mode, coherence_weight > 0)."""
        c = self.cfg
        if c.coherence_weight > 0 and self.training and len(sigma) > 0:
            terms["coherence"] = c.coherence_weight * self._coherence(samples.points, sigma)
        return terms

    def _coherence(self, points: Tensor, sigma: Tensor) -> Tensor:
        """points [N, 3] marched samples with densities sigma [N] -> mean |a(x) - a(x + r)| over a random subset
        (a = 1 - exp(-sigma * step), r ~ N(0, coherence_radius^2)); uses torch's RNG."""
        c = self.cfg
        idx = torch.randint(len(points), (min(c.coherence_samples, len(points)),), device=points.device)
        near = points[idx].detach() + c.coherence_radius * torch.randn_like(points[idx])
        a = -torch.expm1(-sigma[idx] * self.step_size)
        b = -torch.expm1(-self.density(near) * self.step_size)
        return (a - b).abs().mean()


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


__all__ = ["NeRFConfig", "NeRF", "DENSITY_ACTIVATIONS", "NORMAL_METHODS"]
