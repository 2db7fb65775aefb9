"""A finished run's assets: the mesh files (studio/export), splat.ply for a Gaussian scene and the turntable,
written into a temporary folder and moved into the run directory only once all are written; and the plan of
export stages that numbers the run's Exporting events."""
from __future__ import annotations

import os
import shutil
from collections.abc import Generator
from pathlib import Path

from representations.base import Representation

from . import media
from .config import RunConfig
from .events import Exporting
from .export.lods import lod_plan, lod_stages
from .export.pipeline import prepare_stages, print_report_stages, write_formats_stages
from .export.stages import TURNTABLE, Stages, mesh_plan, numbered, write_plan
from .previews import turntable_frames


def export_assets_atomically(cfg: RunConfig, scene: Representation,
                             run_dir: Path) -> Generator[Exporting, None, tuple[dict[str, Path], dict]]:
    """`export_assets` into run_dir/.assets.tmp, then each file moved into `run_dir` (replacing older ones) only
    once all are written: an export that fails or is stopped leaves the run's previous assets as they were.

    Yields an Exporting event as each stage of `export_plan` starts; returns (assets by kind, stats)."""
    tmp = run_dir / ".assets.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        assets, stats = yield from numbered(export_assets(cfg, scene, tmp), export_plan(cfg, scene))
        for f in sorted(tmp.iterdir()):
            os.replace(f, run_dir / f.name)
        for level in stats.get("lods", []):
            level["path"] = str(run_dir / level["path"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {k: run_dir / p.relative_to(tmp) for k, p in assets.items()}, stats


def export_plan(cfg: RunConfig, scene: Representation) -> list[str]:
    """The stages `export_assets` runs for `cfg` and `scene`, in order (a scene without a surface skips the mesh
    stages after "extract mesh", the mesh writes and the printability report)."""
    turntable = [TURNTABLE] if cfg.export.turntable_frames else []
    return [*mesh_plan(cfg.export), *write_plan(asset_formats(cfg, scene)), *lod_plan(cfg.export.lods),
            *turntable]


def asset_formats(cfg: RunConfig, scene: Representation, with_mesh: bool = True) -> list[str]:
    """The formats a run writes, in order: the configured mesh formats (none without a mesh: the scene has no
    surface), then splat for a Gaussian scene (the 3DGS PLY that splat viewers read)."""
    mesh = cfg.export.formats if with_mesh else []
    splat = ["splat"] if scene.splat_tensors() is not None else []
    return [*mesh, *splat]


def export_assets(cfg: RunConfig, scene: Representation, run_dir: Path) -> Stages[tuple[dict[str, Path], dict]]:
    """Mesh files, splat.ply (Gaussians) and turntable of a finished scene, plus mesh statistics and the fidelity
    check for metrics.json. Yields each stage's name as it starts (stages.py)."""
    prepared = yield from prepare_stages(scene, cfg.export)
    formats = asset_formats(cfg, scene, with_mesh=prepared.mesh is not None)
    assets = yield from write_formats_stages(prepared, scene, formats, run_dir,
                                             print_height_mm=cfg.export.print_height_mm)
    report = yield from print_report_stages(prepared, formats, cfg.export.print_height_mm)
    lods = []
    if cfg.export.lods and prepared.mesh is not None:
        e = cfg.export
        lods = yield from lod_stages(prepared, scene, e, e.lods, assets["glb"], e.fidelity_views, e.fidelity_size)
        for level in lods:  # by name: the files move from the temporary folder into the run's
            level["path"] = Path(level["path"]).name
    if cfg.export.turntable_frames:
        yield TURNTABLE
        assets["turntable"] = run_dir / "turntable.gif"
        media.save_gif(turntable_frames(scene, cfg.export.turntable_frames, cfg.export.turntable_size),
                       assets["turntable"])
    return assets, {**prepared.stats, **report, **({"lods": lods} if lods else {})}
