"""Train the embedded model's text-conditioned UNet (and its small CLIP text encoder) on frozen-AE latents.

    python -m training.diffusion --data data/embedded --vae runs/embedded/vae/final \
        --out runs/embedded/diffusion --minutes 75 --seed 0

SD's recipe at small scale: scaled-linear betas 0.00085..0.012 over 1000 steps, epsilon prediction, 10% caption
dropout (empty string) for classifier-free guidance, AdamW with a time-based cosine schedule, EMA of the weights.
Latents of every training image (and, with --flip, of its mirror image: every object is mirror-symmetric in X) are encoded
once with the frozen autoencoder. Captions are re-sampled every step from the labels (random template and
synonyms; the view suffix ", front view" etc. from the stored camera for 90% of captions, as in distillation).
Logs {out}/log.jsonl, checkpoints {out}/ckpt.pt every few minutes (resumable), EMA snapshot in {out}/ema.pt.
"""
from __future__ import annotations

import argparse
import copy
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from training.common import AdaptiveThreads, Budget, cosine_lr, log_jsonl, save_atomic, uint8_to_unit
from training.data import load_split
from studio.sampling import view_name
from world import World


@dataclass
class DiffusionConfig:
    """UNet / text encoder architecture and training settings."""

    channels: tuple[int, ...] = (64, 128, 128)
    """UNet block_out_channels (latents are 16x16: resolutions 16, 8, 4). Attention (self + cross) runs at 8x8
    and 4x4 and in the mid block, not at 16x16: measured 10x cheaper per step on this CPU."""
    layers_per_block: int = 1
    """ResNet layers per UNet block."""
    attention_head_dim: int = 32
    """Channels per attention head."""
    text_width: int = 128
    """Hidden size of the CLIP text encoder (= UNet cross_attention_dim)."""
    text_layers: int = 3
    """Transformer layers of the CLIP text encoder."""
    batch: int = 64
    """Latents per step."""
    lr: float = 5e-4
    """Peak AdamW learning rate (UNet and text encoder)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    ema: float = 0.999
    """EMA decay (with a 1 - (1 + n) / (10 + n) warm-up)."""
    drop_caption: float = 0.1
    """Probability of the empty caption (classifier-free guidance)."""
    plain_caption: float = 0.1
    """Probability of a caption without the view suffix."""


def build_unet(cfg: DiffusionConfig) -> UNet2DConditionModel:
    n = len(cfg.channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=cfg.channels,
        layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cfg.text_width,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=32,
    )


def build_text_encoder(cfg: DiffusionConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_width,
        intermediate_size=4 * cfg.text_width,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=max(cfg.text_width // 32, 1),
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=cfg.text_width,
    )
    return CLIPTextModel(config)


def sd_scheduler() -> DDPMScheduler:
    """Stable Diffusion's training noise schedule."""
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type="epsilon", clip_sample=False)


def make_tokenizer(folder: Path, world: World) -> CLIPTokenizer:
    """Write (if needed) and load the byte-level CLIP tokenizer with one token per world word."""
    from distillation.tokenizer import write_clip_tokenizer

    if not (folder / "vocab.json").exists():
        write_clip_tokenizer(folder, world.vocabulary())
    return CLIPTokenizer.from_pretrained(folder, model_max_length=77)


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """Scaled posterior means [N, 4, 16, 16] of uint8 images [N, 3, 64, 64]."""
    out = []
    for i in range(0, len(images), batch):
        out.append(vae.encode(uint8_to_unit(images[i : i + batch])).latent_dist.mode() * vae.config.scaling_factor)
    return torch.cat(out)


