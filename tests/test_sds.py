"""SDS: exact gradient with a stub guidance that returns chosen ε, timestep range/annealing, one real step; the
shared pieces every loss uses (gradient_loss, the timestep-range check, the weighting names)."""
from __future__ import annotations

import typing

import pytest
import torch

import distillation

from distillation.base import TextEmbeds, gradient_loss
from distillation.schedule import Ramp, WEIGHTINGS, Weighting, check_timestep_range, sample_timesteps, weight
from distillation.sds import SDS, SDSConfig

T = 1000
ALPHAS = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, T) ** 2, 0)


class StubGuidance:
    """The primitives SDS uses; identity "VAE" (latents = images) and chosen ε_c / ε_u. Records its inputs."""

    num_train_timesteps = T
    alphas_cumprod = ALPHAS
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, eps_c: torch.Tensor, eps_u: torch.Tensor) -> None:
        self.eps_c, self.eps_u = eps_c, eps_u
        self.seen: dict = {}

    def encode_images(self, images):
        return images * 1.0

    def add_noise(self, x0, noise, t):
        self.seen.update(noise=noise.clone(), t=t.clone(), x0=x0.clone())
        a = ALPHAS[t].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def predict_eps_cfg(self, x_t, t, cond, uncond, class_labels=None):
        self.seen.update(x_t=x_t.clone(), t_unet=t.clone())
        return self.eps_c, self.eps_u


def _embeds(b: int) -> TextEmbeds:
    return TextEmbeds(hidden=torch.zeros(b, 77, 8))


