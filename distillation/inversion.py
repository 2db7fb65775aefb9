"""Deterministic DDIM inversion (eta 0) built from `Guidance` primitives; shared by CSM, ISM and TSM.

Inversion runs the DDIM update backwards: at timestep a, predict ε_φ(x_a, a, y) and jump to b > a keeping that
ε (`Guidance.ddim_move`). Unlike `add_noise` with fresh Gaussian noise, the result depends only on the image,
so the same render always reaches the same x_t ("deterministic noise").
"""
from __future__ import annotations

import torch
from torch import Tensor

from distillation.base import TextEmbeds


def ddim_invert(guidance, x: Tensor, t_from: Tensor, t_to: Tensor, embeds: TextEmbeds, stride: int) -> Tensor:
    """x [B, C, h, w] at timesteps t_from [B] (long) -> x at t_to [B] (t_to >= t_from), in DDIM steps of at
    most `stride` timesteps, each with one ε_φ(x, t, embeds) evaluation. Samples already at t_to stay put.

    Costs ceil(max(t_to − t_from) / stride) UNet evaluations of the batch; run it under no_grad.
    """
    if stride < 1:
        raise ValueError(f"inversion stride must be >= 1 (got {stride})")
    if (t_to < t_from).any():
        raise ValueError("ddim_invert goes up in noise: every t_to must be >= t_from")
    cur = t_from.clone()
    while (cur < t_to).any():
        nxt = torch.minimum(cur + stride, t_to)
        eps = guidance.predict_eps(x, cur, embeds)
        moved = guidance.ddim_move(x, eps, cur, nxt)
        x = torch.where((nxt > cur).view(-1, *([1] * (x.ndim - 1))), moved, x)
        cur = nxt
    return x


def invert_from_clean(guidance, x0: Tensor, t_to: Tensor, embeds: TextEmbeds, stride: int, max_steps: int,
                      noise: Tensor) -> Tensor:
    """Clean latents x0 [B, C, h, w] -> x at t_to [B] by DDIM inversion, LucidDreamer style: start at
    t_start = max(t_to − stride·max_steps, 0) from add_noise(x0, noise, t_start), then at most `max_steps`
    inversion steps of `stride`. noise [B, C, h, w]: random (LucidDreamer) or zeros (fully deterministic).

    With the defaults (stride 200, 5 steps) and t_to < 1000, t_start is 0 (ᾱ_0 ≈ 0.999: almost clean).
    """
    t_start = (t_to - stride * max_steps).clamp(min=0)
    x = guidance.add_noise(x0, noise, t_start)
    return ddim_invert(guidance, x, t_start, t_to, embeds, stride)


def inversion_evals(t_to: int, stride: int, max_steps: int) -> int:
    """UNet evaluations `invert_from_clean` spends to reach t_to (for docs, logs and benchmarks)."""
    start = max(t_to - stride * max_steps, 0)
    return -(-(t_to - start) // stride)
