"""Classifier Score Matching (TV-3DG): g = w(t)·s·(ε_c(x_t, t) − ε_u(x_t, t)), x_t by DDIM inversion of the render.

SDS's residual splits as ε̂ − ε = (ε_u − ε) + s·(ε_c − ε_u): a "difference" term (unconditional prediction vs
the random noise, mostly noise) and a "classifier" term (what the prompt adds). CSM keeps only the classifier
term, and replaces the random noise of x_t = add_noise(x0, ε) by a deterministic one: x_t comes from DDIM
inversion of x0 with the unconditional model, so the same render always gets the same x_t.

Reconstructed, not transcribed: the TV-3DG paper's (arXiv 2410.21299, Section III-C) equation text was not
available to us and no official code exists. The formula above is rebuilt from (1) the paper's description
quoted in our notes (remove the difference term, keep the classifier term, deterministic noise addition),
(2) Classifier Score Distillation (Yu et al., arXiv 2310.19415), which is the same classifier term with random
noise, and (3) LucidDreamer's DDIM inversion (as in ISM) for the deterministic noise. Which inversion schedule
TV-3DG uses, and its weighting w(t), are our choices (ISM's inversion: ≤ 5 steps of 200; SDS's 1 − ᾱ_t).
`noise = "random"` gives CSD.

Cost per step: ceil(t / inversion_stride) unconditional inversion passes (≤ 5) + one CFG pass (2 evaluations);
2 evaluations with random noise.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from distillation.base import Distillation, DistillationConfig, LossOut, TextEmbeds, gradient_loss
from distillation.inversion import invert_from_clean, inversion_evals
from distillation.schedule import (Ramp, Weighting, at_step, check_timestep_range, check_weighting, sample_timesteps,
                                   weight)

NoiseSource = typing.Literal["ddim", "random"]
"""How CSM makes x_t: "ddim" = DDIM inversion of x0 (CSM), "random" = add_noise with fresh noise (CSD)."""
NOISE_SOURCES: tuple[str, ...] = typing.get_args(NoiseSource)


@dataclass
class CSMConfig(DistillationConfig):
    """Classifier Score Matching (TV-3DG); with noise = "random", Classifier Score Distillation (CSD)."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"t_min": (0.0, 1.0), "t_max": (0.0, 1.0),
        "inversion_stride": (1, 1000), "inversion_steps": (1, 100)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    kind: str = "csm"
    """Registry key."""
    guidance_scale: float = 20.0
    """s multiplying the classifier term ε_c − ε_u; 20 matches SDS's default classifier term (docs/losses/csm.md)."""
    t_min: float = 0.02
    """Lowest sampled timestep, as a fraction of the model's num_train_timesteps."""
    t_max: Ramp = field(default_factory=lambda: Ramp(0.98, 0.5, 0, -1))
    """Highest sampled timestep (fraction), annealed as in SDS."""
    noise: NoiseSource = "ddim"
    """How x_t is made: DDIM inversion of x0 ("ddim", CSM) or add_noise with fresh noise ("random", CSD)."""
    inversion_stride: int = 200
    """Timesteps per DDIM inversion step (noise = "ddim")."""
    inversion_steps: int = 5
    """At most this many inversion steps; beyond them x0 is first noised (zero noise) to t − stride·steps."""
    weighting: Weighting = "sds"
    """Timestep weighting w(t) (schedule.WEIGHTINGS); "sds" = 1 − ᾱ_t."""

    def __post_init__(self) -> None:
        check_weighting(self.weighting)
        if self.noise not in NOISE_SOURCES:
            raise ValueError(f"csm.noise {self.noise!r} is unknown; use one of {', '.join(NOISE_SOURCES)}")
        check_timestep_range("csm", self.t_min, self.t_max)
        if self.inversion_stride < 1 or self.inversion_steps < 1:
            raise ValueError("csm.inversion_stride and inversion_steps must be >= 1")


class CSM(Distillation):
    """TV-3DG's classifier score matching (deterministic noise) or CSD (random noise); stateless."""

    Config = CSMConfig

    def timesteps(self, batch: int, step: int) -> Tensor:
        """[batch] long t ~ U[t_min, t_max(step)]: one per image (random noise) or one per batch (inversion, so
        every image costs the same number of inversion steps)."""
        g, cfg = self.guidance, self.cfg
        t_max = at_step(cfg.t_max, step, self.total_steps)
        n = batch if cfg.noise == "random" else 1
        return sample_timesteps(n, cfg.t_min, t_max, g.num_train_timesteps, device=g.device).expand(batch)

    def forward(self, images: Tensor, cond: TextEmbeds, uncond: TextEmbeds, c2w: Tensor, step: int) -> LossOut:
        """images [B, 3, H, W] in [0, 1]; loss whose gradient on the latents x0 is w(t)·s·(ε_c − ε_u) / B."""
        g, cfg = self.guidance, self.cfg
        x0 = g.encode_images(images)  # [B, C, h, w], differentiable
        b = x0.shape[0]
        t = self.timesteps(b, step)
        with torch.no_grad():
            if cfg.noise == "random":
                x_t = g.add_noise(x0.detach(), torch.randn_like(x0), t)
                evals = 2
            else:
                zeros = torch.zeros_like(x0)
                x_t = invert_from_clean(g, x0.detach(), t, uncond, cfg.inversion_stride, cfg.inversion_steps, zeros)
                evals = inversion_evals(int(t[0]), cfg.inversion_stride, cfg.inversion_steps) + 2
            eps_c, eps_u = g.predict_eps_cfg(x_t, t, cond, uncond)
            w = weight(cfg.weighting, g.alphas_cumprod[t].float()).view(b, 1, 1, 1)
            grad = torch.nan_to_num(w * cfg.guidance_scale * (eps_c.float() - eps_u.float()))
        loss = gradient_loss(x0, grad)
        logs = {
            "t": (t.float().mean() / g.num_train_timesteps).item(),
            "grad_norm": grad.flatten(1).norm(dim=1).mean().item(),
            "unet_evals": float(evals),
        }
        return LossOut(loss=loss, logs=logs)
