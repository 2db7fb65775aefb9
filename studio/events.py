"""Events yielded by `studio.run.run(cfg)`. Plain dataclasses, and the speed meter behind Progress's rate and ETA;
torch-free.

Order: Started, then a Progress per step (a Preview every `log.preview_every` steps and after the last one; a
RolledBack when the numerical guard sends training back to a checkpoint, Progress going on from there), then
an Exporting as each export stage starts, then Finished (which also ends the export: there is no final Exporting).
"""
from __future__ import annotations

import time
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
class Exporting:
    """An export stage starts (after the last step: mesh, texture, files, turntable). Finished ends the export."""

    stage: str
    """What it does, for a reader: extract mesh, simplify, unwrap UVs, bake texture, fidelity check, write glb,
    write obj, write ply, write splat.ply, turntable."""
    index: int
    """1-based position of this stage among the `count` planned (a scene without a surface skips the mesh stages,
    so the index may jump)."""
    count: int
    """Stages planned for this export, from its config: no unwrap UVs / bake texture with export.texture_size 0,
    no fidelity check with export.fidelity_views 0, a write per format, write splat.ply for Gaussian scenes,
    turntable when export.turntable_frames > 0."""
    seconds: float
    """Seconds spent in the export so far (about 0 at its first stage)."""


@dataclass
class RolledBack:
    """Training went non-finite (NaN / inf) and went back to its last good checkpoint with lower learning rates
    (studio/guard.py); Progress continues from `to_step`."""

    at_step: int
    """The step whose loss or parameters were not finite."""
    to_step: int
    """The step training goes back to (0: the start)."""
    reason: str
    """What was not finite, e.g. 'loss is nan'."""
    lr_scale: float
    """Every learning rate's factor from now on, against the rates the run (or this resume) started with."""


@dataclass
class Finished:
    """The run completed and its assets are written."""

    run_dir: Path
    """The run directory."""
    assets: dict[str, Path]
    """Written files by kind: glb, obj, ply, turntable, ..."""
    metrics: dict
    """The contents of metrics.json."""


Event = Started | Progress | Preview | RolledBack | Exporting | Finished


class SpeedMeter:
    """Exponentially smoothed steps per second (Progress.steps_per_second) and the ETA it gives."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.rate = 0.0

    def tick(self) -> None:
        """One step is done."""
        now = time.perf_counter()
        inst = 1.0 / max(now - self.t, 1e-9)
        self.rate = inst if self.rate == 0.0 else 0.9 * self.rate + 0.1 * inst
        self.t = now

    def eta(self, remaining: int) -> float:
        """Seconds for `remaining` more steps at the current rate (infinity before the first step)."""
        return remaining / self.rate if self.rate > 0 else float("inf")

