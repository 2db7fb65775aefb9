"""Interval Score Matching (LucidDreamer): g = λ·w(t)·(ε̂(x_t, t, y) − ε_φ(x_s, s, ∅)), x_s and x_t by DDIM inversion.

SDS compares the guided prediction with the random noise it added, a high-variance target. ISM instead walks the
render up the noise scale deterministically (DDIM inversion with the unconditional model) to x_s, takes one more
inversion step s → t to get x_t, and uses the unconditional prediction at x_s as the target: the gradient is the
difference between two predictions on one inversion trajectory, an interval δ = t − s apart.

Cost per step: ceil(s / inversion_stride) (≤ inversion_steps) unconditional passes to reach x_s, one at x_s, and
one CFG pass (2 evaluations) at x_t; with the defaults at most 5 + 1 + 2 = 8 UNet evaluations of the batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from distillation.base import Distillation, DistillationConfig, LossOut, TextEmbeds, gradient_loss
from distillation.guidance import cfg_combine
from distillation.inversion import invert_from_clean, inversion_evals
from distillation.schedule import (Ramp, Weighting, as_ramp, at_step, check_timestep_range, check_weighting,
                                   interval_timesteps, weight)


@dataclass
class ISMConfig(DistillationConfig):
    """Interval Score Matching (LucidDreamer, Liang et al. 2024)."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"t_min": (0.0, 1.0), "t_max": (0.0, 1.0),
        "delta": (0.0, 1000.0), "inversion_stride": (1, 1000), "inversion_steps": (1, 100),
        "loss_weight": (0.0, 1000000.0)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    kind: str = "ism"
    """Registry key."""
    guidance_scale: float = 7.5
    """CFG scale s in ε_u + s·(ε_c − ε_u) for the prediction at x_t (LucidDreamer: 7.5)."""
    t_min: float = 0.02
    """Lowest t, as a fraction of the model's num_train_timesteps (LucidDreamer: 0.02)."""
    t_max: Ramp = field(default_factory=lambda: Ramp(0.98, 0.5, 0, -1))
    """Highest t (fraction), ramped over the whole run (LucidDreamer: over its first 30%, docs/losses/ism.md)."""
    delta: Ramp = field(default_factory=lambda: Ramp(100.0, 80.0, 0, -1))
    """Interval δ = t − s in timesteps, ramped like t_max (LucidDreamer: 100 -> 80, some configs 50)."""
    inversion_stride: int = 200
    """Timesteps per DDIM inversion step on the way from x0 to x_s (LucidDreamer: 200)."""
    inversion_steps: int = 5
    """At most this many inversion steps to reach x_s (LucidDreamer: 5); x0 is first noised to s − stride·steps."""
    weighting: Weighting = "ism"
    """Timestep weighting w(t) (schedule.WEIGHTINGS); "ism" = √((1 − ᾱ_t)/ᾱ_t) is the paper's."""
    loss_weight: float = 0.1
    """λ multiplying the gradient (LucidDreamer's configs: 0.1)."""

    def __post_init__(self) -> None:
        check_weighting(self.weighting)
        check_timestep_range(self.kind, self.t_min, self.t_max)
        delta = as_ramp(self.delta)
        if min(delta.start, delta.end) < 0:
            raise ValueError(f"{self.kind}.delta must be >= 0 timesteps")
        if self.inversion_stride < 1 or self.inversion_steps < 1:
            raise ValueError(f"{self.kind}.inversion_stride and inversion_steps must be >= 1")


class ISM(Distillation):
    """LucidDreamer's Interval Score Matching; stateless."""

    Config = ISMConfig

    def timesteps(self, batch: int, step: int) -> tuple[Tensor, Tensor]:
        """(t, s) [batch] long: t ~ U[t_min, t_max(step)], s = max(t − δ(step), 0); one t per batch."""
        g, cfg = self.guidance, self.cfg
        t_max = at_step(cfg.t_max, step, self.total_steps)
        delta = round(at_step(cfg.delta, step, self.total_steps))
        return interval_timesteps(batch, cfg.t_min, t_max, delta, g.num_train_timesteps, device=g.device)

    def forward(self, images: Tensor, cond: TextEmbeds, uncond: TextEmbeds, c2w: Tensor, step: int) -> LossOut:
        """images [B, 3, H, W] in [0, 1]; loss whose gradient on the latents x0 is λ·w(t)·(ε̂(x_t) − ε_φ(x_s, s, ∅)) / B."""
        g, cfg = self.guidance, self.cfg
        x0 = g.encode_images(images)  # [B, C, h, w], differentiable
        b = x0.shape[0]
        t, s = self.timesteps(b, step)
        with torch.no_grad():
            noise = torch.randn_like(x0)
            x_s = invert_from_clean(g, x0.detach(), s, uncond, cfg.inversion_stride, cfg.inversion_steps, noise)
            eps_s = g.predict_eps(x_s, s, uncond)  # the target, ε_φ(x_s, s, ∅)
            x_t = g.ddim_move(x_s, eps_s, s, t)  # one more inversion step s -> t
            eps_c, eps_u = g.predict_eps_cfg(x_t, t, cond, uncond)
            eps_hat = cfg_combine(eps_c.float(), eps_u.float(), cfg.guidance_scale)
            w = weight(cfg.weighting, g.alphas_cumprod[t].float()).view(b, 1, 1, 1)
            grad = torch.nan_to_num(cfg.loss_weight * w * (eps_hat - eps_s.float()))
        loss = gradient_loss(x0, grad)
        logs = {
            "t": (t.float().mean() / g.num_train_timesteps).item(),
            "s": (s.float().mean() / g.num_train_timesteps).item(),
            "grad_norm": grad.flatten(1).norm(dim=1).mean().item(),
            "unet_evals": float(inversion_evals(int(s[0]), cfg.inversion_stride, cfg.inversion_steps) + 3),
        }
        return LossOut(loss=loss, logs=logs)
