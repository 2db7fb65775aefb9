"""Export stages without threads: a step of the export is a generator that yields the name of each stage as it
starts and returns its result; `drive` runs one silently, `numbered` turns its names into Exporting events.

    prepared = drive(prepare_stages(scene, cfg))                      # plain call (what `prepare` does)
    prepared = yield from numbered(prepare_stages(scene, cfg), plan)  # inside a run: Exporting events flow out

Closing the outer generator at a yield closes the stage generator there (between two stages), so an export can
be stopped without leaving a stage half done. Torch-free.
"""
from __future__ import annotations

import time
from collections.abc import Generator
from typing import TypeVar

from ..events import Exporting

T = TypeVar("T")

Stages = Generator[str, None, T]
"""Yields stage names as each starts; returns the step's result."""

EXTRACT, SIMPLIFY, UNWRAP, BAKE, NORMALS, FIDELITY, TURNTABLE = (
    "extract mesh", "simplify", "unwrap UVs", "bake texture", "bake normals", "fidelity check", "turntable")
PRINT_REPORT = "printability report"
"""After the writes, when an stl or 3mf is among them (pipeline.print_report_stages)."""


def write_stage(fmt: str) -> str:
    """The stage name of writing format `fmt`: write glb, write obj, write ply, write splat.ply."""
    return "write splat.ply" if fmt == "splat" else f"write {fmt}"


def mesh_plan(cfg) -> list[str]:
    """The stages `prepare_stages` yields for a scene with a surface under ExportConfig `cfg`, in order."""
    texture = [UNWRAP, BAKE, *([NORMALS] if cfg.normal_map else [])] if cfg.texture_size > 0 else []
    return [EXTRACT, SIMPLIFY, *texture, *([FIDELITY] if cfg.fidelity_views > 0 else [])]


def write_plan(formats: list[str]) -> list[str]:
    """The stages of writing `formats` in order (`write_formats_stages`), then the printability report when one of
    them is a print format (`print_report_stages`)."""
    from .printable import PRINT_FORMATS

    return [*map(write_stage, formats), *([PRINT_REPORT] if set(formats) & set(PRINT_FORMATS) else [])]


def drive(stages: Stages[T]) -> T:
    """Run `stages` to its end without reporting; its result."""
    try:
        while True:
            next(stages)
    except StopIteration as done:
        return done.value


def numbered(stages: Stages[T], plan: list[str]) -> Generator[Exporting, None, T]:
    """`stages` with each name as an Exporting event numbered by its place in `plan` (a stage that is not run is
    skipped: the next index jumps); seconds count from this generator's first step. Returns the stages' result.

    A name that is not in `plan` after the previous one is a bug in the plan: ValueError."""
    t0 = time.perf_counter()
    cursor = 0
    try:
        while True:
            name = next(stages)
            cursor = plan.index(name, cursor) + 1
            yield Exporting(name, cursor, len(plan), round(time.perf_counter() - t0, 3))
    except StopIteration as done:
        return done.value
    finally:
        stages.close()

