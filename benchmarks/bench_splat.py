"""Gaussian splatter forward + backward: the tile-binned CPU splatter against the dense reference, side by side.

    python benchmarks/bench_splat.py [--gaussians 10000] [--size 128] [--tile 8] [--repeats 3] [--threads 2]

The scene is what `Gaussians` starts from: means uniform in a ball of radius 0.5, standard deviation = the
mean spacing (isotropic scales jittered by exp(N(0, 0.3^2))), random rotations, opacities sigmoid(N(0, 1)),
7 feature channels (albedo, normal, distance: what the representation composites). One 47.5 deg camera at
distance 2.7. Both splatters get the same inputs and the same weighted loss; the outputs and gradients are
compared. Prints a markdown table row (median of --repeats runs; the reference runs once: it is slow).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import torch

from representations.cameras import orbit_cameras
from representations.ops.splat import rasterization
from representations.ops.splat_reference import rasterization_reference


def make_scene(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, 3, generator=g)
    means = u / u.norm(dim=-1, keepdim=True) * 0.5 * torch.rand(n, 1, generator=g) ** (1 / 3)
    spacing = (4 / 3 * math.pi * 0.5**3 / n) ** (1 / 3)
    scales = spacing * torch.exp(0.3 * torch.randn(n, 3, generator=g))
    quats = torch.randn(n, 4, generator=g)
    opac = torch.sigmoid(torch.randn(n, generator=g))
    feats = torch.rand(n, 7, generator=g)
    return [means, quats, scales, opac, feats]


def timed(fn, ins, cams, size, weights, **kw):
    t0 = time.perf_counter()
    img, alpha = fn(*ins, cams.w2c(), cams.focal(), size, size, **kw)
    t1 = time.perf_counter()
    loss = (torch.cat([img, alpha], -1) * weights).sum()
    grads = torch.autograd.grad(loss, ins)
    t2 = time.perf_counter()
    return img.detach(), alpha.detach(), grads, t1 - t0, t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gaussians", type=int, default=10000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--tile", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-reference", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    S = args.size
    cams = orbit_cameras(torch.tensor([20.0]), torch.tensor([15.0]), torch.tensor([2.7]), torch.tensor([47.5]), S, S)
    ins = [t.requires_grad_() for t in make_scene(args.gaussians)]
    weights = torch.rand(1, S, S, 8, generator=torch.Generator().manual_seed(1))
    runs = [timed(rasterization, ins, cams, S, weights, tile_size=args.tile) for _ in range(args.repeats + 1)][1:]
    fast_f = statistics.median(r[3] for r in runs)
    fast_b = statistics.median(r[4] for r in runs)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")
    print("| gaussians | px | tile | fast fwd s | fast bwd s | fast total s | ref fwd s | ref bwd s | speed-up | "
          "max out err | max grad rel err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ref = "| - | - | - | - | - |"
    if not args.no_reference:
        img, alpha, grads, _, _ = runs[-1]
        r_img, r_alpha, r_grads, ref_f, ref_b = timed(rasterization_reference, ins, cams, S, weights)
        out_err = max(float((img - r_img).abs().max()), float((alpha - r_alpha).abs().max()))
        grad_err = max(float((g - r).norm() / r.norm().clamp(min=1e-30)) for g, r in zip(grads, r_grads))
        ref = f"| {ref_f:.2f} | {ref_b:.2f} | {(ref_f + ref_b) / (fast_f + fast_b):.0f}x | {out_err:.1e} | {grad_err:.1e} |"
    print(f"| {args.gaussians} | {S} | {args.tile} | {fast_f:.3f} | {fast_b:.3f} | {fast_f + fast_b:.3f} {ref}")


if __name__ == "__main__":
    main()
