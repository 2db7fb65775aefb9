"""RunConfig: the whole job as nested dataclasses, round-tripping to TOML.

Layers, later wins: dataclass defaults < preset (assets/presets/NAME.toml) < --config FILE < CLI flags
< --set key=value. Every run writes its full config.toml; `studio generate --config` on it reproduces it.
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import tomli_w

import distillation
import representations
from distillation.base import DistillationConfig
from distillation.pgc import PGCConfig
from representations.base import RepresentationConfig

from . import paths
from .errors import ConfigError
from .sampling import CameraConfig
from .limits import check_limits, format_range, limits_of, numbers_in
from .tomlcodec import from_dict, merge, parse_assignment, set_path, to_dict

POLYMORPHIC = ("representation", "distillation")
DEFAULT_KINDS = {"representation": "nerf", "distillation": "sds"}
"""The kinds used when no layer names one."""
MAX_PROMPT_CHARS = 1000
"""Longest prompt accepted (the text encoder reads its first 77 tokens; a longer one is most likely a mistake)."""
ExportFormat = Literal["glb", "obj", "ply", "stl", "3mf", "usdz"]
"""The mesh formats a run writes: the keys of studio.export.FORMATS (tests/test_config.py checks they agree)."""


@dataclass
class ShadingConfig:
    """How training views are lit. The embedded model was trained on Lambertian renders."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"textureless_prob": (0.0, 1.0), "albedo_prob": (0.0, 1.0),
        "warmup_steps": (0, float("inf")), "ambient": (0.0, 10.0), "diffuse": (0.0, 10.0),
        "light_spread_deg": (0.0, 180.0)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    textureless_prob: float = 0.0
    """Probability of a 'textureless' (white albedo, lit) view after warm-up; helps geometry with real SD."""
    albedo_prob: float = 0.0
    """Probability of an unlit 'albedo' view after warm-up."""
    warmup_steps: int = 0
    """Steps at the start that always use albedo shading (DreamFusion uses this with real SD)."""
    ambient: float = 0.35
    """Ambient light term."""
    diffuse: float = 0.65
    """Diffuse light term."""
    light_spread_deg: float = 45.0
    """Random lights lie within this angle of the camera direction."""


@dataclass
class GuidanceConfig:
    """The frozen diffusion model."""

    model: str = ""
    """Local diffusers folder or hub id; empty = the embedded model shipped in assets/models."""
    device: str = "auto"
    """'auto' (CUDA if present, else CPU) or a torch device: 'cpu', 'cuda', 'cuda:1'."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Weights' dtype; 'auto' = fp32 on CPU, fp16 on CUDA."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(f"device {self.device!r} is not one of auto, cpu, cuda, cuda:N, mps")


@dataclass
class LogConfig:
    """What the run records while it goes."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"log_every": (1, float("inf")),
        "preview_every": (0, float("inf")), "preview_views": (1, 64), "checkpoint_every": (0, float("inf"))}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    log_every: int = 10
    """Write a log.jsonl line every N steps (and the last step)."""
    preview_every: int = 50
    """Render a preview grid every N steps (0 = never, except the final one)."""
    preview_views: int = 4
    """Views in the preview grid, evenly spaced around the object."""
    checkpoint_every: int = 100
    """Save a checkpoint every N steps for `studio resume` (0 = only at the end and at a Stop)."""


