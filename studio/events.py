"""Events yielded by `studio.run.run(cfg)`. Plain dataclasses; torch-free."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Started:
    """The run directory exists and the loop is about to begin."""

    run_dir: Path
    """Where everything of this run is written."""
    total_steps: int
    """Steps the run will take."""
    model_note: str = ""
    """Which guidance model is used (and a warning if it is a random one)."""


@dataclass
class Progress:
    """One optimisation step is done."""

    step: int
    """1-based count of finished steps."""
    total_steps: int
    """Steps the run will take."""
    loss: float
    """Total loss of this step."""
    steps_per_second: float
    """Smoothed speed."""
    eta_seconds: float
    """Estimated time to the last step (export excluded)."""
    logs: dict[str, float] = field(default_factory=dict)
    """Per-term scalars of this step (distillation logs, regularisers)."""


@dataclass
class Preview:
    """A grid of renders from several viewpoints."""

    step: int
    """Step at which it was rendered."""
    image: np.ndarray
    """[H, W, 3] uint8 grid of views."""
    path: Path | None = None
    """Where the PNG was saved, if it was."""


@dataclass
class Finished:
    """The run completed and its assets are written."""

    run_dir: Path
    """The run directory."""
    assets: dict[str, Path]
    """Written files by kind: glb, obj, ply, turntable, ..."""
    metrics: dict
    """The contents of metrics.json."""


Event = Started | Progress | Preview | Finished
