"""Pixel-wise gradient clipping (PGC, "Enhancing High-Resolution 3D Generation through Pixel-wise Gradient
Clipping", ICLR 2024) on the rendered images that the distillation loss reads."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal, TYPE_CHECKING, get_args

if TYPE_CHECKING:  # torch is not imported at import time: the run config reads PGCConfig
    from torch import Tensor

PixelNorm = Literal["linf", "l2"]
"""The per-pixel norm over the channels PGC bounds: max |g_c| ("linf", the paper's) or the L2 norm ("l2")."""
NORMS: tuple[str, ...] = get_args(PixelNorm)


@dataclass
class PGCConfig:
    """Per-pixel clipping of the distillation gradient arriving at the rendered image."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"threshold": (1e-06, 1000000.0)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    enabled: bool = True
    """Clip (True) or pass gradients through unchanged (False)."""
    threshold: float = 0.1
    """c: the largest per-pixel gradient norm let through (0.1 in the PGC paper's code, 0.05 in Dreamer XL)."""
    norm: PixelNorm = "linf"
    """Per-pixel norm over the channels: max |g_c| ("linf", the paper's default) or the L2 norm ("l2")."""

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"pgc.norm {self.norm!r} is unknown; use one of {', '.join(NORMS)}")
        if not self.threshold > 0:
            raise ValueError(f"pgc.threshold must be > 0 (got {self.threshold}); disable PGC with enabled = false")


def clip_pixel_gradients(grad: Tensor, threshold: float, norm: str = "linf") -> Tensor:
    """grad [B, C, H, W] -> same, each pixel's C-vector scaled by min(1, threshold / ‖g‖) (direction kept)."""
    if norm == "linf":
        size = grad.abs().amax(dim=1, keepdim=True)
    else:
        size = grad.norm(dim=1, keepdim=True)
    import torch

    scale = (threshold / size.clamp_min(torch.finfo(size.dtype).tiny)).clamp(max=1.0)
    return grad * scale


def attach_pgc(images: Tensor, cfg: PGCConfig, grad_scale: float | Callable[[], float] = 1.0) -> Tensor:
    """An alias of images [B, C, H, W] whose incoming gradient is clipped per pixel; `images` itself if disabled.

    Give the alias to the distillation loss only, and let regularisers read `images`: the hook sits on the
    alias's edge of the graph, so only the (uncontrolled, VAE-encoder-shaped) distillation gradient is clipped
    while regulariser gradients reach the renderer untouched.

    grad_scale: the loss scale the backward pass runs under (a number, or a callable such as
    `GradScaler.get_scale`, read at backward time): the hook sees scaled gradients, so the threshold is
    c·scale. Images that do not require grad (previews, no_grad) are returned unchanged: nothing to clip.
    """
    if not cfg.enabled or not images.requires_grad:
        return images
    alias = images.view_as(images)

    def hook(grad: Tensor) -> Tensor:
        scale = grad_scale() if callable(grad_scale) else grad_scale
        return clip_pixel_gradients(grad, cfg.threshold * float(scale), cfg.norm)

    alias.register_hook(hook)
    return alias
