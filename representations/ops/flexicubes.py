"""FlexiCubes isosurface extraction (Shen et al., SIGGRAPH 2023), written from the paper, pure torch.

Dual marching cubes on a regular grid of SDF values, made flexible by per-vertex deformation and
per-cube weights:
- grid vertex positions `x = x0 + (h / 2) tanh(deform)` (h = cell size): each vertex stays in its half cell;
- per cube: 8 corner weights alpha and 12 edge weights beta, normalised `tanh(raw) * 0.99 + 1`, and one
  split weight gamma, `sigmoid(raw) * 0.99 + 0.005`;
- on a crossed edge (i, j) of a cube, the crossing `u = (a_i s_i x_j - a_j s_j x_i) / (a_i s_i - a_j s_j)`;
- each connected component of the surface inside a cube (tables in dmc_tables.py) gives one dual vertex,
  the beta-weighted mean of its crossings;
- every crossed grid edge inside the grid gives one quad joining the dual vertices of its 4 cubes,
  counter-clockwise seen from outside (SDF < 0 is inside);
- training mode splits each quad into 4 triangles around a midpoint (the mean of the two gamma-weighted
  diagonal midpoints), so every weight gets gradients; inference mode cuts each quad along the diagonal
  with the larger gamma product.
Regularisers: `l_dev` (mean absolute deviation of the distances from each dual vertex to its crossings),
`sdf_sign_loss` (binary cross-entropy between the SDF values of sign-changing edges) and an L1 on the raw
alpha / beta weights of the surface cubes.

Crossed edges on the grid boundary make no quads: keep the SDF positive on the boundary for a closed mesh.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .dmc_tables import dmc_split_tables, dmc_tables, edge_corners, edge_index

_QUAD_RING = ((0, 0), (-1, 0), (-1, -1), (0, -1))
"""Offsets (along axis+1, axis+2) of the 4 cubes around a grid edge, counter-clockwise seen from +axis."""


class FlexiGrid:
    """Index arrays of a regular grid with `resolution` cubes per axis filling [-bound, bound]^3.

    Grid vertex (ix, iy, iz) has linear index ix (R+1)^2 + iy (R+1) + iz; cube (cx, cy, cz) has
    cx R^2 + cy R + cz.
    """

    def __init__(self, resolution: int, bound: float = 1.0, device: torch.device | str = "cpu") -> None:
        R = int(resolution)
        self.resolution, self.bound, self.device = R, float(bound), torch.device(device)
        self.cell = 2.0 * self.bound / R
        n = R + 1
        ax = torch.arange(n, device=self.device)
        ix, iy, iz = torch.meshgrid(ax, ax, ax, indexing="ij")
        self.coords = torch.stack([ix, iy, iz], -1).reshape(-1, 3)
        """[(R+1)^3, 3] int64 integer coordinates of the grid vertices."""
        self.positions = (self.coords.float() * self.cell - self.bound).contiguous()
        """[(R+1)^3, 3] float32 rest positions of the grid vertices."""
        c = torch.arange(R, device=self.device)
        cx, cy, cz = (t.reshape(-1) for t in torch.meshgrid(c, c, c, indexing="ij"))
        corners = []
        for k in range(8):
            ox, oy, oz = k & 1, (k >> 1) & 1, (k >> 2) & 1
            corners.append((cx + ox) * n * n + (cy + oy) * n + (cz + oz))
        self.cube_corners = torch.stack(corners, -1)
        """[R^3, 8] int64 grid-vertex index of each cube corner (corner order of dmc_tables)."""
        group, count = dmc_tables()
        self.group = torch.as_tensor(group, device=self.device)
        self.count = torch.as_tensor(count, device=self.device)
        self.edge_corners = torch.as_tensor(edge_corners(), device=self.device)
        twice, split_group, split_count = dmc_split_tables()
        self.twice = torch.as_tensor(twice, device=self.device)
        self.split_group = torch.as_tensor(split_group, device=self.device)
        self.split_count = torch.as_tensor(split_count, device=self.device)

    @property
    def num_vertices(self) -> int:
        return (self.resolution + 1) ** 3

    @property
    def num_cubes(self) -> int:
        return self.resolution**3


@dataclass
class FlexiCubesOut:
    """An extracted mesh and its regularisers."""

    vertices: Tensor
    """[V, 3] float32 vertex positions (differentiable w.r.t. SDF, deformation and weights)."""
    faces: Tensor
    """[F, 3] int64 triangles, counter-clockwise seen from outside."""
    l_dev: Tensor
    """Scalar: mean absolute deviation of dual-vertex-to-crossing distances (0 when there is no surface)."""
    weight_l1: Tensor
    """Scalar: mean |raw alpha| + mean |raw beta| over the cubes the surface crosses."""


def flexicubes(
    grid: FlexiGrid,
    sdf: Tensor,
    deform: Tensor | None = None,
    beta: Tensor | None = None,
    alpha: Tensor | None = None,
    gamma: Tensor | None = None,
    training: bool = True,
) -> FlexiCubesOut:
    """Extract the zero level set of `sdf` (negative inside).

    sdf [(R+1)^3]; deform [(R+1)^3, 3] raw deformation (None: no deformation); beta [R^3, 12], alpha [R^3, 8],
    gamma [R^3] raw (unnormalised) cube weights (None: all weights 1, i.e. plain dual marching cubes).
    training: split quads into 4 triangles around a midpoint (differentiable in gamma) instead of 2.
    """
    R, dev = grid.resolution, sdf.device
    inside = sdf < 0
    n = R + 1
    ins = inside.view(n, n, n).to(torch.uint8)
    case = torch.zeros(R, R, R, dtype=torch.uint8, device=dev)
    for k in range(8):  # corner k at offset (k & 1, k >> 1 & 1, k >> 2 & 1): slices instead of a gather
        ox, oy, oz = k & 1, (k >> 1) & 1, (k >> 2) & 1
        case |= ins[ox : ox + R, oy : oy + R, oz : oz + R] << k
    case = case.view(-1)
    active = ((case != 0) & (case != 255)).nonzero().squeeze(1)  # [A]
    acase = case[active].long()
    grp = grid.group[acase]  # [A, 12]
    cnt = grid.count[acase]  # [A]
    slot = torch.full((grid.num_cubes,), -1, dtype=torch.long, device=dev)
    slot[active] = torch.arange(len(active), device=dev)
    _split_tunnels(grid, acase, active, slot, grp, cnt)
    first = cnt.cumsum(0) - cnt  # first dual vertex of each active cube
    n_dual = int(cnt.sum())
    zero = sdf.sum() * 0.0
    if n_dual == 0:
        return FlexiCubesOut(sdf.new_zeros(0, 3), torch.zeros(0, 3, dtype=torch.long, device=dev), zero, zero)

    # crossings, one per (active cube, crossed edge)
    a_idx, e_idx = (grp >= 0).nonzero(as_tuple=True)
    dual = first[a_idx] + grp[a_idx, e_idx]  # [E] dual vertex of each crossing
    cube = active[a_idx]
    ci, cj = grid.edge_corners[e_idx, 0], grid.edge_corners[e_idx, 1]
    vi, vj = grid.cube_corners[cube, ci], grid.cube_corners[cube, cj]
    si, sj = sdf[vi], sdf[vj]
    # deformed positions, only of the grid vertices on crossed edges
    xi, xj = grid.positions[vi].to(sdf.dtype), grid.positions[vj].to(sdf.dtype)
    if deform is not None:
        xi = xi + 0.5 * grid.cell * torch.tanh(deform[vi])
        xj = xj + 0.5 * grid.cell * torch.tanh(deform[vj])
    x = xi  # for dtype / device of new tensors below
    if alpha is not None:
        al = torch.tanh(alpha[active]) * 0.99 + 1.0  # [A, 8]
        si = si * al[a_idx, ci]
        sj = sj * al[a_idx, cj]
    u = (si[:, None] * xj - sj[:, None] * xi) / (si - sj)[:, None]  # [E, 3]
    if beta is not None:
        be = (torch.tanh(beta[active]) * 0.99 + 1.0)[a_idx, e_idx]  # [E]
    else:
        be = torch.ones_like(si)
    wsum = x.new_zeros(n_dual).index_add(0, dual, be)
    verts = x.new_zeros(n_dual, 3).index_add(0, dual, be[:, None] * u) / wsum[:, None]

    # L_dev: how unevenly each dual vertex sits between its crossings
    dist = (verts[dual] - u).norm(dim=-1)
    ones = torch.ones_like(dist)
    n_per = x.new_zeros(n_dual).index_add(0, dual, ones)
    mean_d = x.new_zeros(n_dual).index_add(0, dual, dist) / n_per
    dev_v = x.new_zeros(n_dual).index_add(0, dual, (dist - mean_d[dual]).abs()) / n_per
    l_dev = dev_v.mean()
    weight_l1 = zero
    if alpha is not None:
        weight_l1 = weight_l1 + alpha[active].abs().mean()
    if beta is not None:
        weight_l1 = weight_l1 + beta[active].abs().mean()

    quads = _quads(grid, inside, slot, grp, first)  # [Q, 4]
    if gamma is not None:
        g_dual = torch.repeat_interleave(torch.sigmoid(gamma[active]) * 0.99 + 0.005, cnt)  # [n_dual]
    else:
        g_dual = torch.ones(n_dual, dtype=x.dtype, device=dev)
    if training:
        gq = g_dual[quads]  # [Q, 4]
        vq = verts[quads]  # [Q, 4, 3]
        m02 = (gq[:, 0:1] * vq[:, 0] + gq[:, 2:3] * vq[:, 2]) / (gq[:, 0:1] + gq[:, 2:3])
        m13 = (gq[:, 1:2] * vq[:, 1] + gq[:, 3:4] * vq[:, 3]) / (gq[:, 1:2] + gq[:, 3:4])
        mid = 0.5 * (m02 + m13)
        mid_id = n_dual + torch.arange(len(quads), device=dev)
        faces = torch.cat(
            [torch.stack([quads[:, k], quads[:, (k + 1) % 4], mid_id], -1) for k in range(4)], dim=0
        )
        verts = torch.cat([verts, mid], dim=0)
    else:
        gq = g_dual[quads]
        along02 = (gq[:, 0] * gq[:, 2] >= gq[:, 1] * gq[:, 3])[:, None]
        t02 = torch.cat([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]], dim=0)
        t13 = torch.cat([quads[:, [0, 1, 3]], quads[:, [1, 2, 3]]], dim=0)
        faces = torch.where(along02.repeat(2, 1), t02, t13)
    # drop dual vertices that no face uses (components that only touch the grid boundary)
    used = torch.zeros(len(verts), dtype=torch.bool, device=dev)
    used[faces.reshape(-1)] = True
    remap = used.long().cumsum(0) - 1
    return FlexiCubesOut(verts[used], remap[faces], l_dev, weight_l1)


def _split_tunnels(grid: FlexiGrid, acase: Tensor, active: Tensor, slot: Tensor, grp: Tensor, cnt: Tensor) -> None:
    """Where the cubes on both sides of an ambiguous face each have one component through both of its
    segments, cut both components in two at that face (dmc_split_tables); edits grp [A, 12] and cnt [A] in
    place. Keeps every dual edge shared by exactly two quads and every dual vertex a disc."""
    twice = grid.twice[acase]  # [A, 6]; face 2 * axis + side
    if not bool(twice.any()):
        return
    R = grid.resolution
    stride = (R * R, R, 1)
    for a in range(3):
        sel = twice[:, 2 * a + 1].nonzero().squeeze(1)
        if len(sel) == 0:
            continue
        cube = active[sel]
        coord = torch.div(cube, stride[a], rounding_mode="floor") % R
        ok = coord < R - 1
        sel, cube = sel[ok], cube[ok]
        other = slot[cube + stride[a]]
        both = (other >= 0) & twice[other.clamp(min=0), 2 * a]
        sel, other = sel[both], other[both]
        if len(sel):
            # cut both loops: the halves pair the same grid edges on the shared face (the loop's two arcs
            # off the face cannot cross), so each half meets one half across it
            grp[sel] = grid.split_group[acase[sel], 2 * a + 1]
            cnt[sel] = grid.split_count[acase[sel], 2 * a + 1]
            grp[other] = grid.split_group[acase[other], 2 * a]
            cnt[other] = grid.split_count[acase[other], 2 * a]


def _quads(grid: FlexiGrid, inside: Tensor, slot: Tensor, grp: Tensor, first: Tensor) -> Tensor:
    """[Q, 4] dual-vertex indices of the quads of all crossed interior grid edges, outward counter-clockwise.
    slot [R^3]: row of each cube in grp [A, 12] (-1 for cubes the surface does not cross)."""
    R, dev = grid.resolution, inside.device
    n = R + 1
    ins = inside.view(n, n, n)
    out = []
    for a in range(3):
        u, v = (a + 1) % 3, (a + 2) % 3
        lo = ins.narrow(a, 0, R)
        hi = ins.narrow(a, 1, R)
        cross = lo != hi
        # only edges with all 4 cubes inside the grid
        idx = [slice(None)] * 3
        idx[u] = slice(1, R)
        idx[v] = slice(1, R)
        sub = torch.zeros_like(cross)
        sub[tuple(idx)] = cross[tuple(idx)]
        p = sub.nonzero()  # [Q, 3] coordinates of the lower vertex of each crossed edge
        if len(p) == 0:
            continue
        lower_inside = lo[p[:, 0], p[:, 1], p[:, 2]]
        ids = []
        for du, dv in _QUAD_RING:
            c = p.clone()
            c[:, u] += du
            c[:, v] += dv
            cube = c[:, 0] * R * R + c[:, 1] * R + c[:, 2]
            s = slot[cube]
            ids.append(first[s] + grp[s, edge_index(a, -du, -dv)])
        q = torch.stack(ids, -1)
        # counter-clockwise around +axis: outward when the outside is at +axis (lower vertex inside)
        out.append(torch.where(lower_inside[:, None], q, q.flip(-1)))
    if not out:
        return torch.zeros(0, 4, dtype=torch.long, device=dev)
    return torch.cat(out, 0)


def sdf_sign_loss(grid: FlexiGrid, sdf: Tensor) -> Tensor:
    """Scalar: mean of BCE(sigmoid(s_a), s_b >= 0) + BCE(sigmoid(s_b), s_a >= 0) over the sign-changing grid
    edges (a, b): pulls each value toward its neighbour's sign, so it penalises sign changes (floaters and
    spurious internal surfaces); weight it down as the shape settles."""
    R = grid.resolution
    n = R + 1
    s = sdf.view(n, n, n)
    terms = []
    for a in range(3):
        sa, sb = s.narrow(a, 0, R).reshape(-1), s.narrow(a, 1, R).reshape(-1)
        m = (sa < 0) != (sb < 0)
        if m.any():
            sa, sb = sa[m], sb[m]
            terms.append(
                F.binary_cross_entropy_with_logits(sa, (sb >= 0).to(sa.dtype), reduction="none")
                + F.binary_cross_entropy_with_logits(sb, (sa >= 0).to(sb.dtype), reduction="none")
            )
    if not terms:
        return sdf.sum() * 0.0
    return torch.cat(terms).mean()


__all__ = ["FlexiGrid", "FlexiCubesOut", "flexicubes", "sdf_sign_loss"]
