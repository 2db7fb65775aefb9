"""FlexiCubes mesh representation (Magic3D refine stage / Fantasia3D style): an explicit surface optimised
directly through a differentiable rasteriser.

Geometry: SDF values and a deformation at the (R+1)^3 vertices of a grid over [-bound, bound]^3, plus
21 weights per cube (beta x12, alpha x8, gamma x1); every render extracts the surface with FlexiCubes
(representations/ops/flexicubes.py, training mode: 4 triangles per quad). The SDF is held positive on the
grid boundary, so the mesh is always closed.
Appearance: a hash grid + small MLP (representations/hashgrid.py) maps surface points to albedo.
Rendering: `rasterize` -> `interpolate` world positions and smooth vertex normals -> albedo at the covered
pixels -> the shared Lambertian `shade` -> composite over the background -> `antialias`, which gives the
vertex positions silhouette gradients (representations/ops/raster.py).
Regularisers (RenderOut.terms, already weighted): FlexiCubes' L_dev, the SDF sign loss (weight ramped
down over the first part of the run), an L1 on the raw alpha / beta weights, and a uniform mesh Laplacian
that smooths the surface (SDS alone grows spikes and small tunnels).
Export: the extracted mesh itself (2 triangles per quad) with albedo at its vertices, without the small
floating pieces SDS leaves (`export_min_component`).
Coarse-to-fine: `init_from` turns another run's density into the SDF (signed distance to the iso-surface
chosen from its renders) and fits the albedo field to its colours near that surface.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import RenderOut, Representation, RepresentationConfig
from .cameras import Cameras
from .hashgrid import HashGrid, HashGridConfig, hash_mlp
from .mesh import Mesh
from .ops.flexicubes import FlexiCubesOut, FlexiGrid, flexicubes, sdf_sign_loss
from .ops.raster import antialias, clip_from_cameras, interpolate, rasterize
from .optim import adam
from .shading import Shading, shade


@dataclass
class FlexiCubesConfig(RepresentationConfig):
    """FlexiCubes mesh + hash-grid albedo: grid size, start shape, learning rates and regulariser weights."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"resolution": (8, 256), "init_radius": (0.01, 10.0),
        "hidden": (1, 1024), "lr_sdf": (1e-08, 1.0), "lr_deform": (1e-08, 1.0), "lr_weights": (1e-08, 1.0),
        "lr_grid": (1e-08, 1.0), "lr_mlp": (1e-08, 1.0), "dev_weight": (0.0, 1000000.0),
        "sign_weight_start": (0.0, 1000000.0), "sign_weight_end": (0.0, 1000000.0), "sign_ramp_fraction": (0.0, 1.0),
        "weight_l1": (0.0, 1000000.0), "laplacian_weight": (0.0, 1000000.0), "near": (0.0001, 1000.0),
        "far": (0.001, 1000000.0), "export_min_component": (0.0, 1.0), "init_albedo_steps": (0, float("inf"))}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    kind: str = "flexicubes"
    """Registry key."""
    resolution: int = 48
    """Cubes per axis of the FlexiCubes grid (64-128 on a GPU; 48 keeps a CPU step fast)."""
    init_radius: float = 0.5
    """The SDF starts as a sphere of this radius (world units) at the origin."""
    albedo_grid: HashGridConfig = field(default_factory=lambda: HashGridConfig(levels=8, log2_table=14))
    """Hash encoding of the albedo field."""
    hidden: int = 32
    """Width of the albedo MLP's hidden layer."""
    lr_sdf: float = 2e-3
    """Adam learning rate of the SDF values (world units; a cell is 2 * bound / resolution)."""
    lr_deform: float = 5e-3
    """Adam learning rate of the raw vertex deformation (offset = cell / 2 * tanh(raw))."""
    lr_weights: float = 1e-2
    """Adam learning rate of the raw cube weights (beta, alpha, gamma)."""
    lr_grid: float = 3e-2
    """Adam learning rate of the albedo field's hash table."""
    lr_mlp: float = 1e-2
    """Adam learning rate of the albedo field's MLP."""
    dev_weight: float = 0.5
    """Weight of FlexiCubes' L_dev regulariser (uneven dual vertices)."""
    sign_weight_start: float = 0.2
    """Weight of the SDF sign regulariser at step 0 ..."""
    sign_weight_end: float = 0.01
    """... ramped linearly to this value ..."""
    sign_ramp_fraction: float = 0.25
    """... over this fraction of the run's steps."""
    weight_l1: float = 0.1
    """Weight of the L1 regulariser on the raw alpha / beta weights of the surface cubes."""
    laplacian_weight: float = 10.0
    """Weight of the uniform mesh Laplacian mean(|v - mean of its neighbours|^2) / cell^2 (against spikes, tunnels)."""
    near: float = 0.1
    """Near clipping distance of the rasteriser's projection (world units)."""
    far: float = 100.0
    """Far clipping distance of the rasteriser's projection (world units)."""
    export_min_component: float = 0.02
    """At export, drop connected pieces with fewer faces than this fraction of the largest's (0 keeps all)."""
    init_albedo_steps: int = 200
    """Adam steps fitting the albedo field to the source's colours in `--init-from`."""

    def training_bytes(self, pixels: int) -> float:
        """About 240 bytes a grid cell (FlexiCubes' per-cube tensors, measured at resolution 48) and 1 KB a pixel
        (rasterising is cheap), plus the albedo field's hash tables."""
        return 240.0 * (self.resolution + 1) ** 3 + 1e3 * pixels + self.albedo_grid.table_bytes()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.resolution < 4:
            raise ValueError("flexicubes resolution must be >= 4")