class CaptionSampler:
    """Random captions for dataset rows, tokenized with a cache."""

    def __init__(self, world: World, data: dict, tokenizer: CLIPTokenizer, cfg: DiffusionConfig, seed: int) -> None:
        self.world, self.tok, self.cfg = world, tokenizer, cfg
        self.shapes = [data["shape_names"][i] for i in data["shape"].tolist()]
        self.colors = [data["color_names"][i] for i in data["color"].tolist()]
        self.views = [view_name(a, e) for a, e in zip(data["azimuth"].tolist(), data["elevation"].tolist())]
        self.rng = random.Random(seed)
        self.cache: dict[str, torch.Tensor] = {}

    def captions(self, idx: list[int]) -> list[str]:
        out = []
        for i in idx:
            r = self.rng.random()
            if r < self.cfg.drop_caption:
                out.append("")
            else:
                view = None if r < self.cfg.drop_caption + self.cfg.plain_caption else self.views[i]
                out.append(self.world.caption(self.shapes[i], self.colors[i], self.rng, view))
        return out

    def ids(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            toks = self.tok(missing, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            self.cache.update(zip(missing, toks))
        return torch.stack([self.cache[c] for c in captions])


def parse_oversample(items: list[str], shape_names: list[str]) -> dict[str, float]:
    """{'house': 3.0} from ['house=3']; exits with a one-line error on an unknown shape or a bad factor."""
    out = {}
    for item in items:
        name, _, k = item.partition("=")
        try:
            factor = float(k)
        except ValueError:
            factor = -1.0
        if name not in shape_names or factor <= 0:
            raise SystemExit(f"error: --oversample {item!r}: use SHAPE=K with K > 0 and SHAPE one of {shape_names}")
        out[name] = factor
    return out


def shape_weights(data: dict, factors: dict[str, float]) -> torch.Tensor | None:
    """Sampling weight [N] per dataset row (None: uniform) from per-shape factors."""
    if not factors:
        return None
    per_shape = torch.tensor([factors.get(n, 1.0) for n in data["shape_names"]])
    return per_shape[data["shape"]]


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1 - decay)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/embedded")
    ap.add_argument("--vae", default="runs/embedded/vae/final")
    ap.add_argument("--out", default="runs/embedded/diffusion")
    ap.add_argument("--minutes", type=float, default=75.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-minutes", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flip", action="store_true", help="also encode mirrored images (2x encode time)")
    ap.add_argument("--init", default=None,
                    help="start the UNet and text encoder from this diffusers model folder (e.g. a shipped model)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: DiffusionConfig.lr)")
    ap.add_argument("--oversample", nargs="*", default=[], metavar="SHAPE=K",
                    help="draw this shape's renders K times as often (e.g. house=3: the door is a small detail)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = DiffusionConfig() if args.lr is None else DiffusionConfig(lr=args.lr)
    world = World.load()
    tokenizer = make_tokenizer(out / "tokenizer", world)
    train = load_split(Path(args.data) / "train.pt")
    lat_file = out / "latents.pt"
    if lat_file.exists():
        latents = torch.load(lat_file)
    else:
        vae = AutoencoderKL.from_pretrained(args.vae).eval()
        t0 = time.time()
        views = [train["images"]] + ([train["images"].flip(-1)] if args.flip else [])
        latents = torch.stack([encode_latents(vae, v) for v in views])
        save_atomic(latents, lat_file)
        print(f"encoded {latents.shape} latents in {time.time() - t0:.0f}s, std {latents.std():.3f}", flush=True)
    unet, text = build_unet(cfg), build_text_encoder(cfg, tokenizer)
    if args.init:  # warm start from an earlier model (same architecture and tokenizer)
        init = Path(args.init)
        if CLIPTokenizer.from_pretrained(init / "tokenizer").get_vocab() != tokenizer.get_vocab():
            raise SystemExit(f"error: {init}/tokenizer differs from the world's tokenizer; train from scratch instead")
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(init / "unet").state_dict())
        text.load_state_dict(CLIPTextModel.from_pretrained(init / "text_encoder").state_dict())
        print(f"initialised UNet and text encoder from {init}", flush=True)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text).eval()
    sched = sd_scheduler()
    acp = sched.alphas_cumprod
    step, already = 0, 0.0
    ckpt = out / "ckpt.pt"
    if ckpt.exists():
        s = torch.load(ckpt, weights_only=False)
        unet.load_state_dict(s["unet"]), text.load_state_dict(s["text"])
        ema_unet.load_state_dict(s["ema_unet"]), ema_text.load_state_dict(s["ema_text"])
        opt.load_state_dict(s["opt"])
        step, already = s["step"], s["elapsed"]
        torch.set_rng_state(s["rng"])
        print(f"resumed at step {step} ({already / 60:.1f} min)", flush=True)
    sampler = CaptionSampler(world, train, tokenizer, cfg, args.seed + step)
    n_unet = sum(p.numel() for p in unet.parameters())
    n_text = sum(p.numel() for p in text.parameters())
    print(f"UNet {n_unet / 1e6:.2f}M, text {n_text / 1e6:.2f}M params; {asdict(cfg)}", flush=True)
    budget = Budget(args.minutes, already)

    def save() -> None:
        save_atomic({"unet": unet.state_dict(), "text": text.state_dict(), "ema_unet": ema_unet.state_dict(),
                     "ema_text": ema_text.state_dict(), "opt": opt.state_dict(), "step": step,
                     "elapsed": budget.elapsed, "rng": torch.get_rng_state(), "config": asdict(cfg)}, ckpt)
        save_atomic({"unet": ema_unet.state_dict(), "text": ema_text.state_dict(), "step": step,
                     "elapsed": budget.elapsed, "config": asdict(cfg)}, out / "ema.pt")

    last_ckpt, t_log, run_loss = time.time(), time.time(), []
    N = latents.shape[1]
    row_weights = shape_weights(train, parse_oversample(args.oversample, train["shape_names"]))
    threads = AdaptiveThreads(args.threads)
    while not budget.done():
        t_step = time.time()
        idx = torch.randint(N, (cfg.batch,)) if row_weights is None else torch.multinomial(row_weights, cfg.batch, True)
        flip = torch.randint(latents.shape[0], (cfg.batch,))
        x0 = latents[flip, idx]
        ids = sampler.ids(sampler.captions(idx.tolist()))
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (cfg.batch,))
        a = acp[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        lr = cosine_lr(cfg.lr, budget.fraction, warmup=0.02, floor=0.1)
        for g in opt.param_groups:
            g["lr"] = lr
        hidden = text(ids).last_hidden_state
        pred = unet(x_t, t, encoder_hidden_states=hidden).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        threads.record(time.time() - t_step)
        decay = min(cfg.ema, (1 + step) / (10 + step))
        ema_update(ema_unet, unet, decay)
        ema_update(ema_text, text, decay)
        run_loss.append(loss.item())
        if step % 20 == 0:
            dt = (time.time() - t_log) / 20
            t_log = time.time()
            mean = sum(run_loss) / len(run_loss)
            run_loss = []
            log_jsonl(out / "log.jsonl", {"step": step, "time": round(budget.elapsed, 1), "lr": lr, "loss": mean,
                                          "s_per_step": dt})
            print(f"step {step} {budget.elapsed / 60:.1f}/{args.minutes} min loss {mean:.4f} lr {lr:.2e} "
                  f"{dt:.2f}s/step {torch.get_num_threads()} thr", flush=True)
        if time.time() - last_ckpt > 60 * args.ckpt_minutes:
            save()
            last_ckpt = time.time()
    save()
    print(f"done: step {step}, {budget.elapsed / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
