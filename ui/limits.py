"""What one user of a shared studio server may ask for, checked on the final RunConfig before anything is queued.

The checks read the config after every layer (preset, form fields and the Advanced box), so no layer can get
around them. Whoever runs the server sets them with `studio ui --max-steps ...`; each failure is one line that
names the limit and the flag that changes it. Torch-free.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

from studio.errors import UserError


@dataclass
class ServerLimits:
    """Per-run limits of a `studio ui` server (flags `--max-steps`, `--max-resolution`, ...)."""

    max_steps: int = 3000
    """Most optimisation steps of one run (the defaults use 800; the quality preset 1500)."""
    max_resolution: int = 256
    """Largest render resolution in pixels (camera.resolution; the default is 64)."""
    max_batch_size: int = 8
    """Most views rendered per step (camera.batch_size)."""
    max_prompt_chars: int = 300
    """Longest prompt or negative prompt, in characters."""
    max_guidance: float = 200.0
    """Largest classifier-free guidance scale (real Stable Diffusion SDS uses 100; the embedded model 3)."""
    max_mesh_resolution: int = 256
    """Largest mesh extraction grid (export.mesh_resolution)."""
    max_texture_size: int = 2048
    """Largest baked texture side (export.texture_size)."""
    max_turntable_frames: int = 120
    """Most turntable frames (export.turntable_frames)."""
    max_turntable_size: int = 512
    """Largest turntable frame side (export.turntable_size)."""
    max_batch_jobs: int = 50
    """Most jobs one Batch submission may queue."""
    allow_custom_models: bool = True
    """Whether users may name a local model folder or hub id (off: the embedded model only)."""

    @classmethod
    def flag(cls, name: str) -> str:
        """The `studio ui` flag of a limit field."""
        return "--" + name.replace("_", "-")


LIMIT_FIELDS = tuple(f.name for f in fields(ServerLimits))
"""Every limit, in declaration order (each is a `studio ui` flag)."""


def _too_big(what: str, value, limit, field_name: str) -> UserError:
    return UserError(f"{what} {value} is above this server's limit of {limit}; ask for less "
                     f"(whoever runs the server can raise it with studio ui {ServerLimits.flag(field_name)})")


def check_run(cfg, limits: ServerLimits, out: Path | None = None) -> None:
    """UserError naming the limit for the first value of `cfg` (built, perhaps not yet validated) that is out of bounds."""
    _check_text("prompt", cfg.prompt, limits)
    _check_text("negative prompt", cfg.negative_prompt, limits)
    at_most = [
        ("steps", cfg.steps, limits.max_steps, "max_steps"),
        ("render resolution", cfg.camera.resolution, limits.max_resolution, "max_resolution"),
        ("camera.batch_size", cfg.camera.batch_size, limits.max_batch_size, "max_batch_size"),
        ("export.mesh_resolution", cfg.export.mesh_resolution, limits.max_mesh_resolution, "max_mesh_resolution"),
        ("export.texture_size", cfg.export.texture_size, limits.max_texture_size, "max_texture_size"),
        ("export.turntable_frames", cfg.export.turntable_frames, limits.max_turntable_frames, "max_turntable_frames"),
        ("export.turntable_size", cfg.export.turntable_size, limits.max_turntable_size, "max_turntable_size"),
    ]
    for what, value, limit, name in at_most:
        if value > limit:
            raise _too_big(what, value, limit, name)
    scale = float(cfg.distillation.guidance_scale)
    if not math.isfinite(scale) or scale < 0:
        raise UserError(f"guidance scale {scale} must be a number >= 0 (the embedded model works best at 3)")
    if scale > limits.max_guidance:
        raise _too_big("guidance scale", scale, limits.max_guidance, "max_guidance")
    if cfg.guidance.model and not limits.allow_custom_models and cfg.guidance.model != "tiny-random":
        raise UserError("this server runs the embedded model only; choose 'Embedded model' "
                        "(whoever runs the server can allow others with studio ui --allow-custom-models)")
    if cfg.init_from and out is not None:
        source = Path(cfg.init_from).resolve()
        if Path(out).resolve() not in source.parents:
            raise UserError(f"init_from {cfg.init_from}: start from a run of this studio (a folder in History)")


def _check_text(what: str, text: str, limits: ServerLimits) -> None:
    if len(text) > limits.max_prompt_chars:
        raise UserError(f"the {what} has {len(text)} characters; this server takes at most {limits.max_prompt_chars} "
                        f"(shorten it; the text encoder reads only its first 77 tokens anyway)")


def check_batch(n_jobs: int, limits: ServerLimits) -> None:
    """UserError when one Batch submission has more jobs than the server takes."""
    if n_jobs > limits.max_batch_jobs:
        raise _too_big("a batch of", f"{n_jobs} jobs", f"{limits.max_batch_jobs} jobs", "max_batch_jobs")


def limit_docs() -> dict[str, str]:
    """Field name -> the docstring under it in ServerLimits (for --help and docs/ui.md)."""
    import ast
    import inspect

    body = ast.parse(inspect.getsource(ServerLimits)).body[0].body
    return {node.target.id: after.value.value.strip() for node, after in zip(body, body[1:])
            if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)}


def limits_markdown() -> str:
    """The limits table of docs/ui.md: flag, default and docstring of every ServerLimits field."""
    docs = limit_docs()
    rows = ["| flag | default | what |", "|---|---|---|"]
    for f in fields(ServerLimits):
        flag, default = ("--embedded-only", "off") if f.name == "allow_custom_models" else (ServerLimits.flag(f.name), f.default)
        rows.append(f"| `{flag}` | {default} | {docs[f.name]} |")
    return "\n".join(rows)
