"""Peak memory of runs against studio/memory.py's estimates: training (3 steps of each representation at 64 and
128 px, embedded model) and the export (a 30-step NeRF run exported at two grid / texture sizes). Each in its own
process (peak RSS from getrusage). Writes benchmarks/results/memory.json and the table in docs/reliability.md.

    .venv/bin/python benchmarks/bench_memory.py
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = r"""
import json, resource, sys, torch
from studio.config import build_config
from studio.memory import estimate
from studio.prompts import PromptBank
from studio.run import _load_guidance, build_training, train_step
kind, res = sys.argv[1], int(sys.argv[2])
cfg = build_config([{"prompt": "a red cube", "steps": 100, "representation": {"kind": kind}}], [f"camera.resolution={res}"])
torch.manual_seed(0)
guidance, _ = _load_guidance(cfg)
scene, loss = build_training(cfg, guidance)
prompts, gen = PromptBank(guidance, cfg), torch.Generator().manual_seed(0)
for step in range(3):
    train_step(cfg, scene, loss, prompts, gen, step, guidance.device)
print(json.dumps({"measured_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "estimate_mb": estimate(cfg).training / 1e6}))
"""
EXPORT = r"""
import json, sys, tempfile
from studio.config import build_config
from studio.events import Finished
from studio.memory import estimate
from studio.run import run
mesh, texture = int(sys.argv[1]), int(sys.argv[2])
cfg = build_config([{"prompt": "a red cube", "steps": 30}], [f"export.mesh_resolution={mesh}", f"export.texture_size={texture}",
                   "export.turntable_frames=0", "export.fidelity_views=0", "log.preview_every=0"])
final = list(run(cfg, tempfile.mkdtemp()))[-1]
print(json.dumps({"measured_mb": final.metrics["peak_rss_mb"], "estimate_mb": estimate(cfg).peak / 1e6}))
"""


def child(code: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| phase | settings | measured peak (MB) | estimate (MB) | estimate / measured |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['phase']} | {r['settings']} | {r['measured_mb']:.0f} | {r['estimate_mb']:.0f} | "
                     f"{r['estimate_mb'] / r['measured_mb']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    from measure import report

    rows = []
    for kind in ("nerf", "voxel", "gaussians", "flexicubes"):
        for res in (64, 128):
            rows.append({"phase": "training", "settings": f"{kind}, {res} px", **child(TRAIN, kind, res)})
            print(rows[-1], flush=True)
    for mesh, texture in ((128, 1024), (256, 2048)):
        rows.append({"phase": "export", "settings": f"mesh_resolution {mesh}, texture_size {texture}",
                     **child(EXPORT, mesh, texture)})
        print(rows[-1], flush=True)
    record = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "rows": rows}
    (ROOT / "benchmarks" / "results" / "memory.json").write_text(json.dumps(record, indent=2) + "\n")
    md = f"{table(rows)}\n\n({record['machine']}, {record['date']}; `benchmarks/bench_memory.py`.)"
    report.splice(ROOT / "docs" / "reliability.md", "bench-memory", md)


if __name__ == "__main__":
    main()
