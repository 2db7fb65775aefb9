"""The numerical guard of the run loop: a step whose loss is NaN or infinite (or a scene whose parameters are) is
caught at once; the run rolls back to its last good checkpoint (or its start) with every learning rate scaled down
by `guard.lr_factor`, at most `guard.max_rollbacks` times, and otherwise fails with one line. So a run never ends
`finished` with a non-finite scene, and log.jsonl never holds a bare NaN.

The rolled-back run's config.toml gets the lowered rates (what its steps from there are trained with), so that
`studio resume` continues the same way; metrics.json lists the rollbacks.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from .errors import RunFailed


@dataclass
class Rollback:
    """One rollback, as metrics.json records it."""

    at_step: int
    """The step whose loss or parameters were not finite (1-based)."""
    to_step: int
    """The step of the checkpoint training went back to (0: the start)."""
    reason: str
    """What was not finite, e.g. 'loss is nan'."""
    lr_scale: float
    """Every learning rate's factor from then on, against the run's original ones."""


def nonfinite_logs(logs: dict[str, float]) -> str | None:
    """'loss is nan' (the first log value that is NaN or infinite), or None when every value is finite."""
    return next((f"{k} is {v}" for k, v in logs.items() if not math.isfinite(v)), None)


def nonfinite_tensors(tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """'parameter NAME is not finite' for the first floating tensor holding a NaN or an infinity, else None."""
    for name, t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return f"parameter {name} is not finite"
    return None


def scene_problem(scene: torch.nn.Module, loss_fn: Any) -> str | None:
    """What is not finite in the scene's parameters or the loss's own trainable state (VSD's LoRA), or None."""
    return nonfinite_tensors([*scene.named_parameters(), *loss_fn.state_tensors().items()])


def finite_logs(logs: dict[str, float]) -> dict[str, float | None]:
    """`logs` with every non-finite value as None: json.dumps writes null, not the bare NaN that is not JSON."""
    return {k: (v if math.isfinite(v) else None) for k, v in logs.items()}


def scaled_learning_rates(section: Any, factor: float) -> Any:
    """A copy of config `section` with every learning rate (a field named lr or lr_*, in nested sections too, and
    VSD's lora_lr) multiplied by `factor`."""
    changes = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value) and not hasattr(type(value), "const"):
            changes[f.name] = scaled_learning_rates(value, factor)
        elif is_learning_rate(f.name) and isinstance(value, float):
            changes[f.name] = value * factor
    return dataclasses.replace(section, **changes)


def is_learning_rate(name: str) -> bool:
    """Whether a config field named `name` is a learning rate."""
    return name == "lr" or name.startswith("lr_") or name.endswith("_lr")


def give_up(reason: str, step: int, rollbacks: int, lr_scale: float) -> RunFailed:
    """The one-line failure of a run that went non-finite once more than the guard allows."""
    tried = f" after {rollbacks} rollback{'s' * (rollbacks != 1)} (learning rates down to {lr_scale:g}x)" if rollbacks else ""
    return RunFailed(f"training diverged at step {step}: {reason}{tried}; lower the learning rates "
                     "(--set representation.lr_...=...) or raise guard.max_rollbacks")
