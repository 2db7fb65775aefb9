"""Voxel-grid specifics: post-activation interpolation, upscaling, TV, empty-space skipping, state, init, presets."""
from __future__ import annotations

import json
import math

import pytest
import torch

from representations.cameras import orbit_cameras
from representations.shading import Shading, front_light
from representations.voxel import VoxelConfig, VoxelGrid

pytestmark = pytest.mark.usefixtures("small_exports")  # tests/conftest.py: small bakes and fidelity checks


def small(**kw) -> VoxelGrid:
    return VoxelGrid(VoxelConfig(**{"resolution_start": 8, "resolution": 16, "occupancy": {"resolution": 16}, **kw}), 100)


def test_density_is_interpolated_before_activation():
    torch.manual_seed(0)
    rep = small(upscale_times=0, resolution_start=16)
    with torch.no_grad():
        rep.density_grid.normal_(0, 2.0)
    h = 2.0 / 15
    i, j, k = 3, 7, 10
    a = torch.tensor([-1 + i * h, -1 + j * h, -1 + k * h])
    b = a + torch.tensor([h, 0, 0])
    raw = rep.density_grid.detach()[0]
    with torch.no_grad():
        mid = rep.density(((a + b) / 2)[None])[0]
        at_a = rep.density(a[None])[0]
    expect = math.exp(0.5 * (float(raw[i, j, k]) + float(raw[i + 1, j, k])))  # exp(mean raw), not mean(exp)
    assert float(mid) == pytest.approx(expect, rel=1e-5)
    assert float(at_a) == pytest.approx(math.exp(float(raw[i, j, k])), rel=1e-5)


def test_upscaling_schedule_keeps_the_field_and_the_optimiser():
    rep = VoxelGrid(VoxelConfig(resolution_start=16, resolution=32, upscale_times=2, upscale_until=0.5,
                                occupancy={"resolution": 16}), total_steps=100)
    assert rep.schedule() == {25: 23, 50: 32}
    torch.manual_seed(0)
    pts = torch.rand(500, 3) * 1.6 - 0.8
    cams = orbit_cameras(torch.tensor([30.0]), torch.tensor([15.0]), torch.tensor([2.7]), torch.tensor([47.0]), 16, 16)
    out = rep.render(cams, Shading(front_light(cams.position)))
    (out.rgb.mean() + sum(out.terms.values())).backward()
    rep.after_backward(0)
    before = rep.density(pts).log()
    rep.before_step(25)
    assert rep.resolution == 23 and rep.density_grid.shape == (1, 23, 23, 23)
    state = rep.optimizer.state[rep.density_grid]
    assert state["exp_avg"].shape == rep.density_grid.shape  # moments resampled with the grid
    after = rep.density(pts).log()
    assert (after - before).abs().mean() < 0.05 * before.abs().mean()  # trilinear resampling keeps the field
    rep.before_step(50)
    assert rep.resolution == 32


def test_total_variation_is_zero_only_for_a_constant_grid():
    rep = small(upscale_times=0, resolution_start=8)
    with torch.no_grad():
        rep.density_grid.fill_(2.0)
        rep.color_grid.fill_(-1.0)
    assert float(rep.total_variation().detach()) == 0.0
    with torch.no_grad():
        rep.density_grid[0, 4, 4, 4] += 1.0  # one spike: 6 neighbour differences of 1
    per_axis = 2.0 / (7 * 8 * 8)  # two differences along each axis, mean over 7*8*8 pairs
    assert float(rep.total_variation().detach()) == pytest.approx(3 * per_axis, rel=1e-5)


