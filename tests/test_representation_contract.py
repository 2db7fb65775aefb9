"""The Representation contract, checked for EVERY entry of representations.REGISTRY.

A new representation is tested by adding its line to the registry; nothing here names a specific one.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import representations
from representations.base import RenderOut, Representation, for_image_fitting
from representations.cameras import Cameras, orbit_cameras
from representations.mesh import Mesh
from representations.shading import Shading, light_near_camera

pytestmark = pytest.mark.usefixtures("small_exports")  # tests/conftest.py: small bakes and fidelity checks

KINDS = sorted(representations.REGISTRY)


def make(kind: str, steps: int = 100) -> Representation:
    cls = representations.get(kind)
    cfg = cls.Config()
    assert cfg.kind == kind
    return cls(cfg, total_steps=steps)


def cameras(gen: torch.Generator, n: int, height: int, width: int) -> Cameras:
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)  # noqa: E731
    return orbit_cameras(u(-180, 180), u(-10, 45), u(2.4, 3.0), u(40, 55), height, width)


def lit(cams: Cameras, gen: torch.Generator, mode: str = "lambertian") -> Shading:
    return Shading(light_near_camera(cams.position, gen), mode=mode)


def sphere_alpha(cams: Cameras, radius: float = 0.6) -> torch.Tensor:
    """[B, 1, H, W] silhouette of a sphere at the origin."""
    o, d = (x.reshape(-1, 3) for x in cams.rays())
    b = (o * d).sum(-1)
    hit = b * b - (o * o).sum(-1) + radius**2 > 0
    return hit.float().view(len(cams), 1, cams.height, cams.width)


def trainable(rep: Representation) -> list[tuple[str, torch.nn.Parameter]]:
    params = [(n, p) for n, p in rep.named_parameters() if p.requires_grad]
    assert params, "a representation must have trainable parameters"
    return params


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["lambertian", "textureless", "albedo"])
def test_render_shapes_dtypes_and_ranges(kind, mode):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    rep = make(kind)
    rep.before_step(0)
    cams = cameras(gen, 2, height=24, width=32)
    out = rep.render(cams, lit(cams, gen, mode))
    assert isinstance(out, RenderOut)
    B, H, W = 2, 24, 32
    expect = {"rgb": 3, "alpha": 1, "depth": 1, "normal": 3, "albedo": 3}
    for name, channels in expect.items():
        x = getattr(out, name)
        if x is None and name in ("normal", "albedo"):
            continue
        assert x.shape == (B, channels, H, W), name
        assert x.dtype == torch.float32, name
        assert torch.isfinite(x).all(), name
    assert out.rgb.min() >= 0 and out.rgb.max() <= 1
    assert out.alpha.min() >= 0 and out.alpha.max() <= 1
    assert out.depth.min() >= 0
    if out.albedo is not None:
        assert out.albedo.min() >= 0 and out.albedo.max() <= 1
    if out.normal is not None:
        assert out.normal.norm(dim=1).max() <= 1 + 1e-4
    # white background where nothing is rendered
    empty = out.alpha[:, 0] < 1e-6
    assert empty.any()
    assert torch.allclose(out.rgb.permute(0, 2, 3, 1)[empty], torch.ones(3), atol=1e-5)
    for name, term in out.terms.items():
        assert term.ndim == 0 and torch.isfinite(term), name


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter(kind):
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(1)
    rep = make(kind)
    rep.before_step(0)
    cams = cameras(gen, 2, 24, 32)
    out = rep.render(cams, lit(cams, gen))
    ((out.rgb - 0.3).square().mean() + out.alpha.mean()).backward()
    for name, p in trainable(rep):
        assert p.grad is not None, f"{name}: no gradient through rgb/alpha"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient through rgb/alpha"

    rep.zero_grad(set_to_none=True)
    out = rep.render(cams, lit(cams, gen))
    terms = [t for t in out.terms.values() if t.requires_grad]
    if not terms:
        pytest.skip("no differentiable regularisers at the default weights")
    sum(terms).backward()
    grads = [p.grad for _, p in trainable(rep) if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads), "terms do not reach any parameter"


@pytest.mark.parametrize("kind", KINDS)
def test_after_backward_steps_and_zeroes_gradients(kind):
    torch.manual_seed(2)
    gen = torch.Generator().manual_seed(2)
    rep = make(kind)
    assert rep.optimizers(), "a representation owns its optimisers"
    rep.before_step(0)
    cams = cameras(gen, 1, 24, 32)
    out = rep.render(cams, lit(cams, gen))
    ((out.alpha - sphere_alpha(cams)).square().mean() + sum(out.terms.values())).backward()
    before = {n: p.detach().clone() for n, p in trainable(rep)}
    rep.after_backward(0)
    changed = [n for n, p in trainable(rep) if not torch.equal(before[n], p.detach())]
    assert changed, "after_backward did not change any parameter"
    for name, p in trainable(rep):
        assert p.grad is None or not p.grad.any(), f"{name}: gradient not zeroed"


def _step(rep: Representation, cams: Cameras, shading: Shading, step: int, seed: int) -> RenderOut:
    torch.manual_seed(seed)  # renders may jitter samples
    rep.before_step(step)
    out = rep.render(cams, shading)
    ((out.alpha - sphere_alpha(cams)).square().mean() + sum(out.terms.values())).backward()
    rep.after_backward(step)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_state_round_trip(kind):
    gen = torch.Generator().manual_seed(3)
    rep = make(kind)
    for step in range(3):
        cams = cameras(gen, 1, 24, 32)
        _step(rep, cams, lit(cams, gen), step, seed=step)
    state = rep.state_tensors()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert any(k.startswith("optim.") for k in state), "optimiser moments are part of the state"
    fresh = make(kind)
    fresh.load_state_tensors({k: v.clone() for k, v in state.items()})

    cams = cameras(gen, 2, 24, 32)
    shading = lit(cams, gen)
    for r in (rep, fresh):
        r.eval()
    with torch.no_grad():
        torch.manual_seed(10)
        a = rep.render(cams, shading)
        torch.manual_seed(10)
        b = fresh.render(cams, shading)
    for name in ("rgb", "alpha", "depth"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-6, rtol=0)
    # ... and training continues identically (same optimiser moments)
    for r in (rep, fresh):
        r.train()
        _step(r, cams, shading, 3, seed=11)
    for (name, p), (_, q) in zip(trainable(rep), trainable(fresh)):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_extract_mesh_after_fitting_a_sphere(kind):
    import trimesh

    torch.manual_seed(4)
    gen = torch.Generator().manual_seed(4)
    rep = make(kind, steps=40)
    rep.cfg = for_image_fitting(rep.cfg)  # the terms tuned against SDS distort an image fit (base.DISTILLATION_TUNED)
    for step in range(40):
        cams = cameras(gen, 1, 32, 32)
        _step(rep, cams, lit(cams, gen), step, seed=100 + step)
    mesh = rep.extract_mesh(resolution=48)
    assert isinstance(mesh, Mesh) and not mesh.is_empty
    assert mesh.vertices.dtype == np.float32 and mesh.vertices.shape[1] == 3
    assert mesh.faces.dtype == np.int64 and mesh.faces.shape[1] == 3
    assert mesh.faces.min() >= 0 and mesh.faces.max() < len(mesh.vertices)
    assert np.isfinite(mesh.vertices).all()
    assert mesh.colors is not None and mesh.colors.shape == mesh.vertices.shape
    assert mesh.colors.min() >= 0 and mesh.colors.max() <= 1
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=True)
    assert tm.volume > 0, "faces must wind counter-clockwise seen from outside"
    r = np.linalg.norm(tm.vertices, axis=1)
    assert 0.4 < np.median(r) < 0.8, "the mesh should be about the fitted sphere"
    edges = trimesh.grouping.group_rows(tm.edges_sorted, require_count=1)
    assert len(edges) <= 0.01 * len(tm.edges_unique), "mostly watertight"


# ---- the config: sections, TOML round trip, keys that moved --------------------------------------------------
def _sections(cfg) -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))]


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trips_through_toml(kind):
    from studio.config import build_config, config_from_toml, config_to_toml

    cfg = build_config([{"prompt": "x", "representation": {"kind": kind}}])
    assert cfg.representation == representations.get(kind).Config()
    assert config_from_toml(config_to_toml(cfg)).representation == cfg.representation


@pytest.mark.parametrize("kind", KINDS)
def test_setting_one_key_of_a_section_keeps_the_kinds_other_defaults(kind):
    """`--set representation.SECTION.KEY=...` changes that key only: the section's other keys keep this
    representation's defaults (the NeRF's regulariser weights are not VolumeRegularizers()'s)."""
    import dataclasses

    from studio.config import build_config

    default = representations.get(kind).Config()
    for name in _sections(default):
        section = getattr(default, name)
        leaf = next(f.name for f in dataclasses.fields(section) if type(getattr(section, f.name)) in (int, float))
        value = getattr(section, leaf) + 1
        cfg = build_config([{"prompt": "x", "representation": {"kind": kind}}],
                           [f"representation.{name}.{leaf}={value}"]).representation
        assert getattr(cfg, name) == dataclasses.replace(section, **{leaf: value}), name


