"""Score-distillation losses and the frozen diffusion `Guidance` they use. Cheap to import.

REGISTRY maps a `kind` (as used by `--distillation` and `[distillation] kind = ...`) to
"module:Class". Add a loss by adding one line here (docs/adding-a-distillation.md).
"""
from __future__ import annotations

import importlib

REGISTRY: dict[str, str] = {
    "sds": "distillation.sds:SDS",
    "vsd": "distillation.vsd:VSD",
    "csm": "distillation.csm:CSM",
    "ism": "distillation.ism:ISM",
    "tsm": "distillation.tsm:TSM",
}


def get(kind: str) -> type:
    """The Distillation class registered as `kind`; ValueError naming the valid kinds otherwise."""
    if kind not in REGISTRY:
        raise ValueError(f"unknown distillation {kind!r}; valid: {', '.join(sorted(REGISTRY))}")
    module, name = REGISTRY[kind].split(":")
    return getattr(importlib.import_module(module), name)
