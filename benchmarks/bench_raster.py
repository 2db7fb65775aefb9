"""Pure-torch triangle rasteriser: rasterize + interpolate + antialias, forward + backward.

    python benchmarks/bench_raster.py [--faces-subdiv 5] [--size 128] [--batch 1] [--repeats 30] [--threads 2]

Scene: an icosphere (subdivision 5: 20,480 faces) of radius 0.8 seen from 2.7 units (as the training
cameras see objects), per-vertex colours; loss = mean of the antialiased image, backward to the vertex
positions and colours. Prints the median over `repeats` runs after 3 warm-up runs as a markdown row, with
the machine's load average (other jobs on the machine inflate the wall-clock numbers; the process CPU time,
`cpu ms`, is much less sensitive to them and, with 1 thread, close to the wall time on an idle machine).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from representations.cameras import ring_cameras
from representations.ops.raster import antialias, clip_from_cameras, edge_neighbors, interpolate, rasterize


def icosphere(subdiv: int, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=subdiv, radius=radius)
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.int32)


def bench(subdiv: int, size: int, batch: int, repeats: int) -> dict:
    verts, faces = icosphere(subdiv, 0.8)
    cams = ring_cameras(batch, size)
    colours = torch.rand(len(verts), 3, requires_grad=True)
    topo = edge_neighbors(faces)  # per mesh, computed once (as with nvdiffrast's topology hash)
    times: dict[str, list[float]] = {"rasterize": [], "interpolate": [], "antialias": [], "backward": [], "total": [],
                                     "cpu": []}
    for i in range(repeats + 3):
        v = verts.clone().requires_grad_(True)
        c0 = time.process_time()
        t0 = time.perf_counter()
        pos = clip_from_cameras(v, cams)
        rast = rasterize(pos, faces, (size, size))
        t1 = time.perf_counter()
        col = interpolate(colours, rast, faces)
        t2 = time.perf_counter()
        img = antialias(col, rast, pos, faces, topology=topo)
        t3 = time.perf_counter()
        img.mean().backward()
        t4 = time.perf_counter()
        c4 = time.process_time()
        if i >= 3:
            times["cpu"].append(1000 * (c4 - c0))
            for k, a, b in (("rasterize", t0, t1), ("interpolate", t1, t2), ("antialias", t2, t3),
                            ("backward", t3, t4), ("total", t0, t4)):
                times[k].append(1000 * (b - a))
    return {"faces": len(faces), **{k: statistics.median(v) for k, v in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces-subdiv", type=int, default=5)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    r = bench(args.faces_subdiv, args.size, args.batch, args.repeats)
    load = os.getloadavg()[0]
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, load average {load:.2f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| faces | px | batch | threads | load | rasterize ms | interpolate ms | antialias ms | backward ms | total ms | cpu ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {r['faces']} | {args.size}² | {args.batch} | {args.threads} | {load:.1f} | {r['rasterize']:.1f} | "
          f"{r['interpolate']:.1f} | {r['antialias']:.1f} | {r['backward']:.1f} | {r['total']:.1f} | {r['cpu']:.1f} |")


if __name__ == "__main__":
    main()