@pytest.mark.parametrize("kind", sorted(representations.MOVED_KEYS))
def test_an_old_config_toml_with_flat_keys_still_loads(kind):
    """A config.toml written before the shared fields became sections (`density_bias`, `occ_threshold`, ...)
    loads with every old key's value in its new place; an explicit new key wins over an old one."""
    import tomllib

    import tomli_w

    from studio.config import build_config, config_from_toml, config_to_toml

    cfg = build_config([{"prompt": "x", "representation": {"kind": kind}}])
    old_table, expected = {"kind": kind}, {}
    from studio.limits import limits_of

    for i, (old_key, new_key) in enumerate(representations.MOVED_KEYS[kind].items()):
        section, leaf = new_key.split(".")
        owner = getattr(cfg.representation, section)
        default, (lo, hi) = getattr(owner, leaf), limits_of(type(owner))[leaf]
        step = 1 if isinstance(default, int) else 0.001 * (i + 1)
        value = default + step if default + step <= hi else default - step  # unlike the default, in its range
        assert lo <= value <= hi, new_key
        old_table[old_key] = expected[new_key] = value
    old_file = {**tomllib.loads(config_to_toml(cfg)), "representation": old_table}
    loaded = config_from_toml(tomli_w.dumps(old_file)).representation
    for new_key, value in expected.items():
        section, leaf = new_key.split(".")
        assert getattr(getattr(loaded, section), leaf) == value, new_key
    # the same keys through the layers (an old file passed to --config, or --set), and a new key beside an old one
    layered = build_config([{"prompt": "x", "representation": {"kind": kind, "density_bias": 0.25}}],
                           ["representation.blob.bias=0.5", "representation.blob_scale=7.0"]).representation
    assert (layered.blob.bias, layered.blob.scale) == (0.5, 7.0)


