"""FlexiCubes extraction (representations/ops/flexicubes.py) and its generated tables, on analytic SDFs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from representations.ops.dmc_tables import dmc_split_tables, dmc_tables, edge_corners, face_cycles, face_segments
from representations.ops.flexicubes import FlexiGrid, flexicubes, sdf_sign_loss

pytestmark = pytest.mark.usefixtures("small_exports")  # tests/conftest.py: small bakes and fidelity checks


def sphere(x: torch.Tensor) -> torch.Tensor:
    return x.norm(dim=-1) - 0.6


def box(x: torch.Tensor) -> torch.Tensor:
    q = (x - torch.tensor([0.05, -0.03, 0.02])).abs() - torch.tensor([0.5, 0.4, 0.3])
    return q.clamp(min=0).norm(dim=-1) + q.amax(-1).clamp(max=0)


def torus(x: torch.Tensor) -> torch.Tensor:
    ring = x[:, [0, 2]].norm(dim=-1) - 0.55
    return torch.stack([ring, x[:, 1]], -1).norm(dim=-1) - 0.2


# -------------------------------------------------------------------------------------------------------
# tables
# -------------------------------------------------------------------------------------------------------
def _corner_regions(inside: list[bool]) -> int:
    """Connected regions of equal-sign corners on the cube's surface: corners joined along cube edges, and
    OUTSIDE corners also across ambiguous faces (the tables' rule cuts off each inside corner)."""
    parent = list(range(8))

    def find(c: int) -> int:
        while parent[c] != c:
            c = parent[c]
        return c

    for a, b in edge_corners():
        if inside[a] == inside[b]:
            parent[find(int(a))] = find(int(b))
    for corners, _ in face_cycles():
        s = [inside[c] for c in corners]
        if s[0] == s[2] != s[1] == s[3]:  # ambiguous face: outside diagonal connects
            pair = (corners[0], corners[2]) if not s[0] else (corners[1], corners[3])
            parent[find(pair[0])] = find(pair[1])
    return len({find(c) for c in range(8)})


def test_tables_satisfy_their_defining_property_for_all_256_cases():
    group, count = dmc_tables()
    ec = edge_corners()
    faces = face_cycles()
    assert group.shape == (256, 12) and count.shape == (256,)
    for case in range(256):
        inside = [bool((case >> c) & 1) for c in range(8)]
        crossed = np.array([inside[a] != inside[b] for a, b in ec])
        # exactly the crossed edges belong to a component; components are numbered 0..count-1
        assert ((group[case] >= 0) == crossed).all()
        assert set(group[case][crossed]) == set(range(count[case]))
        # the surface splits the cube's surface (a sphere) into regions: loops = regions - 1
        if 0 < case < 255:
            assert count[case] == _corner_regions(inside) - 1, case
        else:
            assert count[case] == 0
        # each component is ONE closed loop: every crossed edge has exactly two zero-curve segments (one per
        # face it lies on), both inside its own component, and the segments connect the component
        degree = np.zeros(12, dtype=int)
        for corners, edges in faces:
            for a, b in face_segments(inside, corners, edges):
                assert group[case, a] == group[case, b]
                degree[a] += 1
                degree[b] += 1
        assert (degree[crossed] == 2).all() and (degree[~crossed] == 0).all()
    assert count.max() == 4  # the most components a cube can hold


def test_tunnel_split_tables_cut_exactly_one_loop_at_one_face():
    group, count = dmc_tables()
    twice, split_group, split_count = dmc_split_tables()
    faces = face_cycles()
    assert twice.any()
    for case, f in zip(*np.nonzero(twice)):
        inside = [bool((case >> c) & 1) for c in range(8)]
        g = split_group[case, f]
        assert split_count[case, f] == count[case] + 1
        assert set(g[g >= 0]) == set(range(count[case] + 1))
        assert ((g >= 0) == (group[case] >= 0)).all()
        for k, (corners, edges) in enumerate(faces):
            for a, b in face_segments(inside, corners, edges):
                # the cut face: each segment's two edges end up in the two different halves
                assert (g[a] != g[b]) if k == f else (g[a] == g[b])
    # the extraction uses them when both cubes of a face are tunnels; noisy spheres exercise it below


@pytest.mark.parametrize("seed", range(6))
def test_noisy_sdfs_still_give_closed_manifold_meshes(seed):
    grid = FlexiGrid(12, 1.0)
    gen = torch.Generator().manual_seed(seed)
    sdf = sphere(grid.positions) + 0.15 * torch.randn(grid.num_vertices, generator=gen)
    boundary = (grid.coords == 0).any(-1) | (grid.coords == grid.resolution).any(-1)
    sdf = torch.where(boundary, torch.ones_like(sdf), sdf)
    for training in (True, False):
        out = flexicubes(grid, sdf, training=training)
        import trimesh

        m = trimesh.Trimesh(out.vertices.numpy(), out.faces.numpy(), process=False)
        e = np.sort(m.edges, axis=1)
        _, uses = np.unique(e, axis=0, return_counts=True)
        assert (uses == 2).all() and m.is_winding_consistent and m.volume > 0
        assert _pinched_vertices(m.faces) == 0


# -------------------------------------------------------------------------------------------------------
# extraction
# -------------------------------------------------------------------------------------------------------
def _pinched_vertices(faces: np.ndarray) -> int:
    """Vertices whose surrounding faces do not form one fan (their link is not a single connected cycle)."""
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for a, b, c in faces.tolist():
        for v, x, y in ((a, b, c), (b, c, a), (c, a, b)):  # link edge (x, y) of vertex v
            parent[find((v, x))] = find((v, y))
    roots = {}
    for v, x in list(parent):
        roots.setdefault(v, set()).add(find((v, x)))
    return sum(len(r) > 1 for r in roots.values())


def _check_mesh(vertices: torch.Tensor, faces: torch.Tensor, euler: int) -> None:
    import trimesh

    m = trimesh.Trimesh(vertices.detach().numpy(), faces.numpy(), process=False)
    assert m.is_watertight  # closed, every edge shared by exactly two faces
    assert m.is_winding_consistent
    assert m.volume > 0  # consistently oriented OUTWARD
    assert m.euler_number == euler
    # manifold edges: no (undirected) edge is used by more than two faces
    e = np.sort(m.edges, axis=1)
    _, uses = np.unique(e, axis=0, return_counts=True)
    assert (uses == 2).all()
    assert _pinched_vertices(m.faces) == 0  # manifold vertices too
    assert np.isfinite(m.vertices).all()


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name,fn,euler,tol", [("sphere", sphere, 2, 0.15), ("box", box, 2, 0.5), ("torus", torus, 0, 0.2)])
def test_analytic_sdfs_give_closed_oriented_manifold_meshes_on_the_surface(name, fn, euler, tol, training):
    grid = FlexiGrid(24, 1.0)
    out = flexicubes(grid, fn(grid.positions), training=training)
    assert out.faces.dtype == torch.int64 and out.vertices.shape[1] == 3
    _check_mesh(out.vertices, out.faces, euler)
    # every vertex lies close to the true surface (tolerance as a fraction of the cell size; with unit weights
    # dual vertices cut the box's sharp corners by up to ~0.4 cells: the learned weights are there to fix that)
    assert fn(out.vertices).abs().max() < tol * grid.cell
    assert out.faces.max() == len(out.vertices) - 1  # no unused vertices


def test_unit_weights_are_plain_dual_marching_cubes_and_weights_move_vertices():
    grid = FlexiGrid(12, 1.0)
    sdf = torus(grid.positions)
    C, V = grid.num_cubes, grid.num_vertices
    plain = flexicubes(grid, sdf, training=False)
    zero = flexicubes(grid, sdf, torch.zeros(V, 3), torch.zeros(C, 12), torch.zeros(C, 8), torch.zeros(C), training=False)
    assert torch.equal(plain.faces, zero.faces) and torch.allclose(plain.vertices, zero.vertices)
    gen = torch.Generator().manual_seed(0)
    moved = flexicubes(
        grid, sdf, torch.randn(V, 3, generator=gen), torch.randn(C, 12, generator=gen),
        torch.randn(C, 8, generator=gen), torch.randn(C, generator=gen), training=True,
    )
    assert len(moved.faces) == 2 * len(plain.faces)  # 4 triangles per quad instead of 2
    _check_mesh(moved.vertices, moved.faces, 0)
    # deformation stays within half a cell: vertices stay near the surface
    assert torus(moved.vertices).abs().max() < 1.5 * grid.cell


def test_gradients_reach_sdf_deformation_and_every_weight():
    grid = FlexiGrid(10, 1.0)
    C, V = grid.num_cubes, grid.num_vertices
    sdf = sphere(grid.positions).requires_grad_(True)
    gen = torch.Generator().manual_seed(1)
    params = {
        "deform": (0.3 * torch.randn(V, 3, generator=gen)).requires_grad_(True),
        "beta": (0.3 * torch.randn(C, 12, generator=gen)).requires_grad_(True),
        "alpha": (0.3 * torch.randn(C, 8, generator=gen)).requires_grad_(True),
        "gamma": (0.3 * torch.randn(C, generator=gen)).requires_grad_(True),
    }
    out = flexicubes(grid, sdf, **params, training=True)
    target = torch.randn(out.vertices.shape, generator=gen)
    loss = (out.vertices * target).sum() + out.l_dev + 0.1 * out.weight_l1 + sdf_sign_loss(grid, sdf)
    loss.backward()
    for name, t in [("sdf", sdf)] + list(params.items()):
        assert t.grad is not None and torch.isfinite(t.grad).all(), name
        assert t.grad.abs().sum() > 0, name


def test_l_dev_is_zero_for_evenly_placed_dual_vertices():
    grid = FlexiGrid(8, 1.0)
    plane = grid.positions[:, 2] - 0.13  # axis-aligned plane: crossings form squares around each dual vertex
    assert flexicubes(grid, plane).l_dev.abs() < 1e-6
    assert flexicubes(grid, sphere(grid.positions)).l_dev > 1e-4


def test_sdf_sign_loss_penalises_sign_changes():
    grid = FlexiGrid(6, 1.0)
    sdf = (0.1 * sphere(grid.positions)).requires_grad_(True)
    loss = sdf_sign_loss(grid, sdf)
    loss.backward()
    assert loss > 0
    s = sdf.detach()
    near = (s.abs() < 0.1 * grid.cell * 3)
    # gradient descent pulls both values of a sign change toward each other's sign (towards fewer changes)
    assert (sdf.grad[near & (s < 0)] <= 0).all() and (sdf.grad[near & (s > 0)] >= 0).all()
    assert sdf.grad.abs().sum() > 0
    far = torch.full((grid.num_vertices,), 1.0)
    assert sdf_sign_loss(grid, far) == 0


def test_empty_and_full_grids_give_empty_meshes():
    grid = FlexiGrid(4, 1.0)
    for value in (1.0, -1.0):
        out = flexicubes(grid, torch.full((grid.num_vertices,), value))
        assert out.vertices.shape == (0, 3) and out.faces.shape == (0, 3)


# -------------------------------------------------------------------------------------------------------
# the representation: coarse-to-fine initialisation and a two-stage run
# -------------------------------------------------------------------------------------------------------
class _ColouredBall:
    """A finished 'coarse' scene with a known answer: a ball of radius 0.5 at (0.1, 0, 0), red where x > 0.1
    and blue elsewhere. Implements what `init_from` reads: density, albedo_at and render (alpha)."""

    centre = torch.tensor([0.1, 0.0, 0.0])

    def __init__(self) -> None:
        from representations.base import RepresentationConfig

        self.cfg = RepresentationConfig(kind="ball")
        self.training = False

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return 20.0 * torch.sigmoid((0.5 - (points - self.centre).norm(dim=-1)) / 0.01)

    def albedo_at(self, points: torch.Tensor) -> torch.Tensor:
        red = (points[:, 0] > self.centre[0]).float()[:, None]
        return red * torch.tensor([0.9, 0.1, 0.1]) + (1 - red) * torch.tensor([0.1, 0.1, 0.9])

    def render(self, cams, shading):
        from representations.base import RenderOut

        o, d = cams.rays()
        o = o - self.centre
        b = (o * d).sum(-1)
        hit = (b * b - (o * o).sum(-1) + 0.25 > 0).float()[:, None]
        z = torch.zeros_like(hit)
        return RenderOut(rgb=hit.expand(-1, 3, -1, -1), alpha=hit, depth=z)


def test_init_from_turns_a_coarse_scene_into_the_sdf_and_albedo():
    import representations

    cls = representations.get("flexicubes")
    rep = cls(cls.Config(resolution=24, init_albedo_steps=150), total_steps=10)
    source = _ColouredBall()
    rep.init_from(source)
    mesh = rep.extract_mesh()
    v = torch.from_numpy(mesh.vertices)
    r = (v - source.centre).norm(dim=-1)
    cell = 2.0 / 24
    assert (r - 0.5).abs().max() < cell  # the surface moved from the start sphere to the ball
    _check_mesh(torch.from_numpy(mesh.vertices), torch.from_numpy(mesh.faces), 2)
    colours = torch.from_numpy(mesh.colors)
    right, left = v[:, 0] > source.centre[0] + 0.15, v[:, 0] < source.centre[0] - 0.15
    assert (colours[right, 0] > colours[right, 2]).float().mean() > 0.95
    assert (colours[left, 2] > colours[left, 0]).float().mean() > 0.95
    # the SDF is a signed distance (about 1 per world unit), negative inside
    p = torch.tensor([[0.1, 0.0, 0.0], [0.1, 0.0, 0.9]])
    d = rep.density(p)
    assert d[0] > 40 and d[1] < 1


@pytest.mark.slow
def test_two_stage_nerf_then_flexicubes_run_writes_a_watertight_glb(tmp_path):
    import trimesh

    from studio.config import build_config
    from studio.run import run

    small = ["guidance.model=tiny-random", "camera.resolution=32", "export.mesh_resolution=32",
             "export.turntable_frames=2", "export.turntable_size=24", "log.checkpoint_every=0"]
    coarse = build_config([{"prompt": "a red cube", "steps": 2}], small + ["representation.blob.bias=0.0"])
    *_, first = run(coarse, tmp_path / "coarse")
    refine = build_config([{"prompt": "a red cube", "steps": 2, "init_from": str(first.run_dir)}],
                          small + ["representation.kind=\"flexicubes\"", "representation.resolution=24",
                                   "representation.init_albedo_steps=20"])
    *_, second = run(refine, tmp_path / "refine")
    glb = second.run_dir / "asset.glb"
    mesh = trimesh.load(glb, force="mesh", process=False)
    mesh.merge_vertices(merge_tex=True, merge_norm=True)  # the textured export splits vertices along UV seams
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    # the refined mesh is the coarse run's surface, not the default start sphere
    coarse_mesh = trimesh.load(first.run_dir / "asset.glb", force="mesh", process=False)
    assert abs(mesh.volume - coarse_mesh.volume) < 0.3 * coarse_mesh.volume


def test_export_drops_small_floaters_but_keeps_the_object():
    import representations

    cls = representations.get("flexicubes")
    rep = cls(cls.Config(resolution=24), total_steps=10)
    with torch.no_grad():
        x = rep.grid().positions
        ball = x.norm(dim=-1) - 0.5
        floater = (x - torch.tensor([0.75, 0.75, 0.75])).norm(dim=-1) - 0.05  # one grid vertex inside
        rep.sdf.copy_(torch.minimum(ball, floater))
    full = rep.surface(training=False)
    mesh = rep.extract_mesh()
    assert 0 < len(mesh.faces) < len(full.faces)
    assert np.linalg.norm(mesh.vertices, axis=1).max() < 0.6  # only the ball is left
    _check_mesh(torch.from_numpy(mesh.vertices), torch.from_numpy(mesh.faces), 2)
    assert mesh.colors.shape == mesh.vertices.shape


def test_render_of_the_start_sphere_matches_the_analytic_sphere():
    import representations
    from representations.cameras import ring_cameras
    from representations.shading import Shading, front_light

    cls = representations.get("flexicubes")
    rep = cls(cls.Config(resolution=32, init_radius=0.5), total_steps=10).eval()
    cams = ring_cameras(2, 48, elevation_deg=20.0)
    with torch.no_grad():
        out = rep.render(cams, Shading(front_light(cams.position), mode="albedo"))
    o, d = cams.rays()
    b = (o * d).sum(-1)
    disc = b * b - (o * o).sum(-1) + 0.25
    hit = disc > 0
    dist = -b - disc.clamp(min=0).sqrt()
    covered = out.alpha[:, 0] > 0.5
    iou = (covered & hit).sum() / (covered | hit).sum()
    assert iou > 0.92  # the dual mesh lies slightly inside the curved surface (~0.2 px here)
    inner = covered & hit & (disc > 0.05)  # away from the grazing rim
    cell = 2.0 / 32
    assert (out.depth[:, 0][inner] - dist[inner]).abs().max() < 0.5 * cell
    # normals are outward unit vectors: along the sphere's normal at the hit point
    p = o + dist[..., None] * d
    n_true = p / p.norm(dim=-1, keepdim=True)
    n = out.normal.permute(0, 2, 3, 1)[inner]
    assert ((n * n_true[inner]).sum(-1) > 0.97).float().mean() > 0.99
    # background is exactly the background colour, and alpha is 0 there
    far = ~covered & ~hit
    assert torch.allclose(out.rgb.permute(0, 2, 3, 1)[far], torch.ones(3))
