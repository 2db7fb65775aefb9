"""The `studio` command: argument parsing and the commands, which call the app (configs are built by studio.jobs).
Importing this module (and `studio --help`) does not import torch.

Exit codes: 0 success, 1 a run failed, 2 bad input (one line on stderr, nothing written), 130 interrupted.
"""
from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from .errors import RunFailed, UserError, is_user_error

DEFAULT_OUT = "out"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""Write errors that mean "no room": one line and exit 1 (the run stays resumable from its last checkpoint)."""


def add_job_flags(p: argparse.ArgumentParser) -> None:
    """Generate's job flags (studio.jobs.job_layers reads them; batch job keys mirror them)."""
    p.add_argument("--representation", help="scene representation (e.g. nerf)")
    p.add_argument("--distillation", help="distillation loss (e.g. sds)")
    p.add_argument("--steps", type=int, help="optimisation steps")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--model", help="diffusers folder or hub id (default: the embedded model)")
    p.add_argument("--preset", help="preset name from assets/presets")
    p.add_argument("--init-from", dest="init_from", metavar="RUN_DIR",
                   help="start from a finished run's scene (e.g. a NeRF run, refined as a mesh)")
    p.add_argument("--config", type=Path, help="a config.toml (e.g. from an earlier run) to start from")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, value as a TOML literal (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description="Text-to-3D studio: a prompt in, a 3D asset out.")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate one asset from a prompt")
    g.add_argument("prompt", nargs="?", help="what to generate, e.g. \"a red cube\" (optional with --config)")
    add_job_flags(g)
    g.add_argument("--out", default=DEFAULT_OUT, help="folder for run directories (default: out)")

    b = sub.add_parser("batch", help="generate every job of a prompt file (text: one prompt a line; or TOML [[job]])")
    b.add_argument("file", type=Path)
    b.add_argument("--out", default=DEFAULT_OUT, help="folder for run directories and manifest.json")

    r = sub.add_parser("resume", help="continue a stopped, failed or killed run from its checkpoint (or train a finished one further)")
    r.add_argument("run_dir", type=Path, help="the run directory (written by studio generate)")
    r.add_argument("--steps", type=int, default=None,
                   help="train up to N steps in total (default: the run's own steps; above them extends a finished run)")

    from .export import ALL_FORMATS

    e = sub.add_parser("export", help="write a finished run's asset in another format (clean, textured, in metres)")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--format", required=True, choices=list(ALL_FORMATS),
                   help="glb (PBR textured), obj (+ .mtl + .png), ply (vertex colours), splat (Gaussian runs)")
    e.add_argument("--faces", type=int, default=None, help="target face count (default: the run's export.faces)")
    e.add_argument("--texture-size", dest="texture_size", type=int, default=None,
                   help="baked texture side in pixels (default: the run's export.texture_size)")
    e.add_argument("--out", type=Path, help="file to write (default: RUN_DIR/asset.<format>, or RUN_DIR/splat.ply)")
    e.add_argument("--resolution", type=int, default=None, help="mesh extraction grid (default: the run's)")
    e.add_argument("--print-height", dest="print_height", default=None, metavar="HEIGHT",
                   help="stl / 3mf height: 50mm, 5cm or 50 (mm; default: the run's export.print_height_mm)")
    e.add_argument("--lods", default=None, metavar="N,N,...",
                   help="glb levels of detail, decreasing face counts: 20000,5000,1000 -> asset_lod0.glb, ...")

    u = sub.add_parser("ui", help="serve the web studio in the browser (localhost unless --host is given)")
    from ui.server import add_arguments as add_ui_arguments  # noqa: torch- and gradio-free; the flags live with the UI

    add_ui_arguments(u)
    return parser


def cmd_generate(args: argparse.Namespace) -> int:
    from .jobs import job_config
    from .progress import run_with_progress

    return print_finished(run_with_progress(job_config(vars(args)), args.out))


def cmd_resume(args: argparse.Namespace) -> int:
    from .progress import resume_with_progress

    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps {args.steps}: give a positive number of steps")
    return print_finished(resume_with_progress(args.run_dir, args.steps))


def print_finished(finished) -> int:
    """Warnings on stderr, then each asset path and the run directory on stdout; exit code 0."""
    if "mesh_warning" in finished.metrics:
        print(f"warning: {finished.metrics['mesh_warning']}; no mesh files were written "
              "(try more --steps or another --seed)", file=sys.stderr)
    if "export_warning" in finished.metrics:
        print(f"warning: {finished.metrics['export_warning']}; try a higher export.mesh_resolution or export.faces",
              file=sys.stderr)
    for kind in ("glb", "obj", "ply", "stl", "3mf", "splat", "turntable"):
        if kind in finished.assets:
            print(f"{kind}: {finished.assets[kind]}")
    print(finished.run_dir)
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch import run_batch

    return run_batch(args.file, Path(args.out))


def cmd_export(args: argparse.Namespace) -> int:
    """Re-export a run; each stage as a line on stderr, the written path on stdout. Ctrl-C or SIGTERM stops it at
    once (files are written whole or not at all; the run's folder is as it was)."""
    from .progress import StopOnInterrupt, export_line
    from .reexport import export_run

    def on_stage(ev) -> None:
        print(export_line(ev), file=sys.stderr, flush=True)

    with StopOnInterrupt(sys.stderr) as stop:
        stop.at_once = True
        path = export_run(args.run_dir, args.format, args.out, args.resolution, args.faces, args.texture_size,
                          on_stage=on_stage, print_height=args.print_height, lods=args.lods)
    print(path)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from ui.server import main as ui_main  # noqa: studio's only import of ui: lazy, for this command

    return ui_main(args)


COMMANDS = {"generate": cmd_generate, "resume": cmd_resume, "batch": cmd_batch, "export": cmd_export, "ui": cmd_ui}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RunFailed as e:  # e.g. training diverged: the folder says failed
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        print(f"error: {e.strerror} while writing {e.filename or 'a file'}; free some space (or raise the quota), "
              "then continue with studio resume RUN_DIR", file=sys.stderr)
        return 1
    except Exception as e:  # user errors become one line; bugs keep their traceback
        if is_user_error(e):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
