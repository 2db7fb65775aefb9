"""Range checks for every number in a config: each config dataclass declares `LIMITS` (field name -> (lowest,
highest), both allowed) for its numeric fields, tuples and Ramps; `check_limits` walks a config and raises
ConfigError naming the first field out of its range and the range. Torch-free: it runs before anything loads.

A numeric field without a declared range is a bug (tests/test_config.py checks every field of every kind), so a
new field gets its range where it is declared.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .errors import ConfigError

Limits = dict[str, tuple[float, float]]


def limits_of(cls: type) -> Limits:
    """The LIMITS of config class `cls` and its bases (a subclass's entry wins)."""
    out: Limits = {}
    for klass in reversed(cls.__mro__):
        out.update(vars(klass).get("LIMITS", {}))
    return out


def check_limits(section: Any, path: str = "") -> None:
    """ConfigError for the first number in config `section` (and its nested sections) outside its LIMITS."""
    limits = limits_of(type(section))
    for f in dataclasses.fields(section):
        value, key = getattr(section, f.name), f"{path}{f.name}"
        if dataclasses.is_dataclass(value) and not is_ramp(value):
            check_limits(value, key + ".")
            continue
        for number, where in numbers_in(value, key):
            if f.name not in limits:
                raise ConfigError(f"{key} has no declared range (a bug: add it to {type(section).__name__}.LIMITS)")
            lo, hi = limits[f.name]
            if not lo <= number <= hi:
                raise ConfigError(f"{where} = {number!r} is out of range; allowed: {format_range(lo, hi)}")


def numbers_in(value: Any, key: str) -> list[tuple[float, str]]:
    """The numbers a field holds, each with the key that names it: a number itself, each item of a tuple or list of
    numbers, a Ramp's start and end. Booleans and strings hold none."""
    if isinstance(value, bool) or isinstance(value, str):
        return []
    if isinstance(value, (int, float)):
        return [(value, key)]
    if is_ramp(value):
        return [(value.start, f"{key}.start"), (value.end, f"{key}.end")]
    if isinstance(value, (tuple, list)):
        return [(v, f"{key}[{i}]") for i, v in enumerate(value) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return []


def is_ramp(value: Any) -> bool:
    """A schedule (distillation.schedule.Ramp): its start and end are checked against the field's range."""
    return dataclasses.is_dataclass(value) and hasattr(type(value), "const")


def format_range(lo: float, hi: float) -> str:
    """'8 .. 1024', or '>= 0' for an open top."""
    return f">= {_number(lo)}" if hi == float("inf") else f"{_number(lo)} .. {_number(hi)}"


def _number(x: float) -> str:
    """Whole numbers as written (1000000, not 1e+06), others in %g (1e-08, 0.5)."""
    if isinstance(x, int):
        return str(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f"{x:g}"

