"""Where the studio's shipped files live. Torch-free."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository / source root (the studio is installed in editable mode)."""
ASSETS = ROOT / "assets"
"""Shipped data: presets, the embedded model."""
PRESETS = ASSETS / "presets"
"""Preset TOML override files, one per name."""
EMBEDDED_MODEL = ASSETS / "models" / "primitives-v4"
"""The embedded diffusion model (diffusers folder) used when no --model is given."""


def shown(path: Path) -> str:
    """`path` as a user reads it: relative to the working directory when it lies below it, else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def preset_names() -> list[str]:
    """Names of the shipped presets (file stems in assets/presets)."""
    return sorted(p.stem for p in PRESETS.glob("*.toml"))
