"""Typed schedules: a value that moves linearly from `start` to `end` between two steps."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Ramp:
    """Linear ramp: `start` until `from_step`, `end` from `to_step` on, linear in between.

    In TOML either a number (constant) or an inline table `{start = 0.98, end = 0.5, from_step = 0, to_step = 500}`.
    A `to_step` of -1 means "the last step of the run".
    """

    start: float
    """Value at and before `from_step`."""
    end: float
    """Value at and after `to_step`."""
    from_step: int = 0
    """Step where the ramp begins."""
    to_step: int = -1
    """Step where the ramp ends (-1: the run's last step)."""

    def at(self, step: int, total_steps: int | None = None) -> float:
        to = self.to_step if self.to_step >= 0 else max((total_steps or 1) - 1, 0)
        if step <= self.from_step or to <= self.from_step:
            return self.start if step <= self.from_step else self.end
        if step >= to:
            return self.end
        f = (step - self.from_step) / (to - self.from_step)
        return self.start + f * (self.end - self.start)

    @classmethod
    def const(cls, value: float) -> "Ramp":
        return cls(value, value, 0, 0)
