"""Export pipeline timings and sizes at the user defaults (20k faces, 1024² texture), stage by stage.

    PYTHONPATH=. python benchmarks/bench_export.py [--texture-size 1024] [--faces 20000] [--out benchmarks/results/export.md]

The scene is a NeRF whose initial field is a crisp sphere (radius ~0.58, the CRISP_SPHERE overrides of the
tests) with a colour field written into nothing: the timings are those of the pipeline, not of training.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--faces", type=int, default=20000)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/export.md"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

    import representations
    from studio.config import ExportConfig
    from studio.export import writer
    from studio.export.bake import bake_albedo
    from studio.export.clean import drop_floaters, orient_outward, placement, vertex_normals
    from studio.export.fidelity import fidelity
    from studio.export.pipeline import albedo_field, vertex_colors
    from studio.export.asset import ExportMesh
    from studio.export.simplify import simplify
    from studio.export.unwrap import unwrap

    cls = representations.get("nerf")
    scene = cls(cls.Config(blob={"bias": 0.0, "scale": 40.0, "radius": 0.6}), 1000).eval()
    cfg = dataclasses.replace(ExportConfig(), texture_size=args.texture_size, faces=args.faces,
                              mesh_resolution=args.resolution)
    rows: list[tuple[str, float, str]] = []

    def timed(name, fn, note=""):
        t = time.perf_counter()
        out = fn()
        rows.append((name, time.perf_counter() - t, note))
        return out

    with torch.no_grad():
        raw = timed(f"extract_mesh {args.resolution}³", lambda: scene.extract_mesh(args.resolution))
    rows[-1] = (rows[-1][0], rows[-1][1], f"{len(raw.faces)} faces")
    mesh = timed("drop floaters + orient", lambda: orient_outward(drop_floaters(raw, cfg.min_part_fraction)))
    mesh = timed(f"simplify to {args.faces}", lambda: orient_outward(simplify(mesh, cfg.faces)))
    rows[-1] = (rows[-1][0], rows[-1][1], f"{len(mesh.faces)} faces")
    albedo = albedo_field(scene)
    colors = timed("vertex colours + normals", lambda: vertex_colors(mesh, raw, albedo))
    normals = vertex_normals(mesh.vertices, mesh.faces)
    vmap, faces, uvs = timed("xatlas unwrap", lambda: unwrap(mesh.vertices, mesh.faces, cfg.texture_size, cfg.texture_padding))
    verts = mesh.vertices[vmap]
    tex = timed(f"bake albedo {args.texture_size}²", lambda: bake_albedo(verts, faces, uvs, cfg.texture_size,
                                                                          cfg.texture_padding, albedo, colors[vmap]))
    place = placement(mesh.vertices, cfg.size)
    asset = ExportMesh(place.apply(verts), faces, normals[vmap], colors[vmap], uvs, tex)
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("glb", "obj", "ply", "stl", "3mf", "usdz"):  # stl / 3mf: the print solid at 50 mm, built by each
            paths = timed(f"write {fmt}", lambda: writer(fmt)(asset, Path(tmp) / f"asset.{fmt}"))
            sizes[fmt] = sum(p.stat().st_size for p in paths)
            rows[-1] = (rows[-1][0], rows[-1][1], f"{sizes[fmt] / 1e6:.2f} MB")
    from studio.export.printability import printability
    from studio.export.printable import print_solid

    solid = timed("print solid 50 mm (weld, close, orient, manifold3d)", lambda: print_solid(asset, 50.0))
    report = timed("printability report (1024 wall rays)", lambda: printability(solid))
    rows[-1] = (rows[-1][0], rows[-1][1], f"manifold {report['manifold']}, watertight {report['watertight']}, "
                f"min wall {report['min_wall_mm']} mm, overhang share {report['overhang_share']}")
    fid = timed("fidelity (16 views, 64 px)", lambda: fidelity(scene, verts, faces, uvs, tex, colors[vmap], 8, 64))
    rows[-1] = (rows[-1][0], rows[-1][1], f"IoU {fid['export_iou']}, colour error {fid['export_color_error']}")

    load = os.getloadavg()
    lines = [f"Export pipeline at {args.faces} faces, {args.texture_size}² texture ({time.strftime('%Y-%m-%d %H:%M')} UTC, "
             f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
             f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f})", "",
             "| stage | seconds | note |", "|---|---|---|"]
    lines += [f"| {name} | {sec:.2f} | {note} |" for name, sec, note in rows]
    lines.append(f"| **total** | {sum(r[1] for r in rows):.2f} | |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
