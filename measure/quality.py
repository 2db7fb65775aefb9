"""`studio-bench quality`: every representation x distillation (PGC on/off) on captions of the world, measured
against the true 3D object.

Each job is one ordinary studio run (`studio.run.run`, the preset's settings, a fixed seed) followed by
`evaluate_run`. Results are appended to OUT/results.jsonl as each job ends, so an interrupted benchmark resumes
where it stopped; the summary (CSV, JSON, markdown, a plot) is rewritten after every job. Each row records the
`setup_fingerprint` it was measured under (code commit, model files, preset, steps, overrides): a rerun after any
of these changed measures every job again instead of reporting the old rows.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

QUICK_CAPTIONS = [("cube", "red"), ("sphere", "blue"), ("cone", "green"), ("torus", "yellow"),
                  ("cylinder", "purple"), ("house", "orange")]
"""--quick: one caption per combination, cycled through this list (covers every shape)."""
FULL_COLORS = ["red", "blue"]
"""Full run: every shape of the world in each of these colours."""


@dataclass(frozen=True)
class QualityJob:
    """One generation to measure."""

    representation: str
    """Registry key of the representation."""
    distillation: str
    """Registry key of the distillation loss."""
    pgc: bool
    """Pixel-wise gradient clipping on or off."""
    shape: str
    """World shape named in the caption (the ground truth)."""
    color: str
    """World colour named in the caption."""
    seed: int = 0
    """Run seed."""

    @property
    def key(self) -> str:
        pgc = "pgc" if self.pgc else "nopgc"
        return f"{self.representation}/{self.distillation}/{pgc}/{self.color}-{self.shape}/s{self.seed}"

    @property
    def combination(self) -> str:
        return f"{self.representation} + {self.distillation}" + ("" if self.pgc else " (no PGC)")


def plan_jobs(quick: bool, representations: list[str], distillations: list[str], pgc: list[bool],
              seeds: list[int], shapes: list[str]) -> list[QualityJob]:
    """The benchmark's jobs: quick = one caption per combination (cycled), full = every shape x FULL_COLORS."""
    combos = [(r, d, p) for r in representations for d in distillations for p in pgc]
    jobs = []
    for i, (r, d, p) in enumerate(combos):
        captions = [QUICK_CAPTIONS[i % len(QUICK_CAPTIONS)]] if quick else [(s, c) for s in shapes for c in FULL_COLORS]
        jobs += [QualityJob(r, d, p, s, c, seed) for s, c in captions for seed in seeds]
    return jobs


def job_config(job: QualityJob, preset: str | None, steps: int | None, model: str, overrides: list[str]):
    """The RunConfig of a job: preset, then the job's choices, then explicit overrides."""
    from studio.config import build_config, preset_layer
    from world import World

    layers = [preset_layer(preset)] if preset else []
    flags: dict = {"prompt": World.load().canonical_caption(job.shape, job.color), "seed": job.seed,
                   "representation": {"kind": job.representation}, "distillation": {"kind": job.distillation},
                   "pgc": {"enabled": job.pgc}, "guidance": {"model": model}}
    if steps:
        flags["steps"] = steps
    return build_config([*layers, flags], overrides)


def run_job(job: QualityJob, out: Path, preset: str | None = "fast", steps: int | None = None, model: str = "",
            overrides: list[str] = ()) -> dict:
    """Generate one job into `out` and measure it. Returns one result row (status 'failed' with the error
    if the run raised)."""
    from studio.events import Finished
    from studio.run import run

    row = {"key": job.key, "combination": job.combination, **asdict(job)}
    try:
        cfg = job_config(job, preset, steps, model, list(overrides))
        reset_peak_rss()
        t0 = time.perf_counter()
        finished = None
        for ev in run(cfg, out):
            if isinstance(ev, Finished):
                finished = ev
        wall = time.perf_counter() - t0
        row.update(status="finished", run_dir=str(finished.run_dir), steps=cfg.steps, wall_seconds=round(wall, 2),
                   steps_per_second=finished.metrics["steps_per_second"], peak_rss_mb=peak_rss_mb())
        row.update(evaluate_run(finished.run_dir, job.shape, job.color))
    except Exception as e:  # noqa: BLE001 - one failing combination must not stop the benchmark
        row.update(status="failed", error=f"{type(e).__name__}: {e}")
    return row


