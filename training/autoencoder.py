"""Train the embedded model's autoencoder: a diffusers AutoencoderKL, 64x64x3 -> 4x16x16 (4x downsampling).

    python -m training.autoencoder --data data/embedded --out runs/embedded/vae --minutes 25 --seed 0

Loss (colour-aware, the prototype's greys turned green and reds brown): per-pixel L1 + MSE in RGB with object
pixels weighted up (the object is ~20% of the image), plus a per-image mean-colour term over the object's pixels,
plus a tiny KL. Logs to {out}/log.jsonl, checkpoints to {out}/ckpt.pt every few minutes (resumes from it),
writes the final model to {out}/final/ (diffusers format, scaling_factor set from the latent std).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from training.common import AdaptiveThreads, Budget, cosine_lr, log_jsonl, save_atomic, uint8_to_unit
from training.data import load_split


@dataclass
class AEConfig:
    """Autoencoder architecture and training settings."""

    channels: tuple[int, ...] = (16, 32, 64)
    """block_out_channels; len - 1 = number of 2x downsamplings (3 -> 4x)."""
    layers_per_block: int = 1
    """ResNet layers per encoder block (the decoder has one more)."""
    latent_channels: int = 4
    """Channels of the latent."""
    batch: int = 32
    """Images per step."""
    lr: float = 1e-3
    """Peak AdamW learning rate (cosine-decayed over the time budget)."""
    object_weight: float = 4.0
    """Extra per-pixel loss weight on object pixels (weight = 1 + object_weight * alpha)."""
    mean_color_weight: float = 2.0
    """Weight of the per-image foreground mean-colour L1 term."""
    kl_weight: float = 1e-6
    """Weight of the KL term."""


def build_vae(cfg: AEConfig) -> AutoencoderKL:
    """A fresh AutoencoderKL for 64x64 RGB images."""
    n = len(cfg.channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.channels,
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=16,
        sample_size=64,
    )


def fg_mean(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Alpha-weighted mean colour [B, 3] of images x [B, 3, H, W] over their objects (alpha [B, 1, H, W])."""
    return (x * alpha).sum((2, 3)) / alpha.sum((2, 3)).clamp(min=1.0)


def ae_loss(vae: AutoencoderKL, x: torch.Tensor, alpha: torch.Tensor, cfg: AEConfig) -> tuple[torch.Tensor, dict]:
    """Loss of one batch x [B, 3, H, W] in [-1, 1] with coverage alpha [B, 1, H, W] in [0, 1]."""
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample()).sample
    w = 1 + cfg.object_weight * alpha
    l1 = (w * (rec - x).abs()).mean()
    mse = (w * (rec - x) ** 2).mean()
    mean_c = (fg_mean(rec, alpha) - fg_mean(x, alpha)).abs().mean()
    kl = post.kl().mean()
    loss = l1 + mse + cfg.mean_color_weight * mean_c + cfg.kl_weight * kl
    return loss, {"l1": l1.item(), "mse": mse.item(), "mean_color": mean_c.item(), "kl": kl.item()}


@torch.no_grad()
def evaluate(vae: AutoencoderKL, val: dict, n: int = 512, batch: int = 64) -> dict:
    """PSNR (whole image and object pixels) and per-colour foreground mean error (0..255 units) on held-out renders."""
    vae.eval()
    sel = torch.linspace(0, len(val["images"]) - 1, min(n, len(val["images"]))).long()  # spread over all pairs
    imgs, alpha, colors = val["images"][sel], val["alpha"][sel].float() / 255, val["color"][sel]
    se, se_fg, fg_px, errs = 0.0, 0.0, 0.0, []
    for i in range(0, len(imgs), batch):
        x = uint8_to_unit(imgs[i : i + batch])
        a = alpha[i : i + batch]
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        x01, r01 = (x + 1) / 2, (rec + 1) / 2
        se += ((r01 - x01) ** 2).sum().item()
        se_fg += ((r01 - x01) ** 2 * a).sum().item()
        fg_px += 3 * a.sum().item()
        errs.append(255 * (fg_mean(r01, a) - fg_mean(x01, a)))
    vae.train()
    errs = torch.cat(errs)
    mse = se / imgs[:, :, :, :].numel()
    per_color = {}
    for ci, name in enumerate(val["color_names"]):
        e = errs[colors == ci]
        if len(e):
            per_color[name] = {"mean_rgb_error": [round(v, 2) for v in e.mean(0).tolist()], "abs": round(e.abs().mean().item(), 2)}
    return {
        "psnr": 10 * torch.log10(torch.tensor(1.0 / mse)).item(),
        "psnr_object": 10 * torch.log10(torch.tensor(fg_px / max(se_fg, 1e-12))).item(),
        "mean_color_abs_err_255": errs.abs().mean().item(),
        "per_color": per_color,
    }


