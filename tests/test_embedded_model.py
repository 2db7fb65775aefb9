"""The shipped embedded model (studio.paths.EMBEDDED_MODEL) loads offline and samples deterministically."""
from __future__ import annotations

import json

import pytest
import torch

from studio.paths import EMBEDDED_MODEL as FOLDER

pytestmark = pytest.mark.usefixtures("small_exports")  # tests/conftest.py: small bakes and fidelity checks


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(FOLDER, safety_checker=None, feature_extractor=None,
                                                requires_safety_checker=False)
    p.set_progress_bar_config(disable=True)
    return p


def test_folder_layout_and_size():
    assert (FOLDER / "model_index.json").exists(), f"the embedded model must ship in {FOLDER}"
    index = json.loads((FOLDER / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for piece in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (FOLDER / piece).is_dir(), piece
    size = sum(f.stat().st_size for f in FOLDER.rglob("*") if f.is_file())
    assert size <= 50e6


def test_components_shapes(pipe):
    assert pipe.unet.dtype == torch.float32 and pipe.vae.dtype == torch.float32
    assert pipe.unet.config.sample_size == 16 and pipe.vae.config.latent_channels == 4
    ids = pipe.tokenizer(["a red cube, front view"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    # one token per world word: <bos> a red cube , front view <eos>
    assert (ids[0] != pipe.tokenizer.eos_token_id).sum() == 7
    with torch.no_grad():
        hidden = pipe.text_encoder(ids).last_hidden_state
        z = pipe.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mode()
        eps = pipe.unet(z, torch.tensor([500]), encoder_hidden_states=hidden).sample
    assert hidden.shape == (1, 77, pipe.unet.config.cross_attention_dim)
    assert z.shape == (1, 4, 16, 16) and eps.shape == z.shape


def test_seeded_sample_is_deterministic(pipe):
    def run():
        return pipe("a blue sphere", num_inference_steps=2, guidance_scale=7.5, height=64, width=64,
                    generator=torch.Generator().manual_seed(0), output_type="pt").images

    a, b = run(), run()
    assert a.shape == (1, 3, 64, 64) and torch.isfinite(a).all()
    assert 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b)


def test_guidance_from_pretrained():
    from distillation.guidance import Guidance

    g = Guidance.from_pretrained(str(FOLDER))
    emb = g.encode_text(["a red cube, side view", ""])
    assert emb.hidden.shape[0] == 2
    lat = g.encode_images(torch.rand(1, 3, 64, 64))
    assert lat.shape == (1, 4, 16, 16)
    assert g.decode_latents(lat).shape == (1, 3, 64, 64)