def evaluate_run(run_dir: Path, shape: str, color: str, resolution: int = 64) -> dict:
    """Quality of a finished run against the world's `shape` in `color` (see measure/metrics.py)."""
    import torch

    from measure import metrics as q
    from measure.color import delta_e_rgb
    from studio.reexport import load_scene
    from world import World, get_object

    world = World.load()
    cfg, scene = load_scene(run_dir)
    obj, rgb_true = get_object(shape), world.colors[color]
    occ = q.scene_occupancy(scene, resolution)
    if occ is None:
        return {"empty": True, "iou": 0.0}
    ious = {s: q.best_yaw_iou(occ, get_object(s), resolution, cfg.representation.bound)[0] for s in world.shapes}
    iou, yaw = q.best_yaw_iou(occ, obj, resolution, cfg.representation.bound, yaw_steps=72)
    cams = q.eval_cameras()
    rgb, alpha = q.render_albedo(scene, cams)
    t_rgb, t_alpha = q.truth_albedo(obj, rgb_true, q.object_frame(cams, yaw))
    sil = q.mask_iou(alpha > 0.5, t_alpha > 0.5)
    fg, fg_true = q.mean_foreground(rgb, alpha), q.mean_foreground(t_rgb, t_alpha)
    delta_e = float(delta_e_rgb(fg, fg_true)) if fg is not None else float("nan")
    with torch.no_grad():
        mesh = scene.extract_mesh(96)
    chamfer = float("nan")
    if not mesh.is_empty:
        truth_pts = q.rotate_y(torch.from_numpy(q.truth_surface(obj)).float(), -yaw * 3.141592653589793 / 180)
        chamfer = q.chamfer(q.surface_points(mesh), truth_pts.double().numpy())
    row = {"empty": False, "iou": round(iou, 4), "yaw_deg": yaw,
           "iou_best_other": round(max(v for k, v in ious.items() if k != shape), 4),
           "shape_judged": max(ious, key=ious.get), "chamfer": round(chamfer, 4),
           "silhouette_iou": round(sil, 4), "delta_e": round(delta_e, 2)}
    if shape == "house":
        row.update(q.multi_face_score(scene, obj, rgb_true))
    return row


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux); a no-op elsewhere."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory since the last reset, in MB (VmHWM on Linux, ru_maxrss elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def read_results(path: Path) -> list[dict]:
    """Rows of a results.jsonl (empty list if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def setup_fingerprint(preset: str | None, steps: int | None, model: str, overrides: list[str]) -> str:
    """A short hash of what a job's result depends on besides the job itself: the git commit of the code (and
    whether the tree has changes), the model (for a local folder its files' names, sizes and modification
    times; the default embedded model if empty), the preset, steps and overrides."""
    import hashlib
    import subprocess

    from studio.paths import EMBEDDED_MODEL

    root = Path(__file__).resolve().parents[2]
    try:
        git = [subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, timeout=10).stdout
               for a in (["rev-parse", "HEAD"], ["status", "--porcelain", "--untracked-files=no"])]
    except (OSError, subprocess.SubprocessError):
        git = ["", ""]
    folder = Path(model) if model else EMBEDDED_MODEL
    files = sorted((str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns)
                   for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else []
    blob = json.dumps([git, model or str(EMBEDDED_MODEL), files, preset, steps, list(overrides)])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_quality(jobs: list[QualityJob], out: Path, preset: str | None, steps: int | None, model: str,
                overrides: list[str], on_row=print, workers: int = 1) -> list[dict]:
    """Run the jobs not yet in OUT/results.jsonl under the same setup (setup_fingerprint), appending each row as
    it ends; returns the rows of this setup.

    workers > 1 runs that many jobs at once, each in its own process with one torch thread (on a 2-core CPU two
    single-threaded runs finish more work per minute than one run on two OpenMP threads); rows are then
    appended in the order jobs finish, and each row's wall time is measured under that shared load.
    """
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    setup = setup_fingerprint(preset, steps, model, overrides)
    rows = [r for r in read_results(results) if r.get("setup") == setup]  # rows of another setup are stale
    done = {r["key"] for r in rows if r.get("status") == "finished"}
    todo = [(i, job) for i, job in enumerate(jobs) if job.key not in done]

    def record(i: int, row: dict) -> None:
        row["setup"] = setup
        rows.append(row)  # a rerun's row supersedes the old one in _latest below
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        on_row(f"[{i + 1}/{len(jobs)}] {summary_line(row)}")

    if workers <= 1:
        for i, job in todo:
            record(i, run_job(job, out / "runs", preset, steps, model, overrides))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch's thread pools
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_single_thread) as pool:
            futures = {pool.submit(run_job, job, out / "runs", preset, steps, model, list(overrides)): i
                       for i, job in todo}
            for fut in as_completed(futures):
                record(futures[fut], fut.result())
    order = {j.key: i for i, j in enumerate(jobs)}  # rows in plan order, however the workers finished
    return sorted((r for r in _latest(rows) if r["key"] in order), key=lambda r: order[r["key"]])


def _single_thread() -> None:
    """Worker initialiser: one torch (OpenMP) thread per benchmark process."""
    import torch

    torch.set_num_threads(1)


def summary_line(row: dict) -> str:
    if row["status"] != "finished":
        return f"{row['key']}: {row['status']} ({row.get('error', '')})"
    return (f"{row['key']}: IoU {row['iou']:.2f} (best other {row.get('iou_best_other', 0):.2f}), "
            f"dE {row.get('delta_e', float('nan')):.1f}, {row['wall_seconds']:.0f} s")


def _latest(rows: list[dict]) -> list[dict]:
    by_key: dict[str, dict] = {}
    for r in rows:
        by_key[r["key"]] = r
    return list(by_key.values())
