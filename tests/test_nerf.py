"""NeRF-specific behaviour: the hash encoding, compositing, occupancy skipping, initialisation, fitting."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from representations.cameras import Cameras, orbit_cameras, ring_cameras
from representations.base import for_image_fitting
from representations.hashgrid import (
    HashGrid, HashGridConfig, hash_encode_reference, hash_mlp, hash_mlp_reference, plan_levels,
)
from representations.marched import BlobConfig
from representations.nerf import NeRF, NeRFConfig
from representations.occupancy import OccupancyGrid, march, ray_box
from representations.shading import Shading, front_light, shade
from representations.volume import accumulate, composite_dense, render_weights


def sphere_hit(cams: Cameras, radius: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """(hit [R] bool, surface points [R, 3]) of each pixel's ray with a sphere at the origin."""
    o, d = (x.reshape(-1, 3) for x in cams.rays())
    b = (o * d).sum(-1)
    disc = b * b - (o * o).sum(-1) + radius**2
    t = -b - disc.clamp(min=0).sqrt()
    return disc > 0, o + t[:, None] * d


def sphere_image(cams: Cameras, shading: Shading, radius: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """(rgb [B, 3, H, W], alpha [B, 1, H, W]) of a Lambertian sphere with position-dependent albedo on white."""
    B, H, W = len(cams), cams.height, cams.width
    hit, p = sphere_hit(cams, radius)
    n = p / radius
    albedo = 0.5 + 0.4 * n * torch.tensor([1.0, -1.0, 1.0])
    lit = shade(albedo.view(B, -1, 3), n.view(B, -1, 3), shading).reshape(-1, 3)
    rgb = torch.where(hit[:, None], lit, torch.ones_like(lit))
    return rgb.view(B, H, W, 3).permute(0, 3, 1, 2), hit.float().view(B, 1, H, W)


def random_cameras(gen: torch.Generator, n: int = 1, size: int = 32) -> Cameras:
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)  # noqa: E731
    return orbit_cameras(u(-180, 180), u(-10, 45), u(2.4, 3.0), u(40, 55), size, size)


# -- hash grid --------------------------------------------------------------------------------------


@pytest.mark.parametrize("features", [2, 4])
def test_hash_grid_matches_reference_forward_and_backward(features):
    torch.manual_seed(0)
    grid = HashGrid(HashGridConfig(levels=6, features=features, log2_table=12, base_resolution=4, max_resolution=64))
    assert any(lv.dense for lv in grid.levels) and any(not lv.dense for lv in grid.levels)
    torch.nn.init.normal_(grid.table)
    pts = torch.rand(5000, 3) * 2.4 - 1.2  # some outside the box: clamped
    fast, ref = grid(pts), hash_encode_reference(grid, pts)
    assert fast.shape == (5000, 6 * features)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(fast)
    (g_fast,) = torch.autograd.grad((fast * g).sum(), grid.table)
    (g_ref,) = torch.autograd.grad((ref * g).sum(), grid.table)
    torch.testing.assert_close(g_fast, g_ref, atol=1e-4, rtol=1e-4)


def test_dense_level_equals_grid_sample():
    """A level stored densely is plain trilinear interpolation of a vertex grid."""
    torch.manual_seed(1)
    grid = HashGrid(HashGridConfig(levels=1, features=2, log2_table=15, base_resolution=15, max_resolution=15))
    (lv,) = grid.levels
    assert lv.dense and lv.resolution == 15
    torch.nn.init.normal_(grid.table)
    v = torch.arange(16)
    x, y, z = torch.meshgrid(v, v, v, indexing="ij")
    entry = lv.offset + x * lv.multipliers[0] + y * lv.multipliers[1] + z * lv.multipliers[2]  # [16, 16, 16]
    feats = grid.table.permute(0, 2, 1).reshape(2, -1)[:, entry]  # [F, x, y, z]
    volume = feats.permute(0, 3, 2, 1)[None]  # [1, F, D=z, H=y, W=x]
    pts = torch.rand(3000, 3) * 2 - 1
    expected = F.grid_sample(volume, pts[None, :, None, None, :], align_corners=True)[0, :, :, 0, 0].t()
    torch.testing.assert_close(grid(pts), expected, atol=1e-5, rtol=1e-5)


