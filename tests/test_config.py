"""RunConfig: typed TOML round trip, layers, --set overrides and their errors."""
import representations
import pytest

import representations

from studio.config import (
    RunConfig, build_config, config_from_toml, config_to_toml, field_reference, representation_config,
)
from studio.errors import ConfigError
from distillation.schedule import Ramp


def test_defaults_round_trip_through_toml():
    cfg = build_config([{"prompt": "a red cube"}])
    again = config_from_toml(config_to_toml(cfg))
    assert again == cfg


def test_nondefault_values_round_trip():
    cfg = build_config([{"prompt": "a mug"}], ["steps=17", "camera.resolution=32", "pgc.threshold=0.05",
                                               "distillation.t_max={start=0.9, end=0.3, from_step=2, to_step=9}"])
    again = config_from_toml(config_to_toml(cfg))
    assert again.steps == 17 and again.camera.resolution == 32 and again.pgc.threshold == 0.05
    assert again.distillation.t_max == Ramp(0.9, 0.3, 2, 9)
    assert again == cfg


def test_set_parses_toml_literals_and_bare_strings():
    cfg = build_config([{"prompt": "x"}], ["camera.radius=[2.0, 2.5]", "negative_prompt=blurry", "pgc.enabled=false"])
    assert cfg.camera.radius == (2.0, 2.5)
    assert cfg.negative_prompt == "blurry"
    assert cfg.pgc.enabled is False


def test_ramp_accepts_a_plain_number():
    cfg = build_config([{"prompt": "x"}], ["distillation.t_max=0.7"])
    assert cfg.distillation.t_max.at(0, 10) == pytest.approx(0.7)
    assert cfg.distillation.t_max.at(9, 10) == pytest.approx(0.7)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        build_config([{"prompt": "x"}], ["camera.resolutoin=32"])
    msg = str(e.value)
    assert "camera.resolutoin" in msg and "resolution" in msg and "batch_size" in msg


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="steps must be an integer"):
        build_config([{"prompt": "x"}], ["steps=ten"])
    with pytest.raises(ConfigError, match="must be a number"):
        build_config([{"prompt": "x"}], ["pgc.threshold=true"])


@pytest.mark.parametrize("layer, message", [
    ({"prompt": "  "}, "prompt is empty"),
    ({"prompt": "x", "steps": 0}, r"steps = 0 is out of range; allowed: 1 \.\. 1000000"),
    ({"prompt": "x", "representation": {"kind": "mesh9"}}, "unknown representation 'mesh9'; valid: " + ", ".join(sorted(representations.REGISTRY))),
    ({"prompt": "x", "distillation": {"kind": "nope"}}, "unknown distillation 'nope'; valid: "),
])
def test_invalid_values(layer, message):
    with pytest.raises(ConfigError, match=message):
        build_config([layer])


def test_changing_kind_drops_the_old_sections_fields():
    full = config_to_toml(build_config([{"prompt": "x"}]))
    import tomllib
    layer = tomllib.loads(full)
    layer["representation"]["kind"] = "nerf"  # same kind keeps fields
    cfg = build_config([layer, {"representation": {"kind": "nerf"}}])
    assert cfg.representation == representation_config("nerf")


def test_field_reference_documents_every_field():
    rows = field_reference(RunConfig)
    keys = {k for k, _, _ in rows}
    assert {"prompt", "camera.resolution", "pgc.threshold", "representation.kind"} <= keys
    undocumented = [k for k, _, doc in rows if not doc]
    assert not undocumented, undocumented


def test_later_layers_win():
    cfg = build_config([{"prompt": "a", "steps": 5}, {"steps": 9}], ["seed=3"])
    assert (cfg.prompt, cfg.steps, cfg.seed) == ("a", 9, 3)


def test_generated_config_reference_is_current():
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "scripts/gen_docs.py", "--check"], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_literal_fields_accept_only_their_choices():
    from dataclasses import dataclass
    from typing import Literal

    from studio.errors import ConfigError
    from studio.tomlcodec import from_dict

    @dataclass
    class Section:
        mode: Literal["albedo", "lambertian"] = "albedo"

    assert from_dict(Section, {"mode": "lambertian"}).mode == "lambertian"
    with pytest.raises(ConfigError, match=r"mode must be one of 'albedo', 'lambertian', got 'shiny'"):
        from_dict(Section, {"mode": "shiny"})


def test_app_literal_choices_match_what_they_pick():
    import typing

    from studio.config import ExportFormat
    from studio.export import FORMATS

    assert typing.get_args(ExportFormat) == tuple(FORMATS)
    with pytest.raises(ConfigError, match=r"export.formats must be one of 'glb', 'obj', 'ply'(, '\w+')*, got 'fbx'"):
        build_config([{"prompt": "a", "export": {"formats": ["glb", "fbx"]}}])
    with pytest.raises(ConfigError, match=r"guidance.dtype must be one of 'auto', 'float32', 'float16', 'bfloat16'"):
        build_config([{"prompt": "a"}], ["guidance.dtype=fp8"])


