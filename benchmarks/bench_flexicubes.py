"""FlexiCubes extraction (forward + backward) and full FlexiCubes + SDS steps per second.

    python benchmarks/bench_flexicubes.py [--resolution 64] [--repeats 10] [--threads 2] [--steps 40]

Extraction: a sphere SDF (radius 0.6) with random deformation and weights, training mode (4 triangles per
quad), all three regularisers; backward from a random linear function of the vertices. Full steps: the
run loop's parts (benchmarks/bench_step.py) with `--representation flexicubes`, tiny random and embedded
models, 64×64. Prints markdown rows with the machine's load average.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from representations.ops.flexicubes import FlexiGrid, flexicubes, sdf_sign_loss


def bench_extract(resolution: int, repeats: int) -> dict:
    grid = FlexiGrid(resolution, 1.0)
    C, V = grid.num_cubes, grid.num_vertices
    gen = torch.Generator().manual_seed(0)
    sdf = (grid.positions.norm(dim=-1) - 0.6).requires_grad_(True)
    params = [(0.1 * torch.randn(*shape, generator=gen)).requires_grad_(True) for shape in ((V, 3), (C, 12), (C, 8), (C,))]
    fwd, bwd, cpu, faces = [], [], [], 0
    for i in range(repeats + 2):
        c0 = time.process_time()
        t0 = time.perf_counter()
        out = flexicubes(grid, sdf, *params, training=True)
        reg = out.l_dev + out.weight_l1 + sdf_sign_loss(grid, sdf)
        t1 = time.perf_counter()
        ((out.vertices * 0.01).sum() + reg).backward()
        t2 = time.perf_counter()
        c2 = time.process_time()
        faces = len(out.faces)
        if i >= 2:
            cpu.append(1000 * (c2 - c0))
            fwd.append(1000 * (t1 - t0))
            bwd.append(1000 * (t2 - t1))
    f, b = statistics.median(fwd), statistics.median(bwd)
    return {"faces": faces, "fwd": f, "bwd": b, "total": f + b, "cpu": statistics.median(cpu)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40, help="timed full steps per model (0: skip)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {stamp}")
    r = bench_extract(args.resolution, args.repeats)
    load = os.getloadavg()[0]
    print("| grid | faces | threads | load | extract fwd ms | backward ms | total ms | cpu ms |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.resolution}³ | {r['faces']} | {args.threads} | {load:.1f} | {r['fwd']:.0f} | {r['bwd']:.0f} | "
          f"{r['total']:.0f} | {r['cpu']:.0f} |")
    if args.steps <= 0:
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_step import bench  # noqa: PLC0415  (the shared full-step harness)

    print()
    print("| model | px | threads | load | steps/s | render ms | distill ms | backward ms | optimizer ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in ("tiny-random", ""):
        s = bench(model, "flexicubes", "sds", args.steps, 64)
        load = os.getloadavg()[0]
        print(f"| {model or 'embedded'} | 64 | {args.threads} | {load:.1f} | {s['steps_per_second']:.2f} | "
              f"{s['render']:.1f} | {s['distill']:.1f} | {s['backward']:.1f} | {s['optimizer']:.1f} |")


if __name__ == "__main__":
    main()
