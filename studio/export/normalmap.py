"""Baked tangent-space normal map: the fine surface's normals carried onto the simplified, unwrapped mesh.

    tangents = vertex_tangents(vertices, faces, uvs, normals)             # [V, 4] glTF TANGENT (w = +-1)
    image = bake_normal_map(vertices, faces, uvs, normals, tangents, fine, size, padding)   # [T, T, 3] uint8

For each texel of the simplified mesh's UV layout, the surface point under it is moved to the nearest point of the
fine (cleaned, pre-simplification) mesh, whose smooth vertex normals are interpolated there; that normal is written
in the texel's tangent frame. The frame follows glTF: T = the direction of increasing u, bitangent
B = cross(N, T) * w pointing "up" in the image (decreasing glTF v), N the interpolated vertex normal; the texel is
(n.T, n.B, n.N) * 0.5 + 0.5, linear (glTF reads normalTexture without a transfer function). Pure numpy / torch, CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .bake import pad_gutters, rasterize_uv
from .clean import vertex_normals

CANDIDATES = 8
"""Fine faces (nearest by centroid) tested for the exact closest point of each texel's surface point."""


@dataclass
class FineSurface:
    """The fine mesh a normal map is baked from: vertices [V, 3], faces [F, 3], smooth unit normals [V, 3], and a
    k-d tree of its face centroids."""

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    tree: object


def fine_surface(vertices: np.ndarray, faces: np.ndarray) -> FineSurface:
    """The FineSurface of `vertices [V, 3]`, `faces [F, 3]` (float64 positions, area-weighted vertex normals)."""
    from scipy.spatial import cKDTree

    v = vertices.astype(np.float64)
    f = faces.astype(np.int64)
    return FineSurface(v, f, vertex_normals(v, f).astype(np.float64), cKDTree(v[f].mean(1)))


