"""`studio export RUN_DIR`: rebuild a finished run's scene from its checkpoint and write a mesh."""
from __future__ import annotations

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


def export_run(run_dir: Path, fmt: str, out: Path | None = None, resolution: int | None = None) -> Path:
    """Write the run's mesh as `fmt` to `out` (default RUN_DIR/asset.<fmt>; 'splat': RUN_DIR/splat.ply,
    Gaussians only). Returns the written path."""
    import torch

    from .export import write_mesh

    if not Path(run_dir).is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    cfg, scene = load_scene(run_dir)
    if fmt == "splat":
        from .splat import write_splat_ply

        if not hasattr(scene, "splat_tensors"):
            raise UserError(f"--format splat needs a gaussians run; {run_dir} is {cfg.representation.kind!r}")
        return write_splat_ply(out or Path(run_dir) / "splat.ply", scene.splat_tensors())
    with torch.no_grad():
        mesh = scene.extract_mesh(resolution or cfg.export.mesh_resolution)
    return write_mesh(mesh, out or Path(run_dir) / f"asset.{fmt}", fmt)
