"""Training-script helpers of the embedded model: deepening the autoencoder, per-shape oversampling."""
from __future__ import annotations

import pytest
import torch

from training.autoencoder import AEConfig, ae_loss, build_vae, deepen
from training.diffusion import parse_oversample, shape_weights


def _randomised_vae(cfg: AEConfig):
    torch.manual_seed(0)
    vae = build_vae(cfg).eval()
    with torch.no_grad():  # non-trivial weights everywhere (fresh conv2 layers are not zero, but be explicit)
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vae


def test_deepen_adds_a_layer_per_block_and_keeps_the_function():
    cfg = AEConfig(channels=(16, 32))
    vae = _randomised_vae(cfg)
    deep = deepen(vae, cfg).eval()
    assert deep.config.layers_per_block == vae.config.layers_per_block + 1
    assert len(deep.encoder.down_blocks[0].resnets) == len(vae.encoder.down_blocks[0].resnets) + 1
    assert len(deep.decoder.up_blocks[0].resnets) == len(vae.decoder.up_blocks[0].resnets) + 1
    assert sum(p.numel() for p in deep.parameters()) > sum(p.numel() for p in vae.parameters())
    assert deep.config.scaling_factor == vae.config.scaling_factor
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z, z_deep = vae.encode(x).latent_dist.mode(), deep.encode(x).latent_dist.mode()
        torch.testing.assert_close(z_deep, z, rtol=0, atol=1e-6)
        torch.testing.assert_close(deep.decode(z).sample, vae.decode(z).sample, rtol=0, atol=1e-6)


def test_deepened_layers_learn():
    """The new layers start as the identity but are not stuck there: their zeroed convolution gets a gradient."""
    cfg = AEConfig(channels=(16, 32))
    deep = deepen(_randomised_vae(cfg), cfg).train()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    loss, _ = ae_loss(deep, x, torch.ones(2, 1, 32, 32), cfg)
    loss.backward()
    new = deep.decoder.up_blocks[0].resnets[-1].conv2.weight
    assert float(new.detach().abs().max()) == 0.0 and float(new.grad.abs().max()) > 0.0


def test_parse_oversample():
    names = ["cube", "sphere", "house"]
    assert parse_oversample(["house=3", "cube=0.5"], names) == {"house": 3.0, "cube": 0.5}
    assert parse_oversample([], names) == {}
    for bad in (["mug=2"], ["house=0"], ["house"], ["house=x"]):
        with pytest.raises(SystemExit, match="--oversample"):
            parse_oversample(bad, names)


def test_shape_weights_follow_the_factors():
    data = {"shape_names": ["cube", "sphere", "house"], "shape": torch.tensor([0, 1, 2, 2, 0, 1])}
    assert shape_weights(data, {}) is None
    w = shape_weights(data, {"house": 3.0})
    assert w.tolist() == [1.0, 1.0, 3.0, 3.0, 1.0, 1.0]
    draws = torch.multinomial(w, 20000, replacement=True, generator=torch.Generator().manual_seed(0))
    house_share = (data["shape"][draws] == 2).float().mean().item()
    assert abs(house_share - 6 / 10) < 0.02  # 2 house rows x 3 out of 10