def vertex_tangents(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """[V, 4] float32 glTF tangents of a mesh (vertices [V, 3], faces [F, 3], uvs [V, 2] glTF v-down, unit normals
    [V, 3]): xyz the unit direction of increasing u made perpendicular to the normal, w = +1 where the direction
    of decreasing v (image up) is cross(normal, xyz), -1 where it is the opposite (a mirrored chart).

    Per face, the derivatives dP/du and dP/d(-v) from the UV edges, each made unit length and weighted by the face
    area, are summed at its vertices (vertices are split at UV seams, so charts do not mix)."""
    p = vertices.astype(np.float64)[faces]  # [F, 3, 3]
    uv = uvs.astype(np.float64)[faces] * np.array([1.0, -1.0])  # [F, 3, 2] with v up
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    d1, d2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    ok = np.abs(det) > 1e-14
    det = np.where(ok, det, 1.0)[:, None]
    t = (e1 * d2[:, 1:] - e2 * d1[:, 1:]) / det
    b = (e2 * d1[:, :1] - e1 * d2[:, :1]) / det
    area = 0.5 * np.linalg.norm(np.cross(e1, e2), axis=1)
    weight = np.where(ok, area, 0.0)[:, None]
    t = _unit(t) * weight
    b = _unit(b) * weight
    T = np.zeros((len(vertices), 3))
    B = np.zeros((len(vertices), 3))
    for i in range(3):
        np.add.at(T, faces[:, i], t)
        np.add.at(B, faces[:, i], b)
    n = normals.astype(np.float64)
    T = _unit(T - n * np.einsum("ij,ij->i", n, T)[:, None], fallback=_perpendicular(n))
    w = np.where(np.einsum("ij,ij->i", np.cross(n, T), B) < 0, -1.0, 1.0)
    return np.concatenate([T, w[:, None]], 1).astype(np.float32)


def closest_points(surface: FineSurface, points: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(face [N] int64, bary [N, 3] float64) of the point of `surface` nearest to each of `points [N, 3]`, searched
    among the CANDIDATES faces whose centroids are nearest (exact for the evenly sized faces of marching cubes)."""
    k = min(CANDIDATES, len(surface.faces))
    face = np.zeros(len(points), np.int64)
    bary = np.zeros((len(points), 3))
    for s in range(0, len(points), chunk):
        q = points[s:s + chunk].astype(np.float64)
        _, cand = surface.tree.query(q, k=k)
        cand = cand.reshape(len(q), k)
        tri = surface.vertices[surface.faces[cand]]  # [n, k, 3, 3]
        b = closest_on_triangles(tri.reshape(-1, 3, 3), np.repeat(q, k, 0)).reshape(len(q), k, 3)
        nearest = np.einsum("nkc,nkcd->nkd", b, tri)
        best = np.argmin(((nearest - q[:, None]) ** 2).sum(-1), 1)
        rows = np.arange(len(q))
        face[s:s + chunk] = cand[rows, best]
        bary[s:s + chunk] = b[rows, best]
    return face, bary


def closest_on_triangles(tri: np.ndarray, p: np.ndarray) -> np.ndarray:
    """[N, 3] barycentric coordinates of the point of each triangle `tri [N, 3, 3]` nearest to `p [N, 3]`: the
    projection onto the plane when it falls inside, else the nearest point of the three edges."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = d00 * d11 - d01 * d01
    good = den > 1e-30
    den = np.where(good, den, 1.0)
    l1 = (d11 * d20 - d01 * d21) / den
    l2 = (d00 * d21 - d01 * d20) / den
    inside = good & (l1 >= 0) & (l2 >= 0) & (l1 + l2 <= 1)
    best = np.stack([1 - l1 - l2, l1, l2], 1)
    best_d = np.full(len(p), np.inf)  # squared distance to the nearest edge point so far (outside points)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        e = tri[:, j] - tri[:, i]
        s = np.clip(((p - tri[:, i]) * e).sum(1) / np.maximum((e * e).sum(1), 1e-30), 0, 1)
        d = ((tri[:, i] + s[:, None] * e - p) ** 2).sum(1)
        take = ~inside & (d < best_d)
        edge = np.zeros((len(p), 3))
        edge[:, i], edge[:, j] = 1 - s, s
        best = np.where(take[:, None], edge, best)
        best_d = np.where(take, d, best_d)
    return best


def fine_normals(surface: FineSurface, points: np.ndarray) -> np.ndarray:
    """[N, 3] unit normals of `surface` (its vertex normals interpolated) at the points nearest to `points [N, 3]`."""
    face, bary = closest_points(surface, points)
    return _unit(np.einsum("nc,ncd->nd", bary, surface.normals[surface.faces[face]]))


def texel_frames(faces: np.ndarray, normals: np.ndarray, tangents: np.ndarray, face: np.ndarray,
                 bary: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, B, N), each [N, 3] unit, the tangent frame at surface points (`face [N]`, `bary [N, 3]`) of a mesh with
    `faces [F, 3]`, vertex `normals [V, 3]` and glTF `tangents [V, 4]`: N and T interpolated and normalised, T made
    perpendicular to N, B = cross(N, T) * sign(interpolated w) (what a glTF viewer's fragment shader does)."""
    corners = faces[face]  # [N, 3]
    n = _unit(np.einsum("nc,ncd->nd", bary, normals.astype(np.float64)[corners]))
    t4 = np.einsum("nc,ncd->nd", bary, tangents.astype(np.float64)[corners])
    t = _unit(t4[:, :3] - n * np.einsum("ij,ij->i", n, t4[:, :3])[:, None], fallback=_perpendicular(n))
    b = np.cross(n, t) * np.where(t4[:, 3] < 0, -1.0, 1.0)[:, None]
    return t, b, n


@torch.no_grad()
def bake_normal_map(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, normals: np.ndarray,
                    tangents: np.ndarray, fine: FineSurface, size: int, padding: int) -> np.ndarray:
    """[size, size, 3] uint8 tangent-space normal map (linear, (x, y, z) * 0.5 + 0.5) of the mesh `vertices [V, 3]`,
    `faces [F, 3]`, `uvs [V, 2]`, vertex `normals [V, 3]`, `tangents [V, 4]` (vertex_tangents), carrying the normals
    of `fine` (same frame as `vertices`). Gutters padded like the albedo (bake.pad_gutters); texels no chart reaches
    are flat (0, 0, 1)."""
    face_id, bary = rasterize_uv(torch.from_numpy(uvs), torch.from_numpy(faces).long(), size)
    filled = face_id >= 0
    fid, b = face_id[filled].numpy(), bary[filled].numpy().astype(np.float64)
    points = np.einsum("nc,ncd->nd", b, vertices.astype(np.float64)[faces[fid]])
    n_fine = fine_normals(fine, points)
    t, bt, n = texel_frames(faces, normals, tangents, fid, b)
    local = np.stack([(n_fine * t).sum(1), (n_fine * bt).sum(1), (n_fine * n).sum(1)], 1)
    image = torch.zeros(size, size, 3, dtype=torch.float64)
    image[..., 2] = 1.0
    image[filled] = torch.from_numpy(local)
    image = pad_gutters(image, filled, padding)
    image = torch.nn.functional.normalize(image, dim=-1)
    return encode_normals(image.numpy())


def encode_normals(n: np.ndarray) -> np.ndarray:
    """[..., 3] unit vectors -> [..., 3] uint8 texels (x * 0.5 + 0.5, linear)."""
    return (np.clip(n * 0.5 + 0.5, 0, 1) * 255 + 0.5).astype(np.uint8)


def decode_normals(texels: np.ndarray) -> np.ndarray:
    """[..., 3] uint8 texels -> [..., 3] unit vectors (what a glTF viewer reads from normalTexture)."""
    return _unit(texels.astype(np.float64) / 255 * 2 - 1)


def _unit(x: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
    """Rows of `x [N, 3]` scaled to unit length; zero rows become `fallback` [N, 3] (or stay zero)."""
    length = np.linalg.norm(x, axis=-1, keepdims=True)
    out = x / np.maximum(length, 1e-30)
    if fallback is not None:
        out = np.where(length > 1e-12, out, fallback)
    return out


def _perpendicular(n: np.ndarray) -> np.ndarray:
    """[N, 3] unit vectors perpendicular to the unit rows of `n [N, 3]`."""
    axis = np.where(np.abs(n[:, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    return _unit(np.cross(n, axis))