@pytest.mark.parametrize("weighting", list(WEIGHTINGS))
def test_gradient_is_weighted_cfg_residual(weighting):
    torch.manual_seed(0)
    b, s = 3, 12.5
    eps_c, eps_u = torch.randn(b, 3, 16, 16), torch.randn(b, 3, 16, 16)
    stub = StubGuidance(eps_c, eps_u)
    sds = SDS(SDSConfig(guidance_scale=s, weighting=weighting), stub, total_steps=10)
    images = torch.rand(b, 3, 16, 16, requires_grad=True)
    out = sds(images, _embeds(b), _embeds(b), torch.eye(4).expand(b, 4, 4), step=0)
    out.loss.backward()

    noise, t = stub.seen["noise"], stub.seen["t"]
    assert torch.equal(stub.seen["t_unet"], t)
    a = ALPHAS[t]
    w = {"sds": 1 - a, "uniform": torch.ones_like(a), "fantasia": a.sqrt() * (1 - a),
         "ism": ((1 - a) / a).sqrt()}[weighting].view(b, 1, 1, 1)
    expected = w * (eps_u + s * (eps_c - eps_u) - noise)
    # dloss/dx0 = g / B, and the identity "VAE" makes x0 = images
    assert torch.allclose(images.grad * b, expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(stub.seen["x_t"], ALPHAS[t].sqrt().view(b, 1, 1, 1) * images.detach()
                          + (1 - ALPHAS[t]).sqrt().view(b, 1, 1, 1) * noise, atol=1e-6)
    assert out.loss.item() == pytest.approx(0.5 * expected.square().sum().item() / b, rel=1e-5)
    assert out.logs["grad_norm"] == pytest.approx(expected.flatten(1).norm(dim=1).mean().item(), rel=1e-5)
    assert out.logs["t"] == pytest.approx(t.float().mean().item() / T)


def test_nan_in_prediction_gives_finite_gradient():
    eps = torch.randn(2, 3, 8, 8)
    eps[0, 0, 0, 0] = float("nan")
    sds = SDS(SDSConfig(), StubGuidance(eps, torch.zeros_like(eps)), total_steps=10)
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    sds(images, _embeds(2), _embeds(2), torch.eye(4).expand(2, 4, 4), step=0).loss.backward()
    assert torch.isfinite(images.grad).all() and images.grad[0, 0, 0, 0] == 0


def test_timesteps_in_range_and_annealed():
    sds = SDS(SDSConfig(t_min=0.02, t_max=Ramp(0.98, 0.5, 0, -1)), StubGuidance(None, None), total_steps=101)
    first, middle, last = (sds.timesteps(4000, step) for step in (0, 50, 100))
    assert first.dtype == torch.long
    assert first.min() >= 20 and first.max() <= 980 and first.max() > 950
    assert middle.max() <= 740 and middle.max() > 700
    assert last.min() >= 20 and last.max() <= 500 and last.max() > 480
    assert first.float().mean() > middle.float().mean() > last.float().mean()


def test_sample_timesteps_and_weight_helpers():
    t = sample_timesteps(1000, 0.0, 1.0, T)
    assert t.min() >= 0 and t.max() <= T - 1
    assert (sample_timesteps(10, 0.5, 0.5, T) == 500).all()
    with pytest.raises(ValueError, match="t_min <= t_max"):
        sample_timesteps(1, 0.6, 0.5, T)
    a = torch.tensor([0.25])
    assert weight("sds", a).item() == pytest.approx(0.75)
    assert weight("fantasia", a).item() == pytest.approx(0.5 * 0.75)
    assert weight("ism", a).item() == pytest.approx(3**0.5)
    with pytest.raises(ValueError, match="valid: sds"):
        weight("nope", a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gradient_loss_gives_exactly_grad_over_batch(dtype):
    torch.manual_seed(0)
    x0 = torch.randn(3, 4, 5, 5).to(dtype).requires_grad_(True)
    grad = torch.randn(3, 4, 5, 5)
    loss = gradient_loss(x0, grad)
    loss.backward()
    assert loss.ndim == 0 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(0.5 * (grad.double() ** 2).sum().item() / 3, rel=1e-5)
    assert torch.allclose(x0.grad.float(), grad / 3, atol=1e-3 if dtype == torch.float16 else 1e-7)


def test_timestep_range_check_names_the_loss_and_reads_ramps():
    check_timestep_range("sds", 0.02, 0.98)
    check_timestep_range("sds", 0.3, Ramp(0.98, 0.3))
    with pytest.raises(ValueError, match=r"^ism timesteps need 0 <= t_min \(0.6\) <= t_max \(lowest 0.5\)"):
        check_timestep_range("ism", 0.6, Ramp(0.98, 0.5))
    for bad in ((-0.1, 0.5), (0.2, 1.5), (0.2, Ramp(1.2, 0.5))):
        with pytest.raises(ValueError, match="lower t_min or raise t_max"):
            check_timestep_range("vsd", *bad)


def test_weighting_literal_lists_the_weightings():
    assert typing.get_args(Weighting) == tuple(WEIGHTINGS)
    hints = {kind: typing.get_type_hints(distillation.get(kind).Config) for kind in distillation.REGISTRY}
    assert all(h["weighting"] == Weighting for h in hints.values())


def test_config_validation_and_registry():
    assert SDSConfig().guidance_scale == 3.0 and SDSConfig().kind == "sds"
    with pytest.raises(ValueError, match="unknown weighting"):
        SDSConfig(weighting="nope")
    with pytest.raises(ValueError, match="t_min"):
        SDSConfig(t_min=0.6, t_max=Ramp(0.98, 0.5))
    with pytest.raises(ValueError, match="t_max"):
        SDSConfig(t_max=Ramp(1.5, 0.5))
    assert distillation.get("sds") is SDS and SDS.Config is SDSConfig


def test_real_tiny_guidance_step_gives_gradient_on_image(tiny_sd):
    sds = SDS(SDSConfig(), tiny_sd, total_steps=10)
    cond, uncond = tiny_sd.encode_text(["a red cube", "a red cube"]), tiny_sd.encode_text(["", ""])
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = sds(images, cond, uncond, torch.eye(4).expand(2, 4, 4), step=3)
    out.loss.backward()
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert 0.02 <= out.logs["t"] <= 0.98 and out.logs["grad_norm"] > 0
    assert not any(p.grad is not None for p in tiny_sd.unet.parameters())
