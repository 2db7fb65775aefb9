"""The straightforward Gaussian compositing the fast splatter (splat.py) is checked against.

Same projection (`project_gaussians`), then for every view: every pixel against every visible Gaussian,
sorted by depth, alpha = min(0.999, o exp(-d^T conic d / 2)) (0 below 1/255), transmittance by a
cumulative product, plain autograd for the backward. Exact and simple; slow and memory-hungry
([H*W, N] arrays), so it runs in pixel chunks under activation checkpointing.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .splat import ALPHA_MAX, ALPHA_MIN, Projected, project_gaussians


def _composite_chunk(pix: Tensor, mean2d: Tensor, conic: Tensor, opac: Tensor, feats: Tensor) -> Tensor:
    """pix [Q, 2] pixel centres; Gaussians sorted front to back [N, ...] -> [Q, C + 1] (features, alpha)."""
    dx = pix[:, None, 0] - mean2d[None, :, 0]
    dy = pix[:, None, 1] - mean2d[None, :, 1]
    power = -0.5 * (conic[:, 0] * dx * dx + conic[:, 2] * dy * dy) - conic[:, 1] * dx * dy
    raw = opac[None, :] * torch.exp(power)
    alpha = torch.where(raw >= ALPHA_MIN, raw.clamp(max=ALPHA_MAX), torch.zeros_like(raw))  # [Q, N]
    keep = torch.cumprod(1.0 - alpha, dim=1)
    trans = torch.cat([torch.ones_like(keep[:, :1]), keep[:, :-1]], dim=1)
    w = alpha * trans
    return torch.cat([w @ feats, w.sum(1, keepdim=True)], dim=1)


def rasterize_pixels_reference(proj: Projected, opacities: Tensor, features: Tensor, width: int, height: int,
                               chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Dense compositing: features [B, N, C] -> (image [B, H, W, C], alpha [B, H, W, 1])."""
    B, N, C = features.shape
    j = torch.arange(width, dtype=features.dtype) + 0.5
    i = torch.arange(height, dtype=features.dtype) + 0.5
    pix = torch.stack(torch.meshgrid(i, j, indexing="ij"), dim=-1).reshape(-1, 2).flip(-1)  # (x, y)
    images = []
    for b in range(B):
        vis = (proj.radius[b] > 0).nonzero().squeeze(1)
        vis = vis[torch.argsort(proj.depth[b, vis].detach(), stable=True)]  # ties: by index, as splat.py
        args = (proj.mean2d[b, vis], proj.conic[b, vis], opacities[vis], features[b, vis])
        parts = [checkpoint(_composite_chunk, pix[s:s + chunk], *args, use_reentrant=False)
                 for s in range(0, len(pix), chunk)]
        images.append(torch.cat(parts).view(height, width, C + 1))
    out = torch.stack(images)
    return out[..., :C], out[..., C:]


def rasterization_reference(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, features: Tensor,
                            w2c: Tensor, focal: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """`splat.rasterization` with dense compositing (same arguments and outputs)."""
    if features.dim() == 2:
        features = features[None].expand(w2c.shape[0], *features.shape)
    proj = project_gaussians(means, quats, scales, opacities, w2c, focal, width, height)
    return rasterize_pixels_reference(proj, opacities, features, width, height)


__all__ = ["rasterize_pixels_reference", "rasterization_reference"]
