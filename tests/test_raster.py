"""The pure-torch raster ops (representations/ops/raster.py) against analytic answers and finite differences."""
from __future__ import annotations

import pytest
import torch

from representations.cameras import orbit_cameras, ring_cameras
from representations.ops.raster import antialias, clip_from_cameras, edge_neighbors, interpolate, rasterize


def icosphere(subdivisions: int, radius: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(vertices [V, 3] float32, faces [F, 3] int32), outward counter-clockwise."""
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.int32)


def sphere_hits(cams, radius: float, centre=(0.0, 0.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """(hit [B, H, W] bool, distance along the ray [B, H, W]) of an analytic sphere."""
    o, d = cams.rays()
    o = o - torch.tensor(centre)
    b = (o * d).sum(-1)
    disc = b * b - (o * o).sum(-1) + radius**2
    return disc > 0, -b - disc.clamp(min=0).sqrt()


def test_rasterize_matches_analytic_sphere_coverage_and_depth():
    V, T = icosphere(4, 0.8)
    cams = ring_cameras(3, 48)
    rast = rasterize(clip_from_cameras(V, cams), T, (48, 48))
    assert rast.shape == (3, 48, 48, 4) and rast.dtype == torch.float32
    hit, dist = sphere_hits(cams, 0.8)
    covered = rast[..., 3] > 0
    # a polygonal sphere differs from the true one only in a thin rim
    assert (covered != hit).float().mean() < 0.01
    assert covered.float().mean() > 0.2
    ids = rast[..., 3][covered].long()
    assert ids.min() >= 1 and ids.max() <= len(T)
    u, v = rast[..., 0][covered], rast[..., 1][covered]
    assert (u >= -1e-4).all() and (v >= -1e-4).all() and (u + v <= 1 + 1e-4).all()
    # perspective-correct barycentrics: interpolated world positions lie on the ray, at the right distance
    o, d = cams.rays()
    x = interpolate(V, rast, T)
    on_ray = torch.cross(x - o, d, dim=-1).norm(dim=-1)
    assert on_ray[covered].max() < 2e-3
    both = covered & hit
    n = (o + dist[..., None] * d) / 0.8
    frontal = both & (-(n * d).sum(-1) > 0.3)
    assert ((x - o).norm(dim=-1) - dist)[frontal].abs().max() < 5e-3
    assert (rast[~covered] == 0).all()


def test_nearest_triangle_wins_and_both_facings_are_drawn():
    # two parallel squares facing opposite ways; the camera sees the nearer one, whatever the draw order
    quad = torch.tensor([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], dtype=torch.float32)
    near = quad * 0.5 + torch.tensor([0.0, 0.0, 0.5])
    far = quad * 0.5 + torch.tensor([0.6, 0.0, -0.5])
    V = torch.cat([far, near])
    T = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 6, 5], [4, 7, 6]], dtype=torch.int32)  # near one is clockwise
    cams = orbit_cameras(*(torch.tensor([v]) for v in (0.0, 0.0, 3.0, 40.0)), 32, 32)
    rast = rasterize(clip_from_cameras(V, cams), T, (32, 32))
    ids = rast[0, ..., 3].long()
    assert ((ids == 3) | (ids == 4)).any()
    centre = ids[16, 16].item()
    assert centre in (3, 4)
    # the far square peeks out only on the right (+x): never on the left of the near one
    assert ((ids == 1) | (ids == 2))[:, :16].sum() == 0 and ((ids == 1) | (ids == 2))[:, 16:].sum() > 0
    # depth z/w increases with distance
    assert rast[0, 16, 16, 2] < rast[0][(ids == 1) | (ids == 2)][:, 2].min()


def test_image_row_zero_is_the_top():
    V, T = icosphere(2, 0.3)
    V = V + torch.tensor([0.0, 0.6, 0.0])  # a sphere above the centre
    cams = orbit_cameras(*(torch.tensor([v]) for v in (0.0, 0.0, 3.0, 45.0)), 32, 32)
    cov = rasterize(clip_from_cameras(V, cams), T, (32, 32))[0, ..., 3] > 0
    hit, _ = sphere_hits(cams, 0.3, (0.0, 0.6, 0.0))
    assert cov[:16].sum() > 0 and cov[16:].sum() == 0
    assert (cov != hit[0]).float().mean() < 0.02


def test_barycentric_gradients_match_finite_differences():
    torch.manual_seed(0)
    pos = torch.tensor([[[-0.713, -0.617, 0.2, 1.0], [0.821, -0.493, 0.1, 1.3], [0.107, 0.911, -0.3, 0.8]]], dtype=torch.float64)
    T = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    attr = torch.randn(3, 2, dtype=torch.float64)

    def f(p):
        r = rasterize(p, T, (16, 16))
        return torch.cat([interpolate(attr, r, T), r[..., 2:3]], dim=-1)

    # small steps keep the visible set fixed; the gradient flows through u, v and z/w
    assert torch.autograd.gradcheck(f, (pos.clone().requires_grad_(True),), eps=1e-7, atol=1e-5)
    attr_p = attr.clone().requires_grad_(True)
    r = rasterize(pos, T, (16, 16))
    interpolate(attr_p, r, T).sum().backward()
    # d(sum)/d(attr_i) = sum over covered pixels of the barycentric of vertex i
    b = torch.stack([r[..., 0], r[..., 1], 1 - r[..., 0] - r[..., 1]], -1)[r[..., 3] > 0]
    assert torch.allclose(attr_p.grad[:, 0], b.sum(0))


def test_interpolate_batched_attributes():
    V, T = icosphere(2, 0.7)
    cams = ring_cameras(2, 24)
    pos = clip_from_cameras(V, cams)
    rast = rasterize(pos, T, (24, 24))
    attr = torch.stack([V, -V])  # [2, V, 3], per-view attributes
    out = interpolate(attr, rast, T)
    assert torch.allclose(out[0], interpolate(V, rast[:1], T)[0])
    assert torch.allclose(out[1], -interpolate(V, rast[1:], T)[0])


def _square(size: int, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    corners = torch.tensor([[-0.43, -0.37], [0.41, -0.37], [0.41, 0.39], [-0.43, 0.39]], dtype=torch.float32)
    xy = corners + shift
    pos = torch.cat([xy, torch.zeros(4, 1), torch.ones(4, 1)], dim=-1)
    T = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    return rasterize(pos, T, (size, size)), pos, T


def _square_coverage(shift: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Antialiased coverage image [1, H, W, 1] of a square in NDC shifted by `shift` [2]."""
    rast, pos, T = _square(size, shift)
    cov = (rast[..., 3:4] > 0).float()
    return antialias(cov, rast, pos, T)


def test_antialias_gives_area_and_position_gradients():
    size = 32
    shift = torch.zeros(2, requires_grad=True)
    cov = _square_coverage(shift, size)
    # area of the square in pixels: (0.84 * 16) * (0.76 * 16); antialiasing brings the sum close to it
    true_area = (0.84 * size / 2) * (0.76 * size / 2)
    assert abs(cov.sum().item() - true_area) < 0.035 * true_area
    # moving the square right: coverage leaves the left edge, enters the right one
    right = torch.zeros(size, size)
    right[:, size // 2 :] = 1
    (cov[0, ..., 0] * right).sum().backward()
    # d/dshift_x of the covered area right of the centre = height of the square in pixels * (W / 2)
    expected = (0.76 * size / 2) * (size / 2)
    assert shift.grad[0].item() == pytest.approx(expected, rel=0.1)
    assert abs(shift.grad[1].item()) < 0.1 * expected
    # and it agrees with finite differences of the antialiased image itself
    h = 0.01
    with torch.no_grad():
        fd = ((_square_coverage(torch.tensor([h, 0.0]))[0, ..., 0] * right).sum()
              - (_square_coverage(torch.tensor([-h, 0.0]))[0, ..., 0] * right).sum()) / (2 * h)
    assert shift.grad[0].item() == pytest.approx(fd.item(), rel=0.1)


def test_antialias_ignores_interior_edges():
    V, T = icosphere(3, 0.8)
    cams = ring_cameras(1, 32)
    pos = clip_from_cameras(V, cams).requires_grad_(True)
    rast = rasterize(pos, T, (32, 32))
    colour = torch.ones(1, 32, 32, 3)  # a constant colour over the sphere, also constant background
    out = antialias(colour, rast, pos, T)
    assert torch.equal(out, colour)
    # with a black background, only silhouette vertices receive gradients
    cov = (rast[..., 3:4] > 0).float().expand(-1, -1, -1, 3)
    antialias(cov, rast, pos, T).sum().backward()
    moved = pos.grad[0].abs().sum(-1) > 0
    p = pos.detach()[0]
    ndc_r = (p[:, :2] / p[:, 3:]).norm(dim=-1)
    assert moved.any()
    assert ndc_r[moved].min() > 0.8 * ndc_r.max()  # all on the outline


def test_edge_neighbors_of_a_closed_mesh():
    _, T = icosphere(1)
    nb = edge_neighbors(T)
    assert (nb >= 0).all()
    Tl = T.long()
    for f in range(len(T)):
        for i in range(3):
            a, b = Tl[f, i].item(), Tl[f, (i + 1) % 3].item()
            assert {a, b} <= set(Tl[nb[f, i]].tolist()) and nb[f, i] != f


@pytest.mark.slow
def test_silhouette_converges_to_a_target_using_only_raster_gradients():
    """Deform a small sphere into a larger, shifted one from silhouettes alone (64 px, 4 views)."""
    torch.manual_seed(0)
    V, T = icosphere(2, 0.4)
    cams = ring_cameras(4, 64, elevation_deg=20.0)
    target_hit, _ = sphere_hits(cams, 0.65, (0.15, 0.1, 0.0))
    target = target_hit.float()[..., None]
    topo = edge_neighbors(T)
    offset = torch.zeros_like(V, requires_grad=True)
    opt = torch.optim.Adam([offset], lr=0.01)

    def silhouette() -> torch.Tensor:
        pos = clip_from_cameras(V + offset, cams)
        rast = rasterize(pos, T, (64, 64))
        return antialias((rast[..., 3:4] > 0).float(), rast, pos, T, topology=topo)

    def iou(a: torch.Tensor) -> float:
        a = a > 0.5
        return ((a & target_hit[..., None]).sum() / (a | target_hit[..., None]).sum()).item()

    start = iou(silhouette())
    for _ in range(100):
        opt.zero_grad()
        loss = ((silhouette() - target) ** 2).mean()
        loss.backward()
        opt.step()
    end = iou(silhouette().detach())
    assert start < 0.5
    assert end > 0.93


@pytest.mark.gpu
def test_nvdiffrast_backend_matches_torch():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("nvdiffrast.torch")
    V, T = icosphere(3, 0.8)
    cams = ring_cameras(2, 64).to("cuda")
    pos = clip_from_cameras(V.cuda(), cams).requires_grad_(True)
    attr = torch.rand(len(V), 3, device="cuda", requires_grad=True)
    grads = {}
    outs = {}
    for backend in ("torch", "auto"):
        r = rasterize(pos, T.cuda(), (64, 64), backend=backend)
        c = interpolate(attr, r, T.cuda(), backend=backend)
        c = antialias(c, r, pos, T.cuda(), backend=backend)
        outs[backend] = (r, c)
        grads[backend] = torch.autograd.grad(c.sum(), (attr,))[0]
    (r0, c0), (r1, c1) = outs["torch"], outs["auto"]
    same = r0[..., 3] == r1[..., 3]
    assert same.float().mean() > 0.99
    m = same & (r0[..., 3] > 0)
    assert torch.allclose(r0[m][:, :3], r1[m][:, :3], atol=1e-3)
    assert torch.allclose(grads["torch"], grads["auto"], rtol=0.05, atol=0.5)


def test_chunked_visibility_gives_the_same_image(monkeypatch):
    import representations.ops.raster as raster

    V, T = icosphere(2, 0.8)
    cams = ring_cameras(2, 40)
    pos = clip_from_cameras(V, cams)
    whole = rasterize(pos, T, (40, 40))
    monkeypatch.setattr(raster, "_PAIR_CHUNK", 97)  # many chunks, each cut at a triangle boundary
    assert torch.equal(rasterize(pos, T, (40, 40)), whole)
