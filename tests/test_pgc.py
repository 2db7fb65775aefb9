"""Pixel-wise gradient clipping: per-pixel bound, direction kept, regularisers untouched, GradScaler-aware."""
from __future__ import annotations

import pytest
import torch

from distillation.pgc import PGCConfig, attach_pgc


def _pixel_norm(g: torch.Tensor, norm: str) -> torch.Tensor:
    """[B, C, H, W] -> [B, H, W]"""
    return g.abs().amax(dim=1) if norm == "linf" else g.norm(dim=1)


def _upstream(seed: int = 0) -> torch.Tensor:
    """A gradient [2, 3, 8, 8] with large pixels and a block of pixels far below the threshold."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(2, 3, 8, 8, generator=gen) * 5.0
    g[:, :, :4, :4] *= 1e-3
    return g


def _backward_through_alias(cfg: PGCConfig, upstream: torch.Tensor, grad_scale=1.0, loss_scale: float = 1.0):
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    alias = attach_pgc(images, cfg, grad_scale)
    (loss_scale * (alias * upstream).sum()).backward()
    return images, alias


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_clipped_to_threshold_direction_kept_small_untouched(norm):
    c, g = 0.1, _upstream()
    images, alias = _backward_through_alias(PGCConfig(threshold=c, norm=norm), g)
    out = images.grad
    assert alias is not images
    assert (_pixel_norm(out, norm) <= c * (1 + 1e-5)).all()
    small = _pixel_norm(g, norm) < c
    assert small.any() and (~small).any()
    assert torch.equal(out.permute(0, 2, 3, 1)[small], g.permute(0, 2, 3, 1)[small])
    # large pixels: exactly g·c/‖g‖ (same direction, norm c)
    expected = g * (c / _pixel_norm(g, norm)).unsqueeze(1)
    big = (~small).unsqueeze(1).expand_as(g)
    assert torch.allclose(out[big], expected[big], rtol=1e-5)
    assert torch.allclose(_pixel_norm(out, norm)[~small], torch.full_like(_pixel_norm(out, norm)[~small], c))


def test_linf_and_l2_differ():
    g = _upstream()
    a, _ = _backward_through_alias(PGCConfig(norm="linf"), g)
    b, _ = _backward_through_alias(PGCConfig(norm="l2"), g)
    assert not torch.allclose(a.grad, b.grad)


def test_regulariser_on_original_image_is_not_clipped():
    c, g = 0.1, _upstream()
    reg = torch.randn(2, 3, 8, 8) * 10.0
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    alias = attach_pgc(images, PGCConfig(threshold=c))
    ((alias * g).sum() + (images * reg).sum()).backward()  # distillation reads alias, regulariser reads images
    ref, _ = _backward_through_alias(PGCConfig(threshold=c), g)
    assert torch.allclose(images.grad, ref.grad + reg, atol=1e-5)
    assert (_pixel_norm(images.grad - reg, "linf") <= c * (1 + 1e-5)).all()


@pytest.mark.parametrize("grad_scale", [4.0, lambda: 4.0])
def test_grad_scale_multiplies_threshold(grad_scale):
    c, g = 0.1, _upstream()
    # GradScaler-like: loss scaled by 4, hook told the scale -> after unscaling, the same clip as unscaled
    images, _ = _backward_through_alias(PGCConfig(threshold=c), g, grad_scale=grad_scale, loss_scale=4.0)
    ref, _ = _backward_through_alias(PGCConfig(threshold=c), g)
    assert torch.allclose(images.grad / 4.0, ref.grad, rtol=1e-5, atol=1e-9)
    assert _pixel_norm(images.grad, "linf").max() > 2 * c  # bound is 4c, not c


def test_scale_is_read_at_backward_time():
    scale = {"value": 1.0}
    images = torch.rand(1, 3, 4, 4, requires_grad=True)
    alias = attach_pgc(images, PGCConfig(threshold=0.1), grad_scale=lambda: scale["value"])
    scale["value"] = 10.0
    (alias * 100.0).sum().backward()
    assert torch.allclose(images.grad, torch.full_like(images, 1.0))


def test_disabled_and_no_grad_are_identity():
    g = _upstream()
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    assert attach_pgc(images, PGCConfig(enabled=False)) is images
    (attach_pgc(images, PGCConfig(enabled=False)) * g).sum().backward()
    assert torch.equal(images.grad, g)
    frozen = torch.rand(2, 3, 8, 8)
    assert attach_pgc(frozen, PGCConfig()) is frozen


def test_config_validation():
    with pytest.raises(ValueError, match="linf"):
        PGCConfig(norm="l1")
    with pytest.raises(ValueError, match="threshold"):
        PGCConfig(threshold=0.0)
