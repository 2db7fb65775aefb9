"""Property-based fuzzing (hypothesis) of what a user types: `--set` values, TOML config files, batch files and
prompts. Every input ends in a one-line error (exit 2, nothing written) or a run that finishes; never a traceback,
never a half-written folder that looks finished.

Most properties stop where the studio's checks end (the config is built and validated: nothing loads), which is
cheap enough for hundreds of examples; `test_valid_edge_values_run_to_a_finished_asset_or_fail_with_one_line`
runs a few real tiny generations with values at the edges of their allowed ranges."""
from __future__ import annotations

import json
import os
import string

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import distillation
import representations
from studio.batch import build_job_configs, read_jobs
from studio.cli import main
from studio.config import config_from_toml, config_to_toml, field_reference
from studio.errors import UserError
from studio.jobs import job_config
from studio.limits import limits_of
from studio.rundir import create_run_dir, read_status

pytestmark = pytest.mark.usefixtures("small_exports")
EXPLORE = os.environ.get("STUDIO_FUZZ_EXAMPLES")
"""Set (e.g. STUDIO_FUZZ_EXAMPLES=5000) to explore with new random examples; unset, the suite draws the same
examples every run (derandomized), so CI is repeatable."""
FUZZ = settings(max_examples=int(EXPLORE or 150), deadline=None, derandomize=not EXPLORE,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def all_keys() -> list[str]:
    """Every leaf key of every representation and distillation kind (what `--set` can name)."""
    from studio.config import build_config

    keys = set()
    for rep in representations.REGISTRY:
        for dist in distillation.REGISTRY:
            cfg = build_config([{"prompt": "x", "representation": {"kind": rep}, "distillation": {"kind": dist}}])
            keys |= {key for key, default, _ in field_reference(inst=cfg) if not default.startswith("[")}
    return sorted(keys)


KEYS = all_keys()
numbers = st.one_of(st.integers(min_value=-10**20, max_value=10**20),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, -1, 1, 2**63, 1e308, 5e-324]))
literal = st.one_of(
    numbers.map(lambda x: {float("inf"): "inf", float("-inf"): "-inf"}.get(x, "nan" if x != x else repr(x))),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(max_size=30).map(json.dumps),  # a quoted TOML string
    st.text(max_size=30),  # anything at all, mostly not TOML
    st.lists(numbers, max_size=4).map(lambda xs: "[" + ", ".join(map(repr, xs)) + "]"),
    st.tuples(numbers, numbers, st.integers(-5, 5000)).map(
        lambda t: f"{{start = {t[0]!r}, end = {t[1]!r}, from_step = {t[2]}}}"),
)


def one_line(e: BaseException) -> str:
    message = str(e)
    assert message and "\n" not in message and len(message) < 400, repr(message)
    return message


def accepted(cfg) -> None:
    """A config the studio accepted is valid again after a round trip through its config.toml."""
    again = config_from_toml(config_to_toml(cfg))
    assert config_to_toml(again) == config_to_toml(cfg)


@FUZZ
@given(key=st.sampled_from(KEYS), value=literal)
def test_any_set_value_is_accepted_or_refused_with_one_line(key, value):
    try:
        cfg = job_config({"prompt": "a red cube", "overrides": [f"{key}={value}"]})
    except UserError as e:
        one_line(e)
    else:
        accepted(cfg)


@FUZZ
@given(assignment=st.text(max_size=60))
def test_any_set_text_is_accepted_or_refused_with_one_line(assignment):
    try:
        cfg = job_config({"prompt": "a red cube", "overrides": [assignment]})
    except UserError as e:
        one_line(e)
    else:
        accepted(cfg)


toml_values = st.recursive(
    st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.booleans(), st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)
sections = st.dictionaries(st.sampled_from(KEYS), toml_values, max_size=6)


def nested(flat: dict) -> dict:
    """{'camera.resolution': 64} -> {'camera': {'resolution': 64}} (later keys win over clashing earlier ones)."""
    out: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else node
        node[leaf] = value
    return out


@FUZZ
@given(tree=sections.map(nested), raw=st.one_of(st.none(), st.binary(max_size=80)))
def test_any_config_file_is_accepted_or_refused_with_one_line(tree, raw, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    if raw is None:
        path.write_text(tomli_w.dumps(tree))
    else:
        path.write_bytes(raw)
    try:
        cfg = job_config({"prompt": "a red cube", "config": path})
    except UserError as e:
        one_line(e)
    else:
        accepted(cfg)


batch_text = st.one_of(
    st.lists(st.text(max_size=40), max_size=5).map("\n".join),
    st.lists(sections.map(nested), min_size=0, max_size=3).map(lambda jobs: tomli_w.dumps({"job": jobs})),
    st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
)


@FUZZ
@given(text=batch_text, suffix=st.sampled_from([".txt", ".toml"]))
def test_any_batch_file_is_accepted_or_refused_with_one_line(text, suffix, tmp_path_factory):
    path = tmp_path_factory.mktemp("batch") / f"jobs{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass") if suffix == ".txt" else path.write_text(text)
    try:
        configs = build_job_configs(read_jobs(path))
    except UserError as e:
        one_line(e)
    else:
        assert configs and all(c.prompt.strip() for c in configs)
        for cfg in configs:
            accepted(cfg)


