"""Render the embedded model's training set from the procedural world.

    python -m training.data --out data/embedded --train 24000 --val 1200 --seed 0

Each image: a random (shape, colour) pair of the World, a camera from studio.sampling.sample_cameras(CameraConfig())
(64x64, the studio default), a random light from light_near_camera with a random spread (more light variety than
DreamFusion's fixed 45 degrees), 'lambertian' shading, white background, 2x2 supersampling.
Captions are sampled at training time from the stored labels (shape, colour, view); one example caption per image
is stored too. Output: {out}/train.pt and {out}/val.pt, dicts of uint8 images/alpha and labels.
"""
from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from representations.cameras import view_angles
from representations.shading import Shading, light_near_camera
from studio.sampling import CameraConfig, sample_cameras, view_name
from world import World, get_object
from world.render import render_object


@dataclass
class DataConfig:
    """What to render."""

    n: int = 24000
    """Number of images."""
    seed: int = 0
    """Seed of cameras, lights and pair order."""
    batch: int = 32
    """Images per render batch (one (shape, colour) pair per batch)."""
    light_spreads: tuple[float, ...] = (30.0, 45.0, 45.0, 60.0, 90.0)
    """Spreads (degrees) of light_near_camera, one drawn per batch."""
    plain_fraction: float = 0.1
    """Fraction of stored example captions without a view suffix (the trainer re-samples its own)."""


def render_split(world: World, cfg: DataConfig, log_every: int = 50) -> dict:
    """Render cfg.n images. Returns a dict of tensors (uint8 images [N,3,64,64], alpha [N,1,64,64], labels)."""
    pairs = world.pairs()
    rng = random.Random(cfg.seed)
    n_batches = (cfg.n + cfg.batch - 1) // cfg.batch
    order = [pairs[i % len(pairs)] for i in range(n_batches)]
    rng.shuffle(order)
    gen = torch.Generator().manual_seed(cfg.seed)
    out = {k: [] for k in ("images", "alpha", "shape", "color", "azimuth", "elevation", "radius", "fov", "light")}
    captions: list[str] = []
    shapes, colors = list(world.shapes), list(world.colors)
    t0 = time.time()
    for b, (shape, color) in enumerate(order):
        cams = sample_cameras(CameraConfig(), gen, n=cfg.batch)
        spread = cfg.light_spreads[int(torch.randint(len(cfg.light_spreads), (1,), generator=gen))]
        light = light_near_camera(cams.position, gen, spread_deg=spread)
        r = render_object(get_object(shape), world.colors[color], cams, Shading(light, mode="lambertian"))
        az, el = view_angles(cams)
        out["images"].append((r.rgb * 255).round().to(torch.uint8))
        out["alpha"].append((r.alpha * 255).round().to(torch.uint8))
        out["shape"].append(torch.full((cfg.batch,), shapes.index(shape)))
        out["color"].append(torch.full((cfg.batch,), colors.index(color)))
        out["azimuth"].append(az)
        out["elevation"].append(el)
        out["radius"].append(cams.position.norm(dim=-1))
        out["fov"].append(torch.rad2deg(cams.fov_y))
        out["light"].append(light)
        for a, e in zip(az.tolist(), el.tolist()):
            view = None if rng.random() < cfg.plain_fraction else view_name(a, e)
            captions.append(world.caption(shape, color, rng, view))
        if b % log_every == 0:
            print(f"batch {b}/{n_batches} {time.time() - t0:.0f}s", flush=True)
    data = {k: torch.cat(v)[: cfg.n] for k, v in out.items()}
    data["captions"] = captions[: cfg.n]
    data["shape_names"], data["color_names"] = shapes, colors
    data["render_seconds"] = time.time() - t0
    return data


def load_split(path: str | Path) -> dict:
    """Load a split written by this module."""
    return torch.load(path, weights_only=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/embedded")
    ap.add_argument("--train", type=int, default=24000)
    ap.add_argument("--val", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--splits", nargs="+", default=["val", "train"])
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    world = World.load()
    ap_splits = [s for s in ("val", "train") if s in args.splits]
    for name in ap_splits:
        n, seed = (args.val, args.seed + 1000) if name == "val" else (args.train, args.seed)
        # small batches for the held-out split, so that every (shape, colour) pair is in it
        data = render_split(world, DataConfig(n=n, seed=seed, batch=8 if name == "val" else 32))
        torch.save(data, out / f"{name}.pt.tmp")
        (out / f"{name}.pt.tmp").replace(out / f"{name}.pt")
        print(f"wrote {out / name}.pt: {n} images in {data['render_seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
