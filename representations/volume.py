"""Volume-rendering compositing (emission-absorption quadrature, Max 1995 / NeRF) for packed samples.

Samples are packed: one flat array for all rays, sorted by ray and, within a ray, front to back;
`ray_ids [N]` names each sample's ray. For sample i of a ray:
    alpha_i = 1 - exp(-sigma_i * delta_i)
    T_i     = exp(-sum_{j < i, same ray} sigma_j * delta_j)      (transmittance up to the sample)
    w_i     = T_i * alpha_i                                       (its contribution to the pixel)
Per ray: opacity = sum_i w_i, expected depth = sum_i w_i t_i (0 where empty), and any per-sample
quantity (albedo, normals, features) accumulates the same way. Skipped samples (empty space) simply
contribute nothing, so the packed sum equals the dense one.
"""
from __future__ import annotations

import torch
from torch import Tensor


def segment_starts(ray_ids: Tensor) -> Tensor:
    """[N] sorted ray ids -> [N] bool, True at the first sample of each ray."""
    first = torch.ones_like(ray_ids, dtype=torch.bool)
    if ray_ids.numel() > 1:
        first[1:] = ray_ids[1:] != ray_ids[:-1]
    return first


def render_weights(sigma: Tensor, delta: Tensor | float, ray_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Compositing weights of packed samples.

    sigma [N] >= 0 densities; delta [N] or a float: interval lengths; ray_ids [N] int64, sorted.
    Returns (weights [N], transmittance [N] before each sample). Differentiable w.r.t. sigma.
    The exclusive per-ray cumulative sum is one global cumsum (in float64, so long packed arrays do not
    lose precision) minus its value at each ray's first sample.
    """
    if sigma.numel() == 0:
        return sigma.clone(), sigma.clone()
    tau = sigma * delta  # optical thickness of each interval
    cum = torch.cumsum(tau.double(), dim=0)
    excl = cum - tau.double()
    first = segment_starts(ray_ids)
    seg = torch.cumsum(first.long(), dim=0) - 1  # [N] segment index
    base = excl[first][seg]
    trans = torch.exp(-(excl - base)).to(sigma.dtype)
    alpha = -torch.expm1(-tau)
    return trans * alpha, trans


def accumulate(weights: Tensor, values: Tensor | None, ray_ids: Tensor, n_rays: int) -> Tensor:
    """Per-ray weighted sums.

    weights [N]; values [N, C] (or None: sums the weights themselves); ray_ids [N] -> [n_rays, C] ([n_rays] if None).
    """
    if values is None:
        return weights.new_zeros(n_rays).index_add(0, ray_ids, weights)
    src = weights[:, None] * values
    return src.new_zeros(n_rays, values.shape[1]).index_add(0, ray_ids, src)


def composite_dense(sigma: Tensor, delta: Tensor | float) -> Tensor:
    """Reference for tests: padded samples sigma [R, M] (front to back) -> weights [R, M]."""
    tau = sigma * delta
    trans = torch.exp(-(torch.cumsum(tau, dim=1) - tau))
    return trans * (-torch.expm1(-tau))


__all__ = ["segment_starts", "render_weights", "accumulate", "composite_dense"]
