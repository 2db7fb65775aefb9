"""Regularisers on the rendered images that several representations share. Each returns a scalar; the
representation weights it into RenderOut.terms (`volume_terms` does that for the ray-marched volumes).

The total variations (`masked_tv`) are means over pixels, so weights comparable with a distillation's per-pixel
gradients are ~10-100. Guidance in a 4x-downsampled latent space hardly sees single-pixel detail: without the
normal TV a distilled density is noisy at the pixel scale (a porous sponge that renders as a speckled, randomly
lit surface); without the albedo TV the distillation can paint shading into the albedo (a dark disc where a
torus's hole should be) instead of making the geometry that casts it. Measurements: docs/benchmarks.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor


@dataclass
class VolumeRegularizers:
    """Weights of a ray-marched volume's regularisers (`volume_terms`; 0 turns a term off)."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"orient_weight": (0.0, 1000000.0),
        "normal_tv_weight": (0.0, 1000000.0), "albedo_tv_weight": (0.0, 1000000.0),
        "sparsity_weight": (0.0, 1000000.0), "entropy_weight": (0.0, 1000000.0)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    orient_weight: float = 1e-2
    """Weight of the orientation loss mean(alpha * relu(n . d)^2) (normals facing away from the camera)."""
    normal_tv_weight: float = 0.0
    """Weight of the total variation of the rendered normal map inside the silhouette (against a porous density)."""
    albedo_tv_weight: float = 0.0
    """Weight of the total variation of the rendered albedo inside the silhouette (against painted-on shading)."""
    sparsity_weight: float = 1e-3
    """Weight of the opacity sparsity term mean(sqrt(alpha^2 + 0.01)) (pushes empty pixels to empty)."""
    entropy_weight: float = 1e-3
    """Weight of the opacity entropy term mean(H(alpha)) (pushes opacity to 0 or 1: no semi-transparent fog)."""


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


def volume_terms(weights: VolumeRegularizers, alpha: Tensor, normal: Tensor | None, dirs: Tensor,
                 image: tuple[int, int, int], albedo: Tensor | None = None) -> dict[str, Tensor]:
    """The regularisers of a ray-marched volume times their `weights`, those with a weight > 0, in this order:
    'orient' and 'normal_tv' (both skipped when normal is None), 'albedo_tv' (skipped when albedo is None),
    'sparsity', 'entropy'. alpha [R], normal [R, 3], dirs [R, 3], albedo [R, 3] (surface albedo, not composited),
    with the R = B * H * W rays in image order; image = (B, H, W)."""
    terms: dict[str, Tensor] = {}
    if normal is not None and weights.orient_weight > 0:
        terms["orient"] = weights.orient_weight * orientation(alpha, normal, dirs)
    if normal is not None and weights.normal_tv_weight > 0:
        terms["normal_tv"] = weights.normal_tv_weight * masked_tv(alpha.view(image), normal.view(*image, 3))
    if albedo is not None and weights.albedo_tv_weight > 0:
        terms["albedo_tv"] = weights.albedo_tv_weight * masked_tv(alpha.view(image), albedo.view(*image, 3))
    if weights.sparsity_weight > 0:
        terms["sparsity"] = weights.sparsity_weight * opacity_sparsity(alpha)
    if weights.entropy_weight > 0:
        terms["entropy"] = weights.entropy_weight * opacity_entropy(alpha)
    return terms