@pytest.mark.parametrize("override, message", [
    ("representation.lr_mlp=nan", "representation.lr_mlp must be a finite number, got nan"),
    ("distillation.guidance_scale=inf", "distillation.guidance_scale must be a finite number, got inf"),
    ("representation.lr_grid=-0.01", "representation.lr_grid = -0.01 is out of range; allowed: 1e-08 .. 1"),
    ("log.log_every=0", "log.log_every = 0 is out of range; allowed: >= 1"),
])
def test_values_that_used_to_pass_or_crash_later_are_refused_up_front(override, message, tmp_path, capsys):
    """nan passed (the loss went NaN and the run ended 'finished'); log_every=0 crashed after the run started."""
    from studio.cli import main

    assert main(["generate", "a red cube", "--model", "tiny-random", "--out", str(tmp_path / "out"),
                 "--set", override]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing written


def _numeric_leaves(section, prefix=""):
    """(key, field name, owner class) of every number-holding field of a config, nested sections included."""
    import dataclasses

    from studio.limits import is_ramp, numbers_in

    for f in dataclasses.fields(section):
        value, key = getattr(section, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not is_ramp(value):
            yield from _numeric_leaves(value, key + ".")
        elif numbers_in(value, key):
            yield key, f.name, type(section), value


def _kinds():
    import distillation
    import representations

    return [(r, "sds") for r in sorted(representations.REGISTRY)] + [("nerf", d) for d in sorted(distillation.REGISTRY)]


@pytest.mark.parametrize("rep, dist", _kinds())
def test_every_number_has_a_range_and_a_value_outside_it_is_refused_naming_the_field(rep, dist):
    """Every numeric field of every kind declares LIMITS (studio/limits.py); just above the top or just below the
    bottom of its range, the config is refused with one line naming the field."""
    from studio.config import build_config
    from studio.limits import limits_of

    layer = {"prompt": "a red cube", "representation": {"kind": rep}, "distillation": {"kind": dist}}
    cfg = build_config([layer])
    leaves = list(_numeric_leaves(cfg))
    assert len(leaves) > 40
    for key, name, owner, value in leaves:
        assert name in limits_of(owner), f"{key} has no range in {owner.__name__}.LIMITS"
        lo, hi = limits_of(owner)[name]
        outside = [v for v in (hi + max(1, abs(hi)) if hi != float("inf") else None, lo - max(1, abs(lo))) if v is not None]
        for bad in outside:
            if isinstance(value, int) and not isinstance(value, bool):
                bad = int(bad)
            literal = _literal_like(value, bad)
            with pytest.raises(ConfigError) as err:
                build_config([layer], [f"{key}={literal}"])
            assert key.split(".")[-1] in str(err.value) and "\n" not in str(err.value), (key, literal, err.value)


def _literal_like(value, bad) -> str:
    """`bad` as a TOML literal shaped like `value`: a number, or every item of a tuple, or a Ramp's start and end."""
    from studio.limits import is_ramp

    if isinstance(value, (tuple, list)):
        return "[" + ", ".join([repr(bad)] * len(value)) + "]"
    if is_ramp(value):
        return f"{{start = {bad!r}, end = {bad!r}}}"
    return repr(bad)


def test_a_run_too_big_for_the_free_memory_is_refused_before_anything_loads(tmp_path, capsys):
    """camera.resolution 1024 with a batch of 64 (~800 GB) used to start, load the model and die in an OOM kill
    that left the folder 'running'; now: exit 2, one line naming the fields, nothing written."""
    from studio.cli import main

    assert main(["generate", "a red cube", "--out", str(tmp_path / "out"),
                 "--set", "camera.resolution=1024", "--set", "camera.batch_size=64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: this run needs about ") and "GB are free" in err and "camera.resolution (1024)" in err
    assert "\n" not in err and not (tmp_path / "out").exists()


def test_the_memory_estimate_names_the_phase_that_does_not_fit():
    from studio.config import build_config
    from studio.memory import check_memory, estimate

    default = build_config([{"prompt": "a red cube"}])
    check_memory(default, available=2e9)  # the default run fits in 2 GB (its estimate is ~0.85 GB)
    big_texture = build_config([{"prompt": "a red cube"}], ["export.texture_size=8192"])
    assert estimate(big_texture).peak > 10e9  # 1.7 GB measured at 2048²: the bake grows with the texels
    with pytest.raises(ConfigError, match=r"lower export.texture_size \(8192\)"):
        check_memory(big_texture, available=8e9)
    for kind in ("nerf", "voxel", "gaussians", "flexicubes"):
        small = build_config([{"prompt": "x", "representation": {"kind": kind}}], ["camera.resolution=64"])
        large = build_config([{"prompt": "x", "representation": {"kind": kind}}], ["camera.resolution=256"])
        assert estimate(small).training < estimate(large).training < 30e9, kind
