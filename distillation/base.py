"""The contract every distillation loss fulfils (SDS, VSD, CSM, TSM, ISM), and `gradient_loss`, the one way they
turn a gradient into a loss."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn


@dataclass
class TextEmbeds:
    """Encoded prompts for a batch of B images, in the form the guidance UNet consumes."""

    hidden: Tensor
    """[B, L, D] token embeddings (SDXL: both encoders' penultimate states concatenated)."""
    pooled: Tensor | None = None
    """[B, P] pooled embedding (SDXL only), else None."""

    def __len__(self) -> int:
        return self.hidden.shape[0]


@dataclass
class LossOut:
    """Result of one distillation step."""

    loss: Tensor
    """Scalar whose gradient w.r.t. the input images is the distillation gradient."""
    logs: dict[str, float] = field(default_factory=dict)
    """Scalars worth logging (timestep, gradient norm, ...)."""
    previews: dict[str, Tensor] = field(default_factory=dict)
    """Optional [B, 3, h, w] images in [0, 1] for the UI (e.g. the one-step denoised estimate)."""


@dataclass
class DistillationConfig:
    """Fields common to all distillation losses; each loss extends this."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"guidance_scale": (0.0, 1000.0)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    kind: str = ""
    """Registry key of the loss (set by each subclass)."""
    guidance_scale: float = 7.5
    """Classifier-free guidance scale s in eps_u + s * (eps_c - eps_u) (the diffusers convention)."""


def gradient_loss(x0: Tensor, grad: Tensor) -> Tensor:
    """The scalar whose gradient w.r.t. x0 is exactly grad / B: 0.5·‖x0 − (x0 − grad).detach()‖² summed over the
    batch, divided by B (the reparameterisation every score-distillation loss uses).

    x0 [B, ...] differentiable latents (any float dtype, computed in float32); grad [B, ...] float32, no graph.
    """
    x0 = x0.float()
    return 0.5 * ((x0 - (x0 - grad).detach()) ** 2).sum() / x0.shape[0]


class Distillation(nn.Module):
    """Turns rendered images into a score-distillation loss using a frozen `Guidance`.

    An nn.Module so that losses with trainable state (VSD's LoRA) save and restore with the run.
    """

    Config = DistillationConfig

    def __init__(self, cfg: DistillationConfig, guidance, total_steps: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.guidance = guidance
        self.total_steps = total_steps

    def forward(self, images: Tensor, cond: TextEmbeds, uncond: TextEmbeds, c2w: Tensor, step: int) -> LossOut:
        """images [B, 3, H, W] in [0, 1] (differentiable); cond/uncond embeddings per image (cond carries the
        view-dependent prompt); c2w [B, 4, 4] camera-to-world of each image; step in [0, total_steps)."""
        raise NotImplementedError

    def state_tensors(self) -> dict:
        """Trainable state to checkpoint (empty for stateless losses)."""
        return {}

    def load_state_tensors(self, state: dict) -> None:
        """Inverse of `state_tensors`."""
