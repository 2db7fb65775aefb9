"""Full studio steps per second (render + distillation + backward + optimiser), with the time split.

    python benchmarks/bench_step.py [--model tiny-random|''] [--steps 60] [--resolution 64] [--threads 2]

Uses the real run-loop pieces (studio.run.train_step's parts), so what is measured is what runs.
Prints one markdown table row per configuration.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import distillation
import representations
from distillation.pgc import attach_pgc
from studio.config import build_config
from studio.models import load_guidance
from studio.prompts import PromptBank
from studio.run import sample_shading
from studio.sampling import sample_cameras


def bench(model: str, representation: str, dist: str, steps: int, resolution: int, warmup: int = 10) -> dict:
    cfg = build_config([{"prompt": "a red cube", "steps": steps + warmup}],
                       [f"guidance.model={model}" if model else "guidance.model=''",
                        f"representation.kind={representation}", f"distillation.kind={dist}",
                        f"camera.resolution={resolution}"])
    guidance, _ = load_guidance(cfg.guidance)
    scene = representations.get(cfg.representation.kind)(cfg.representation, cfg.steps)
    loss_fn = distillation.get(cfg.distillation.kind)(cfg.distillation, guidance, cfg.steps)
    prompts = PromptBank(guidance, cfg)
    gen = torch.Generator().manual_seed(0)
    parts: dict[str, list[float]] = {"before_step": [], "render": [], "distill": [], "backward": [], "optimizer": []}
    totals = []
    for step in range(cfg.steps):
        t0 = time.perf_counter()
        scene.before_step(step)
        t1 = time.perf_counter()
        cams = sample_cameras(cfg.camera, gen)
        out = scene.render(cams, sample_shading(cfg.shading, cams, gen, step))
        t2 = time.perf_counter()
        cond, uncond = prompts.for_cameras(cams)
        res = loss_fn(attach_pgc(out.rgb, cfg.pgc), cond, uncond, cams.c2w, step)
        t3 = time.perf_counter()
        (res.loss + sum(out.terms.values())).backward()
        t4 = time.perf_counter()
        scene.after_backward(step)
        t5 = time.perf_counter()
        if step >= warmup:
            for k, a, b in (("before_step", t0, t1), ("render", t1, t2), ("distill", t2, t3),
                            ("backward", t3, t4), ("optimizer", t4, t5)):
                parts[k].append(b - a)
            totals.append(t5 - t0)
    ms = {k: 1000 * statistics.mean(v) for k, v in parts.items()}
    return {"steps_per_second": len(totals) / sum(totals), **ms}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-random", help="'tiny-random', '' (embedded) or a folder")
    ap.add_argument("--representation", default="nerf")
    ap.add_argument("--distillation", default="sds")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    r = bench(args.model, args.representation, args.distillation, args.steps, args.resolution)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| model | repr | loss | px | steps/s | before_step ms | render ms | distill ms | backward ms | optimizer ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.model or 'embedded'} | {args.representation} | {args.distillation} | {args.resolution} | "
          f"{r['steps_per_second']:.2f} | {r['before_step']:.1f} | {r['render']:.1f} | {r['distill']:.1f} | "
          f"{r['backward']:.1f} | {r['optimizer']:.1f} |")


if __name__ == "__main__":
    main()