@FUZZ
@given(prompt=st.text(max_size=1200))
def test_any_prompt_is_accepted_or_refused_and_its_folder_stays_inside_out(prompt, tmp_path_factory):
    from studio.models import embedded_prompt_warning

    try:
        cfg = job_config({"prompt": prompt})
    except UserError as e:
        one_line(e)
        return
    accepted(cfg)
    embedded_prompt_warning(cfg.prompt)  # the vocabulary check reads any prompt
    out = tmp_path_factory.mktemp("out")
    run_dir = create_run_dir(out, cfg.prompt)
    assert run_dir.parent == out and set(run_dir.name) <= set(string.ascii_lowercase + string.digits + "-")


@pytest.fixture(scope="module")
def tiny_model_tokens():
    """The tiny random model (what the runs below use) encodes any prompt the config accepts."""
    from studio.models import load_guidance
    from studio.config import GuidanceConfig

    guidance, _ = load_guidance(GuidanceConfig(model="tiny-random"))
    return guidance


@settings(max_examples=40, deadline=None, derandomize=not EXPLORE)
@given(prompt=st.text(min_size=1, max_size=300))
def test_any_accepted_prompt_encodes(prompt, tiny_model_tokens):
    try:
        cfg = job_config({"prompt": prompt})
    except UserError:
        return
    tiny_model_tokens.encode_text([cfg.prompt])


# ---- real runs with valid values at the edges of their ranges -------------------------------------------------
CHEAP = [k for k in KEYS if k.split(".")[0] in ("shading", "pgc", "distillation", "guard") or k in (
    "seed", "representation.blob.bias", "representation.blob.scale", "representation.blob.radius",
    "representation.regularizers.orient_weight", "representation.regularizers.entropy_weight",
    "representation.lr_grid", "representation.lr_mlp", "export.size", "export.min_part_fraction", "export.faces")]
"""Keys whose values do not change what a step costs (sizes do, and the memory check covers them)."""
TINY = ["guidance.model=tiny-random", "camera.resolution=32", "representation.march.samples_per_ray=32",
        "export.mesh_resolution=24", "export.texture_size=32", "export.turntable_frames=0", "log.preview_every=0",
        "export.formats=['glb']"]


@st.composite
def edge_assignment(draw):
    """key=value with the value at an edge of the key's range (or its middle), for a number-valued CHEAP key."""
    from studio.config import build_config
    from studio.limits import numbers_in

    cfg = build_config([{"prompt": "x"}], TINY)
    candidates = []
    for key in CHEAP:
        *path, name = key.split(".")
        owner = cfg
        for p in path:
            owner = getattr(owner, p, None)
        if owner is None or not hasattr(owner, name) or not numbers_in(getattr(owner, name), key):
            continue
        if isinstance(getattr(owner, name), (int, float)) and name in limits_of(type(owner)):
            candidates.append((key, limits_of(type(owner))[name], getattr(owner, name)))
    key, (lo, hi), default = draw(st.sampled_from(candidates))
    hi = min(hi, 10**6)
    value = draw(st.sampled_from([lo, hi, (lo + hi) / 2]))
    return f"{key}={int(value) if isinstance(default, int) else float(value)!r}"


@settings(max_examples=15, deadline=None, derandomize=not EXPLORE,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(assignment=edge_assignment(), steps=st.integers(1, 3))
def test_valid_edge_values_run_to_a_finished_asset_or_fail_with_one_line(assignment, steps, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("run")
    code = main(["generate", "a red cube", "--steps", str(steps), "--out", str(out),
                 *[a for s in [*TINY, assignment] for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    runs = list(out.iterdir()) if out.exists() else []
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and not runs, err  # refused: one line, nothing written
        return
    (run_dir,) = runs
    status = read_status(run_dir)["status"]
    if code == 0:
        assert status == "finished" and (run_dir / "asset.glb").is_file() or "mesh_warning" in (
            run_dir / "metrics.json").read_text()
    else:
        assert code == 1 and status == "failed" and err.strip().splitlines()[-1].startswith("error: "), err
        assert not (run_dir / "metrics.json").exists()
