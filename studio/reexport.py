"""`studio export RUN_DIR`: rebuild a finished run's scene from its checkpoint and write a mesh."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .errors import UserError


def load_scene(run_dir: Path):
    """(config, representation) restored from RUN_DIR/checkpoint."""
    import representations

    from .checkpoint import load_scene_state
    from .config import config_from_toml

    ckpt = Path(run_dir) / "checkpoint"
    if not (ckpt / "scene.safetensors").exists():
        raise UserError(f"{run_dir} has no checkpoint/scene.safetensors; pass a run directory written by studio generate")
    cfg = config_from_toml((ckpt / "config.toml").read_text())
    scene = representations.get(cfg.representation.kind)(cfg.representation, cfg.steps)
    scene.load_state_tensors(load_scene_state(ckpt))
    return cfg, scene


def export_run(run_dir: Path, fmt: str, out: Path | None = None, resolution: int | None = None,
               faces: int | None = None, texture_size: int | None = None) -> Path:
    """Write the run's asset as `fmt` to `out` (default RUN_DIR/asset.<fmt>, or splat.ply). Returns the written path.

    `faces` / `texture_size` override the run's [export] settings; all input is checked before anything is written.
    """
    import dataclasses

    from .export import ALL_FORMATS, SCENE_FORMATS
    from .export.pipeline import prepare, write_formats

    if fmt not in ALL_FORMATS:
        raise UserError(f"unknown format {fmt!r}; valid: {', '.join(ALL_FORMATS)}")
    if not Path(run_dir).is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    cfg, scene = load_scene(run_dir)
    changes = {k: v for k, v in {"faces": faces, "texture_size": texture_size,
                                 "mesh_resolution": resolution}.items() if v is not None}
    export_cfg = dataclasses.replace(cfg.export, **changes, fidelity_views=0)
    export_cfg.validate()
    if out is not None and Path(out).suffix.lower() != (".ply" if fmt == "splat" else f".{fmt}"):
        raise UserError(f"--out {out}: the file name must end in .{'ply' if fmt == 'splat' else fmt} for --format {fmt}")
    if fmt in SCENE_FORMATS:
        path = write_formats(None, scene, [fmt], Path(run_dir), out)[fmt]
        record_reexport(Path(run_dir), {"format": fmt, "path": str(path)})
        return path
    prepared = prepare(scene, export_cfg)
    if prepared.mesh is None:
        raise UserError("the run's scene has no surface (empty mesh); nothing to export: generate with more --steps")
    path = write_formats(prepared, scene, [fmt], Path(run_dir), out)[fmt]
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
