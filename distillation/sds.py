"""Score Distillation Sampling (DreamFusion): g = w(t)·(ε̂(x_t, t, y) − ε) on the latents of the renders."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from distillation.base import Distillation, DistillationConfig, LossOut, TextEmbeds, gradient_loss
from distillation.guidance import cfg_combine
from distillation.schedule import (Ramp, Weighting, at_step, check_timestep_range, check_weighting, sample_timesteps,
                                   weight)


@dataclass
class SDSConfig(DistillationConfig):
    """Score Distillation Sampling."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"t_min": (0.0, 1.0), "t_max": (0.0, 1.0)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    kind: str = "sds"
    """Registry key."""
    guidance_scale: float = 3.0
    """CFG scale s in ε_u + s·(ε_c − ε_u); 3 is tuned for the embedded model, real SD wants ~100 (see docs/losses)."""
    t_min: float = 0.3
    """Lowest sampled timestep (fraction of num_train_timesteps); 0.3 for the embedded model, 0.02 for real SD."""
    t_max: Ramp = field(default_factory=lambda: Ramp.const(0.98))
    """Highest sampled timestep (fraction); a Ramp anneals it, e.g. {start = 0.98, end = 0.5} for real SD."""
    weighting: Weighting = "sds"
    """Timestep weighting w(t) (schedule.WEIGHTINGS); "sds" = 1 − ᾱ_t."""

    def __post_init__(self) -> None:
        check_weighting(self.weighting)
        check_timestep_range("sds", self.t_min, self.t_max)


class SDS(Distillation):
    """DreamFusion's SDS with classifier-free guidance and annealed t_max; stateless."""

    Config = SDSConfig

    def timesteps(self, batch: int, step: int) -> Tensor:
        """[batch] long t ~ U[t_min, t_max(step)] (in units of the model's timesteps)."""
        t_max = at_step(self.cfg.t_max, step, self.total_steps)
        g = self.guidance
        return sample_timesteps(batch, self.cfg.t_min, t_max, g.num_train_timesteps, device=g.device)

    def forward(self, images: Tensor, cond: TextEmbeds, uncond: TextEmbeds, c2w: Tensor, step: int) -> LossOut:
        """images [B, 3, H, W] in [0, 1]; loss whose gradient on the latents x0 is w(t)·(ε̂ − ε) / B."""
        g = self.guidance
        x0 = g.encode_images(images)  # [B, C, h, w], differentiable
        b = x0.shape[0]
        t = self.timesteps(b, step)
        with torch.no_grad():
            noise = torch.randn_like(x0)
            x_t = g.add_noise(x0.detach(), noise, t)
            eps_c, eps_u = g.predict_eps_cfg(x_t, t, cond, uncond)
            eps_hat = cfg_combine(eps_c.float(), eps_u.float(), self.cfg.guidance_scale)
            w = weight(self.cfg.weighting, g.alphas_cumprod[t].float()).view(b, 1, 1, 1)
            grad = torch.nan_to_num(w * (eps_hat - noise.float()))
        loss = gradient_loss(x0, grad)
        logs = {
            "t": (t.float().mean() / g.num_train_timesteps).item(),
            "grad_norm": grad.flatten(1).norm(dim=1).mean().item(),
            "unet_evals": 2.0,
        }
        return LossOut(loss=loss, logs=logs)
