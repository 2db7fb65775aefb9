"""The export pipeline: scene -> mesh -> clean -> simplify -> unwrap -> bake (+ normals) -> place -> write (+ fidelity).

    prepared = prepare(scene, cfg)                 # ExportMesh in metres + the placement, stats
    paths = write_formats(prepared, scene, ["glb", "obj"], run_dir)
    stats.update(fidelity ...)                     # inside prepare when cfg.fidelity_views > 0

`prepare_stages` / `write_formats_stages` are the same as generators that yield each stage's name as it starts
(studio/export/stages.py): `studio.run` and `studio export` report them as Exporting events.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from representations.mesh import Mesh

from ..errors import UserError
from . import SCENE_FORMATS, default_path, writer
from .asset import ExportMesh
from .bake import bake_albedo
from .clean import Placement, drop_floaters, orient_outward, placement, vertex_normals
from .printable import DEFAULT_PRINT_HEIGHT_MM, PRINT_FORMATS, print_solid
from .simplify import simplify
from .stages import BAKE, EXTRACT, FIDELITY, NORMALS, PRINT_REPORT, SIMPLIFY, UNWRAP, Stages, drive, write_stage
from .unwrap import unwrap


FIDELITY_WARN_IOU = 0.9
"""Below this silhouette IoU against the renders, metrics.json and `studio generate` carry an export warning."""


@dataclass
class Prepared:
    """A scene's export-ready mesh (None when the scene has no surface) and what happened on the way."""

    mesh: ExportMesh | None
    """The cleaned, textured mesh in metres (Y up, on the ground plane)."""
    placement: Placement | None
    """How scene coordinates map to the exported metres."""
    stats: dict = field(default_factory=dict)
    """mesh_* counts, timings, fidelity metrics, or mesh_warning: all go into metrics.json."""
    cleaned: Mesh | None = None
    """The cleaned full-resolution scene-frame mesh before simplification (the source of the LODs, lods.py)."""