def test_hash_grid_gradient_matches_finite_differences():
    """The encoding is linear in the table: perturbing an entry changes the output by exactly grad * delta."""
    torch.manual_seed(2)
    grid = HashGrid(HashGridConfig(levels=4, log2_table=10, base_resolution=4, max_resolution=32))
    torch.nn.init.normal_(grid.table)
    pts = torch.rand(300, 3) * 2 - 1
    w = torch.randn(300, grid.out_dim)
    loss = lambda: (grid(pts) * w).sum()  # noqa: E731
    (g,) = torch.autograd.grad(loss(), grid.table)
    touched = g.abs().flatten().topk(5).indices
    for i in touched.tolist():
        with torch.no_grad():
            base = loss().item()
            grid.table.view(-1)[i] += 0.5
            changed = loss().item()
            grid.table.view(-1)[i] -= 0.5
        assert changed - base == pytest.approx(0.5 * g.view(-1)[i].item(), rel=1e-3, abs=1e-3)


def test_level_plan_offsets_are_aligned_and_disjoint():
    levels = plan_levels(HashGridConfig(levels=10, log2_table=14, base_resolution=8, max_resolution=512))
    assert levels[0].dense and not levels[-1].dense
    assert [lv.resolution for lv in levels] == sorted(lv.resolution for lv in levels)
    spans = sorted((lv.offset, lv.offset + lv.size) for lv in levels)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert all(lv.offset % lv.size == 0 for lv in levels)  # lets the offset be xor-ed in
    with pytest.raises(ValueError):
        plan_levels(HashGridConfig(features=3))


def test_fused_hash_mlp_matches_unfused():
    torch.manual_seed(3)
    grid = HashGrid(HashGridConfig(levels=4, log2_table=12, base_resolution=4, max_resolution=64))
    torch.nn.init.normal_(grid.table, std=0.5)
    layers = [torch.nn.Linear(8, 16), torch.nn.Linear(16, 16), torch.nn.Linear(16, 4)]
    W, b = [l.weight for l in layers], [l.bias for l in layers]
    pts = torch.rand(9000, 3) * 2 - 1  # > one chunk
    fast, ref = hash_mlp(grid, W, b, pts), hash_mlp_reference(grid, W, b, pts)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(fast)
    params = [grid.table, *W, *b]
    for a, r in zip(torch.autograd.grad((fast * g).sum(), params), torch.autograd.grad((ref * g).sum(), params)):
        torch.testing.assert_close(a, r, atol=1e-3, rtol=1e-4)


# -- compositing and marching -----------------------------------------------------------------------


def test_packed_compositing_equals_dense():
    torch.manual_seed(4)
    R, M = 7, 20
    sigma = (torch.rand(R, M) * 5).requires_grad_()
    keep = torch.rand(R, M) > 0.4
    dense_w = composite_dense(sigma * keep, 0.1)
    rows, cols = keep.nonzero(as_tuple=True)
    w, trans = render_weights(sigma[rows, cols], 0.1, rows)
    torch.testing.assert_close(w, dense_w[rows, cols], atol=1e-6, rtol=1e-5)
    alpha = accumulate(w, None, rows, R)
    torch.testing.assert_close(alpha, dense_w.sum(1), atol=1e-6, rtol=1e-5)
    depth = accumulate(w, cols.float()[:, None], rows, R)[:, 0]
    torch.testing.assert_close(depth, (dense_w * torch.arange(M)).sum(1), atol=1e-5, rtol=1e-5)
    (g1,) = torch.autograd.grad(alpha.sum() + depth.sum(), sigma)
    (g2,) = torch.autograd.grad(dense_w.sum() + (dense_w * torch.arange(M)).sum(), sigma)
    torch.testing.assert_close(g1, g2 * keep, atol=1e-5, rtol=1e-4)
    assert torch.all(trans <= 1) and torch.all(trans > 0)


