"""Scene representations. Importing this package is cheap: implementations load on first use.

REGISTRY maps a `kind` (as used by `--representation` and `[representation] kind = ...`) to
"module:Class". Add a representation by adding one line here (docs/adding-a-representation.md).
MOVED_KEYS lists the config keys that moved, so config files written before still load.
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


_VOLUME_MOVES = {
    "density_bias": "blob.bias",
    "blob_scale": "blob.scale",
    "blob_radius": "blob.radius",
    "samples_per_ray": "march.samples_per_ray",
    "early_stop_depth": "march.early_stop_depth",
    "early_stop_lag_cells": "march.early_stop_lag_cells",
    "occ_resolution": "occupancy.resolution",
    "occ_update_every": "occupancy.update_every",
    "occ_threshold": "occupancy.threshold",
    "occ_fraction": "occupancy.fraction",
    "occ_decay": "occupancy.decay",
    "occ_dilation": "occupancy.dilation",
    "orient_weight": "regularizers.orient_weight",
    "normal_tv_weight": "regularizers.normal_tv_weight",
    "albedo_tv_weight": "regularizers.albedo_tv_weight",
    "sparsity_weight": "regularizers.sparsity_weight",
    "entropy_weight": "regularizers.entropy_weight",
}

MOVED_KEYS: dict[str, dict[str, str]] = {"nerf": _VOLUME_MOVES, "voxel": _VOLUME_MOVES}
"""By kind: old key of a [representation] table -> its dotted place now. The ray-marched volumes' shared fields
were flat until they became the sections `blob`, `march`, `occupancy` and `regularizers`."""


def upgrade_keys(kind: str, table: dict) -> dict:
    """A copy of the [representation] table `table` of representation `kind` with its moved keys (MOVED_KEYS) in
    their new places, so a config.toml written before they moved still loads. A key given both ways keeps the
    value at its new place."""
    out = dict(table)
    for old, new in MOVED_KEYS.get(kind, {}).items():
        if old not in out:
            continue
        value = out.pop(old)
        *sections, leaf = new.split(".")
        node = out
        for name in sections:
            node[name] = dict(node.get(name, {}))
            node = node[name]
        node.setdefault(leaf, value)
    return out
