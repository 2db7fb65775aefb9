"""3D check of the embedded model: generate captions with SDS + NeRF, measure against ground truth.

    python benchmarks/bench_embedded_3d.py [--steps 600] [--seeds 0 1 2] [--model FOLDER] [--prompts cube:red ...]

For each (shape, colour, seed): a full studio run (mesh export skipped), then 3D IoU of the occupancy
(best over yaw) against EVERY shape of the world, and the surface colour judged against the palette.
Writes benchmarks/results/embedded_3d.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from studio.config import build_config
from studio.events import Finished
from studio.quality import best_yaw_iou, mean_surface_color, nearest_color, scene_occupancy
from studio.reexport import load_scene
from studio.run import run
from studio.world import World, get_object

DEFAULT = ["cube:red", "sphere:blue", "cone:green", "torus:yellow"]


def evaluate(run_dir: Path, world: World, resolution: int = 64) -> dict:
    cfg, scene = load_scene(run_dir)
    occ = scene_occupancy(scene, resolution)
    if occ is None:
        return {"empty": True}
    ious = {s: best_yaw_iou(occ, get_object(s), resolution, cfg.representation.bound)[0] for s in world.shapes}
    with torch.no_grad():
        mesh = scene.extract_mesh(resolution)
    rgb = mean_surface_color(mesh)
    return {"ious": ious, "color_rgb": None if rgb is None else rgb.round(3).tolist(),
            "color": None if rgb is None else nearest_color(rgb, world.colors)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--model", default="")
    ap.add_argument("--prompts", nargs="+", default=DEFAULT, help="shape:colour pairs")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/embedded_3d.json"))
    args = ap.parse_args()
    world = World.load()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in args.prompts:
            shape, color = pair.split(":")
            for seed in args.seeds:
                prompt = world.canonical_caption(shape, color)
                cfg = build_config([{"prompt": prompt, "steps": args.steps, "seed": seed,
                                     "guidance": {"model": args.model}}],
                                   ["export.formats=[]", "export.turntable_frames=0", "log.preview_every=0",
                                    *args.overrides])
                t0 = time.time()
                *_, fin = run(cfg, tmp)
                assert isinstance(fin, Finished)
                r = {"prompt": prompt, "shape": shape, "color_true": color, "seed": seed,
                     "seconds": round(time.time() - t0, 1), **evaluate(fin.run_dir, world)}
                rows.append(r)
                print(json.dumps(r), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"steps": args.steps, "overrides": args.overrides, "rows": rows}, indent=1))
    print("| prompt | seed | IoU true | best other | colour | s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r.get("empty"):
            print(f"| {r['prompt']} | {r['seed']} | empty | | | {r['seconds']} |")
            continue
        true = r["ious"][r["shape"]]
        other = max(v for k, v in r["ious"].items() if k != r["shape"])
        print(f"| {r['prompt']} | {r['seed']} | {true:.2f} | {other:.2f} | {r['color']} | {r['seconds']} |")


if __name__ == "__main__":
    main()
