"""The contract every scene representation fulfils (NeRF, voxel grid, Gaussians, FlexiCubes)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
from torch import Tensor, nn

from .cameras import Cameras
from .mesh import Mesh
from .optim import load_optimizer_tensors, optimizer_tensors
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
    """The fields every representation's config has; each representation's config adds its own, and its parts
    (the march, the occupancy grid, the regulariser weights, ...) as nested sections."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"background": (0.0, 1.0), "bound": (0.1, 10.0)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    kind: str = ""
    """Registry key of the representation (set by each representation's config)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background colour (RGB in [0, 1]) the renders are composited over; the embedded model is trained on white."""
    bound: float = 1.0
    """Half-size of the axis-aligned box [-bound, bound]^3 that holds the object."""

    def training_bytes(self, pixels: int) -> float:
        """Estimated bytes this scene holds while training on `pixels` rendered pixels a step: parameters, optimiser
        moments and the activations kept for the backward pass (the memory check before a run, studio/memory.py).
        This default is the highest per-pixel cost measured among the built-in representations (Gaussians)."""
        return 16e3 * pixels

    def __post_init__(self) -> None:
        """A section given as a dict (`NeRFConfig(blob={"bias": 0.0})`) becomes its dataclass; the keys the dict
        leaves out keep this config's default for that section."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict) and f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
                if dataclasses.is_dataclass(default):
                    setattr(self, f.name, replace(default, **value))


DISTILLATION_TUNED = ("normal_tv_weight", "albedo_tv_weight")
"""Weights in a representation's `regularizers` section tuned against a distillation's small per-pixel gradients
(64 px, the embedded model): against a pixel-MSE image fit they dominate and distort the fit (a sphere shrinks),
so image fitting turns them off with `for_image_fitting`."""


def for_image_fitting(cfg: RepresentationConfig) -> RepresentationConfig:
    """A copy of `cfg` with the DISTILLATION_TUNED weights it has set to 0 (for fitting images with a pixel loss)."""
    weights = getattr(cfg, "regularizers", None)
    if weights is None:
        return replace(cfg)
    tuned = {k: 0.0 for k in DISTILLATION_TUNED if hasattr(weights, k)}
    return replace(cfg, regularizers=replace(weights, **tuned))


class Representation(nn.Module):
    """A 3D scene that renders differentiably and owns its parameters and optimisers.

    This class declares everything the run loop, the export, resume and the benchmarks may ask of a scene; they
    never ask for its class.

    - Built as `cls(cfg, total_steps)` from its `Config`; `cfg.kind`, `cfg.background` and `cfg.bound` are
      read by callers (error messages, the fidelity check's background, mesh extraction's box).
    - Every step: `before_step(step)`, `render(cams, shading)`, backward on the total loss (the distillation's
      plus `RenderOut.terms`), then `after_backward(step)`: the optimiser step (and densifying, etc.).
    - Modes (nn.Module's `training`, `train()`, `eval()`): in training mode a render may draw from torch's global
      RNG (ray jitter); in eval mode it does not, so previews, export and the fidelity check render in eval mode.
    - Fields for export, coarse-to-fine and evaluation: `density`, `albedo_at`, `init_from`, `extract_mesh`,
      `splat_tensors` (None unless the scene is made of Gaussians).
    - State for checkpoints and resume: `state_tensors` / `load_state_tensors`, with the moments of `optimizers()`.
    - Device: wherever its parameters and buffers are; `.to(device)` moves it (before the first step).
    """

    Config: ClassVar[type[RepresentationConfig]] = RepresentationConfig
    """The config dataclass this representation is built from (`kind` selects it in representations.REGISTRY)."""
    cfg: RepresentationConfig
    """This scene's config (may be replaced between steps, e.g. by `for_image_fitting`)."""
    total_steps: int
    """Steps of the whole run, for schedules that ramp over the run."""
    optimizer: torch.optim.Optimizer | None = None
    """The representation's optimiser, when it has one (most have one Adam, `optim.adam`); replaced when the
    parameters change shape. A representation with several overrides `optimizers()`."""

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
        """After the backward of step `step`: step every optimiser, then zero the gradients. Representations that
        also densify or prune extend this."""
        for opt in self.optimizers().values():
            opt.step()
            opt.zero_grad(set_to_none=True)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Named optimisers owned by this representation (the names key their moments in checkpoints)."""
        return {} if self.optimizer is None else {"adam": self.optimizer}

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
            for k, v in optimizer_tensors(opt).items():
                state[f"optim.{name}.{k}"] = v
        return state

    def load_state_tensors(self, state: dict[str, Tensor]) -> None:
        """Inverse of `state_tensors`. Subclasses whose parameter shapes change override this."""
        model = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        self.load_state_dict(model)
        for name, opt in self.optimizers().items():
            prefix = f"optim.{name}."
            load_optimizer_tensors(opt, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