@torch.no_grad()
def deepen(vae: AutoencoderKL, cfg: AEConfig) -> AutoencoderKL:
    """`vae` with one more ResNet layer per encoder and decoder block, computing exactly the same function.

    Every new layer is a residual block whose last convolution starts at zero, so it is the identity; training
    (e.g. the decoder alone, with the encoder frozen) then uses the extra capacity from the old model's quality."""
    cfg = AEConfig(**{**asdict(cfg), "layers_per_block": vae.config.layers_per_block + 1})
    deep = build_vae(cfg)
    missing, unexpected = deep.load_state_dict(vae.state_dict(), strict=False)
    if unexpected:
        raise ValueError(f"deepen: unexpected weights {unexpected[:3]}")
    n_old = vae.config.layers_per_block
    new_layers = [b.resnets[n_old] for b in deep.encoder.down_blocks] + [b.resnets[n_old + 1] for b in deep.decoder.up_blocks]
    for layer in new_layers:
        torch.nn.init.zeros_(layer.conv2.weight)
        torch.nn.init.zeros_(layer.conv2.bias)
    new_prefixes = tuple([f"encoder.down_blocks.{i}.resnets.{n_old}." for i in range(len(deep.encoder.down_blocks))]
                         + [f"decoder.up_blocks.{i}.resnets.{n_old + 1}." for i in range(len(deep.decoder.up_blocks))])
    if any(not k.startswith(new_prefixes) for k in missing):
        raise ValueError(f"deepen: weights left uninitialised {[k for k in missing if not k.startswith(new_prefixes)][:3]}")
    deep.register_to_config(scaling_factor=vae.config.scaling_factor)
    return deep


