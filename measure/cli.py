"""`studio-bench`: the quality and speed benchmarks' command line. Importing this module does not import torch.

Tooling, not the app: the `studio` command knows nothing of it (tests/test_architecture.py)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_OUT = Path("out/bench")


def build_parser() -> argparse.ArgumentParser:
    """`studio-bench quality` and `studio-bench speed`."""
    p = argparse.ArgumentParser(prog="studio-bench", description="benchmarks: 3D quality against ground truth, and speed")
    bsub = p.add_subparsers(dest="bench", required=True)
    q = bsub.add_parser("quality", help="every representation x distillation (PGC on/off), measured against the "
                                        "true objects of the embedded model's world")
    q.add_argument("--quick", action="store_true",
                   help="one caption per combination, PGC on only, the 'fast' preset, 2 jobs at a time")
    q.add_argument("--representations", nargs="+", metavar="KIND", help="default: every registered one")
    q.add_argument("--distillations", nargs="+", metavar="KIND", help="default: every registered one")
    q.add_argument("--seeds", nargs="+", type=int, default=[0])
    q.add_argument("--preset", default=None, help="preset for every job (default: 'fast' with --quick, else none)")
    q.add_argument("--steps", type=int, help="override the preset's steps")
    q.add_argument("--model", default="", help="diffusion model (default: the embedded one; its world is the truth)")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    q.add_argument("--workers", type=int, default=None,
                   help="jobs run at once, one torch thread each (default: 2 with --quick on a CPU with 2+ cores, else 1)")
    q.add_argument("--out", type=Path, default=None, help="results and run folders (default: out/bench/quality[-quick])")
    q.add_argument("--doc", type=Path, help="also update this markdown file's quality section (e.g. docs/benchmarks.md), "
                                            "its plot in docs/images/ and copies in benchmarks/results/")
    s = bsub.add_parser("speed", help="per-op timings beside reference implementations")
    s.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    s.add_argument("--repeats", type=int, default=10)
    s.add_argument("--model", default="", help="guidance model for the distillation steps (default: embedded)")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--doc", type=Path, help="also update this markdown file's speed section")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a benchmark; bad input gets one line naming the fix and exit code 2 (as the `studio` command)."""
    from studio.errors import is_user_error

    args = build_parser().parse_args(argv)
    try:
        return {"quality": cmd_quality, "speed": cmd_speed}[args.bench](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - user errors become one line; bugs keep their traceback
        if is_user_error(e):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())


def default_workers(quick: bool) -> int:
    """2 parallel single-threaded jobs for --quick on a CPU with 2+ cores (CUDA runs stay sequential), else 1."""
    import os

    if not quick or (os.cpu_count() or 1) < 2:
        return 1
    import torch

    return 1 if torch.cuda.is_available() else 2


def cmd_quality(args: argparse.Namespace) -> int:
    import distillation
    import representations
    from studio.errors import UserError
    from world import World

    from . import quality, report

    reps = args.representations or sorted(representations.REGISTRY)
    losses = args.distillations or sorted(distillation.REGISTRY)
    for kind, registry, what in [(k, representations.REGISTRY, "representation") for k in reps] + \
                                [(k, distillation.REGISTRY, "distillation") for k in losses]:
        if kind not in registry:
            raise UserError(f"unknown {what} {kind!r}; valid: {', '.join(sorted(registry))}")
    jobs = quality.plan_jobs(args.quick, reps, losses, [True] if args.quick else [True, False], args.seeds,
                             list(World.load().shapes))
    stem = "quality-quick" if args.quick else "quality"
    out = args.out or DEFAULT_OUT / stem
    preset = args.preset or ("fast" if args.quick else None)
    workers = args.workers if args.workers is not None else default_workers(args.quick)
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    print(f"{len(jobs)} jobs -> {out} ({workers} at a time)", file=sys.stderr)
    rows = quality.run_quality(jobs, out, preset, args.steps, args.model, args.overrides,
                               on_row=lambda line: print(line, file=sys.stderr, flush=True), workers=workers)
    title = f"### {'Quick' if args.quick else 'Full'} quality benchmark (`studio-bench quality{' --quick' if args.quick else ''}`)"
    note = (f"Preset: {preset or 'defaults'}; seeds {args.seeds}; {len(jobs)} jobs, {workers} at a time"
            f"{' (one torch thread each; wall times measured under that shared load)' if workers > 1 else ''}.")
    md = report.markdown(rows, title, note)
    report.write_tables(rows, out, stem)
    (out / f"{stem}.md").write_text(md)
    report.bar_plot(rows, out / f"{stem}-iou.png")
    if args.doc:
        image = Path("docs/images") / f"bench-{stem}-iou.png"
        report.bar_plot(rows, image)
        report.write_tables(rows, Path("benchmarks/results"), stem)
        rel = Path("images") / image.name
        report.splice(args.doc, f"bench-{stem}", md + f"\n![mean 3D IoU per combination]({rel})\n")
    print(md)
    failed = sum(r["status"] != "finished" for r in rows)
    return 1 if failed else 0


def cmd_speed(args: argparse.Namespace) -> int:
    import torch

    from . import report, speed

    torch.set_num_threads(args.threads)
    rows = speed.bench_pairs(args.repeats) + speed.bench_renders(args.sizes, args.repeats)
    rows += speed.bench_distillations(args.model, min(args.sizes), args.repeats) + speed.bench_export(args.repeats)
    md = speed.markdown(rows, "### Per-op speed (`studio-bench speed`)")
    if args.doc:
        report.splice(args.doc, "bench-speed", md)
        import json

        Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
        Path("benchmarks/results/speed.json").write_text(json.dumps({"machine": report.machine(), "rows": rows}, indent=1))
    print(md)
    return 0
