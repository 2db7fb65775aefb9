"""`studio export RUN_DIR`: rebuild a finished run's scene from its checkpoint and write a mesh."""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator
from pathlib import Path

from .errors import UserError
from .events import Exporting
from .export.lods import lod_plan
from .export.stages import Stages, mesh_plan, numbered, write_plan, write_stage
from .rundir import run_lock


def load_scene(run_dir: Path):
    """(config, representation) restored from RUN_DIR/checkpoint. The config is the checkpoint's copy (the one the
    scene was trained with); keys it lacks come from RUN_DIR/config.toml (studio.resume.read_run_config). UserError
    naming the file and the fix when a file is missing, unreadable or does not fit."""
    import representations

    from .checkpoint import CheckpointError, load_scene_state
    from .resume import checkpoint_fix, read_run_config

    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoint"
    if not (ckpt / "scene.safetensors").exists():
        raise UserError(f"{run_dir} has no checkpoint/scene.safetensors; pass a run directory written by studio generate")
    try:
        state = load_scene_state(ckpt)
    except CheckpointError as e:
        raise checkpoint_fix(run_dir, e) from None
    cfg = read_run_config(ckpt / "config.toml", run_dir / "config.toml")
    scene = representations.get(cfg.representation.kind)(cfg.representation, cfg.steps)
    try:
        scene.load_state_tensors(state)
    except (KeyError, ValueError, RuntimeError) as e:
        raise UserError(f"{ckpt / 'scene.safetensors'} does not fit {ckpt / 'config.toml'} "
                        f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__}); was that config.toml "
                        f"edited? put back the one the run was trained with") from None
    return cfg, scene


def export_run(run_dir: Path, fmt: str, out: Path | None = None, resolution: int | None = None,
               faces: int | None = None, texture_size: int | None = None,
               on_stage: Callable[[Exporting], None] | None = None, print_height: str | float | None = None,
               lods: str | None = None) -> Path:
    """Write the run's asset as `fmt` to `out` (default RUN_DIR/asset.<fmt>, or splat.ply). Returns the written path.

    `faces` / `texture_size` / `print_height` ("50mm", "5cm", "50": millimetres; stl and 3mf only) override the
    run's [export] settings; all input is checked before anything is written.
    `on_stage` is called with an Exporting event as each stage starts (`studio export` prints them)."""
    stages = export_run_stages(run_dir, fmt, out, resolution, faces, texture_size, print_height, lods)
    try:
        while True:
            ev = next(stages)
            if on_stage is not None:
                on_stage(ev)
    except StopIteration as done:
        return done.value
    finally:
        stages.close()


def export_run_stages(run_dir: Path, fmt: str, out: Path | None = None, resolution: int | None = None,
                      faces: int | None = None, texture_size: int | None = None,
                      print_height: str | float | None = None,
                      lods: str | None = None) -> Generator[Exporting, None, Path]:
    """`export_run` as a generator: yields an Exporting event as each stage starts, returns the written path.
    The file is written after the mesh stages, so a generator closed at any of those events has written nothing."""
    import dataclasses

    from .export import ALL_FORMATS, SCENE_FORMATS

    if fmt not in ALL_FORMATS:
        raise UserError(f"unknown format {fmt!r}; valid: {', '.join(ALL_FORMATS)}")
    height_mm = None if print_height is None else parse_print_height(print_height, fmt)
    levels = [] if lods is None else parse_lods(lods, fmt)
    if not Path(run_dir).is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    if out is not None and not Path(out).absolute().parent.is_dir():  # before the scene loads
        raise UserError(f"--out {out}: the folder {Path(out).absolute().parent} does not exist; create it or pass another path")
    with run_lock(Path(run_dir)):  # not while a run or resume writes the folder's checkpoint
        cfg, scene = load_scene(run_dir)
        changes = {k: v for k, v in {"faces": faces, "texture_size": texture_size,
                                     "mesh_resolution": resolution, "print_height_mm": height_mm}.items() if v is not None}
        export_cfg = dataclasses.replace(cfg.export, **changes, fidelity_views=0)
        export_cfg.validate()
        if out is not None and Path(out).suffix.lower() != (".ply" if fmt == "splat" else f".{fmt}"):
            raise UserError(f"--out {out}: the file name must end in .{'ply' if fmt == 'splat' else fmt} for --format {fmt}")
        if fmt in SCENE_FORMATS:
            return (yield from numbered(_write_scene_format(run_dir, scene, fmt, out), [write_stage(fmt)]))
        plan = [*mesh_plan(export_cfg), *write_plan([fmt]), *lod_plan(levels)]
        lod_views = (levels, cfg.export.fidelity_views, cfg.export.fidelity_size)
        return (yield from numbered(_write_mesh_format(run_dir, scene, export_cfg, fmt, out, lod_views), plan))


