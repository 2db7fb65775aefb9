"""Time per distillation step (render excluded) of every loss, against its UNet evaluations.

    python benchmarks/bench_losses.py [--model ''|tiny-random|FOLDER] [--steps 20] [--resolution 64] [--threads 2]

A fixed random image [1, 3, px, px] stands in for the render. One "step" = the loss's forward (VAE encode, its
UNet passes, and VSD's LoRA step) + the backward to the image. "evals" = UNet evaluations of the batch per step
(a CFG pass over [cond, uncond] counts 2), read from the loss's own `unet_evals` log (mean over the timed steps:
inversion-based losses vary with t). Budget = evals × one UNet evaluation (measured on the same batch, no_grad);
for VSD the LoRA step's forward counts as one evaluation and its backward is added as measured separately.
`ratio` = step / budget; `ratio − VAE` = (step − VAE encode forward+backward) / budget: the bookkeeping cost.
VSD runs last, since its adapters stay (disabled) in the UNet. The UNet and VAE times are re-measured right
before each loss, so a drifting load on a shared machine biases the ratios less.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timezone

import torch

import distillation
from studio.config import build_config
from studio.models import load_guidance

ORDER = ["sds", "csm", "ism", "tsm", "vsd"]
"""The table's order; any other registered loss follows, alphabetically."""


def _time(fn, repeats: int, warmup: int = 3) -> float:
    """Median seconds of fn() over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def unet_eval_seconds(g, repeats: int) -> float:
    """One no_grad UNet evaluation of a [1, C, h, w] latent batch."""
    size = g.native_resolution // g.vae_scale_factor
    x = torch.randn(1, g.latent_channels, size, size, device=g.device, dtype=g.dtype)
    t = torch.tensor([500], device=g.device)
    uncond = g.encode_text([""])

    def run() -> None:
        with torch.no_grad():
            g.predict_eps(x, t, uncond)

    return _time(run, repeats)


def vae_seconds(g, images: torch.Tensor, repeats: int) -> float:
    """VAE encode forward + backward to the image (part of every loss, not a UNet evaluation)."""
    def run() -> None:
        x = images.detach().requires_grad_()
        g.encode_images(x).float().sum().backward()

    return _time(run, repeats)


def lora_backward_seconds(loss, images: torch.Tensor, repeats: int) -> float:
    """VSD's whole LoRA step (adapted UNet forward + backward + AdamW) on fixed latents."""
    g = loss.guidance
    x0 = g.encode_images(images.detach()).detach()
    cond = g.encode_text(["a red cube"])
    cams = torch.eye(4, device=g.device).reshape(1, 16)
    return _time(lambda: loss.train_lora(x0, cond, cams), repeats)


def bench(model: str, steps: int, resolution: int) -> list[dict]:
    cfg = build_config([{"prompt": "a red cube", "steps": steps}], [f"guidance.model='{model}'"])
    guidance, _ = load_guidance(cfg.guidance)
    torch.manual_seed(0)
    images = torch.rand(1, 3, resolution, resolution, device=guidance.device)
    cond, uncond = guidance.encode_text(["a red cube, front view"]), guidance.encode_text([""])
    c2w = torch.eye(4, device=guidance.device)[None]
    rows = []
    for kind in ORDER + sorted(set(distillation.REGISTRY) - set(ORDER)):
        # measured again next to each loss: on a shared machine the load drifts during the benchmark
        unet = unet_eval_seconds(guidance, 2 * steps)
        vae = vae_seconds(guidance, images, steps)
        cls = distillation.get(kind)
        loss = cls(cls.Config(), guidance, total_steps=steps)
        evals: list[float] = []
        counter = iter(range(10**9))

        def step() -> None:
            x = images.detach().requires_grad_()
            out = loss(x, cond, uncond, c2w, next(counter) % steps)
            out.loss.backward()
            evals.append(out.logs.get("unet_evals", 2.0))

        seconds = _time(step, steps)
        n = statistics.mean(evals[3:])
        budget = n * unet
        note = ""
        if kind == "vsd":
            lora = lora_backward_seconds(loss, images, steps)
            budget = (n - 1) * unet + lora  # the LoRA step's forward is one of the 4 evals; add its backward + AdamW
            note = f"LoRA step {1000 * lora:.1f} ms"
            unet_after = unet_eval_seconds(guidance, 3 * steps)
            note += f"; UNet eval with adapters disabled {1000 * unet_after:.1f} ms"
        rows.append({"loss": kind, "step_ms": 1000 * seconds, "evals": n, "unet_ms": 1000 * unet,
                     "vae_ms": 1000 * vae, "ratio": seconds / budget, "ratio_no_vae": (seconds - vae) / budget,
                     "note": note})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="", help="'' (embedded, default), 'tiny-random' or a diffusers folder")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    rows = bench(args.model, args.steps, args.resolution)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; load average at start "
          f"{load[0]:.1f} / end {os.getloadavg()[0]:.1f}; model {args.model or 'embedded'}, {args.resolution}² renders")
    print("| loss | step ms | UNet evals | 1 eval ms | VAE fwd+bwd ms | ratio | ratio − VAE | note |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['loss']} | {r['step_ms']:.1f} | {r['evals']:.2f} | {r['unet_ms']:.1f} | {r['vae_ms']:.1f} | "
              f"{r['ratio']:.2f} | {r['ratio_no_vae']:.2f} | {r['note']} |")


if __name__ == "__main__":
    main()
