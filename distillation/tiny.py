"""Tiny RANDOM Stable Diffusion / SDXL guidance built from the real diffusers / transformers classes, offline.

For tests and smoke runs: the weights are random, so the "images" mean nothing, but every shape, dtype and
code path is the real one. Deterministic given the seed; builds in a fraction of a second on a CPU.
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

from distillation.guidance import Guidance
from distillation.tokenizer import write_clip_tokenizer

TEXT_WIDTH = 32
"""Hidden width of each tiny CLIP text encoder (SDXL concatenates two: 64)."""
TIME_ID_WIDTH = 8
"""SDXL: width of each of the 6 sinusoidal add_time_ids embeddings."""


def _check(family: str, prediction_type: str, size: int, vae_factor: int) -> None:
    if family not in ("sd", "sdxl"):
        raise ValueError(f"family {family!r} is not 'sd' or 'sdxl'")
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type {prediction_type!r} is not 'epsilon' or 'v_prediction'")
    if vae_factor not in (4, 8):
        raise ValueError(f"vae_factor {vae_factor} is not 4 or 8")
    if size % (2 * vae_factor) != 0:
        raise ValueError(f"size {size} must be a multiple of {2 * vae_factor} (VAE x{vae_factor}, then one UNet "
                         "downsampling)")


def scheduler_config(prediction_type: str = "epsilon") -> dict:
    """Stable Diffusion's noise schedule: scaled_linear betas 0.00085..0.012 over 1000 steps (DDIM sampler)."""
    return {
        "_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "prediction_type": prediction_type, "clip_sample": False,
        "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading",
    }


def _components(family: str, size: int, vae_factor: int, tokenizer_dir: Path) -> dict:
    """Random unet, vae, text encoder(s), tokenizer(s); consumes the global RNG (callers fork it)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=2 * TEXT_WIDTH, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=TEXT_WIDTH, hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    levels = 4 if vae_factor == 8 else 3
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16)[:levels], sample_size=size,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels)
    sdxl = family == "sdxl"
    unet = UNet2DConditionModel(
        sample_size=size // vae_factor, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=16, attention_head_dim=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH * (2 if sdxl else 1), use_linear_projection=sdxl,
        addition_embed_type="text_time" if sdxl else None, addition_time_embed_dim=TIME_ID_WIDTH if sdxl else None,
        projection_class_embeddings_input_dim=TEXT_WIDTH + 6 * TIME_ID_WIDTH if sdxl else None)
    parts = {"unet": unet, "vae": vae, "text_encoder": CLIPTextModel(text_config), "tokenizer": tokenizer}
    if sdxl:
        parts["text_encoder_2"] = CLIPTextModelWithProjection(text_config)
        parts["tokenizer_2"] = CLIPTokenizer.from_pretrained(tokenizer_dir)
    return parts


def _build(family: str, prediction_type: str, seed: int, size: int, vae_factor: int, words: Iterable[str]) -> dict:
    _check(family, prediction_type, size, vae_factor)
    with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng(devices=[]):
        write_clip_tokenizer(Path(tmp), words)
        torch.manual_seed(seed)
        return _components(family, size, vae_factor, Path(tmp))


def tiny_guidance(family: str = "sd", prediction_type: str = "epsilon", seed: int = 0, size: int = 64,
                  vae_factor: int = 8, words: Iterable[str] = ()) -> Guidance:
    """A random tiny Guidance: native resolution `size` px, latents [B, 4, size/vae_factor, size/vae_factor].

    family "sd" (one 2-layer CLIP text encoder, width 32) or "sdxl" (two, concatenated to 64, pooled 32);
    prediction_type "epsilon" or "v_prediction"; ~1M-parameter UNet. Leaves the global RNG untouched.
    """
    parts = _build(family, prediction_type, seed, size, vae_factor, words)
    encoders = [parts["text_encoder"]] + ([parts["text_encoder_2"]] if family == "sdxl" else [])
    tokenizers = [parts["tokenizer"]] + ([parts["tokenizer_2"]] if family == "sdxl" else [])
    return Guidance(unet=parts["unet"], vae=parts["vae"], text_encoders=encoders, tokenizers=tokenizers,
                    scheduler_config=scheduler_config(prediction_type), zero_empty_prompt=family == "sdxl")


def save_tiny_pipeline(folder: Path, family: str = "sd", prediction_type: str = "epsilon", seed: int = 0,
                       size: int = 64, vae_factor: int = 8, words: Iterable[str] = ()) -> Path:
    """Write a real diffusers pipeline folder (model_index.json + one folder per component) and return it.

    Loadable by StableDiffusionPipeline (SDXL: StableDiffusionXLPipeline).from_pretrained(folder) and by
    Guidance.from_pretrained(folder). Same weights as tiny_guidance with the same arguments.
    """
    import diffusers

    folder = Path(folder)
    words = list(words)
    parts = _build(family, prediction_type, seed, size, vae_factor, words)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if name in parts:
            parts[name].save_pretrained(folder / name)
    for name in ("tokenizer", "tokenizer_2"):
        if name in parts:
            write_clip_tokenizer(folder / name, words)
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config(prediction_type), indent=2))
    index = {
        "_class_name": "StableDiffusionXLPipeline" if family == "sdxl" else "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "feature_extractor": [None, None], "image_encoder": [None, None],
    }
    if family == "sdxl":
        index |= {"text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                  "tokenizer_2": ["transformers", "CLIPTokenizer"], "force_zeros_for_empty_prompt": True}
    else:
        index |= {"safety_checker": [None, None], "requires_safety_checker": False}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