def _write_scene_format(run_dir: Path, scene, fmt: str, out: Path | None) -> Stages[Path]:
    """Stages of writing a scene format (splat) and recording it."""
    from .export.pipeline import write_formats_stages

    path = (yield from write_formats_stages(None, scene, [fmt], Path(run_dir), out))[fmt]
    record_reexport(Path(run_dir), {"format": fmt, "path": str(path)})
    return path


def _write_mesh_format(run_dir: Path, scene, export_cfg, fmt: str, out: Path | None,
                       lod_views: tuple = ([], 0, 0)) -> Stages[Path]:
    """Stages of preparing the mesh, writing it as `fmt` (then the printability report for stl / 3mf, then the LODs:
    lod_views = (face counts, fidelity views, fidelity size)) and recording the re-export."""
    from .export.lods import lod_stages
    from .export.pipeline import prepare_stages, print_report_stages, write_formats_stages

    prepared = yield from prepare_stages(scene, export_cfg)
    if prepared.mesh is None:
        raise UserError("the run's scene has no surface (empty mesh); nothing to export: generate with more --steps")
    path = (yield from write_formats_stages(prepared, scene, [fmt], Path(run_dir), out,
                                            export_cfg.print_height_mm))[fmt]
    report = yield from print_report_stages(prepared, [fmt], export_cfg.print_height_mm)
    lods = (yield from lod_stages(prepared, scene, export_cfg, lod_views[0], path, *lod_views[1:])) if lod_views[0] else []
    record_reexport(Path(run_dir), {"format": fmt, "path": str(path), "faces": export_cfg.faces,
                                    "texture_size": export_cfg.texture_size, "mesh_resolution": export_cfg.mesh_resolution,
                                    **{k: v for k, v in prepared.stats.items() if k.startswith("export_")},
                                    **report,
                                    **({"lods": lods} if lods else {})})
    return path


def parse_lods(text: str, fmt: str) -> list[int]:
    """--lods "20000,5000,1000" -> face counts (studio/export/lods.py); UserError for a bad chain or a format other
    than glb."""
    from .export.lods import parse_lods as parse

    levels = parse(text)
    if fmt != "glb":
        raise UserError(f"--lods applies to --format glb (asset_lod0.glb, ...), not {fmt}")
    return levels


LENGTH_UNITS_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "in": 25.4}
"""--print-height suffixes and their millimetres (none: millimetres)."""


def parse_print_height(text: str | float, fmt: str) -> float:
    """--print-height "50mm" / "5cm" / "0.05m" / "2in" / "50" (mm) -> millimetres; UserError for a bad value, one
    outside export.print_height_mm's range, or a format that is not printed (stl, 3mf)."""
    from .config import ExportConfig
    from .export.printable import PRINT_FORMATS
    from .limits import format_range

    raw = str(text).strip().lower()
    unit = next((u for u in sorted(LENGTH_UNITS_MM, key=len, reverse=True) if raw.endswith(u)), "")
    try:
        value = float(raw[:len(raw) - len(unit)].strip()) * LENGTH_UNITS_MM.get(unit, 1.0)
    except ValueError:
        value = float("nan")
    lo, hi = ExportConfig.LIMITS["print_height_mm"]
    if not lo <= value <= hi:  # nan fails too
        raise UserError(f"--print-height {str(text)[:40]!r}: give a height like 50mm, 5cm or 50 (millimetres), "
                        f"allowed {format_range(lo, hi)} mm")
    if fmt not in PRINT_FORMATS:
        raise UserError(f"--print-height applies to --format {' or '.join(PRINT_FORMATS)}, not {fmt}")
    return value


def record_reexport(run_dir: Path, entry: dict) -> None:
    """Append one re-export (what was written, with which settings, when) to RUN_DIR/metrics.json's "reexports"
    list; the generation's own metrics are left as they were. No-op for a run without metrics.json."""
    from .rundir import write_json

    path = run_dir / "metrics.json"
    if not path.exists():
        return
    metrics = json.loads(path.read_text())
    metrics.setdefault("reexports", []).append({**entry, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    write_json(path, metrics)
