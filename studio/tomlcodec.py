"""Typed conversion between nested dataclasses and TOML-shaped dicts, and `--set` overrides.

Torch-free. Polymorphic sections (a field whose dataclass has a `kind` field, e.g. `representation`)
are resolved through a `resolver(section_name, kind) -> dataclass type` supplied by the caller.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from typing import Any, Callable

from .errors import ConfigError

Resolver = Callable[[str, str], type]


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain dict/list/scalars, ready for tomli_w (None values are dropped)."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            v = to_dict(getattr(obj, f.name))
            if v is not None:
                out[f.name] = v
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type, data: dict, resolver: Resolver | None = None, path: str = "") -> Any:
    """Build dataclass `cls` from `data`, checking keys and types; missing keys keep their defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'} must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f"[{path}]" if path else "the top level"
        raise ConfigError(f"unknown key {shown(_join(path, unknown[0]))} in {where}; valid keys: {', '.join(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            value = _over_section_default(f, data[f.name])
            kwargs[f.name] = _convert(hints[f.name], value, _join(path, f.name), resolver)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path or 'config'}: {e}") from None


def _over_section_default(f: dataclasses.Field, value: Any) -> Any:
    """A table for a nested section, merged over the field's own default: the keys it leaves out keep the default
    of the config holding the section (NeRFConfig's `regularizers` differ from VolumeRegularizers()'s), not the
    section class's. Polymorphic sections (with a `kind`) and Ramps are left as they are."""
    if not isinstance(value, dict) or f.default_factory is dataclasses.MISSING:
        return value
    default = f.default_factory()
    if not dataclasses.is_dataclass(default) or hasattr(default, "kind") or hasattr(default, "const"):
        return value
    return merge(to_dict(default), value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(hint: Any, value: Any, path: str, resolver: Resolver | None) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, path, resolver)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{path}: invalid value {shown(value)}")
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value not in choices or isinstance(value, bool) != any(isinstance(c, bool) for c in choices):
            raise ConfigError(f"{path} must be one of {', '.join(map(repr, choices))}, got {shown(value)}")
        return value
    if dataclasses.is_dataclass(hint):
        if hasattr(hint, "const") and isinstance(value, (int, float)) and not isinstance(value, bool):
            return hint.const(float(value))  # a Ramp written as a plain number
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a table, got {shown(value)}")
        cls = hint
        names = {f.name for f in dataclasses.fields(hint)}
        if "kind" in names and resolver is not None:
            kind = value.get("kind") or hint().kind
            if not isinstance(kind, str):
                raise ConfigError(f"{path}.kind must be a name, got {shown(kind)}")
            cls = resolver(path, kind)
        return from_dict(cls, value, resolver, path)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {shown(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, path, resolver) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{path} must have {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, path, resolver) for a, v in zip(args, value))
    if origin is list:
        (arg,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {shown(value)}")
        return [_convert(arg, v, path, resolver) for v in value]
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {shown(value)}")
        if not math.isfinite(value):  # TOML has nan and inf; no field means them
            raise ConfigError(f"{path} must be a finite number, got {shown(value)}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {shown(value)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {shown(value)}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {shown(value)}")
        return value
    if hint is Any:
        return value
    raise ConfigError(f"{path}: unsupported field type {hint!r}")


def parse_literal(text: str) -> Any:
    """A `--set` value: a TOML literal (1, 0.5, true, [1, 2], {start = 1, end = 0}, "x"), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignment(item: str) -> tuple[list[str], Any]:
    """'a.b=value' -> (['a', 'b'], parsed value). ConfigError if malformed."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value (e.g. steps=300), got {shown(item)}")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"--set expects key=value (e.g. representation.lr=0.01), got {shown(item)}")
    return key.split("."), parse_literal(raw.strip())


def set_path(tree: dict, keys: list[str], value: Any) -> None:
    """Set tree[k0][k1]... = value, creating tables on the way."""
    node = tree
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(keys)}: {shown(k)} is a value, not a table")
        node = nxt
    node[keys[-1]] = value


def merge(base: dict, layer: dict, polymorphic: tuple[str, ...] = ()) -> dict:
    """Deep-merge `layer` over `base`. A polymorphic section whose `kind` changes starts afresh."""
    out = dict(base)
    for k, v in layer.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            old = out[k]
            if k in polymorphic and "kind" in v and v["kind"] != old.get("kind", v["kind"]):
                out[k] = dict(v)
            else:
                out[k] = merge(old, v)
        else:
            out[k] = v
    return out


def shown(value: Any, limit: int = 60) -> str:
    """repr(value) for an error message, cut to `limit` characters (a pasted blob must not make it a page)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