def test_empty_space_skipping_changes_nothing_but_the_sample_count():
    rep = small(upscale_times=0, resolution_start=16).eval()
    cams = orbit_cameras(torch.tensor([30.0]), torch.tensor([15.0]), torch.tensor([2.7]), torch.tensor([47.0]), 24, 24)
    shading = Shading(front_light(cams.position))
    with torch.no_grad():
        rep.update_occupancy()
        skipped = rep.render(cams, shading)
        n_skipped = rep.last_sample_count
        rep.occupancy.occupied.fill_(True)
        rep.occupancy.bounds.copy_(torch.tensor([[-1.0] * 3, [1.0] * 3]))
        dense = rep.render(cams, shading)
        n_dense = rep.last_sample_count
    assert n_skipped < 0.6 * n_dense
    torch.testing.assert_close(skipped.alpha, dense.alpha, atol=2e-3, rtol=0)
    torch.testing.assert_close(skipped.rgb, dense.rgb, atol=2e-3, rtol=0)


def test_state_round_trip_across_an_upscale():
    rep = VoxelGrid(VoxelConfig(resolution_start=8, resolution=16, upscale_times=1, upscale_until=0.1,
                                occupancy={"resolution": 16}), total_steps=20)
    cams = orbit_cameras(torch.tensor([30.0]), torch.tensor([15.0]), torch.tensor([2.7]), torch.tensor([47.0]), 16, 16)
    for step in range(3):
        rep.before_step(step)
        out = rep.render(cams, Shading(front_light(cams.position)))
        out.alpha.mean().backward()
        rep.after_backward(step)
    assert rep.resolution == 16
    fresh = VoxelGrid(rep.cfg, total_steps=20)
    assert fresh.resolution == 8
    fresh.load_state_tensors(rep.state_tensors())
    pts = torch.rand(100, 3) * 2 - 1
    torch.testing.assert_close(fresh.density(pts), rep.density(pts))
    torch.testing.assert_close(fresh.albedo_at(pts), rep.albedo_at(pts))
    torch.testing.assert_close(fresh.optimizer.state[fresh.density_grid]["exp_avg"],
                               rep.optimizer.state[rep.density_grid]["exp_avg"])


def test_init_from_copies_density_and_colour():
    src = small(upscale_times=0, resolution_start=16)
    with torch.no_grad():
        src.color_grid[0] = 2.0  # reddish
    dst = small()
    dst.init_from(src)
    assert dst.resolution == 16 and dst.schedule() == {}  # already final: no upscaling
    pts = torch.rand(200, 3) * 1.6 - 0.8
    torch.testing.assert_close(dst.density(pts), src.density(pts), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(dst.albedo_at(pts), src.albedo_at(pts), rtol=1e-3, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["voxel", "gaussians"])
def test_every_preset_runs_with(kind, tmp_path):
    """Each shipped preset runs 2 steps with this representation (tests/test_presets.py runs them with the default)."""
    from studio import paths
    from studio.config import build_config, preset_layer
    from studio.run import run

    small_run = ["guidance.model=tiny-random", "camera.resolution=32", "export.mesh_resolution=24",
                 "export.turntable_frames=2", "export.turntable_size=24", "log.checkpoint_every=0",
                 f"representation.kind={kind!r}".replace("'", '"')]
    for name in paths.preset_names():
        cfg = build_config([preset_layer(name), {"prompt": "a red cube", "steps": 2}], small_run)
        assert cfg.representation.kind == kind
        *_, finished = run(cfg, tmp_path / name)
        assert json.loads((finished.run_dir / "status.json").read_text())["status"] == "finished"
        assert (finished.run_dir / "asset.glb").exists(), name


def test_optional_colour_mlp_learns():
    torch.manual_seed(0)
    rep = small(upscale_times=0, resolution_start=16, features=4, hidden=8)
    assert rep.color_grid.shape == (4, 16, 16, 16)
    cams = orbit_cameras(torch.tensor([30.0]), torch.tensor([15.0]), torch.tensor([2.7]), torch.tensor([47.0]), 16, 16)
    out = rep.render(cams, Shading(front_light(cams.position), mode="albedo"))
    (out.rgb - torch.tensor([1.0, 0.0, 0.0])[:, None, None]).square().mean().backward()
    for p in [rep.color_grid, *rep.mlp.parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="features must be 3"):
        VoxelConfig(features=4, hidden=0)
