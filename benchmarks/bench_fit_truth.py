"""Ceiling check: fit a representation to ground-truth renders (no diffusion model) and score it like a generation.

    python benchmarks/bench_fit_truth.py [--kind nerf] [--steps 300] [--shapes cube sphere cone torus]

Each step renders the scene and the true world object from the same random training camera (the studio's
default distribution, lights and Lambertian shading) and minimises the image MSE. The run is then scored with
the quality benchmark's 3D IoU (best over yaw) against every shape. If this ceiling is low, the representation,
camera or measuring conventions are at fault, not the diffusion prior; if it is high, the gap between it and a
distilled run is the prior's. Prints a markdown table; writes benchmarks/results/fit_truth_{kind}.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import representations
from representations.base import for_image_fitting
from studio.config import build_config
from measure.metrics import best_yaw_iou, scene_occupancy
from studio.run import sample_shading
from studio.sampling import sample_cameras
from world import World, get_object
from world.render import render_object


def fit(kind: str, shape: str, color: str, steps: int, seed: int) -> tuple[torch.nn.Module, float]:
    """(scene fitted to renders of the true object, seconds)."""
    world = World.load()
    cfg = build_config([{"prompt": "fit", "steps": steps, "seed": seed, "representation": {"kind": kind}}])
    cfg.representation = for_image_fitting(cfg.representation)  # the terms tuned against SDS distort an MSE fit
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    scene = representations.get(kind)(cfg.representation, steps)
    obj, rgb = get_object(shape), world.colors[color]
    t0 = time.time()
    for step in range(steps):
        scene.before_step(step)
        cams = sample_cameras(cfg.camera, gen)
        shading = sample_shading(cfg.shading, cams, gen, step)
        truth = render_object(obj, rgb, cams, shading)
        out = scene.render(cams, shading)
        loss = ((out.rgb - truth.rgb) ** 2).mean() * 100 + sum(out.terms.values(), torch.zeros(()))
        loss.backward()
        scene.after_backward(step)
    return scene, time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="nerf")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shapes", nargs="+", default=["cube", "sphere", "cone", "torus"])
    ap.add_argument("--color", default="red")
    args = ap.parse_args()
    world = World.load()
    rows = []
    for shape in args.shapes:
        scene, seconds = fit(args.kind, shape, args.color, args.steps, args.seed)
        scene.eval()
        occ = scene_occupancy(scene, 64)
        bound = scene.cfg.bound
        ious = {s: (0.0 if occ is None else best_yaw_iou(occ, get_object(s), 64, bound)[0]) for s in world.shapes}
        rows.append({"shape": shape, "ious": ious, "seconds": round(seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)
    out = Path(f"benchmarks/results/fit_truth_{args.kind}.json")
    out.write_text(json.dumps({"steps": args.steps, "seed": args.seed, "rows": rows}, indent=1))
    print(f"| shape | IoU with the truth | best other shape | s |\n|---|---|---|---|")
    for r in rows:
        other = max((v, k) for k, v in r["ious"].items() if k != r["shape"])
        print(f"| {r['shape']} | {r['ious'][r['shape']]:.2f} | {other[0]:.2f} ({other[1]}) | {r['seconds']} |")


if __name__ == "__main__":
    main()
