"""Trajectory Score Matching (Dreamer XL): g = λ·w(t)·(ε̂(x_t, t, y) − ε_φ(x_μ, μ, ∅)), two inversion paths from x_s.

ISM's target ε_φ(x_s, s, ∅) and its x_t sit on one DDIM-inversion trajectory only approximately: the step s → t
reuses ε at s. TSM inverts x0 to x_s as ISM does, then follows two paths from the same x_s:
  path B: s → t in one step (with ε_φ(x_s, s, ∅)), giving the x_t the conditional UNet sees;
  path A: s → μ (same ε), and the target is ε_φ(x_μ, μ, ∅), a prediction from inside the interval.
μ = s + γ·(t − s) (the paper, γ = 0.3); Dreamer XL's code uses s + √(1 − γ²)·(t − s) ("official", μ near t).
With γ = 0 (paper rule) μ = s and TSM is ISM exactly.

Cost per step: ISM's (inversion to s, one pass at s, one CFG pass) plus one unconditional pass at x_μ: at most
5 + 1 + 1 + 2 = 9 UNet evaluations of the batch with the defaults.
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from distillation.base import LossOut, TextEmbeds, gradient_loss
from distillation.guidance import cfg_combine
from distillation.inversion import invert_from_clean, inversion_evals
from distillation.ism import ISM, ISMConfig
from distillation.schedule import weight

MuRule = typing.Literal["paper", "official"]
"""Where μ sits between s and t: "paper" μ = s + γ·(t − s), "official" (Dreamer XL's code) μ = s + √(1 − γ²)·(t − s)."""
MU_RULES: tuple[str, ...] = typing.get_args(MuRule)


@dataclass
class TSMConfig(ISMConfig):
    """Trajectory Score Matching (Dreamer XL, Miao et al. 2024); timestep schedule and knobs shared with ISM."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"gamma": (0.0, 10.0)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    kind: str = "tsm"
    """Registry key."""
    gamma: float = 0.3
    """γ in [0, 1] placing μ between s and t (the paper: 0.3)."""
    mu_rule: MuRule = "paper"
    """"paper": μ = s + γ·(t − s); "official" (Dreamer XL's code): μ = s + √(1 − γ²)·(t − s)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mu_rule not in MU_RULES:
            raise ValueError(f"tsm.mu_rule {self.mu_rule!r} is unknown; use one of {', '.join(MU_RULES)}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"tsm.gamma must be in [0, 1] (got {self.gamma})")


def mu_timesteps(s: Tensor, t: Tensor, gamma: float, rule: str) -> Tensor:
    """μ [B] long between s [B] and t [B] (long) under `rule` ("paper" or "official"), rounded to an integer."""
    frac = gamma if rule == "paper" else math.sqrt(1.0 - gamma * gamma)
    return (s.float() + frac * (t - s).float()).round().long()


class TSM(ISM):
    """Dreamer XL's Trajectory Score Matching; stateless. Inherits only ISM's timestep schedule."""

    Config = TSMConfig

    def forward(self, images: Tensor, cond: TextEmbeds, uncond: TextEmbeds, c2w: Tensor, step: int) -> LossOut:
        """images [B, 3, H, W] in [0, 1]; loss whose gradient on the latents x0 is λ·w(t)·(ε̂(x_t) − ε_φ(x_μ, μ, ∅)) / B."""
        g, cfg = self.guidance, self.cfg
        x0 = g.encode_images(images)  # [B, C, h, w], differentiable
        b = x0.shape[0]
        t, s = self.timesteps(b, step)
        mu = mu_timesteps(s, t, cfg.gamma, cfg.mu_rule)
        with torch.no_grad():
            noise = torch.randn_like(x0)
            x_s = invert_from_clean(g, x0.detach(), s, uncond, cfg.inversion_stride, cfg.inversion_steps, noise)
            eps_s = g.predict_eps(x_s, s, uncond)
            x_t = g.ddim_move(x_s, eps_s, s, t)  # path B: s -> t
            x_mu = g.ddim_move(x_s, eps_s, s, mu)  # path A: s -> μ
            eps_mu = g.predict_eps(x_mu, mu, uncond)  # the target, ε_φ(x_μ, μ, ∅)
            eps_c, eps_u = g.predict_eps_cfg(x_t, t, cond, uncond)
            eps_hat = cfg_combine(eps_c.float(), eps_u.float(), cfg.guidance_scale)
            w = weight(cfg.weighting, g.alphas_cumprod[t].float()).view(b, 1, 1, 1)
            grad = torch.nan_to_num(cfg.loss_weight * w * (eps_hat - eps_mu.float()))
        loss = gradient_loss(x0, grad)
        logs = {
            "t": (t.float().mean() / g.num_train_timesteps).item(),
            "s": (s.float().mean() / g.num_train_timesteps).item(),
            "mu": (mu.float().mean() / g.num_train_timesteps).item(),
            "grad_norm": grad.flatten(1).norm(dim=1).mean().item(),
            "unet_evals": float(inversion_evals(int(s[0]), cfg.inversion_stride, cfg.inversion_steps) + 4),
        }
        return LossOut(loss=loss, logs=logs)
