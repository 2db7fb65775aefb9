"""Will the run fit in memory? An estimate of its peak from the config (render size, batch, grids, texture) against
the memory this machine (or its cgroup) has free, checked before the model loads, so that a run too big for the
machine gets one line naming the fields to lower instead of an OOM kill in the middle (which leaves `running`).

The estimates are measured peaks (peak RSS on the 2-core CPU machine, docs/reliability.md), rounded up; each
representation estimates its own training memory (`RepresentationConfig.training_bytes`). A run is refused only
when the estimate is above what is free: the estimate is meant to catch the 40 GB mistakes, not to squeeze.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

PROCESS_BYTES = 600e6
"""The interpreter, torch and the embedded model loaded (measured 453 MB), with room."""
TEXEL_BYTES = 260.0
"""Peak bytes per texel of the texture bake (+0.8 GB measured from 1024² to 2048², most of the export)."""
CELL_BYTES = 16.0
"""Peak bytes per point of the mesh extraction grid (+123 MB measured from 128³ to 256³)."""
GB = 1e9


@dataclass
class Estimate:
    """The peak memory of a run, in bytes, and what drives it."""

    training: float
    """While training: the process, the scene and its activations."""
    export_extra: float
    """What the export adds while the trained scene is still held: the largest of the extraction grid, the texture
    bake and the turntable (an upper bound: the training's activations are freed by then)."""

    @property
    def peak(self) -> float:
        return self.training + self.export_extra

    def fix(self, cfg) -> str:
        """The fields to lower: those of the larger part (training's own, or the export's)."""
        if self.training - PROCESS_BYTES >= self.export_extra:
            return (f"lower camera.resolution ({cfg.camera.resolution}) or camera.batch_size ({cfg.camera.batch_size})"
                    " or the representation's grid sizes")
        return (f"lower export.texture_size ({cfg.export.texture_size}) or export.mesh_resolution "
                f"({cfg.export.mesh_resolution})")


def estimate(cfg) -> Estimate:
    """The peak memory estimate of RunConfig `cfg`."""
    pixels = cfg.camera.resolution ** 2 * cfg.camera.batch_size
    e = cfg.export
    return Estimate(PROCESS_BYTES + cfg.representation.training_bytes(pixels),
                    max(CELL_BYTES * e.mesh_resolution ** 3, TEXEL_BYTES * e.texture_size ** 2,
                        16.0 * e.turntable_frames * e.turntable_size ** 2))


def available_bytes() -> float | None:
    """Memory free for a new run: MemAvailable from /proc/meminfo, or less when this process's cgroup has a lower
    limit left; None where neither can be read (not Linux)."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = float(line.split()[1]) * 1024
    except OSError:
        pass
    left = _cgroup_left()
    if left is not None:
        free = left if free is None else min(free, left)
    return free


def _cgroup_left() -> float | None:
    """cgroup v2 memory.max minus memory.current of this process's cgroup, or None (no limit, no cgroup v2)."""
    try:
        group = Path("/proc/self/cgroup").read_text().strip().split("::", 1)[1]
        base = Path("/sys/fs/cgroup") / group.lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return float(limit) - float((base / "memory.current").read_text())
    except (OSError, IndexError, ValueError):
        return None


def check_memory(cfg, available: float | None = None) -> None:
    """ConfigError when RunConfig `cfg`'s estimated peak is above `available` bytes (default: what is free now)."""
    available = available_bytes() if available is None else available
    if available is None:
        return
    need = estimate(cfg)
    if need.peak > available:
        raise ConfigError(f"this run needs about {need.peak / GB:.1f} GB of memory and {available / GB:.1f} GB are free; "
                          f"{need.fix(cfg)}")
