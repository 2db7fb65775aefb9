"""A run's speed when other processes hold the CPU: the main job's training (embedded model, NeRF + SDS, 64 px)
alone, then beside BUSY busy-loop processes with torch's default two threads fixed (the studio before
studio/threads.py) and with the thread policy (the default now). Side by side in one run, each variant in its own
process for the same wall time; steps/s counted after a warm-up. Writes benchmarks/results/contention.json and
the table in docs/reliability.md and docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_contention.py [--seconds 40] [--busy 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, sys, time, tempfile
from studio.config import build_config
from studio.events import Progress
from studio.run import run
import torch
seconds, warmup = float(sys.argv[1]), float(sys.argv[2])
cfg = build_config([{"prompt": "a red cube", "steps": 100000}], ["log.preview_every=0", "log.checkpoint_every=0"])
events = run(cfg, tempfile.mkdtemp())
t0 = None; marks = []; threads = []
for ev in events:
    if isinstance(ev, Progress):
        now = time.perf_counter()
        t0 = t0 or now
        marks.append(now - t0); threads.append(torch.get_num_threads())
        if marks[-1] > seconds:
            break
events.close()
steady = [i for i, t in enumerate(marks) if t >= warmup]
rate = (len(steady) - 1) / (marks[steady[-1]] - marks[steady[0]]) if len(steady) > 1 else 0.0
print(json.dumps({"steps": len(marks), "steps_per_s": rate, "threads_last": threads[-1],
                  "threads_seen": sorted(set(threads))}))
"""


def busy_loops(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def measure(name: str, seconds: float, warmup: float, busy: int, env: dict) -> dict:
    loops = busy_loops(busy)
    try:
        time.sleep(0.5 if busy else 0)
        load_before = os.getloadavg()[0]
        out = subprocess.run([sys.executable, "-c", CHILD, str(seconds), str(warmup)], capture_output=True, text=True,
                             env={**os.environ, **env}, cwd=ROOT, timeout=seconds * 10 + 300)
        if out.returncode != 0:
            raise SystemExit(f"{name}: {out.stderr[-2000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        for p in loops:
            p.kill()
            p.wait()
    result.update(name=name, busy_processes=busy, env=env, load_1min_at_start=round(load_before, 2))
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=40.0, help="wall time of training per variant")
    ap.add_argument("--warmup", type=float, default=8.0, help="seconds not counted at the start of each")
    ap.add_argument("--busy", type=int, default=2, help="busy-loop processes beside the run")
    args = ap.parse_args()
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "STUDIO_THREADS")}
    os.environ.clear()
    os.environ.update(clean)
    variants = [("idle, thread policy", 0, {}),
                ("busy, 2 threads fixed (before)", args.busy, {"STUDIO_THREADS": "2"}),
                ("busy, thread policy (now)", args.busy, {}),
                ("idle, 2 threads fixed", 0, {"STUDIO_THREADS": "2"})]
    results = [measure(name, args.seconds, args.warmup, busy, env) for name, busy, env in variants]
    idle = results[0]["steps_per_s"]
    summary = {r["name"]: round(r["steps_per_s"] / idle, 3) for r in results}
    record = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores", "seconds": args.seconds, "warmup": args.warmup, "results": results,
              "share_of_idle": summary}
    out = ROOT / "benchmarks" / "results" / "contention.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    from measure import report

    md = table(record)
    for doc in ("reliability.md", "benchmarks.md"):
        report.splice(ROOT / "docs" / doc, "bench-contention", md)


def table(record: dict) -> str:
    """The results as a markdown table, with the machine, date and load."""
    lines = ["| variant | busy processes | load (1 min) at start | torch threads | steps/s | share of idle |",
             "|---|---|---|---|---|---|"]
    idle = record["results"][0]["steps_per_s"]
    for r in record["results"]:
        threads = "/".join(map(str, r["threads_seen"]))
        lines.append(f"| {r['name']} | {r['busy_processes']} | {r['load_1min_at_start']} | {threads} | {r['steps_per_s']:.2f} | "
                     f"{r['steps_per_s'] / idle:.2f} |")
    return "\n".join(lines) + (f"\n\nMain job's training (embedded model, NeRF + SDS, 64 px), {record['seconds']:.0f} s "
                               f"per variant, {record['warmup']:.0f} s warm-up not counted; {record['machine']}, "
                               f"{record['date']}; `benchmarks/bench_contention.py`.")


if __name__ == "__main__":
    main()
