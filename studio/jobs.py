"""Jobs: what `studio generate`'s flags, a batch file's [[job]] table or the web studio's form ask for, as config
layers and a validated RunConfig. The CLI, the batch runner and the UI all build their configs here.

Layers, later wins: the caller's `base` layers (e.g. `studio ui --defaults FILE`) < preset < config file < flags
< the caller's `extra` layers (e.g. the UI form's fields the CLI has no flag for) < `--set` overrides.
Importing this module does not import torch.
"""
from __future__ import annotations

from collections.abc import Sequence


def job_layers(flags: dict) -> tuple[list[dict], list[str]]:
    """Config layers (lowest first) and --set overrides from generate's flags by their argparse names: prompt,
    representation, distillation, steps, seed, model, preset, init_from, config, overrides (the --set items).
    A flag that is None or absent is not given; other keys are ignored."""
    from .config import preset_layer, read_toml

    layers: list[dict] = []
    if flags.get("preset"):
        layers.append(preset_layer(flags["preset"]))
    if flags.get("config"):
        layers.append(read_toml(flags["config"]))
    given: dict = {}
    if flags.get("prompt") is not None:
        given["prompt"] = flags["prompt"]
    for key in ("steps", "seed", "init_from"):
        if flags.get(key) is not None:
            given[key] = flags[key]
    if flags.get("representation"):
        given["representation"] = {"kind": flags["representation"]}
    if flags.get("distillation"):
        given["distillation"] = {"kind": flags["distillation"]}
    if flags.get("model"):
        given["guidance"] = {"model": flags["model"]}
    layers.append(given)
    return layers, list(flags.get("overrides") or [])


def job_config(flags: dict, base: Sequence[dict] = (), extra: Sequence[dict] = (), validate: bool = True):
    """The RunConfig of a job, validated unless `validate` is False (ConfigError / UserError naming the fix)."""
    from .config import build_config

    layers, overrides = job_layers(flags)
    return build_config([*base, *layers, *extra], overrides, validate=validate)