@dataclass
class GuardConfig:
    """The numerical guard (studio/guard.py): what a run does when its loss or parameters turn NaN or infinite."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"max_rollbacks": (0, 100), "lr_factor": (0.01, 0.99)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    max_rollbacks: int = 3
    """Times a run may go back to its last good checkpoint with lower learning rates; once more and it fails."""
    lr_factor: float = 0.5
    """Every learning rate is multiplied by this at each rollback."""


@dataclass
class ExportConfig:
    """What a finished run writes (docs/export.md): clean, textured meshes in metres, Y up, on the ground."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"mesh_resolution": (16, 1024), "faces": (0, 10_000_000),
        "texture_size": (0, 8192), "texture_padding": (0, 64), "size": (0.0, 1000.0), "min_part_fraction": (0.0, 1.0),
        "fidelity_views": (0, 64), "fidelity_size": (8, 1024), "turntable_frames": (0, 360),
        "turntable_size": (16, 2048), "print_height_mm": (1.0, 2000.0),
        "metallic": (0.0, 1.0), "roughness": (0.0, 1.0), "lods": (100, 10_000_000)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    formats: list[ExportFormat] = field(default_factory=lambda: ["glb", "obj", "ply"])
    """Mesh formats written at the end."""
    mesh_resolution: int = 128
    """Grid resolution for mesh extraction."""
    faces: int = 20000
    """Target face count after simplification (0 = keep every face of the extracted mesh)."""
    texture_size: int = 1024
    """Side of the baked albedo texture in pixels (0 = no texture: vertex colours only)."""
    texture_padding: int = 4
    """Texels between UV charts, filled by growing each chart's colours (no seams under filtering)."""
    size: float = 1.0
    """Real-world size: the longest side of the exported bounding box, in metres (0 = keep scene units)."""
    min_part_fraction: float = 0.05
    """Drop connected parts with less surface area than this fraction of the largest part (floaters)."""
    fidelity_views: int = 8
    """Views per ring (two rings) of the fidelity check written to metrics.json (0 = skip the check)."""
    fidelity_size: int = 64
    """Pixel size of the fidelity check's renders."""
    turntable_frames: int = 24
    """Frames of the turntable GIF (0 = none)."""
    turntable_size: int = 128
    """Turntable frame size in pixels."""
    print_height_mm: float = 50.0
    """Height (Z extent) of the STL / 3MF print solid in millimetres (docs/export.md, printing)."""
    metallic: float = 0.0
    """metallicFactor of the GLB's PBR material (0 = dielectric, 1 = metal)."""
    roughness: float = 0.9
    """roughnessFactor of the GLB's PBR material (0 = mirror, 1 = fully rough)."""
    normal_map: bool = False
    """Bake a tangent-space normal map of the fine surface onto the simplified mesh (GLB normalTexture + TANGENT;
    needs texture_size > 0)."""
    lods: list[int] = field(default_factory=list)
    """Face counts of a level-of-detail chain written beside asset.glb (asset_lod0.glb, ...); [] = none."""

    def validate(self) -> None:
        """Raise ConfigError for unusable values."""
        from .export import FORMATS

        for fmt in self.formats:
            if fmt not in FORMATS:
                raise ConfigError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
        if self.faces != 0 and self.faces < 100:
            raise ConfigError(f"export.faces must be 0 (no limit) or at least 100, got {self.faces}")
        if not 0 <= self.texture_size <= 8192 or self.texture_padding < 0:
            raise ConfigError(f"export.texture_size must be in 0..8192 (0 = no texture), got {self.texture_size}")
        if self.normal_map and self.texture_size == 0:
            raise ConfigError("export.normal_map needs a texture (export.texture_size > 0): it shares the albedo's UVs")
        if self.size < 0 or not 0 <= self.min_part_fraction <= 1:
            raise ConfigError("export.size must be >= 0 and export.min_part_fraction in [0, 1]")
        if self.lods:
            from .export.lods import lods_problem

            problem = lods_problem(self.lods) or (None if "glb" in self.formats else "the levels are GLBs: "
                                                  "keep glb in export.formats")
            if problem:
                raise ConfigError(f"export.lods {self.lods}: {problem}"[:300])


@dataclass
class RunConfig:
    """One generation job."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"seed": (0, 2**63 - 1), "steps": (1, 1_000_000)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    prompt: str = ""
    """What to generate, e.g. 'a red cube'."""
    negative_prompt: str = ""
    """Used as the unconditional prompt of classifier-free guidance."""
    seed: int = 0
    """Seed of every random choice in the run."""
    steps: int = 800
    """Optimisation steps (the measurements behind 800: docs/benchmarks.md)."""
    init_from: str = ""
    """A finished run directory whose scene initialises this one (coarse-to-fine), or "" to start fresh."""
    view_dependent_prompt: bool = True
    """Append ', front view' / ', side view' / ... by camera azimuth (studio/sampling.py)."""
    representation: RepresentationConfig = field(default_factory=lambda: representation_config(DEFAULT_KINDS["representation"]))
    """The 3D representation; `kind` picks it from representations.REGISTRY."""
    distillation: DistillationConfig = field(default_factory=lambda: distillation_config(DEFAULT_KINDS["distillation"]))
    """The distillation loss; `kind` picks it from distillation.REGISTRY."""
    pgc: PGCConfig = field(default_factory=PGCConfig)
    """Pixel-wise gradient clipping on the rendered image."""
    camera: CameraConfig = field(default_factory=CameraConfig)
    """Training camera distribution and render size."""
    shading: ShadingConfig = field(default_factory=ShadingConfig)
    """Lighting of the training views."""
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    """The diffusion model."""
    log: LogConfig = field(default_factory=LogConfig)
    """Logging, previews, checkpoints."""
    guard: GuardConfig = field(default_factory=GuardConfig)
    """What happens when training goes non-finite."""
    export: ExportConfig = field(default_factory=ExportConfig)
    """Mesh and turntable export."""

    def validate(self) -> "RunConfig":
        """Raise ConfigError for values that are well-typed but unusable."""
        if not self.prompt.strip():
            raise ConfigError("the prompt is empty; give one, e.g. studio generate \"a red cube\"")
        for key in ("prompt", "negative_prompt"):
            if len(getattr(self, key)) > MAX_PROMPT_CHARS:
                raise ConfigError(f"{key} has {len(getattr(self, key))} characters; at most {MAX_PROMPT_CHARS} are allowed")
        check_limits(self)
        self.export.validate()
        if self.init_from and not (Path(self.init_from) / "checkpoint" / "scene.safetensors").is_file():
            raise ConfigError(f"--init-from {self.init_from}: not a run directory with a checkpoint; "
                              "pass the folder of a finished run")
        if self.shading.textureless_prob + self.shading.albedo_prob > 1:
            raise ConfigError("shading.textureless_prob + shading.albedo_prob must be <= 1")
        if self.log.log_every < 1 or self.log.preview_every < 0 or self.log.checkpoint_every < 0:
            raise ConfigError("log.log_every must be >= 1, log.preview_every and log.checkpoint_every >= 0 (0 = off)")
        return self


def representation_config(kind: str) -> RepresentationConfig:
    """Default config of representation `kind`."""
    return _resolve("representation", kind)()


def distillation_config(kind: str) -> DistillationConfig:
    """Default config of distillation `kind`."""
    return _resolve("distillation", kind)()


def _resolve(section: str, kind: str) -> type:
    registry = {"representation": representations, "distillation": distillation}[section.split(".")[0]]
    try:
        return registry.get(kind).Config
    except ValueError as e:
        raise ConfigError(str(e)) from None


def read_toml(path: Path) -> dict:
    """Parse a TOML file; ConfigError with the file name on any problem."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None


