"""Scene representations. Importing this package is cheap: implementations load on first use.

REGISTRY maps a `kind` (as used by `--representation` and `[representation] kind = ...`) to
"module:Class". Add a representation by adding one line here (docs/adding-a-representation.md).
"""
from __future__ import annotations

import importlib

REGISTRY: dict[str, str] = {
    "nerf": "representations.nerf:NeRF",
    "flexicubes": "representations.flexicubes:FlexiCubes",
    "voxel": "representations.voxel:VoxelGrid",
    "gaussians": "representations.gaussians:Gaussians",
}


def get(kind: str) -> type:
    """The Representation class registered as `kind`; ValueError naming the valid kinds otherwise."""
    if kind not in REGISTRY:
        raise ValueError(f"unknown representation {kind!r}; valid: {', '.join(sorted(REGISTRY))}")
    module, name = REGISTRY[kind].split(":")
    return getattr(importlib.import_module(module), name)
