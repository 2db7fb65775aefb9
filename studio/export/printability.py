"""The printability report of a print solid (studio/export/printable.py), for metrics.json:

    report = printability(solid)   # watertight, manifold, volume_mm3, size_mm, min_wall_mm, overhang_share, ...

- watertight: every edge is shared by exactly two faces;
- manifold: manifold3d accepted the solid (PrintSolid.manifold);
- min_wall_mm / wall_p05_mm: inward ray casting: from each sampled face's centroid a ray goes against the
  face's normal; the distance to the first other face it hits is the inside thickness there. The smallest
  (and the 5th percentile) over the samples estimate the thinnest wall or feature;
- overhang_share: area of faces whose normal points down more than 45 degrees from vertical (n_z < -cos 45°),
  over the total area; faces lying on the bed (all vertices at min z) do not count, the bed holds them.
No torch needed.
"""
from __future__ import annotations

import numpy as np

from .printable import PrintSolid

OVERHANG_DEGREES = 45.0
"""A face overhangs when it faces down by more than this angle from vertical."""
WALL_SAMPLES = 1024
"""Faces sampled (area-weighted, seeded) for the wall-thickness rays; every face when there are fewer."""


def printability(solid: PrintSolid, samples: int = WALL_SAMPLES) -> dict:
    """The report of `solid` (all lengths in millimetres, rounded for metrics.json)."""
    v, f = solid.vertices, solid.faces
    walls = wall_thickness(v, f, samples)
    finite = walls[np.isfinite(walls)]
    return {
        "watertight": bool(is_watertight(f)),
        "manifold": bool(solid.manifold),
        "volume_mm3": round(float(solid.volume_mm3), 3),
        "size_mm": [round(float(x), 3) for x in np.ptp(v, 0)],
        "min_wall_mm": round(float(finite.min()), 3) if len(finite) else None,
        "wall_p05_mm": round(float(np.percentile(finite, 5)), 3) if len(finite) else None,
        "overhang_share": round(float(overhang_share(v, f)), 4),
        "triangles": int(len(f)),
        "repairs": solid.repairs,
    }


def is_watertight(faces: np.ndarray) -> bool:
    """Every undirected edge is used by exactly two faces."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    return bool(len(faces)) and bool((counts == 2).all())


def face_normals_areas(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([F, 3] unit normals, [F] areas)."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    n = np.cross(b - a, c - a)
    length = np.linalg.norm(n, axis=1)
    return n / np.maximum(length, 1e-30)[:, None], 0.5 * length


def overhang_share(vertices: np.ndarray, faces: np.ndarray, degrees: float = OVERHANG_DEGREES) -> float:
    """Share of the surface area that faces down more than `degrees` from vertical, faces on the bed excluded."""
    normals, areas = face_normals_areas(vertices, faces)
    z = vertices[:, 2]
    on_bed = (z[faces] <= z.min() + 1e-6 * max(float(np.ptp(vertices, 0).max()), 1e-9)).all(1)
    down = (normals[:, 2] < -np.cos(np.radians(degrees))) & ~on_bed
    total = areas.sum()
    return float(areas[down].sum() / total) if total > 0 else 0.0


def wall_thickness(vertices: np.ndarray, faces: np.ndarray, samples: int = WALL_SAMPLES,
                   seed: int = 0) -> np.ndarray:
    """[S] inside thickness at sampled face centroids: distance along the inward normal to the first other face
    (inf when the ray leaves without a hit, e.g. an open mesh)."""
    normals, areas = face_normals_areas(vertices, faces)
    if len(faces) <= samples:
        picked = np.arange(len(faces))
    else:
        rng = np.random.default_rng(seed)
        picked = rng.choice(len(faces), samples, replace=False, p=areas / areas.sum())
    origins = vertices[faces[picked]].mean(1)
    return first_hits(origins, -normals[picked], vertices, faces, picked)


def first_hits(origins: np.ndarray, dirs: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
               skip: np.ndarray, chunk: int = 64) -> np.ndarray:
    """[R] distance from each ray (origins [R, 3], unit dirs [R, 3]) to the nearest triangle it hits other than
    its own face `skip[r]` (Moeller-Trumbore, all triangles, `chunk` rays at a time); inf for no hit."""
    a = vertices[faces[:, 0]]
    e1, e2 = vertices[faces[:, 1]] - a, vertices[faces[:, 2]] - a
    out = np.full(len(origins), np.inf)
    eps = 1e-9 * max(float(np.ptp(vertices, 0).max()), 1e-9)
    for s in range(0, len(origins), chunk):
        o, d = origins[s:s + chunk, None, :], dirs[s:s + chunk, None, :]  # [r, 1, 3]
        p = np.cross(d, e2[None])  # [r, F, 3]
        det = np.einsum("rfk,fk->rf", p, e1)
        ok = np.abs(det) > 1e-20
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        t_vec = o - a[None]
        u = np.einsum("rfk,rfk->rf", t_vec, p) * inv
        q = np.cross(t_vec, e1[None])
        w = np.einsum("rfk,rfk->rf", np.broadcast_to(d, q.shape), q) * inv
        t = np.einsum("rfk,fk->rf", q, e2) * inv
        hit = ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > eps)
        hit[np.arange(len(o)), skip[s:s + chunk]] = False
        out[s:s + len(o)] = np.where(hit, t, np.inf).min(1)
    return out