def preset_layer(name: str) -> dict:
    """The override dict of preset `name`."""
    path = paths.PRESETS / f"{name}.toml"
    if not path.exists():
        raise ConfigError(f"unknown preset {name!r}; valid: {', '.join(paths.preset_names()) or '(none)'}")
    return read_toml(path)


def build_config(layers: list[dict], overrides: list[str] = (), validate: bool = True) -> RunConfig:
    """Merge sparse layers (lowest first) and `--set` overrides into a RunConfig, validated unless `validate` is
    False (the web studio checks its own, tighter limits first, then validates)."""
    tree: dict[str, Any] = {name: {"kind": kind} for name, kind in DEFAULT_KINDS.items()}
    for layer in layers:
        tree = merge(tree, _with_moved_keys(layer, tree), POLYMORPHIC)
    set_layer: dict[str, Any] = {}
    for item in overrides:
        keys, value = parse_assignment(item)
        set_path(set_layer, keys, value)
    tree = merge(tree, _with_moved_keys(set_layer, tree), POLYMORPHIC)
    cfg = from_dict(RunConfig, tree, _resolve)
    return cfg.validate() if validate else cfg


def config_to_toml(cfg: RunConfig) -> str:
    """The full config as TOML text."""
    return tomli_w.dumps(to_dict(cfg))


def config_from_toml(text: str) -> RunConfig:
    """Inverse of config_to_toml (validated)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}") from None
    return from_dict(RunConfig, _with_moved_keys(data), _resolve).validate()


# ---- config keys that moved: config.toml files of older runs still load ------------------------------------
def _with_moved_keys(layer: dict, below: dict | None = None) -> dict:
    """`layer` with its [representation] keys that moved (representations.MOVED_KEYS, e.g. `density_bias` ->
    `blob.bias`) in their new places. The kind is the layer's own, else the one of the layers `below` it."""
    section = layer.get("representation")
    if not isinstance(section, dict):
        return layer
    below_kind = (below or {}).get("representation", {}).get("kind", DEFAULT_KINDS["representation"])
    kind = section.get("kind", below_kind)
    if not isinstance(kind, str):
        return layer  # from_dict names the bad kind
    return {**layer, "representation": representations.upgrade_keys(kind, section)}


def field_reference(cls: type = RunConfig, prefix: str = "", inst: Any = None) -> list[tuple[str, str, str]]:
    """(key, default, docstring) for every leaf field of `inst` (default: `cls()`): the generated reference in
    docs/config.md. A nested section shows the defaults it has in `inst`, which may differ from its class's."""
    import ast
    import inspect
    import textwrap

    docs = _field_docs(cls, ast, inspect, textwrap)
    hints = typing.get_type_hints(cls)
    rows = []
    inst = cls() if inst is None else inst
    limits = limits_of(cls)
    for f in dataclasses.fields(cls):
        value = getattr(inst, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not hasattr(type(value), "const"):
            rows.append((key, f"[{type(value).__name__}]", docs.get(f.name, "")))
            rows.extend(field_reference(type(value), key + ".", value))
        else:
            choices = _literal_choices(hints[f.name])
            doc = docs.get(f.name, "") + (f" One of {', '.join(map(repr, choices))}." if choices else "")
            if f.name in limits and numbers_in(value, key):
                doc += f" Range: {format_range(*limits[f.name])}."
            rows.append((key, repr(to_dict(value)), doc.strip()))
    return rows


def _literal_choices(hint: Any) -> tuple:
    """The choices of a Literal[...] field, also inside list[...] or an Optional; () for any other type."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    return next((c for a in typing.get_args(hint) if (c := _literal_choices(a))), ())


def _field_docs(cls, ast, inspect, textwrap) -> dict[str, str]:
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for a, b in zip(body, body[1:]):
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
                out[a.target.id] = " ".join(str(b.value.value).split())
    return out
