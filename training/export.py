"""Export the trained embedded model as a diffusers StableDiffusionPipeline folder.

    python -m training.export --vae runs/embedded/vae/final --diffusion runs/embedded/diffusion \
        --out assets/models/primitives-v4

Writes model_index.json, unet/, vae/, text_encoder/, tokenizer/ (distillation.tokenizer.write_clip_tokenizer
with World.vocabulary()), scheduler/ (DDIM with SD's schedule), all weights as fp32 safetensors, and
vocabulary.json (training.vocabulary_json: the world's shapes, colours and caption words, read by
studio.vocabulary), then checks that the folder loads with StableDiffusionPipeline.from_pretrained and
distillation.guidance.Guidance.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
from transformers import CLIPTokenizer

from training.diffusion import DiffusionConfig, build_text_encoder, build_unet
from training.vocabulary_json import write_vocabulary
from world import World

MAX_MB = 50.0


def sd_ddim_scheduler() -> DDIMScheduler:
    """DDIM sampler over Stable Diffusion's training schedule (what SD 1.x ships)."""
    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


def build_pipeline(vae_dir: Path, ema_file: Path, tokenizer_dir: Path) -> StableDiffusionPipeline:
    """Assemble the pipeline from the trained autoencoder, the EMA UNet / text encoder and the tokenizer."""
    state = torch.load(ema_file, weights_only=False)
    cfg = DiffusionConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()})
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77)
    unet, text = build_unet(cfg), build_text_encoder(cfg, tokenizer)
    unet.load_state_dict(state["unet"])
    text.load_state_dict(state["text"])
    vae = AutoencoderKL.from_pretrained(vae_dir)
    return StableDiffusionPipeline(vae=vae.eval(), text_encoder=text.eval(), tokenizer=tokenizer, unet=unet.eval(),
                                   scheduler=sd_ddim_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def check_loads(folder: Path) -> dict:
    """Load the folder both ways (offline) and run a 2-step sample; returns facts for the docs."""
    from distillation.guidance import Guidance

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    img = pipe("a red cube, front view", num_inference_steps=2, guidance_scale=7.5, height=64, width=64,
               generator=torch.Generator().manual_seed(0), output_type="pt").images
    g = Guidance.from_pretrained(str(folder))
    emb = g.encode_text(["a red cube, front view"])
    return {"pipeline_image": list(img.shape), "unet_dtype": str(pipe.unet.dtype), "guidance_text": list(emb.hidden.shape)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", default="runs/embedded/vae/final")
    ap.add_argument("--diffusion", default="runs/embedded/diffusion")
    ap.add_argument("--out", default="assets/models/primitives-v4")
    args = ap.parse_args()
    out = Path(args.out)
    tok_dir = Path(args.diffusion) / "tokenizer"
    if not (tok_dir / "vocab.json").exists():
        from distillation.tokenizer import write_clip_tokenizer

        write_clip_tokenizer(tok_dir, World.load().vocabulary())
    pipe = build_pipeline(Path(args.vae), Path(args.diffusion) / "ema.pt", tok_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    # The tokenizer folder as written by write_clip_tokenizer (the exact files the training used).
    shutil.rmtree(tmp / "tokenizer")
    shutil.copytree(tok_dir, tmp / "tokenizer")
    write_vocabulary(tmp)
    size = folder_mb(tmp)
    if size > MAX_MB:
        raise SystemExit(f"exported model is {size:.1f} MB > {MAX_MB} MB")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    facts = check_loads(out)
    facts["size_mb"] = round(folder_mb(out), 2)
    print(json.dumps(facts))


if __name__ == "__main__":
    main()
