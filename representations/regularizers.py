"""Regularisers on the rendered opacity that several representations share (weights: base.SoftOpacityConfig
and base.MarchedVolumeConfig). Each returns a scalar; the representation weights it into RenderOut.terms."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import MarchedVolumeConfig


def opacity_sparsity(alpha: Tensor) -> Tensor:
    """alpha [...] in [0, 1] -> mean(sqrt(alpha^2 + 0.01)): a smooth L1 that pushes empty pixels to empty."""
    return torch.sqrt(alpha.square() + 0.01).mean()


def opacity_entropy(alpha: Tensor) -> Tensor:
    """alpha [...] in [0, 1] -> mean binary entropy H(alpha) (alpha clamped to [1e-5, 1 - 1e-5]): pushes
    opacity to 0 or 1."""
    p = alpha.clamp(1e-5, 1.0 - 1e-5)
    return (-(p * p.log() + (1 - p) * (1 - p).log())).mean()


def orientation(alpha: Tensor, normal: Tensor, dirs: Tensor) -> Tensor:
    """alpha [R], normal [R, 3], ray directions dirs [R, 3] -> mean(alpha * relu(n . d)^2) (DreamFusion): normals
    facing away from the camera. alpha is detached (the term moves normals, not opacity)."""
    facing = (normal * dirs).sum(-1).clamp(min=0.0)
    return (alpha.detach() * facing.square()).mean()


def masked_tv(alpha: Tensor, values: Tensor) -> Tensor:
    """alpha [B, H, W], a per-pixel map values [B, H, W, C] (0 or anything where uncovered) -> mean over
    horizontally and vertically neighbouring pixel pairs (p, q) of alpha(p) * alpha(q) * |v(p) - v(q)|_1 (alpha
    detached): the total variation of the map inside the silhouette; the silhouette itself costs nothing. L1, so
    edges between flat regions stay sharp. Used on the rendered normals (speckle: a porous density) and on the
    surface albedo (shading painted into the colour instead of made by the geometry)."""
    a = alpha.detach()
    dx = (values[:, :, 1:] - values[:, :, :-1]).abs().sum(-1) * a[:, :, 1:] * a[:, :, :-1]
    dy = (values[:, 1:] - values[:, :-1]).abs().sum(-1) * a[:, 1:] * a[:, :-1]
    return 0.5 * (dx.mean() + dy.mean())


def volume_terms(cfg: MarchedVolumeConfig, alpha: Tensor, normal: Tensor | None, dirs: Tensor,
                 image: tuple[int, int, int], albedo: Tensor | None = None) -> dict[str, Tensor]:
    """The weighted regularisers of a ray-marched volume, those with a weight > 0, in this order: 'orient' and
    'normal_tv' (both skipped when normal is None), 'albedo_tv' (skipped when albedo is None), 'sparsity',
    'entropy'. alpha [R], normal [R, 3], dirs [R, 3], albedo [R, 3] (surface albedo, not composited), with the
    R = B * H * W rays in image order; image = (B, H, W)."""
    terms: dict[str, Tensor] = {}
    if normal is not None and cfg.orient_weight > 0:
        terms["orient"] = cfg.orient_weight * orientation(alpha, normal, dirs)
    if normal is not None and cfg.normal_tv_weight > 0:
        terms["normal_tv"] = cfg.normal_tv_weight * masked_tv(alpha.view(image), normal.view(*image, 3))
    if albedo is not None and cfg.albedo_tv_weight > 0:
        terms["albedo_tv"] = cfg.albedo_tv_weight * masked_tv(alpha.view(image), albedo.view(*image, 3))
    if cfg.sparsity_weight > 0:
        terms["sparsity"] = cfg.sparsity_weight * opacity_sparsity(alpha)
    if cfg.entropy_weight > 0:
        terms["entropy"] = cfg.entropy_weight * opacity_entropy(alpha)
    return terms
