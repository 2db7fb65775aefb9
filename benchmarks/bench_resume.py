"""What resuming costs: checkpoint size, the time to write one (paid at every Stop) and to load one, per
representation at its default config, and VSD's state with the guidance model.

    PYTHONPATH=. python benchmarks/bench_resume.py [--model tiny-random|''] [--repeats 5] [--out benchmarks/results/resume.md]

Each representation takes 2 real optimisation steps first (a fixed silhouette loss) so the Adam moments exist;
times are medians over --repeats of `save_checkpoint` (safetensors, atomic swap) and of building a fresh scene
plus `load_state_tensors` from it.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 2**20


def trained_scene(kind: str):
    """A default-config scene of `kind` after 2 steps toward a sphere silhouette (Adam moments exist)."""
    import representations
    from representations.cameras import orbit_cameras
    from representations.shading import Shading, front_light

    cls = representations.get(kind)
    scene = cls(cls.Config(), 1000)
    full = lambda v: torch.full((1,), float(v))  # noqa: E731
    cams = orbit_cameras(full(30), full(15), full(2.7), full(47), 64, 64)
    for step in range(2):
        scene.before_step(step)
        out = scene.render(cams, Shading(front_light(cams.position)))
        (out.alpha - 0.5).square().mean().backward()
        scene.after_backward(step)
    return cls, scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-random", help="guidance for the VSD row ('' = the embedded model)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/resume.md"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

    import representations
    from distillation.sds import SDS, SDSConfig
    from distillation.vsd import VSD, VSDConfig
    from studio.checkpoint import load_distillation_state, load_scene_state, save_checkpoint
    from studio.config import GuidanceConfig
    from studio.models import load_guidance

    guidance, _ = load_guidance(GuidanceConfig(model=args.model))
    stateless = SDS(SDSConfig(), guidance, 1000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "checkpoint"
        for kind in sorted(representations.REGISTRY):
            cls, scene = trained_scene(kind)
            save = median_seconds(lambda: save_checkpoint(folder, scene, stateless, 2, ""), args.repeats)

            def load():
                cls(cls.Config(), 1000).load_state_tensors(load_scene_state(folder))

            rows.append((f"{kind} (scene)", len(scene.state_tensors()), folder_mb(folder), save, median_seconds(load, args.repeats)))
        _, scene = trained_scene("nerf")
        vsd = VSD(VSDConfig(), guidance, 1000)
        save = median_seconds(lambda: save_checkpoint(folder, scene, vsd, 2, ""), args.repeats)
        size = (folder / "distillation.safetensors").stat().st_size / 2**20
        load = median_seconds(lambda: load_distillation_state(folder, vsd), args.repeats)
        rows.append((f"vsd LoRA state ({args.model or 'embedded'}; save includes the nerf scene)", len(vsd.state_tensors()), size, save, load))

    load_avg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [f"# bench_resume ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load_avg})", "",
             "| state | tensors | MB | save_checkpoint ms | load ms |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {n} | {mb:.2f} | {save * 1e3:.1f} | {load * 1e3:.1f} |" for name, n, mb, save, load in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
