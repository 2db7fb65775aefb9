"""Does a change keep behaviour and speed? Short runs of every representation (with SDS) and every loss (with the
NeRF) on the embedded model, at an older revision and at the working tree, side by side (one process each, one
torch thread each, at the same time, so both see the same load): per-step logs and mesh metrics must be identical,
the speed is reported as a ratio.

    python benchmarks/bench_same_behaviour.py --before 7dc0b86 [--steps 30] [--json benchmarks/results/x.json]

The older revision is checked out with `git worktree` into a temporary folder and run with this venv's Python
(its own packages shadow the editable install because the script runs from its root). Exit code 1 when a log or
metric differs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [("nerf", "sds"), ("voxel", "sds"), ("gaussians", "sds"), ("flexicubes", "sds"),
         ("nerf", "vsd"), ("nerf", "csm"), ("nerf", "ism"), ("nerf", "tsm")]
TIMES = ("steps_per_second", "peak_rss_mb", "model")
"""metrics.json keys that are measurements of the machine, not of the result (as is every `*_seconds` key)."""

RUNNER = """
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from studio.config import build_config
from studio.run import run
out, steps, cases = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
result = {}
for rep, loss in cases:
    cfg = build_config([{"prompt": "a red cube", "steps": steps, "representation": {"kind": rep},
                         "distillation": {"kind": loss}}],
                       ["camera.resolution=32", "export.mesh_resolution=32", "export.texture_size=64",
                        "export.fidelity_views=2", "export.fidelity_size=32", "export.turntable_frames=0",
                        "log.preview_every=0"])
    fin = list(run(cfg, out / f"{rep}-{loss}"))[-1]
    log = [json.loads(line) for line in (fin.run_dir / "log.jsonl").read_text().splitlines()]
    result[f"{rep}-{loss}"] = {"log": log, "metrics": fin.metrics}
(out / "result.json").write_text(json.dumps(result))
"""


def start(root: Path, out: Path, steps: int) -> subprocess.Popen:
    """The runner in `root` (its packages first on sys.path), one torch thread."""
    script = root / "_same_behaviour_runner.py"
    script.write_text(RUNNER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    return subprocess.Popen([sys.executable, str(script), str(out), str(steps), json.dumps(CASES)], cwd=root, env=env)


def compare(before: dict, after: dict) -> list[dict]:
    """One row per case: whether logs and result metrics match, and the steps/s of each side."""
    rows = []
    for case in before:
        b, a = before[case], after[case]
        strip = lambda m: {k: v for k, v in m.items() if k not in TIMES and not k.endswith("_seconds")}  # noqa: E731
        mb, ma = strip(b["metrics"]), strip(a["metrics"])
        rows.append({"case": case, "log_identical": b["log"] == a["log"],
                     "metrics_identical": mb == ma,
                     "metrics_differing": {k: [mb.get(k), ma.get(k)] for k in sorted(set(mb) | set(ma))
                                           if mb.get(k) != ma.get(k)},
                     "before_steps_per_second": b["metrics"]["steps_per_second"],
                     "after_steps_per_second": a["metrics"]["steps_per_second"],
                     "ratio": round(a["metrics"]["steps_per_second"] / b["metrics"]["steps_per_second"], 3)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="git revision to compare the working tree with")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--json", type=Path, help="also write the rows (with the machine and load) here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = tmp / "before"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(old), args.before], cwd=ROOT, check=True)
        try:
            load = os.getloadavg()[0]
            procs = [start(old, tmp / "out-before", args.steps), start(ROOT, tmp / "out-after", args.steps)]
            if any(p.wait() for p in procs):
                print("a runner failed", file=sys.stderr)
                return 1
            before = json.loads((tmp / "out-before/result.json").read_text())
            after = json.loads((tmp / "out-after/result.json").read_text())
        finally:
            (ROOT / "_same_behaviour_runner.py").unlink(missing_ok=True)
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False)
    rows = compare(before, after)
    print(f"| case | log identical | metrics identical | before steps/s | after steps/s | ratio |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['log_identical']} | {r['metrics_identical']} | {r['before_steps_per_second']:.2f} "
              f"| {r['after_steps_per_second']:.2f} | {r['ratio']:.2f} |")
        if r["metrics_differing"]:
            print(f"  {r['case']}: metrics differ (before, after): {r['metrics_differing']}")
    print(f"(--before {args.before}, {args.steps} steps, load {load:.2f} at the start, cpus {os.cpu_count()})")
    if args.json:
        args.json.write_text(json.dumps({"before": args.before, "steps": args.steps, "load_at_start": load,
                                         "cpus": os.cpu_count(), "rows": rows}, indent=1))
    return 0 if all(r["log_identical"] and r["metrics_identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