class FlexiCubes(Representation):
    """FlexiCubes surface + hash-grid albedo, rendered with the pure-torch rasteriser; owns one Adam."""

    Config = FlexiCubesConfig

    def __init__(self, cfg: FlexiCubesConfig | None = None, total_steps: int = 1000) -> None:
        cfg = FlexiCubesConfig() if cfg is None else cfg
        super().__init__(cfg, total_steps)
        self.cfg: FlexiCubesConfig = cfg
        R = cfg.resolution
        grid = FlexiGrid(R, cfg.bound)
        self._grids: dict[torch.device, FlexiGrid] = {grid.device: grid}
        self.sdf = nn.Parameter(grid.positions.norm(dim=-1) - cfg.init_radius)
        self.deform = nn.Parameter(torch.zeros(grid.num_vertices, 3))
        # raw cube weights (separate tensors: slicing one [C, 21] tensor costs full-size gradient copies)
        self.beta = nn.Parameter(torch.zeros(grid.num_cubes, 12))
        self.alpha = nn.Parameter(torch.zeros(grid.num_cubes, 8))
        self.gamma = nn.Parameter(torch.zeros(grid.num_cubes))
        self.encoder = HashGrid(cfg.albedo_grid, cfg.bound)
        self.layers = nn.ModuleList([nn.Linear(self.encoder.out_dim, cfg.hidden), nn.Linear(cfg.hidden, 3)])
        self.register_buffer("boundary", _boundary_mask(R), persistent=False)
        self.optimizer = adam([
            {"params": [self.sdf], "lr": cfg.lr_sdf},
            {"params": [self.deform], "lr": cfg.lr_deform},
            {"params": [self.beta, self.alpha, self.gamma], "lr": cfg.lr_weights},
            {"params": [self.encoder.table], "lr": cfg.lr_grid},
            {"params": [p for layer in self.layers for p in layer.parameters()], "lr": cfg.lr_mlp},
        ])
        self._step = 0

    # -- geometry ------------------------------------------------------------------------------
    def grid(self) -> FlexiGrid:
        """The grid's index arrays on the parameters' device (built once per device)."""
        dev = self.sdf.device
        if dev not in self._grids:
            self._grids[dev] = FlexiGrid(self.cfg.resolution, self.cfg.bound, dev)
        return self._grids[dev]

    def closed_sdf(self) -> Tensor:
        """[(R+1)^3] the SDF with the grid boundary held outside (so the surface never touches it)."""
        return torch.where(self.boundary, self.sdf.clamp(min=0.5 * self.grid().cell), self.sdf)

    def surface(self, training: bool | None = None) -> FlexiCubesOut:
        """The current mesh (vertices [V, 3], faces [F, 3]) and FlexiCubes' regularisers."""
        return flexicubes(
            self.grid(), self.closed_sdf(), self.deform, self.beta, self.alpha, self.gamma,
            training=self.training if training is None else training,
        )

    # -- the field -----------------------------------------------------------------------------
    def _albedo(self, points: Tensor) -> Tensor:
        """[N, 3] points -> [N, 3] albedo in (0, 1)."""
        if len(points) == 0:
            return points.new_zeros(0, 3)
        out = hash_mlp(self.encoder, [l.weight for l in self.layers], [l.bias for l in self.layers], points)
        return torch.sigmoid(out).t()

    def albedo_at(self, points: Tensor, chunk: int = 65536) -> Tensor:
        """[N, 3] world points -> [N, 3] albedo in [0, 1]."""
        parts = [self._albedo(points[s : s + chunk]) for s in range(0, len(points), chunk)]
        return torch.cat(parts) if parts else points.new_zeros(0, 3)

    def density(self, points: Tensor) -> Tensor:
        """[N, 3] -> [N] occupancy-like density: 50 * sigmoid(-sdf / (cell / 4)), the SDF trilinearly
        interpolated from the grid (deformation ignored). About 50 inside, 0 outside, 25 on the surface."""
        R, b = self.cfg.resolution, self.cfg.bound
        vol = self.closed_sdf().view(1, 1, R + 1, R + 1, R + 1)
        # grid_sample's (x, y, z) index the last three dims (W, H, D) = our (z, y, x) axes
        g = (points / b).flip(-1).view(1, -1, 1, 1, 3).to(vol.dtype)
        s = F.grid_sample(vol, g, mode="bilinear", padding_mode="border", align_corners=True).view(-1)
        return 50.0 * torch.sigmoid(-s / (0.25 * self.grid().cell))

    # -- the per-step protocol -----------------------------------------------------------------
    def before_step(self, step: int) -> None:
        """Remember the step (the sign regulariser's weight is ramped by it)."""
        self._step = step

    def sign_weight(self, step: int) -> float:
        """The SDF sign regulariser's weight at `step` (linear ramp, then constant)."""
        c = self.cfg
        span = max(1.0, c.sign_ramp_fraction * self.total_steps)
        t = min(1.0, step / span)
        return c.sign_weight_start + t * (c.sign_weight_end - c.sign_weight_start)

    # -- rendering -----------------------------------------------------------------------------
    def render(self, cams: Cameras, shading: Shading) -> RenderOut:
        """Render B views [B, *, H, W] of the extracted mesh."""
        c = self.cfg
        B, H, W = len(cams), cams.height, cams.width
        sdf = self.closed_sdf()
        mesh = flexicubes(self.grid(), sdf, self.deform, self.beta, self.alpha, self.gamma, training=self.training)
        verts, faces = mesh.vertices, mesh.faces
        dev, dt = verts.device, verts.dtype
        bg = torch.tensor(c.background, dtype=dt, device=dev)
        terms = {
            "flexi_dev": c.dev_weight * mesh.l_dev,
            "flexi_sign": self.sign_weight(self._step) * sdf_sign_loss(self.grid(), sdf),
            "flexi_l1": c.weight_l1 * mesh.weight_l1,
        }
        if c.laplacian_weight > 0 and len(faces):
            cell = self.grid().cell
            terms["flexi_laplacian"] = c.laplacian_weight * _laplacian(verts, faces).square().sum(-1).mean() / cell**2
        if len(faces) == 0:  # nothing to draw: background, still connected to the parameters
            zero = self.sdf.sum() * 0.0
            img = lambda ch: torch.zeros(B, ch, H, W, dtype=dt, device=dev) + zero  # noqa: E731
            rgb = img(3) + bg.view(1, 3, 1, 1)
            return RenderOut(rgb=rgb, alpha=img(1), depth=img(1), normal=img(3), albedo=rgb.clone(), terms=terms)

        pos = clip_from_cameras(verts, cams.to(dev), c.near, c.far)  # [B, V, 4]
        rast = rasterize(pos, faces, (H, W))
        normals = _vertex_normals(verts, faces)
        attrs = interpolate(torch.cat([verts, normals], dim=-1), rast, faces)  # [B, H, W, 6]
        covered = rast[..., 3] > 0  # [B, H, W]
        sel = covered.reshape(-1).nonzero().squeeze(1)
        flat = attrs.reshape(-1, 6)
        points = flat[sel, :3]
        n = F.normalize(flat[sel, 3:], dim=-1, eps=1e-8)
        albedo = torch.zeros(B * H * W, 3, dtype=dt, device=dev).index_put((sel,), self._albedo(points))
        normal = torch.zeros(B * H * W, 3, dtype=dt, device=dev).index_put((sel,), n)
        lit = shade(albedo.view(B, H * W, 3), normal.view(B, H * W, 3), shading).reshape(B * H * W, 3)
        a = covered.reshape(-1, 1).to(dt)
        rgb = lit * a + bg * (1.0 - a)
        albedo_img = albedo * a + bg * (1.0 - a)
        stacked = torch.cat([rgb, a, albedo_img, normal], dim=-1).view(B, H, W, 10)
        stacked = antialias(stacked, rast, pos, faces)
        eye = cams.position.to(dev)[:, None, None, :]
        dist = ((attrs[..., :3] - eye).norm(dim=-1) * covered).unsqueeze(-1)  # [B, H, W, 1]

        def img(x: Tensor) -> Tensor:  # [B, H, W, C] -> [B, C, H, W]
            return x.permute(0, 3, 1, 2).contiguous()

        alpha = stacked[..., 3:4].clamp(0.0, 1.0)
        nrm = stacked[..., 7:10]
        nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp(min=1.0)  # alpha-weighted, length <= 1
        return RenderOut(
            rgb=img(stacked[..., 0:3].clamp(0.0, 1.0)),
            alpha=img(alpha),
            depth=img(dist),
            normal=img(nrm),
            albedo=img(stacked[..., 4:7].clamp(0.0, 1.0)),
            terms=terms,
        )

    # -- export and coarse-to-fine -------------------------------------------------------------
    @torch.no_grad()
    def extract_mesh(self, resolution: int = 128) -> Mesh:
        """The FlexiCubes mesh itself (inference triangulation), albedo at the vertices.
        `resolution` is ignored: the mesh is the scene, at the grid's own resolution."""
        mesh = self.surface(training=False)
        verts = mesh.vertices.float().cpu().numpy().astype(np.float32)
        faces = mesh.faces.cpu().numpy().astype(np.int64)
        verts, faces = _drop_small_components(verts, faces, self.cfg.export_min_component)
        v = torch.from_numpy(verts).to(self.sdf.device)
        colors = self.albedo_at(v).clamp(0.0, 1.0) if len(v) else v.new_zeros(0, 3)
        return Mesh(verts, faces, colors.cpu().numpy().astype(np.float32))

    @torch.no_grad()
    def init_from(self, source: Representation) -> None:
        """SDF = signed distance to the source's iso-surface (level chosen from its renders, as for export);
        albedo field fitted to the source's colours on points near that surface; weights and deformation reset."""
        from scipy import ndimage  # noqa: PLC0415  (scipy comes with scikit-image)

        from .extract import choose_level, sample_volume

        R, dev = self.cfg.resolution, self.sdf.device
        volume = sample_volume(source, R) if float(source.cfg.bound) == self.cfg.bound else None
        level, _ = choose_level(source, volume=volume, resolution=R)
        if level is None:
            raise ValueError("the source run renders nothing opaque: there is no surface to refine")
        if volume is not None:  # the same grid points: reuse the samples
            values = volume.values.reshape(-1)
        else:
            pts = self.grid().positions.to(dev)
            values = torch.cat([source.density(pts[i : i + 65536]).float() for i in range(0, len(pts), 65536)])
        occ = (values >= level).cpu().numpy().reshape(R + 1, R + 1, R + 1)
        if not occ.any():
            raise ValueError("the source run's surface is smaller than one FlexiCubes cell")
        h = self.grid().cell
        outside = ndimage.distance_transform_edt(~occ) * h
        inside = ndimage.distance_transform_edt(occ) * h
        sdf = np.where(occ, -(inside - 0.5 * h), outside - 0.5 * h)
        self.sdf.copy_(torch.from_numpy(sdf.astype(np.float32)).reshape(-1).to(dev))
        for p in (self.deform, self.beta, self.alpha, self.gamma):
            p.zero_()
        self.optimizer.state.clear()
        self._fit_albedo(source)

    def _fit_albedo(self, source: Representation) -> None:
        """Regress the albedo field on the source's albedo at points within ~2 cells of the new surface."""
        mesh = self.surface(training=False)
        if len(mesh.vertices) == 0 or self.cfg.init_albedo_steps <= 0:
            return
        gen = torch.Generator().manual_seed(0)
        base = mesh.vertices.detach().cpu()
        opt = torch.optim.Adam([self.encoder.table, *self.layers.parameters()], lr=1e-2)
        for _ in range(self.cfg.init_albedo_steps):
            idx = torch.randint(len(base), (4096,), generator=gen)
            pts = base[idx] + self.grid().cell * 2.0 * (torch.rand(4096, 3, generator=gen) - 0.5)
            pts = pts.to(self.sdf.device)
            target = source.albedo_at(pts).detach()
            with torch.enable_grad():
                loss = (self._albedo(pts) - target).square().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)