def test_upgrade_keys_moves_only_the_kinds_moved_keys():
    old = {"kind": "nerf", "density_bias": 0.0, "blob": {"scale": 2.0}, "hidden": 16}
    assert representations.upgrade_keys("nerf", old) == {"kind": "nerf", "blob": {"scale": 2.0, "bias": 0.0},
                                                           "hidden": 16}
    assert old["density_bias"] == 0.0, "the table passed in is not changed"
    assert representations.upgrade_keys("nerf", {"density_bias": 1.0, "blob": {"bias": 2.0}}) == {"blob": {"bias": 2.0}}
    assert representations.upgrade_keys("gaussians", {"sparsity_weight": 0.0}) == {"sparsity_weight": 0.0}


@pytest.mark.parametrize("kind", KINDS)
def test_for_image_fitting_turns_off_only_the_distillation_tuned_weights(kind):
    from representations.base import DISTILLATION_TUNED

    cfg = representations.get(kind).Config()
    fitted = for_image_fitting(cfg)
    assert fitted is not cfg
    weights = getattr(cfg, "regularizers", None)
    if weights is None:
        assert fitted == cfg
        return
    for name in DISTILLATION_TUNED:
        assert getattr(fitted.regularizers, name) == 0.0
    untouched = [n for n in vars(weights) if n not in DISTILLATION_TUNED]
    assert all(getattr(fitted.regularizers, n) == getattr(weights, n) for n in untouched)
    assert fitted.regularizers is not cfg.regularizers