@torch.no_grad()
def latent_std(vae: AutoencoderKL, data: dict, n: int = 1024) -> float:
    """Std of the posterior means over n training images (SD sets scaling_factor = 1 / std)."""
    zs = [vae.encode(uint8_to_unit(data["images"][i : i + 128])).latent_dist.mode() for i in range(0, n, 128)]
    return torch.cat(zs).std().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/embedded")
    ap.add_argument("--out", default="runs/embedded/vae")
    ap.add_argument("--minutes", type=float, default=25.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-minutes", type=float, default=3.0)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-only", action="store_true", help="evaluate {out}/final on the held-out split and exit")
    ap.add_argument("--init", default=None, help="start from this diffusers AutoencoderKL folder (e.g. a shipped vae/)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: AEConfig.lr)")
    ap.add_argument("--deepen", action="store_true",
                    help="with --init: add one identity-initialised ResNet layer per encoder and decoder block")
    ap.add_argument("--freeze-encoder", action="store_true",
                    help="train only the decoder (with --init: the latent space, and so a UNet trained on it, stays valid)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = AEConfig() if args.lr is None else AEConfig(lr=args.lr)
    if args.eval_only:
        val = load_split(Path(args.data) / "val.pt")
        ev = evaluate(AutoencoderKL.from_pretrained(out / "final").eval(), val, n=len(val["images"]))
        (out / "final_eval.json").write_text(json.dumps(ev, indent=2))
        print(json.dumps(ev, indent=1))
        return
    train, val = load_split(Path(args.data) / "train.pt"), load_split(Path(args.data) / "val.pt")
    if args.deepen and not args.init:
        raise SystemExit("error: --deepen needs --init FOLDER (the model to deepen)")
    if not args.init:
        vae = build_vae(cfg)
    else:  # warm start from an earlier run's weights (deepened, or the same architecture)
        vae = AutoencoderKL.from_pretrained(args.init)
        if args.deepen:
            vae = deepen(vae, cfg)
        cfg = AEConfig(**{**asdict(cfg), "channels": tuple(vae.config.block_out_channels),
                          "layers_per_block": vae.config.layers_per_block})
        print(f"initialised from {args.init}" + (" (deepened)" if args.deepen else ""), flush=True)
    if args.freeze_encoder:
        for module in (vae.encoder, vae.quant_conv):
            module.requires_grad_(False)
    trainable = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.0)
    step, already = 0, 0.0
    ckpt = out / "ckpt.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, already = state["step"], state["elapsed"]
        torch.set_rng_state(state["rng"])
        print(f"resumed at step {step} ({already / 60:.1f} min)", flush=True)
    n_params = sum(p.numel() for p in vae.parameters())
    print(f"AutoencoderKL {n_params / 1e6:.2f}M params, config {asdict(cfg)}", flush=True)
    budget = Budget(args.minutes, already)
    last_ckpt, t_log = time.time(), time.time()
    N = len(train["images"])
    threads = AdaptiveThreads(args.threads)
    while not budget.done():
        t_step = time.time()
        idx = torch.randint(N, (cfg.batch,))
        x = uint8_to_unit(train["images"][idx])
        a = train["alpha"][idx].float() / 255
        if torch.rand(()) < 0.5:  # every object is mirror-symmetric in X: a flipped render is a valid render
            x, a = x.flip(-1), a.flip(-1)
        lr = cosine_lr(cfg.lr, budget.fraction)
        for g in opt.param_groups:
            g["lr"] = lr
        loss, parts = ae_loss(vae, x, a, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        step += 1
        threads.record(time.time() - t_step)
        if step % 20 == 0:
            dt = (time.time() - t_log) / 20
            t_log = time.time()
            rec = {"step": step, "time": round(budget.elapsed, 1), "lr": lr, "loss": loss.item(), **parts, "s_per_step": dt}
            log_jsonl(out / "log.jsonl", rec)
            print(f"step {step} {budget.elapsed / 60:.1f}/{args.minutes} min loss {loss.item():.4f} "
                  f"mean_c {parts['mean_color']:.4f} {dt:.2f}s/step {torch.get_num_threads()} thr", flush=True)
        if step % args.eval_every == 0:
            ev = evaluate(vae, val, n=256)
            log_jsonl(out / "log.jsonl", {"step": step, "time": round(budget.elapsed, 1), "eval": ev})
            print(f"  eval psnr {ev['psnr']:.2f} dB, object {ev['psnr_object']:.2f} dB, "
                  f"colour err {ev['mean_color_abs_err_255']:.2f}/255", flush=True)
        if time.time() - last_ckpt > 60 * args.ckpt_minutes:
            save_atomic({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                         "elapsed": budget.elapsed, "rng": torch.get_rng_state(), "config": asdict(cfg)}, ckpt)
            last_ckpt = time.time()
    save_atomic({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                 "elapsed": budget.elapsed, "rng": torch.get_rng_state(), "config": asdict(cfg)}, ckpt)
    ev = evaluate(vae, val, n=len(val["images"]))
    std = latent_std(vae, train)
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.save_pretrained(out / "final")
    log_jsonl(out / "log.jsonl", {"step": step, "time": round(budget.elapsed, 1), "final_eval": ev, "latent_std": std})
    print(f"final: step {step}, psnr {ev['psnr']:.2f} dB (object {ev['psnr_object']:.2f}), colour err "
          f"{ev['mean_color_abs_err_255']:.2f}/255, latent std {std:.3f}, {budget.elapsed / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