def _drop_small_components(verts: np.ndarray, faces: np.ndarray, min_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(vertices [V', 3], faces [F', 3]) without the connected pieces smaller than `min_fraction` of the
    largest (counted in faces); unused vertices removed."""
    if min_fraction <= 0 or len(faces) == 0:
        return verts, faces
    from scipy.sparse import coo_matrix  # noqa: PLC0415
    from scipy.sparse.csgraph import connected_components  # noqa: PLC0415

    e = faces[:, [0, 1, 1, 2]].reshape(-1, 2)
    graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(len(verts), len(verts)))
    k, label = connected_components(graph, directed=False)
    face_label = label[faces[:, 0]]
    sizes = np.bincount(face_label, minlength=k)
    faces = faces[sizes[face_label] >= min_fraction * sizes.max()]
    used = np.zeros(len(verts), dtype=bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    return verts[used], remap[faces].astype(np.int64)


def _laplacian(verts: Tensor, faces: Tensor) -> Tensor:
    """[V, 3] uniform Laplacian v - mean(neighbours) of a triangle mesh (edges counted once per face side)."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], dim=0)
    e = torch.cat([e, e.flip(1)], dim=0)  # both directions
    total = torch.zeros_like(verts).index_add(0, e[:, 0], verts[e[:, 1]])
    count = torch.zeros(len(verts), dtype=verts.dtype, device=verts.device).index_add(
        0, e[:, 0], torch.ones(len(e), dtype=verts.dtype, device=verts.device))
    return verts - total / count.clamp(min=1.0)[:, None]


def _vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """[V, 3] area-weighted unit vertex normals of a counter-clockwise (outward) triangle mesh."""
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)  # length = 2 x area
    acc = torch.zeros_like(verts).index_add(0, faces.reshape(-1), fn.repeat_interleave(3, dim=0))
    return F.normalize(acc, dim=-1, eps=1e-12)


def _boundary_mask(R: int) -> Tensor:
    """[(R+1)^3] bool: grid vertices on the outer faces of the grid."""
    i = torch.arange(R + 1)
    edge = (i == 0) | (i == R)
    return (edge[:, None, None] | edge[None, :, None] | edge[None, None, :]).reshape(-1)


__all__ = ["FlexiCubesConfig", "FlexiCubes"]
