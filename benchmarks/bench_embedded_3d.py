"""3D check of the embedded model: generate captions with SDS + NeRF, measure against ground truth.

    python benchmarks/bench_embedded_3d.py [--steps N] [--seeds 0 1 2] [--model FOLDER] [--prompts cube:red ...]
        [--views docs/images/embedded-3d-views.png]

For each (shape, colour, seed): a full studio run (mesh export skipped), then 3D IoU of the occupancy
(best over yaw) against EVERY shape of the world, and the surface colour judged against the palette.
Writes benchmarks/results/embedded_3d.json and prints a markdown table; with --views, a PNG with one row per run:
four views of the result (lit, 64 px) and the same four views of the true object turned by the fitted yaw.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from representations.cameras import ring_cameras
from representations.shading import Shading, front_light
from studio.config import build_config
from studio.events import Finished
from studio.paths import EMBEDDED_MODEL, shown
from measure.metrics import (best_yaw_iou, mean_surface_color, nearest_color, object_frame, scene_occupancy,
                            size_free_iou)
from studio.reexport import load_scene
from studio.run import run
from world import World, get_object
from world.render import render_object

DEFAULT = ["cube:red", "sphere:blue", "cone:green", "torus:yellow"]


def evaluate(run_dir: Path, world: World, resolution: int = 64) -> dict:
    cfg, scene = load_scene(run_dir)
    occ = scene_occupancy(scene, resolution)
    if occ is None:
        return {"empty": True}
    bound = cfg.representation.bound
    fits = {s: best_yaw_iou(occ, get_object(s), resolution, bound) for s in world.shapes}
    sized = {s: size_free_iou(occ, get_object(s), resolution, bound) for s in world.shapes}
    with torch.no_grad():
        mesh = scene.extract_mesh(resolution)
    rgb = mean_surface_color(mesh)
    return {"ious": {s: iou for s, (iou, _) in fits.items()}, "yaws": {s: yaw for s, (_, yaw) in fits.items()},
            "size_free_ious": {s: iou for s, (iou, _, _) in sized.items()}, "scales": {s: sc for s, (_, _, sc) in sized.items()},
            "color_rgb": None if rgb is None else rgb.round(3).tolist(),
            "color": None if rgb is None else nearest_color(rgb, world.colors)}


@torch.no_grad()
def view_row(run_dir: Path, shape: str, color: str, yaw_deg: float, world: World, n: int = 4) -> torch.Tensor:
    """[3, 64, 2 * n * 64]: n lit views of the run's scene, then the same views of the true object turned by yaw."""
    _, scene = load_scene(run_dir)
    scene.eval()
    cams = ring_cameras(n, 64, elevation_deg=20.0)
    result = scene.render(cams, Shading(front_light(cams.position), mode="lambertian")).rgb.clamp(0, 1)
    tcams = object_frame(cams, yaw_deg)
    truth = render_object(get_object(shape), world.colors[color], tcams,
                          Shading(front_light(tcams.position), mode="lambertian")).rgb.clamp(0, 1)
    return torch.cat([*result, *truth], dim=2)


def save_views(rows: list[torch.Tensor], path: Path) -> None:
    from PIL import Image

    img = (torch.cat(rows, dim=1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=None, help="default: the studio's (RunConfig.steps)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--model", default="")
    ap.add_argument("--prompts", nargs="+", default=DEFAULT, help="shape:colour pairs")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/embedded_3d.json"))
    ap.add_argument("--views", type=Path, default=None, help="also write a PNG of every result beside the truth")
    args = ap.parse_args()
    world = World.load()
    rows, view_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in args.prompts:
            shape, color = pair.split(":")
            for seed in args.seeds:
                prompt = world.canonical_caption(shape, color)
                steps = {} if args.steps is None else {"steps": args.steps}
                cfg = build_config([{"prompt": prompt, **steps, "seed": seed, "guidance": {"model": args.model}}],
                                   ["export.formats=[]", "export.turntable_frames=0", "log.preview_every=0",
                                    *args.overrides])
                t0 = time.time()
                *_, fin = run(cfg, tmp)
                assert isinstance(fin, Finished)
                r = {"prompt": prompt, "shape": shape, "color_true": color, "seed": seed,
                     "seconds": round(time.time() - t0, 1), **evaluate(fin.run_dir, world)}
                rows.append(r)
                if args.views is not None and not r.get("empty"):
                    view_rows.append(view_row(fin.run_dir, shape, color, r["yaws"][shape], world))
                print(json.dumps(r), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model = args.model or shown(EMBEDDED_MODEL)
    args.out.write_text(json.dumps({"model": model, "date": time.strftime("%Y-%m-%d"), "steps": cfg.steps,
                                    "overrides": args.overrides, "rows": rows}, indent=1))
    if view_rows:
        save_views(view_rows, args.views)
    print("| prompt | seed | IoU true | best other | colour | size-free IoU true (scale) | best other | s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("empty"):
            print(f"| {r['prompt']} | {r['seed']} | empty | | | {r['seconds']} |")
            continue
        true = r["ious"][r["shape"]]
        other = max(v for k, v in r["ious"].items() if k != r["shape"])
        sf = r["size_free_ious"]
        sf_other = max(v for k, v in sf.items() if k != r["shape"])
        print(f"| {r['prompt']} | {r['seed']} | {true:.2f} | {other:.2f} | {r['color']} | "
              f"{sf[r['shape']]:.2f} ({r['scales'][r['shape']]:.2f}) | {sf_other:.2f} | {r['seconds']} |")


if __name__ == "__main__":
    main()
