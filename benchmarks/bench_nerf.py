"""Time one NeRF training step on CPU: render forward, backward, optimiser step (batch 1).

    python benchmarks/bench_nerf.py                 # threads=2, 64 and 128 px
    python benchmarks/bench_nerf.py --threads 1 --sizes 64

Two states are timed: "init" (the faint starting fog) and "fitted" (after --fit-steps steps toward an
opaque, coloured, shaded sphere, so the occupancy grid and early termination see a real surface). Each
phase is timed over random cameras from the studio's camera distribution (sampling.CameraConfig); the
loss is a cheap stand-in for the distillation loss (its cost is inside "render fwd"). Prints markdown rows
(median of --repeats). The occupancy update (every 16 steps) is excluded; its amortised cost is printed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from representations.cameras import Cameras  # noqa: E402
from representations.nerf import NeRF, NeRFConfig  # noqa: E402
from representations.shading import Shading, light_near_camera, shade  # noqa: E402
from studio.sampling import CameraConfig, sample_cameras  # noqa: E402


def sphere_target(cams: Cameras, shading: Shading, radius: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """Lambertian render of a sphere at the origin, albedo varying with position, on white.

    Returns (rgb [B, 3, H, W], alpha [B, 1, H, W]).
    """
    B, H, W = len(cams), cams.height, cams.width
    o, d = (x.reshape(-1, 3) for x in cams.rays())
    b = (o * d).sum(-1)
    disc = b * b - (o * o).sum(-1) + radius**2
    hit = disc > 0
    t = -b - torch.sqrt(disc.clamp(min=0))
    p = o + t[:, None] * d
    n = p / radius
    albedo = 0.5 + 0.4 * n * torch.tensor([1.0, -1.0, 1.0])
    lit = shade(albedo.view(B, -1, 3), n.view(B, -1, 3), shading).reshape(-1, 3)
    rgb = torch.where(hit[:, None], lit, torch.ones_like(lit))
    return rgb.view(B, H, W, 3).permute(0, 3, 1, 2), hit.float().view(B, 1, H, W)


def sphere_loss(out, cams: Cameras, shading: Shading) -> torch.Tensor:
    """Stand-in for the distillation loss: match the sphere's colour and silhouette, plus the regularisers."""
    rgb, alpha = sphere_target(cams, shading)
    return (out.rgb - rgb).square().mean() + (out.alpha - alpha).square().mean() + sum(out.terms.values())


def fit(model: NeRF, steps: int, cam_cfg: CameraConfig, gen: torch.Generator) -> None:
    """A few optimisation steps toward the sphere target (to get a surface-like field)."""
    model.train()
    for step in range(steps):
        cams = sample_cameras(cam_cfg, gen)
        shading = Shading(light_near_camera(cams.position, gen))
        model.before_step(step)
        out = model.render(cams, shading)
        sphere_loss(out, cams, shading).backward()
        model.after_backward(step)


def time_step(model: NeRF, size: int, repeats: int, gen: torch.Generator, start: int) -> dict[str, float]:
    """Median ms of render forward / backward / optimiser step, plus mean samples per pixel."""
    cam_cfg = CameraConfig(resolution=size)
    fwd, bwd, opt, samples = [], [], [], []
    for i in range(repeats + 2):
        cams = sample_cameras(cam_cfg, gen)
        shading = Shading(light_near_camera(cams.position, gen))
        model.before_step(start + i)
        t0 = time.perf_counter()
        out = model.render(cams, shading)
        loss = sphere_loss(out, cams, shading)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        model.after_backward(start + i)
        t3 = time.perf_counter()
        if i >= 2:  # warm-up
            fwd.append(t1 - t0), bwd.append(t2 - t1), opt.append(t3 - t2)
            samples.append(model.last_sample_count / (size * size))
    med = lambda xs: 1e3 * statistics.median(xs)  # noqa: E731
    return {"fwd": med(fwd), "bwd": med(bwd), "opt": med(opt), "spp": statistics.mean(samples)}


def occupancy_update_ms(model: NeRF, repeats: int = 3) -> float:
    """Median ms of one (partial) occupancy-grid update."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.update_occupancy()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--fit-steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = NeRF(NeRFConfig(), total_steps=1000)
    updates: dict[str, float] = {}
    print("| state | size | threads | samples/px | render fwd ms | backward ms | optimizer ms | total ms |")
    print("|---|---|---|---|---|---|---|---|")
    for state in ("init", "fitted"):
        if state == "fitted":
            fit(model, args.fit_steps, CameraConfig(resolution=64), gen)
        snapshot = {k: v.clone() for k, v in model.state_tensors().items()}
        for size in args.sizes:
            model.load_state_tensors(snapshot)  # every size starts from the same field
            r = time_step(model, size, args.repeats, gen, start=args.fit_steps + 1)
            total = r["fwd"] + r["bwd"] + r["opt"]
            print(f"| {state} | {size}² | {args.threads} | {r['spp']:.1f} | {r['fwd']:.1f} | {r['bwd']:.1f} | "
                  f"{r['opt']:.1f} | {total:.1f} |", flush=True)
        model.load_state_tensors(snapshot)
        updates[state] = occupancy_update_ms(model)
    for state, ms in updates.items():
        print(f"\noccupancy update ({state}): {ms:.0f} ms every {model.cfg.occupancy.update_every} steps "
              f"= {ms / model.cfg.occupancy.update_every:.1f} ms/step amortised")


if __name__ == "__main__":
    main()
