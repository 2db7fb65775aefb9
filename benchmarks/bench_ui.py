"""What the web studio adds to a run: steps/s driven directly vs through the UI's JobManager worker, the
cost of one page tick, and how long Stop takes.

    PYTHONPATH=$PWD python benchmarks/bench_ui.py [--steps 60] [--resolution 64]

Prints markdown table rows (with the load average, since the machine is shared).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from studio.config import build_config
from studio.run import run
from ui.handlers import Handlers, new_session
from ui.jobs import JobManager
from ui.view import JobView

SMALL = ["guidance.model=tiny-random", "export.mesh_resolution=32", "export.turntable_frames=0",
         "log.preview_every=0", "representation.blob.bias=0.0"]


def config(steps: int, resolution: int):
    return build_config([{"prompt": "a red cube", "steps": steps}], [*SMALL, f"camera.resolution={resolution}"])


def direct(steps: int, resolution: int, out: Path) -> float:
    for ev in run(config(steps, resolution), out):
        last = ev
    return json.loads((last.run_dir / "metrics.json").read_text())["steps_per_second"]


def via_jobs(steps: int, resolution: int, out: Path) -> float:
    jobs = JobManager(out)
    v = jobs.wait(jobs.submit(config(steps, resolution)), timeout=3600)
    jobs.close()
    return json.loads((Path(v.run_dir) / "metrics.json").read_text())["steps_per_second"]


def tick_ms(points: int, changed: bool, repeats: int = 200) -> float:
    jobs = JobManager(tempfile.mkdtemp())
    h = Handlers(jobs, jobs.out)
    view = JobView("x", "a red cube", status="running", step=points, total=points * 2,
                   losses=[(i, 1.0 / i) for i in range(1, points + 1)])
    jobs._jobs["x"] = type("J", (), {"view": view, "owner": ""})()  # noqa: SLF001 - a bench-only stand-in job
    session = h._set_job(new_session(), job="x")  # noqa: SLF001 - the page follows job "x", as after Generate
    times = []
    for _ in range(repeats):
        if changed:
            view.version += 1
            view.step += 1
            view.losses.append((view.step, 0.5))
        t = time.perf_counter()
        h.tick(session)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def stop_latency(resolution: int, out: Path) -> tuple[float, int]:
    """Seconds and steps from cancel() to the job being marked cancelled."""
    jobs = JobManager(out)
    job = jobs.submit(config(10_000, resolution))
    while jobs.view(job).step < 5:
        time.sleep(0.01)
    step, t = jobs.view(job).step, time.perf_counter()
    jobs.cancel(job)
    v = jobs.wait(job, timeout=120)
    jobs.close()
    return time.perf_counter() - t, v.step - step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--resolution", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    out = Path(tempfile.mkdtemp())
    load = os.getloadavg()[0]
    direct(10, args.resolution, out)  # warm-up: the first run in a process pays one-off costs
    d1 = direct(args.steps, args.resolution, out)
    j = via_jobs(args.steps, args.resolution, out)
    d2 = direct(args.steps, args.resolution, out)
    print(f"| run, {args.resolution} px, {args.steps} steps | direct {d1:.2f} / {d2:.2f} steps/s (before / after) | "
          f"via JobManager {j:.2f} steps/s | load {load:.1f} |")
    for points, changed in [(100, False), (100, True), (5000, True)]:
        print(f"| tick, {points} loss points, {'changed' if changed else 'unchanged'} | {tick_ms(points, changed):.2f} ms | "
              f"| load {os.getloadavg()[0]:.1f} |")
    s, n = stop_latency(args.resolution, out)
    print(f"| Stop -> cancelled | {s:.2f} s | {n} more step(s) | load {os.getloadavg()[0]:.1f} |")


if __name__ == "__main__":
    main()
