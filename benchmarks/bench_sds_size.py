"""Which size does SDS pull an object to? The "size force" of a model's SDS gradient on perfect renders.

    python benchmarks/bench_sds_size.py [--shape sphere] [--color blue] [--scales 0.9 1.0 1.1 1.2]
        [--guidance 3] [--bins 20 200 400 600 800 980] [--views 16] [--repeats 8] [--model FOLDER]

For each scale s of the world's object (its SDF scaled about the origin) the script renders ground truth from
cameras of the training distribution, takes SDS's gradient on the latents, g = w(t)·(ε̂ − ε) with CFG, carries
it back through the VAE encoder to the pixels, and projects it on the direction in which the images change when
the object grows: dL/ds = Σ_pixels (dL/dimage) · (image(s + δ) − image(s − δ)) / 2δ, averaged over views and
noise draws (± its standard error). Negative means following the gradient makes the object BIGGER; the size at
which it changes sign is where SDS alone would leave the object. One row per timestep bin.
Writes benchmarks/results/sds_size.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from representations.cameras import view_angles
from representations.shading import Shading, light_near_camera
from studio.paths import EMBEDDED_MODEL, shown
from studio.sampling import CameraConfig, sample_cameras, view_name
from world import World, get_object
from world.objects import BOUND_RADIUS, SDFObject
from world.render import render_object


@dataclass
class Scaled(SDFObject):
    """`base` scaled by `scale` about the origin (exact for an exact SDF)."""

    base: SDFObject | None = None
    scale: float = 1.0

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        return self.base.sdf(points / self.scale) * self.scale


def size_force(g, images: torch.Tensor, growth: torch.Tensor, cond, uncond, scale: float, t_lo: int, t_hi: int,
               repeats: int, gen: torch.Generator) -> tuple[float, float]:
    """(mean, standard error) over `repeats` noise draws of dL/ds per view. images, growth [B, 3, H, W]."""
    from distillation.guidance import cfg_combine

    b = images.shape[0]
    x = images.clone().requires_grad_(True)
    values = []
    for _ in range(repeats):
        t = torch.randint(t_lo, t_hi, (b,), generator=gen)
        z = g.encode_images(x)
        with torch.no_grad():
            noise = torch.randn(z.shape, generator=gen)
            z_t = g.add_noise(z.detach(), noise, t)
            eps_c, eps_u = g.predict_eps_cfg(z_t, t, cond, uncond)
            a = g.alpha_bar(t).view(b, 1, 1, 1)
            grad = (1 - a) * (cfg_combine(eps_c, eps_u, scale) - noise)
        (pix,) = torch.autograd.grad((z * grad).sum(), x)
        values.append(float((pix * growth).sum()) / b)
    v = torch.tensor(values)
    return float(v.mean()), float(v.std() / len(v) ** 0.5) if len(v) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="sphere")
    ap.add_argument("--color", default="blue")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.9, 1.0, 1.1, 1.2])
    ap.add_argument("--guidance", type=float, nargs="+", default=[3.0])
    ap.add_argument("--bins", type=int, nargs="+", default=[20, 200, 400, 600, 800, 980],
                    help="timestep bin edges (in model steps)")
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--model", default="")
    ap.add_argument("--out", default="benchmarks/results/sds_size.json")
    args = ap.parse_args()
    from distillation.guidance import Guidance

    torch.set_num_threads(1)
    model = args.model or str(EMBEDDED_MODEL)
    g = Guidance.from_pretrained(model)
    world = World.load()
    color = world.colors[args.color]
    gen = torch.Generator().manual_seed(0)
    cams = sample_cameras(CameraConfig(), gen, n=args.views)
    shading = Shading(light_near_camera(cams.position, gen))
    az, el = view_angles(cams)
    caption = world.canonical_caption(args.shape, args.color)
    cond = g.encode_text([f"{caption}, {view_name(a, e)} view" for a, e in zip(az.tolist(), el.tolist())])
    uncond = g.encode_text([""] * args.views)
    base = get_object(args.shape)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 65)] * 3, indexing="ij"), -1).reshape(-1, 3)
    extent = float(grid[base.occupancy(grid)].norm(dim=-1).max()) + 2 / 64
    if max(args.scales) + 0.02 > BOUND_RADIUS / extent:
        raise SystemExit(f"error: --scales: the renderer clips rays at radius {BOUND_RADIUS}; use scales up to "
                         f"{BOUND_RADIUS / extent - 0.02:.2f} for the {args.shape}")

    def render(s: float) -> torch.Tensor:
        return render_object(Scaled(base.name, base, s), color, cams, shading).rgb

    rows, t0, d = [], time.time(), 0.02
    bins = list(zip(args.bins[:-1], args.bins[1:]))
    for s in args.scales:
        images, growth = render(s), (render(s + d) - render(s - d)) / (2 * d)
        for w in args.guidance:
            for lo, hi in bins:
                mean, sem = size_force(g, images, growth, cond, uncond, w, lo, hi, args.repeats,
                                       torch.Generator().manual_seed(1))
                rows.append({"scale": s, "guidance": w, "t": [lo, hi], "dL_ds": round(mean, 2), "sem": round(sem, 2)})
                print(f"| {s} | {w} | {lo}-{hi} | {mean:+.1f} ± {sem:.1f} |", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    shown_model = shown(Path(model)) if Path(model).exists() else model  # a hub id stays as given
    Path(args.out).write_text(json.dumps({"model": shown_model, "date": time.strftime("%Y-%m-%d"), "caption": caption,
                                          "views": args.views, "repeats": args.repeats,
                                          "seconds": round(time.time() - t0, 1), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
