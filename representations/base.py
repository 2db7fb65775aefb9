"""The contract every scene representation fulfils (NeRF, voxel grid, Gaussians, FlexiCubes)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from .cameras import Cameras
from .mesh import Mesh
from .shading import Shading


@dataclass
class RenderOut:
    """What a representation renders for a batch of B cameras at H x W."""

    rgb: Tensor
    """[B, 3, H, W] shaded colour composited over the background, in [0, 1]."""
    alpha: Tensor
    """[B, 1, H, W] accumulated opacity in [0, 1]."""
    depth: Tensor
    """[B, 1, H, W] expected distance from the camera centre along the ray (world units); 0 where empty."""
    normal: Tensor | None = None
    """[B, 3, H, W] world-space unit normals (alpha-weighted, not composited), or None."""
    albedo: Tensor | None = None
    """[B, 3, H, W] unshaded surface colour composited over the background, or None."""
    terms: dict[str, Tensor] = field(default_factory=dict)
    """The representation's own regularisers, already weighted: name -> scalar tensor, summed into the loss."""


@dataclass
class RepresentationConfig:
    """Fields common to all representations; each representation extends this."""

    kind: str = ""
    """Registry key of the representation (set by each subclass)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background colour (RGB in [0, 1]) the renders are composited over; the embedded model is trained on white."""
    bound: float = 1.0
    """Half-size of the axis-aligned box [-bound, bound]^3 that holds the object."""


# Fields that several representations share, each written (with its docstring) once. A representation
# whose default differs re-declares the field with its own default (a dataclass keeps the field's place).
# Dataclass fields come base first, so these stand before a representation's own fields in config.toml and
# docs/config.md.


@dataclass
class HashFieldRates(RepresentationConfig):
    """Learning rates of a hash-grid + MLP field (representations/hashgrid.py): the NeRF's, FlexiCubes' albedo."""

    lr_grid: float = 3e-2
    """Adam learning rate of the hash table (higher than GPU defaults: CPU runs have ~1-2k steps; fitting a
    shaded sphere, 3e-2/1e-2 reached half the error of 1e-2/5e-3 in 200 steps)."""
    lr_mlp: float = 1e-2
    """Adam learning rate of the MLP."""


@dataclass
class SoftOpacityConfig(RepresentationConfig):
    """Fields of the representations that render a soft opacity (NeRF, voxel grid, Gaussians)."""

    sparsity_weight: float = 1e-3
    """Weight of the opacity sparsity term mean(sqrt(alpha^2 + 0.01)) on the rendered opacity (pushes empty
    pixels to empty, against floaters)."""
    normal_min_alpha: float = 1e-3
    """Pixels with lower opacity get no normal (shaded with ambient light only)."""


@dataclass
class MarchedVolumeConfig(SoftOpacityConfig):
    """Fields of the ray-marched density fields (NeRF, voxel grid): the starting blob, the regularisers of
    the rendered opacity and normals, and the occupancy-grid sampling."""

    density_bias: float = -3.0
    """Constant part of the blob `density_bias + blob_scale * (1 - |x| / blob_radius)` of raw density (the
    NeRF adds it to its field, the voxel grid starts as it); it sets the start: a small, visible, centred blob
    (centre alpha ~0.7, image mean ~0.03 at the default cameras). With the NeRF, the embedded model and SDS, a
    faint fog start (-7, centre alpha ~0.03) never grew a surface in 300 steps; -3 and 0 formed the object."""
    blob_scale: float = 5.0
    """Scale of the blob's radial term `blob_scale * (1 - |x| / blob_radius)` on top of density_bias
    (DreamFusion/Magic3D)."""
    blob_radius: float = 0.5
    """Radius parameter of the blob (world units); the blob term is 0 at this radius."""
    orient_weight: float = 1e-2
    """Weight of the orientation loss mean(alpha * relu(n . d)^2) (normals facing away from the camera)."""
    entropy_weight: float = 1e-3
    """Weight of the opacity entropy term mean(H(alpha)) (pushes opacity to 0 or 1: no semi-transparent fog)."""
    normal_tv_weight: float = 0.0
    """Weight of the total variation of the rendered normal map (regularizers.masked_tv; a mean over pixels, so
    weights comparable with the distillation's per-pixel gradients are ~10-100). Guidance in a 4x-downsampled
    latent space hardly sees single-pixel detail, so without it a distilled density is noisy at the pixel
    scale: a porous sponge that renders as a speckled, randomly lit surface."""
    albedo_tv_weight: float = 0.0
    """Weight of the total variation of the rendered albedo inside the silhouette (regularizers.masked_tv;
    a mean over pixels like normal_tv). Without it the distillation can paint shading into the albedo (a dark
    disc where a torus's hole should be) instead of making the geometry that casts it."""
    samples_per_ray: int = 128
    """Marching step = box diagonal / samples_per_ray (128: ~0.027 world units for bound 1)."""
    occ_resolution: int = 64
    """Cells per axis of the occupancy grid (empty-space skipping)."""
    occ_update_every: int = 16
    """Steps between occupancy updates (before_step)."""
    occ_threshold: float = 0.5
    """Density above which a cell is occupied (capped by the grid's mean density, for near-empty starts)."""


