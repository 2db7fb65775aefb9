"""Typed schedules: a value that moves linearly from `start` to `end` between two steps."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch is imported lazily: configs (and `studio --help`) read this file without torch
    import torch
    from torch import Tensor


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

    def __post_init__(self) -> None:
        if self.from_step < 0 or self.to_step < -1:
            raise ValueError(f"a ramp needs from_step >= 0 and to_step >= -1 (-1: the last step), got "
                             f"{self.from_step} and {self.to_step}")

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


def as_ramp(value: float | Ramp) -> Ramp:
    """A float field that may also be a Ramp, as a Ramp (a number becomes a constant one)."""
    return value if isinstance(value, Ramp) else Ramp.const(float(value))


def at_step(value: float | Ramp, step: int, total_steps: int) -> float:
    """A float field that may also be a Ramp, evaluated at `step`."""
    return value.at(step, total_steps) if isinstance(value, Ramp) else float(value)


def check_timestep_range(kind: str, t_min: float, t_max: float | Ramp) -> None:
    """ValueError unless 0 <= t_min <= t_max <= 1 at every step of the (possibly ramped) t_max; `kind` names the
    loss in the message."""
    t_max = as_ramp(t_max)
    lowest = min(t_max.start, t_max.end)
    if not 0.0 <= t_min <= lowest <= max(t_max.start, t_max.end) <= 1.0:
        raise ValueError(f"{kind} timesteps need 0 <= t_min ({t_min}) <= t_max (lowest {lowest}) <= 1; "
                         "lower t_min or raise t_max")


def sample_timesteps(batch: int, t_min: float, t_max: float, num_train_timesteps: int,
                     device: torch.device | str | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
    """[batch] long timesteps, uniform over the integers int(t_min·T) ..= int(t_max·T), capped at T − 1.

    t_min, t_max: fractions of T = num_train_timesteps with 0 <= t_min <= t_max <= 1.
    """
    import torch

    if not 0.0 <= t_min <= t_max <= 1.0:
        raise ValueError(f"timestep range [{t_min}, {t_max}] must satisfy 0 <= t_min <= t_max <= 1")
    lo = int(t_min * num_train_timesteps)
    hi = min(int(t_max * num_train_timesteps), num_train_timesteps - 1)
    lo = min(lo, hi)
    return torch.randint(lo, hi + 1, (batch,), device=device, generator=generator)


Weighting = Literal["sds", "uniform", "fantasia", "ism"]
"""The type of a `weighting` config field: a key of WEIGHTINGS."""

WEIGHTINGS: dict[str, str] = {
    "sds": "1 − ᾱ_t (DreamFusion)",
    "uniform": "1",
    "fantasia": "√ᾱ_t · (1 − ᾱ_t) (Fantasia3D)",
    "ism": "√((1 − ᾱ_t) / ᾱ_t) (LucidDreamer ISM, Dreamer XL TSM)",
}
"""Names of the timestep weightings w(t) accepted by `weight` (name -> formula)."""


def check_weighting(name: str) -> None:
    """ValueError naming the valid weightings if `name` is not one."""
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}; valid: {', '.join(WEIGHTINGS)}")


def weight(name: str, alpha_bar: Tensor) -> Tensor:
    """w(t) [B] for ᾱ_t [B] (float tensor) under weighting `name` (see WEIGHTINGS)."""
    check_weighting(name)
    if name == "sds":
        return 1.0 - alpha_bar
    if name == "uniform":
        return alpha_bar.new_ones(alpha_bar.shape)
    if name == "fantasia":
        return alpha_bar.sqrt() * (1.0 - alpha_bar)
    return ((1.0 - alpha_bar) / alpha_bar).sqrt()


def interval_timesteps(batch: int, t_min: float, t_max: float, delta: int, num_train_timesteps: int,
                       device: torch.device | str | None = None,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """ISM / TSM's pair of timesteps: (t [batch], s [batch]) long, s = max(t − delta, 0).

    One t ~ U{int(t_min·T) ..= int(t_max·T)} is drawn for the whole batch (as LucidDreamer's code does), so the
    DDIM inversion to s takes the same number of UNet evaluations for every image.
    """
    if delta < 0:
        raise ValueError(f"interval delta must be >= 0 (got {delta})")
    t = sample_timesteps(1, t_min, t_max, num_train_timesteps, device=device, generator=generator).expand(batch)
    return t, (t - int(delta)).clamp(min=0)