def test_ray_box_and_dense_march_cover_the_chord():
    o = torch.tensor([[0.0, 0.0, 3.0], [0.0, 5.0, 3.0], [0.2, 0.1, 0.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    tn, tf = ray_box(o, d, 1.0)
    assert tn[0].item() == pytest.approx(2.0) and tf[0].item() == pytest.approx(4.0)
    assert tf[1] <= tn[1]  # misses
    assert tn[2].item() == 0.0 and tf[2].item() == pytest.approx(0.8)  # starts inside
    s = march(o, d, 1.0, step=0.1)
    counts = torch.bincount(s.ray_ids, minlength=3)
    assert counts.tolist() == [20, 0, 8]
    assert torch.all(s.points.abs() <= 1.0 + 1e-6)
    assert torch.all(s.ray_ids[1:] >= s.ray_ids[:-1])


def test_occupancy_grid_marks_dense_cells_and_dilates():
    grid = OccupancyGrid(resolution=16, bound=1.0, threshold=0.5, dilation=1)
    grid.update(lambda p: (p.abs().amax(dim=-1) < 0.25).float() * 10.0)  # a cube of 4^3 cells (cell = 0.125)
    occ = lambda x: grid.is_occupied(torch.tensor([[x, 0.0, 0.1]])).item()  # noqa: E731
    assert occ(0.0) and occ(0.2)
    assert occ(0.3)  # first cell outside the cube: dilation
    assert not occ(0.45) and not occ(0.9)
    torch.testing.assert_close(grid.bounds, torch.tensor([[-0.375] * 3, [0.375] * 3]))


def test_empty_occupancy_grid_falls_back_to_sampling_everywhere():
    grid = OccupancyGrid(resolution=8)
    grid.update(lambda p: torch.zeros(len(p)))
    assert grid.occupied.all()
    model = NeRF(NeRFConfig(blob={"bias": -200.0}), total_steps=1)  # density exactly 0 in float32
    cams = ring_cameras(1, 16)
    out = model.render(cams, Shading(front_light(cams.position)))
    out.rgb.sum().backward()  # still connected to the parameters
    assert model.encoder.table.grad is not None


def test_occupancy_skipping_renders_like_dense_sampling():
    torch.manual_seed(5)
    # skipping only (early stop has its own test); a faint start whose sub-threshold tail is negligible
    model = NeRF(NeRFConfig(march={"early_stop_depth": 0.0}, blob={"bias": -7.0}), total_steps=100).eval()
    cams = ring_cameras(2, 32)
    shading = Shading(front_light(cams.position))
    model.update_occupancy(full=True)
    skipped = model.render(cams, shading)
    n_skipped = model.last_sample_count
    model.occupancy.occupied.fill_(True)
    model.occupancy.bounds.copy_(torch.tensor([[-1.0] * 3, [1.0] * 3]))
    dense = model.render(cams, shading)
    assert n_skipped < 0.5 * model.last_sample_count
    torch.testing.assert_close(skipped.alpha, dense.alpha, atol=2e-4, rtol=0)
    torch.testing.assert_close(skipped.rgb, dense.rgb, atol=2e-4, rtol=0)


# -- initialisation and fitting ---------------------------------------------------------------------


def test_initial_field_is_a_small_visible_centred_blob():
    torch.manual_seed(6)
    model = NeRF(NeRFConfig(), total_steps=100).eval()
    cams = ring_cameras(4, 32)
    out = model.render(cams, Shading(front_light(cams.position)))
    centre = out.alpha[:, 0, 15:17, 15:17].mean()
    assert 0.4 < centre < 0.9
    assert out.alpha.mean() < 0.06
    assert out.alpha[:, 0, 0, :].max() < 1e-3  # top rows: rays far from the centre
    radii = torch.tensor([0.0, 0.3, 0.6, 0.9])
    dens = model.density(radii[:, None] * torch.tensor([[0.6, 0.0, 0.8]]))
    assert torch.all(dens[:-1] > dens[1:])


def test_surface_normals_point_outward_for_a_radial_field():
    cfg = NeRFConfig(blob=BlobConfig(bias=0.0, scale=20.0, radius=0.5))
    model = NeRF(cfg, total_steps=10)
    with torch.no_grad():
        model.encoder.table.zero_()
    v = torch.randn(200, 3)
    v = v / v.norm(dim=1, keepdim=True)
    n = model.surface_normals(0.5 * v)
    assert torch.allclose(n.norm(dim=1), torch.ones(200), atol=1e-4)
    assert (n * v).sum(1).min() > 0.99


def fit(model: NeRF, steps: int, gen: torch.Generator, alpha_weight: float = 1.0, size: int = 32) -> list[float]:
    losses = []
    for step in range(steps):
        cams = random_cameras(gen, size=size)
        shading = Shading(front_light(cams.position))
        model.before_step(step)
        out = model.render(cams, shading)
        rgb, alpha = sphere_image(cams, shading)
        loss = (out.rgb - rgb).square().mean() + alpha_weight * (out.alpha - alpha).square().mean()
        (loss + sum(out.terms.values())).backward()
        model.after_backward(step)
        losses.append(loss.item())
    return losses


def test_fitting_a_target_image_reduces_the_loss():
    torch.manual_seed(7)
    model = NeRF(for_image_fitting(NeRFConfig()), total_steps=60)  # see base.DISTILLATION_TUNED
    cams = ring_cameras(1, 32, elevation_deg=20.0)
    shading = Shading(front_light(cams.position))
    target, _ = sphere_image(cams, shading)
    losses = []
    for step in range(50):
        model.before_step(step)
        loss = (model.render(cams, shading).rgb - target).square().mean()
        loss.backward()
        model.after_backward(step)
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]


@pytest.fixture(scope="module")
def fitted() -> NeRF:
    torch.manual_seed(8)
    model = NeRF(for_image_fitting(NeRFConfig()), total_steps=80)  # see base.DISTILLATION_TUNED
    fit(model, 80, torch.Generator().manual_seed(8))
    return model.eval()


def test_fitted_sphere_has_the_right_silhouette_and_early_termination_is_harmless(fitted):
    cams = ring_cameras(3, 32, elevation_deg=20.0)
    shading = Shading(front_light(cams.position))
    out = fitted.render(cams, shading)
    _, target = sphere_image(cams, shading)
    iou = ((out.alpha > 0.5) & (target > 0.5)).sum() / ((out.alpha > 0.5) | (target > 0.5)).sum()
    assert iou > 0.85
    with_stop = fitted.last_sample_count
    fitted.cfg.march.early_stop_depth = 0.0
    try:
        full = fitted.render(cams, shading)
    finally:
        fitted.cfg.march.early_stop_depth = NeRFConfig().march.early_stop_depth
    assert with_stop < 0.9 * fitted.last_sample_count
    assert (out.alpha - full.alpha).abs().max() < 2e-3
    assert (out.rgb - full.rgb).abs().max() < 0.02


def test_occupancy_update_schedule_and_state():
    model = NeRF(NeRFConfig(occupancy={"update_every": 4}), total_steps=10)
    model.before_step(0)
    assert int(model.occupancy.updates) == 1
    for step in range(1, 4):
        model.before_step(step)
    assert int(model.occupancy.updates) == 1
    model.before_step(4)
    assert int(model.occupancy.updates) == 2
    assert "model.occupancy.density" in model.state_tensors()


def test_config_rejects_unknown_choices():
    with pytest.raises(ValueError, match="density_activation"):
        NeRFConfig(density_activation="relu")
    with pytest.raises(ValueError, match="normals"):
        NeRFConfig(normals="magic")
    assert NeRFConfig(grid={"levels": 4}).grid.levels == 4


def test_softplus_and_no_normals_variants_render():
    model = NeRF(NeRFConfig(density_activation="softplus", normals="none", split_features=False), total_steps=10)
    cams = ring_cameras(1, 16)
    out = model.render(cams, Shading(front_light(cams.position)))
    assert out.normal is None and "orient" not in out.terms
    assert torch.isfinite(out.rgb).all()
    assert math.isclose(float(out.rgb.detach().max()), 1.0, abs_tol=1e-6)


def test_coherence_term_penalises_specks_and_trains_the_density():
    """coherence_weight > 0 adds mean|a(x) - a(x + r)| over marched samples in training mode only; a field of
    isolated specks scores higher than the smooth blob it started as, and the term reaches the hash table."""
    torch.manual_seed(0)
    cams = random_cameras(torch.Generator().manual_seed(1), size=24)
    shading = Shading(front_light(cams.position), "albedo")
    rep = NeRF(NeRFConfig(coherence_weight=1.0, blob={"bias": 0.0}), 10)
    smooth = rep.render(cams, shading).terms["coherence"]
    assert smooth.requires_grad and float(smooth.detach()) >= 0.0
    smooth.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in rep.parameters())
    with torch.no_grad():  # specks: large random values in every hash-table entry
        rep.encoder.table.copy_(20.0 * torch.randn_like(rep.encoder.table))
    rep.update_occupancy(full=True)
    assert float(rep.render(cams, shading).terms["coherence"].detach()) > float(smooth.detach())
    rep.eval()
    assert "coherence" not in rep.render(cams, shading).terms