DISTILLATION_TUNED = ("normal_tv_weight", "albedo_tv_weight")
"""Image-space regulariser weights tuned against a distillation's small per-pixel gradients (64 px, the embedded
model): against a pixel-MSE image fit they dominate and distort the fit (a sphere shrinks), so image fitting
turns them off with `for_image_fitting`."""


def for_image_fitting(cfg: RepresentationConfig) -> RepresentationConfig:
    """A copy of `cfg` with the DISTILLATION_TUNED weights it has set to 0 (for fitting images with a pixel loss)."""
    return replace(cfg, **{k: 0.0 for k in DISTILLATION_TUNED if hasattr(cfg, k)})


class Representation(nn.Module):
    """A 3D scene that renders differentiably and owns its parameters and optimisers.

    The run loop calls, every step: `before_step(step)`, `render(...)`, backward on the total loss,
    then `after_backward(step)` (which steps the optimisers, zeroes gradients, densifies, etc.).
    """

    Config = RepresentationConfig

    def __init__(self, cfg: RepresentationConfig, total_steps: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.total_steps = total_steps

    # -- the per-step protocol -------------------------------------------------------------
    def before_step(self, step: int) -> None:
        """Schedules, occupancy updates, grid upscaling: anything done before rendering step `step`."""

    def render(self, cams: Cameras, shading: Shading) -> RenderOut:
        """Render B views. Differentiable w.r.t. this module's parameters."""
        raise NotImplementedError

    def after_backward(self, step: int) -> None:
        """Step the optimisers and zero the gradients (plus densify/prune where relevant)."""
        raise NotImplementedError

    # -- fields, for export, initialisation from another run, and evaluation -----------------
    def density(self, points: Tensor) -> Tensor:
        """[N, 3] world points -> [N] non-negative volume density (or occupancy-like field)."""
        raise NotImplementedError

    def albedo_at(self, points: Tensor) -> Tensor:
        """[N, 3] world points -> [N, 3] albedo in [0, 1]."""
        raise NotImplementedError

    def init_from(self, source: "Representation") -> None:
        """Initialise this scene from another, finished one (coarse-to-fine: `--init-from RUN_DIR`).

        `source` answers `density(points)` and `albedo_at(points)`; copy what fits (density into an SDF,
        Gaussians at its surface, colours into an albedo field). Representations that cannot be initialised
        this way leave this as is: the run then stops with a clear error before anything is written."""
        raise NotImplementedError(f"representation {self.cfg.kind!r} cannot be initialised from another run")

    def extract_mesh(self, resolution: int = 128) -> Mesh:
        """A coloured triangle mesh of the surface (see representations/extract.py for volumes)."""
        raise NotImplementedError

    def splat_tensors(self) -> dict[str, Tensor] | None:
        """The scene as 3D Gaussians for a 3DGS PLY (detached tensors named as in studio/splat.py), or None for a
        scene that is not made of Gaussians. The run loop and the export ask this, never the class."""
        return None

    # -- state -------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, Tensor]:
        """Everything needed to restore the scene (parameters, buffers, optimiser moments)."""
        state = {f"model.{k}": v.detach().contiguous() for k, v in self.state_dict().items()}
        for name, opt in self.optimizers().items():
            for k, v in _flatten_optimizer(opt).items():
                state[f"optim.{name}.{k}"] = v
        return state

    def load_state_tensors(self, state: dict[str, Tensor]) -> None:
        """Inverse of `state_tensors`. Subclasses whose parameter shapes change override this."""
        model = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        self.load_state_dict(model)
        for name, opt in self.optimizers().items():
            prefix = f"optim.{name}."
            _unflatten_optimizer(opt, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Named optimisers owned by this representation."""
        return {}


def _flatten_optimizer(opt: torch.optim.Optimizer) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for gi, group in enumerate(opt.param_groups):
        for pi, p in enumerate(group["params"]):
            for k, v in opt.state.get(p, {}).items():
                t = v if torch.is_tensor(v) else torch.tensor(float(v))
                out[f"{gi}.{pi}.{k}"] = t.detach().clone().contiguous()
    return out


def _unflatten_optimizer(opt: torch.optim.Optimizer, flat: dict[str, Tensor]) -> None:
    for key, v in flat.items():
        gi, pi, k = key.split(".", 2)
        p = opt.param_groups[int(gi)]["params"][int(pi)]
        opt.state.setdefault(p, {})[k] = v.clone()
