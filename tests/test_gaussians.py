"""Gaussians specifics: normals, colour convention, densify/prune, state, splat.ply, init_from, CLI end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from representations.cameras import orbit_cameras
from representations.gaussians import SH_C0, Gaussians, GaussiansConfig
from representations.ops.splat import quat_to_rotmat
from representations.shading import Shading, front_light
from studio.splat import read_splat_ply, write_splat_ply

pytestmark = pytest.mark.usefixtures("small_exports")  # tests/conftest.py: small bakes and fidelity checks


def cams(n: int = 1, size: int = 24):
    az = torch.linspace(-150, 150, n)
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    return orbit_cameras(az, full(15), full(2.7), full(47), size, size)


def test_normals_are_the_shortest_axis_turned_toward_the_camera():
    torch.manual_seed(0)
    rep = Gaussians(GaussiansConfig(num_init=200), 100)
    with torch.no_grad():
        rep.quats.normal_()
        rep.log_scales.normal_(-3, 1)
    c = cams(3)
    n = rep.normals(c.position)  # [3, N, 3]
    R = quat_to_rotmat(rep.quats.detach())
    shortest = R[torch.arange(200), :, rep.log_scales.argmin(-1)]  # [N, 3]
    to_cam = c.position[:, None, :] - rep.means.detach()[None]
    assert ((n * to_cam).sum(-1) >= 0).all()
    torch.testing.assert_close((n * shortest[None]).sum(-1).abs(), torch.ones(3, 200))


def test_colour_follows_the_3dgs_convention():
    rep = Gaussians(GaussiansConfig(num_init=10), 100)
    with torch.no_grad():
        rep.sh_dc.fill_(0.3 / SH_C0)
    torch.testing.assert_close(rep.colors(), torch.full((10, 3), 0.8))


def test_densify_and_prune_moves_rows_and_their_adam_moments():
    torch.manual_seed(1)
    cfg = GaussiansConfig(num_init=100, densify_fraction=0.1, split_scale=0.05, prune_opacity=0.02)
    rep = Gaussians(cfg, 100)
    c = cams(1)
    out = rep.render(c, Shading(front_light(c.position)))
    out.rgb.mean().backward()
    rep.after_backward(1)  # not a densification step: one Adam step
    with torch.no_grad():
        rep.log_scales[:5] = np.log(0.1)  # big: split
        rep.log_scales[5:10] = np.log(0.01)  # small: clone
        rep.opacity_logits[90:] = -8.0  # transparent: pruned
    rep._grad_sum = torch.zeros(100)
    rep._grad_sum[:10] = 1.0 + torch.arange(10.0)
    rep._grad_count = 1
    means = rep.means.detach().clone()
    moment = rep.optimizer.state[rep.means]["exp_avg"].clone()
    rep.densify_and_prune()
    assert rep.count == 100 + 10 - 10
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh_dc", "sh_rest"):
        assert getattr(rep, name).shape[0] == 100
    # the survivors 10..89 keep their rows, values and moments
    torch.testing.assert_close(rep.means[10:90].detach(), means[10:90])
    torch.testing.assert_close(rep.optimizer.state[rep.means]["exp_avg"][10:90], moment[10:90])
    # new rows (90..99: copies of 0..9) start with zero moments
    assert not rep.optimizer.state[rep.means]["exp_avg"][90:].any()
    # new rows come in order of decreasing gradient: 90..99 are children of 9, 8, ..., 0
    parents = torch.arange(9, -1, -1)
    m = rep.means.detach()
    torch.testing.assert_close(m[90:95], m[parents[:5]])  # clones sit on their parent
    assert torch.allclose(rep.log_scales[:5].detach(), torch.full((5, 3), np.log(0.1 / 1.6)))
    torch.testing.assert_close(rep.log_scales[95:].detach(), rep.log_scales[parents[5:]].detach())
    assert ((m[95:] - m[parents[5:]]).norm(dim=-1) > 1e-4).all()  # split halves are displaced
    # and training goes on with the new rows
    out = rep.render(c, Shading(front_light(c.position)))
    (out.rgb.mean() + sum(out.terms.values())).backward()
    rep.after_backward(2)


def test_state_round_trip_after_densification():
    torch.manual_seed(2)
    rep = Gaussians(GaussiansConfig(num_init=64, densify_from=1, densify_every=1, densify_fraction=0.25), 10)
    c = cams(1)
    for step in range(3):
        out = rep.render(c, Shading(front_light(c.position)))
        out.alpha.mean().backward()
        rep.after_backward(step)
    assert rep.count != 64
    fresh = Gaussians(rep.cfg, 10)
    fresh.load_state_tensors(rep.state_tensors())
    assert fresh.count == rep.count
    with torch.no_grad():
        a, b = rep.render(c, Shading(front_light(c.position))), fresh.render(c, Shading(front_light(c.position)))
    torch.testing.assert_close(a.rgb, b.rgb)


def test_splat_ply_of_a_scene_renders_the_same_scene(tmp_path):
    torch.manual_seed(3)
    rep = Gaussians(GaussiansConfig(num_init=300), 10)
    with torch.no_grad():
        rep.quats.normal_()
        rep.sh_dc.normal_()
    t = rep.splat_tensors()
    assert {k: tuple(v.shape) for k, v in t.items()} == {
        "means": (300, 3), "log_scales": (300, 3), "quats": (300, 4), "opacity_logits": (300,),
        "sh_dc": (300, 3), "sh_rest": (300, 0, 3)}
    torch.testing.assert_close(t["quats"].norm(dim=-1), torch.ones(300))
    back = read_splat_ply(write_splat_ply(tmp_path / "splat.ply", t))
    other = Gaussians(GaussiansConfig(num_init=1), 10)
    other.load_state_tensors({f"model.{k}": v for k, v in back.items()})
    c = cams(2)
    with torch.no_grad():
        a = rep.render(c, Shading(front_light(c.position)))
        b = other.render(c, Shading(front_light(c.position)))
    torch.testing.assert_close(a.rgb, b.rgb, atol=1e-5, rtol=0)


def test_init_from_puts_gaussians_where_the_source_is_dense():
    from representations.voxel import VoxelConfig, VoxelGrid

    src = VoxelGrid(VoxelConfig(resolution_start=16, resolution=16, blob={"radius": 0.3}), 10)
    with torch.no_grad():
        src.color_grid[:] = torch.tensor([3.0, -3.0, -3.0])[:, None, None, None]  # red
    rep = Gaussians(GaussiansConfig(num_init=500), 10)
    rep.init_from(src)
    assert rep.count == 500
    r = rep.means.detach().norm(dim=-1)
    assert float(r.max()) < 0.45  # inside the dense part of the blob
    col = rep.colors()
    assert (col[:, 0] > 0.9).all() and (col[:, 1:] < 0.1).all()


@pytest.mark.slow
def test_cli_gaussians_from_a_voxel_run_writes_glb_and_splat(tmp_path, capsys):
    import trimesh

    from studio.cli import main

    fast = ["--model", "tiny-random", "--set", "camera.resolution=32", "--set", "export.mesh_resolution=32",
            "--set", "export.turntable_frames=0", "--steps", "2"]
    assert main(["generate", "a red cube", "--representation", "voxel", "--out", str(tmp_path / "a"), *fast]) == 0
    voxel_run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert (voxel_run / "asset.glb").exists() and not (voxel_run / "splat.ply").exists()
    code = main(["generate", "a red cube", "--representation", "gaussians", "--init-from", str(voxel_run),
                 "--out", str(tmp_path / "b"), *fast])
    out = capsys.readouterr().out
    assert code == 0
    run_dir = Path(out.strip().splitlines()[-1])
    assert f"splat: {run_dir / 'splat.ply'}" in out
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    splat = read_splat_ply(run_dir / "splat.ply")
    assert splat["means"].shape[0] > 100
    assert len(trimesh.load(run_dir / "asset.glb", force="mesh").faces) > 0
    (run_dir / "splat.ply").unlink()
    assert main(["export", str(run_dir), "--format", "splat"]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "splat.ply")
    torch.testing.assert_close(read_splat_ply(run_dir / "splat.ply")["means"], splat["means"])
    # a voxel run has no Gaussians: one line, exit 2
    assert main(["export", str(voxel_run), "--format", "splat"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a Gaussian scene" in err[0]


def test_large_albedo_queries_use_the_voxelised_field_and_agree_with_the_exact_one():
    """A texture bake asks for ~10^6 points: those go through the 128³ voxelised weighted mean (fast), which
    must agree with the exact every-Gaussian mean where the Gaussians are."""
    torch.manual_seed(0)
    rep = Gaussians(GaussiansConfig(), 100)
    with torch.no_grad():
        rep.sh_dc.copy_(torch.randn_like(rep.sh_dc))
        pts = rep.means[:1500] + 0.02 * torch.randn(1500, 3)
        exact = rep.albedo_at(pts)
        via_grid = rep.albedo_at(pts.repeat(50, 1), grid_above=10_000)[:1500]
    assert not torch.equal(exact, via_grid)  # the grid path really ran
    assert (exact - via_grid).abs().mean() < 0.1 * exact.std()


def test_voxelisation_is_recomputed_after_an_optimiser_step():
    """The cached voxelisation (shared by mesh extraction and the bake) must not outlive a training step: the
    fused Adam step changes the parameters in place without bumping their version counters."""
    torch.manual_seed(0)
    rep = Gaussians(GaussiansConfig(), 100)
    before = rep._voxels(24)[0].clone()
    assert rep._voxels(24)[0] is rep._voxels(24)[0]  # cached while nothing changes
    cams = orbit_cameras(torch.tensor([0.0]), torch.tensor([20.0]), torch.tensor([2.6]), torch.tensor([45.0]), 32, 32)
    out = rep.render(cams, Shading(torch.tensor([[0.0, 0.0, 1.0]]), "albedo"))
    (out.rgb - 1.0).abs().mean().backward()  # push towards white: moves opacities and colours
    rep.after_backward(0)
    assert not torch.equal(rep._voxels(24)[0], before)
