"""`studio export RUN_DIR`: rebuild a finished run's scene from its checkpoint and write a mesh."""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator
from pathlib import Path

from .errors import UserError
from .events import Exporting
from .export.stages import Stages, mesh_plan, numbered, write_stage
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
               on_stage: Callable[[Exporting], None] | None = None) -> Path:
    """Write the run's asset as `fmt` to `out` (default RUN_DIR/asset.<fmt>, or splat.ply). Returns the written path.

    `faces` / `texture_size` override the run's [export] settings; all input is checked before anything is written.
    `on_stage` is called with an Exporting event as each stage starts (`studio export` prints them)."""
    stages = export_run_stages(run_dir, fmt, out, resolution, faces, texture_size)
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
                      faces: int | None = None,
                      texture_size: int | None = None) -> Generator[Exporting, None, Path]:
    """`export_run` as a generator: yields an Exporting event as each stage starts, returns the written path.
    Writing the file is the last stage, so a generator closed at any of its events has written nothing."""
    import dataclasses

    from .export import ALL_FORMATS, SCENE_FORMATS

    if fmt not in ALL_FORMATS:
        raise UserError(f"unknown format {fmt!r}; valid: {', '.join(ALL_FORMATS)}")
    if not Path(run_dir).is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    if out is not None and not Path(out).absolute().parent.is_dir():  # before the scene loads
        raise UserError(f"--out {out}: the folder {Path(out).absolute().parent} does not exist; create it or pass another path")
    with run_lock(Path(run_dir)):  # not while a run or resume writes the folder's checkpoint
        cfg, scene = load_scene(run_dir)
        changes = {k: v for k, v in {"faces": faces, "texture_size": texture_size,
                                     "mesh_resolution": resolution}.items() if v is not None}
        export_cfg = dataclasses.replace(cfg.export, **changes, fidelity_views=0)
        export_cfg.validate()
        if out is not None and Path(out).suffix.lower() != (".ply" if fmt == "splat" else f".{fmt}"):
            raise UserError(f"--out {out}: the file name must end in .{'ply' if fmt == 'splat' else fmt} for --format {fmt}")
        if fmt in SCENE_FORMATS:
            return (yield from numbered(_write_scene_format(run_dir, scene, fmt, out), [write_stage(fmt)]))
        plan = [*mesh_plan(export_cfg), write_stage(fmt)]
        return (yield from numbered(_write_mesh_format(run_dir, scene, export_cfg, fmt, out), plan))


def _write_scene_format(run_dir: Path, scene, fmt: str, out: Path | None) -> Stages[Path]:
    """Stages of writing a scene format (splat) and recording it."""
    from .export.pipeline import write_formats_stages

    path = (yield from write_formats_stages(None, scene, [fmt], Path(run_dir), out))[fmt]
    record_reexport(Path(run_dir), {"format": fmt, "path": str(path)})
    return path


def _write_mesh_format(run_dir: Path, scene, export_cfg, fmt: str, out: Path | None) -> Stages[Path]:
    """Stages of preparing the mesh, writing it as `fmt` and recording the re-export."""
    from .export.pipeline import prepare_stages, write_formats_stages

    prepared = yield from prepare_stages(scene, export_cfg)
    if prepared.mesh is None:
        raise UserError("the run's scene has no surface (empty mesh); nothing to export: generate with more --steps")
    path = (yield from write_formats_stages(prepared, scene, [fmt], Path(run_dir), out))[fmt]
    record_reexport(Path(run_dir), {"format": fmt, "path": str(path), "faces": export_cfg.faces,
                                    "texture_size": export_cfg.texture_size, "mesh_resolution": export_cfg.mesh_resolution,
                                    **{k: v for k, v in prepared.stats.items() if k.startswith("export_")}})
    return path


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