def albedo_field(scene) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """scene.albedo_at as a no-grad function on CPU points [N, 3] -> [N, 3], or None if the scene has none."""
    device = next((t.device for t in list(scene.parameters()) + list(scene.buffers())), torch.device("cpu"))

    def query(points: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return scene.albedo_at(points.to(device)).float().cpu().clamp(0, 1)

    try:
        query(torch.zeros(1, 3))
    except NotImplementedError:
        return None
    return query


def vertex_colors(mesh: Mesh, source: Mesh, albedo) -> np.ndarray:
    """[V, 3] colours of `mesh`: the albedo field at its vertices, else the nearest `source` vertex colour."""
    if albedo is not None:
        return albedo(torch.from_numpy(mesh.vertices)).numpy().astype(np.float32)
    if source.colors is None:
        return np.full((len(mesh.vertices), 3), 0.8, np.float32)
    from scipy.spatial import cKDTree

    _, idx = cKDTree(source.vertices).query(mesh.vertices)
    return source.colors[idx].astype(np.float32)


def prepare(scene, cfg, resolution: int | None = None) -> Prepared:
    """Extract, clean, simplify, unwrap, bake and place the mesh of `scene` as configured by `cfg` (ExportConfig)."""
    return drive(prepare_stages(scene, cfg, resolution))


def prepare_stages(scene, cfg, resolution: int | None = None) -> Stages[Prepared]:
    """`prepare` as stages: yields each stage's name (stages.mesh_plan(cfg); only "extract mesh" for a scene with
    no surface) as it starts, returns the Prepared."""
    t0 = time.perf_counter()
    yield EXTRACT
    with torch.no_grad():
        raw = scene.extract_mesh(resolution or cfg.mesh_resolution)
    stats: dict = {"mesh_vertices": int(len(raw.vertices)), "mesh_faces": int(len(raw.faces))}
    if raw.is_empty:
        stats["mesh_warning"] = "empty mesh: the scene has no surface"
        return Prepared(None, None, stats)
    yield SIMPLIFY
    cleaned = orient_outward(drop_floaters(raw, cfg.min_part_fraction))
    mesh = orient_outward(simplify(cleaned, cfg.faces))
    albedo = albedo_field(scene)
    colors = vertex_colors(mesh, raw, albedo)
    normals = vertex_normals(mesh.vertices, mesh.faces)
    uvs = texture = normal_texture = tangents = None
    verts, faces, keep = mesh.vertices, mesh.faces, np.arange(len(mesh.vertices))
    if cfg.texture_size > 0:
        yield UNWRAP
        t1 = time.perf_counter()
        keep, faces, uvs = unwrap(mesh.vertices, mesh.faces, cfg.texture_size, cfg.texture_padding)
        verts = mesh.vertices[keep]
        yield BAKE
        t2 = time.perf_counter()
        texture = bake_albedo(verts, faces, uvs, cfg.texture_size, cfg.texture_padding, albedo, colors[keep])
        stats.update(unwrap_seconds=round(t2 - t1, 3), bake_seconds=round(time.perf_counter() - t2, 3))
        if cfg.normal_map:
            yield NORMALS
            t3 = time.perf_counter()
            normal_texture, tangents = bake_normals(verts, faces, uvs, normals[keep], cleaned, cfg)
            stats["normal_map_seconds"] = round(time.perf_counter() - t3, 3)
    place = placement(mesh.vertices, cfg.size)
    out = ExportMesh(place.apply(verts), faces, normals[keep], colors[keep], uvs, texture,
                     cfg.metallic, cfg.roughness, normal_texture, tangents)
    lo, hi = out.vertices.min(0), out.vertices.max(0)
    stats.update(export_vertices=int(len(out.vertices)), export_faces=int(len(out.faces)),
                 export_size_m=[round(float(x), 4) for x in hi - lo], export_scale=round(place.scale, 6))
    if cfg.fidelity_views > 0:
        yield FIDELITY
        stats.update(fidelity_stats(scene, out, verts, cfg))
    stats["export_seconds"] = round(time.perf_counter() - t0, 3)
    return Prepared(out, place, stats, cleaned)


def bake_normals(verts: np.ndarray, faces: np.ndarray, uvs: np.ndarray, normals: np.ndarray, fine: Mesh,
                 cfg) -> tuple[np.ndarray, np.ndarray]:
    """(normal map [T, T, 3] uint8, tangents [V, 4]) of the unwrapped mesh (scene-frame `verts [V, 3]`, `faces`,
    `uvs [V, 2]`, unit `normals [V, 3]`) carrying the normals of `fine` (the cleaned full-resolution mesh), at
    cfg.texture_size with cfg.texture_padding gutters (studio/export/normalmap.py)."""
    from .normalmap import bake_normal_map, fine_surface, vertex_tangents

    tangents = vertex_tangents(verts, faces, uvs, normals)
    image = bake_normal_map(verts, faces, uvs, normals, tangents, fine_surface(fine.vertices, fine.faces),
                            cfg.texture_size, cfg.texture_padding)
    return image, tangents


def fidelity_stats(scene, out: ExportMesh, verts: np.ndarray, cfg) -> dict:
    """The fidelity check of `out` (its scene-frame vertices `verts` [V, 3]) and, below FIDELITY_WARN_IOU, a warning."""
    from .fidelity import fidelity

    stats = fidelity(scene, verts, out.faces, out.uvs, out.texture, out.colors, cfg.fidelity_views, cfg.fidelity_size)
    if stats["export_iou"] < FIDELITY_WARN_IOU:
        stats["export_warning"] = (f"the exported mesh differs from the renders (silhouette IoU "
                                   f"{stats['export_iou']:.2f} < {FIDELITY_WARN_IOU})")
    return stats


def check_writable(prepared: Prepared | None, scene, fmt: str) -> None:
    """UserError naming the fix when format `fmt` cannot be written: splat without Gaussians, a mesh format
    without a mesh."""
    if fmt in SCENE_FORMATS:
        if scene.splat_tensors() is None:
            raise UserError(f"--format splat needs a Gaussian scene; this run's representation "
                            f"({scene.cfg.kind}) has none; use --format glb, obj or ply")
    elif prepared is None or prepared.mesh is None:
        raise UserError("the extracted mesh is empty (the scene has no surface); run more steps or check the prompt")


def write_splat(scene, path: Path) -> Path:
    """Write the scene's Gaussians as splat.ply (UserError when the scene has none)."""
    check_writable(None, scene, "splat")
    from studio.splat import write_splat_ply

    write_splat_ply(Path(path), scene.splat_tensors())
    return Path(path)


def write_formats(prepared: Prepared | None, scene, formats: list[str], run_dir: Path,
                  out: Path | None = None, print_height_mm: float = DEFAULT_PRINT_HEIGHT_MM) -> dict[str, Path]:
    """Write each format (to `out` when exactly one is asked, else the run-dir defaults); format -> main path."""
    return drive(write_formats_stages(prepared, scene, formats, run_dir, out, print_height_mm))


def write_formats_stages(prepared: Prepared | None, scene, formats: list[str], run_dir: Path,
                         out: Path | None = None,
                         print_height_mm: float = DEFAULT_PRINT_HEIGHT_MM) -> Stages[dict[str, Path]]:
    """`write_formats` as stages: yields stages.write_stage(fmt) before writing each format. Every format is
    checked (`check_writable`) before the first stage: a format that cannot be written writes nothing. The print
    formats (stl, 3mf) are written `print_height_mm` tall."""
    for fmt in formats:
        check_writable(prepared, scene, fmt)
    paths: dict[str, Path] = {}
    for fmt in formats:
        path = Path(out) if out is not None else default_path(run_dir, fmt)
        yield write_stage(fmt)
        if fmt in SCENE_FORMATS:
            paths[fmt] = write_splat(scene, path)
        elif fmt in PRINT_FORMATS:
            paths[fmt] = writer(fmt)(prepared.mesh, path, height_mm=print_height_mm)[0]
        else:
            paths[fmt] = writer(fmt)(prepared.mesh, path)[0]
    return paths


def print_report(prepared: Prepared | None, formats: list[str], height_mm: float) -> dict:
    """{"print": the printability report (studio/export/printability.py) of the print solid} when `formats` has a
    print format and there is a mesh, else {}: what metrics.json gets beside the mesh stats."""
    return drive(print_report_stages(prepared, formats, height_mm))


def print_report_stages(prepared: Prepared | None, formats: list[str], height_mm: float) -> Stages[dict]:
    """`print_report` as stages: yields stages.PRINT_REPORT before building the report (nothing when there is
    none to build); after `write_formats_stages` in the plans (stages.write_plan)."""
    if prepared is None or prepared.mesh is None or not set(formats) & set(PRINT_FORMATS):
        return {}
    yield PRINT_REPORT
    from .printability import printability

    return {"print": printability(print_solid(prepared.mesh, height_mm))}
