"""The Generate form: its values -> a validated RunConfig, through the app's job building (studio.jobs), as the CLI.

Torch-free (the registries are read, not imported). Blank numeric fields mean "the preset's or the
loss's default", so a preset's `steps` is not silently replaced by the form's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from studio.errors import UserError

MODEL_EMBEDDED = "Embedded model"
MODEL_FOLDER = "Local folder"
MODEL_HUB = "Hub id"
MODEL_CHOICES = (MODEL_EMBEDDED, MODEL_FOLDER, MODEL_HUB)
"""How the diffusion model is chosen: the shipped one, a diffusers folder, or a hub id."""


@dataclass
class FormValues:
    """Everything the Generate tab asks for, as the browser sends it."""

    prompt: str = ""
    """What to generate."""
    negative_prompt: str = ""
    """The unconditional prompt of classifier-free guidance."""
    representation: str = ""
    """A key of representations.REGISTRY ('' = the default kind)."""
    distillation: str = ""
    """A key of distillation.REGISTRY ('' = the default kind)."""
    preset: str = ""
    """A preset name from assets/presets ('' or 'none' = no preset)."""
    steps: float | None = None
    """Optimisation steps (None = the preset's / default)."""
    seed: float | None = 0
    """Random seed (None = 0)."""
    guidance_scale: float | None = None
    """CFG scale (None = the loss's default)."""
    resolution: float | None = None
    """Render size in pixels (None = default)."""
    pgc: bool = True
    """Pixel-wise gradient clipping on/off."""
    pgc_threshold: float | None = 0.1
    """PGC threshold (None = default)."""
    model_choice: str = MODEL_EMBEDDED
    """One of MODEL_CHOICES."""
    model_path: str = ""
    """The folder or hub id when model_choice is not the embedded model."""
    advanced: str = ""
    """TOML overrides, one `key = value` a line ('#' comments allowed), parsed like `--set`."""

    @classmethod
    def from_page(cls, fields: tuple[str, ...], values: tuple) -> "FormValues":
        """The form as the browser sent it, `fields[i]` = `values[i]`. A component the page has not drawn yet (one
        inside a closed accordion) arrives as None: text fields become "" and the others their defaults, so a
        fresh page with nothing opened works."""
        defaults = cls()
        kw = {}
        for name, value in zip(fields, values):
            if value is None and isinstance(getattr(defaults, name), str):
                value = ""
            elif value is None and name in ("pgc", "model_choice"):
                value = getattr(defaults, name)
            kw[name] = value
        return cls(**kw)


def registry_choices() -> dict[str, list[str]]:
    """The choices offered by the form's dropdowns, read from the registries and assets/presets."""
    import distillation
    import representations
    from studio import paths

    return {
        "representation": sorted(representations.REGISTRY),
        "distillation": sorted(distillation.REGISTRY),
        "preset": ["none", *paths.preset_names()],
    }


def advanced_overrides(text: str) -> list[str]:
    """The advanced box as `--set` items: one `key = value` a line; blank lines and '#' comments skipped."""
    items = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            raise UserError(f"advanced settings: write dotted keys (e.g. camera.resolution = 32), not a table {line!r}")
        items.append(line)
    return items


def model_name(values: FormValues) -> str:
    """The `--model` value of the form ('' = the embedded model). UserError for a missing folder."""
    if values.model_choice == MODEL_EMBEDDED or values.model_choice not in MODEL_CHOICES:
        return ""
    name = values.model_path.strip()
    if not name:
        raise UserError(f"model: type the {values.model_choice.lower()} or choose the embedded model")
    if values.model_choice == MODEL_FOLDER and not Path(name).expanduser().is_dir():
        raise UserError(f"model folder {name} does not exist; give a diffusers folder (with model_index.json)")
    return str(Path(name).expanduser()) if values.model_choice == MODEL_FOLDER else name


def _int(value: float | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if float(value) != int(float(value)):
        raise UserError(f"{name} must be a whole number, got {value}")
    return int(float(value))


def form_args(values: FormValues) -> dict:
    """The form as generate's job flags (the dict studio.jobs.job_layers reads)."""
    _finite(values)
    preset = values.preset if values.preset and values.preset != "none" else None
    return {
        "prompt": values.prompt.strip(),
        "representation": values.representation or None,
        "distillation": values.distillation or None,
        "preset": preset,
        "steps": _int(values.steps, "steps"),
        "seed": _int(values.seed, "seed") or 0,
        "model": model_name(values) or None,
        "overrides": advanced_overrides(values.advanced),
    }


def _finite(values: FormValues) -> None:
    """UserError for a numeric field that is not a finite number (the browser can send inf or nan)."""
    import math

    for name in ("steps", "seed", "guidance_scale", "resolution", "pgc_threshold"):
        value = getattr(values, name)
        if value in (None, ""):
            continue
        try:
            ok = math.isfinite(float(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UserError(f"{name.replace('_', ' ')} must be a number, got {value!r}")


def form_layer(values: FormValues) -> dict:
    """The form fields the CLI has no flag for, as a config layer."""
    layer: dict = {"negative_prompt": values.negative_prompt.strip(), "pgc": {"enabled": bool(values.pgc)}}
    if values.pgc_threshold not in (None, ""):
        layer["pgc"]["threshold"] = float(values.pgc_threshold)
    if values.guidance_scale not in (None, ""):
        layer["distillation"] = {"guidance_scale": float(values.guidance_scale)}
    resolution = _int(values.resolution, "render resolution")
    if resolution is not None:
        layer["camera"] = {"resolution": resolution}
    return layer


def build_run_config(values: FormValues, prompt: str | None = None, base: tuple[dict, ...] = (),
                     validate: bool = True):
    """A RunConfig from the form, validated unless `validate` is False (UserError with a readable message).

    Layers, later wins: defaults < the server's base layers (`studio ui --defaults FILE`) < preset < form
    fields < advanced box. `prompt` replaces the form's prompt (used by the Batch tab, whose jobs take the
    Generate tab's settings).
    """
    from studio.jobs import job_config

    args = form_args(values)
    if prompt is not None:
        args["prompt"] = prompt.strip()
    return job_config(args, base=base, extra=[form_layer(values)], validate=validate)


FILLED_FIELDS = ("representation", "distillation", "steps", "guidance_scale", "resolution", "pgc", "pgc_threshold")
"""Form fields refilled from the chosen preset and loss, so the form shows the values the run will use."""


def form_defaults(preset: str = "", distillation_kind: str = "", base: tuple[dict, ...] = ()) -> dict:
    """The values of FILLED_FIELDS under the server's `base` layers, `preset` (and `distillation_kind`, if given)
    with no other input."""
    from studio.config import build_config, preset_layer

    layers = [*base, *([preset_layer(preset)] if preset and preset != "none" else [])]
    if distillation_kind:
        layers.append({"distillation": {"kind": distillation_kind}})
    cfg = build_config([*layers, {"prompt": "defaults"}])
    return {"representation": cfg.representation.kind, "distillation": cfg.distillation.kind, "steps": cfg.steps,
            "guidance_scale": cfg.distillation.guidance_scale, "resolution": cfg.camera.resolution,
            "pgc": cfg.pgc.enabled, "pgc_threshold": cfg.pgc.threshold}
