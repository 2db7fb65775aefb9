"""The contract every scene representation fulfils (NeRF, voxel grid, Gaussians, FlexiCubes)."""
from __future__ import annotations

from dataclasses import dataclass, field

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
