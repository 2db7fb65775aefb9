"""The print solid: an export mesh made watertight, manifold and outward-oriented, in millimetres, Z up, at a chosen
height (what STL and 3MF carry). No torch needed; manifold3d checks (and round-trips) the result.

    solid = print_solid(export_mesh, height_mm=50.0)   # PrintSolid: vertices [V, 3] mm, faces, colours, manifold

Steps: weld vertices by position (the textured mesh is split along UV seams), drop degenerate and duplicate faces
and faces on edges shared by more than two faces, make the winding consistent across every edge, close each
boundary loop with a fan around its centroid, flip parts with negative volume, turn Y-up metres into Z-up
millimetres scaled to the height, centred in X/Y on the bed (min z = 0), and let manifold3d accept it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .asset import ExportMesh

DEFAULT_PRINT_HEIGHT_MM = 50.0
"""export.print_height_mm's default: the printed object's height (Z extent) in millimetres."""
PRINT_FORMATS = ("stl", "3mf")
"""The formats written from the print solid (their writers take `height_mm`)."""
WELD_TOLERANCE = 1e-6
"""Vertices closer than this fraction of the bounding box's longest side are one vertex."""


@dataclass
class PrintSolid:
    """A closed, consistently oriented triangle mesh in millimetres, Z up, resting on the bed (min z = 0)."""

    vertices: np.ndarray
    """[V, 3] float64 positions in millimetres."""
    faces: np.ndarray
    """[F, 3] int64 vertex indices, counter-clockwise seen from outside."""
    colors: np.ndarray
    """[V, 3] float32 albedo in [0, 1]."""
    manifold: bool
    """manifold3d accepted the mesh as an oriented 2-manifold (its status is NoError)."""
    volume_mm3: float
    """Enclosed volume in cubic millimetres (manifold3d's, or the signed volume if it refused the mesh)."""
    repairs: dict
    """What was changed: welded_vertices, dropped_faces, flipped_faces, holes_filled."""


def weld(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, tol: float):
    """Merge vertices within `tol` (grid-rounded) of each other: (vertices [V', 3], faces [F, 3], colors [V', 3]);
    a merged vertex takes the mean colour of its copies."""
    key = np.round(vertices.astype(np.float64) / tol).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    count = np.bincount(inverse, minlength=len(first)).astype(np.float64)[:, None]
    mean = np.stack([np.bincount(inverse, colors[:, i], len(first)) for i in range(3)], 1) / count
    return vertices[first].astype(np.float64), inverse[faces], mean.astype(np.float32)


def clean_faces(faces: np.ndarray) -> np.ndarray:
    """[F] bool: faces to keep: not degenerate (a repeated index), not a duplicate of an earlier face, no edge shared
    by more than two faces (those leave a hole that `fill_holes` closes)."""
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    _, first = np.unique(np.sort(faces, 1), axis=0, return_index=True)
    unique = np.zeros(len(faces), bool)
    unique[first] = True
    keep &= unique
    edges, face_of = undirected_edges(faces[keep])
    _, inverse, counts = np.unique(edges, axis=0, return_inverse=True, return_counts=True)
    bad = np.zeros(keep.sum(), bool)
    bad[face_of[counts[inverse.reshape(-1)] > 2]] = True
    keep[np.flatnonzero(keep)[bad]] = False
    return keep


def drop_unused(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray):
    """(vertices, faces, colors) without the vertices no face uses."""
    used = np.unique(faces)
    remap = np.full(len(vertices), -1, np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces], colors[used]


def undirected_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([3F, 2] sorted vertex pairs of every face's edges, [3F] the face of each)."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.sort(e, 1), np.tile(np.arange(len(faces)), 3)


def orient_consistently(faces: np.ndarray) -> np.ndarray:
    """`faces` re-wound so that every edge shared by two faces is traversed in opposite directions (a breadth-first
    walk from one face of each connected part)."""
    F = len(faces)
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges, face_of = undirected_edges(faces)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    e, f, d = edges[order], face_of[order], directed[order]
    pair = np.flatnonzero((e[1:] == e[:-1]).all(1))  # shared edges (clean_faces left at most two faces per edge)
    fa, fb = f[pair], f[pair + 1]
    same = (d[pair] == d[pair + 1]).all(1)  # both faces run the edge the same way: one of them must flip
    if not same.any():
        return faces.copy()
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order

    graph = coo_matrix((np.ones(len(pair)), (fa, fb)), shape=(F, F)).tocsr()
    graph = graph + graph.T
    parity = {}
    for a, b, s in zip(fa, fb, same):
        parity[(a, b)] = parity[(b, a)] = bool(s)
    flip = np.zeros(F, bool)
    seen = np.zeros(F, bool)
    for root in range(F):
        if seen[root]:
            continue
        nodes, pred = breadth_first_order(graph, root, directed=False, return_predecessors=True)
        seen[nodes] = True
        for node in nodes[1:]:
            flip[node] = flip[pred[node]] ^ parity[(pred[node], node)]
    out = faces.copy()
    out[flip] = out[flip][:, [0, 2, 1]]
    return out


def boundary_loops(faces: np.ndarray) -> list[list[int]]:
    """Closed loops of boundary half-edges (a -> b with no face running b -> a) of a consistently wound mesh, each
    as the list of its vertices in the half-edges' order."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    present = set(map(tuple, directed.tolist()))
    nxt: dict[int, list[int]] = {}
    for a, b in directed.tolist():
        if (b, a) not in present:
            nxt.setdefault(a, []).append(b)
    loops = []
    while nxt:
        start = next(iter(nxt))
        loop, v = [start], start
        while True:
            w = nxt[v].pop()
            if not nxt[v]:
                del nxt[v]
            if w == start or w not in nxt:
                break
            loop.append(w)
            v = w
        if len(loop) >= 3:
            loops.append(loop)
    return loops


def fill_holes(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray):
    """Close every boundary loop with a fan around a new vertex at the loop's centroid (its colour the loop's
    mean): (vertices, faces, colors, number of holes filled)."""
    loops = boundary_loops(faces)
    new_v, new_c, new_f = [vertices], [colors], [faces]
    n = len(vertices)
    for loop in loops:
        idx = np.asarray(loop)
        new_v.append(vertices[idx].mean(0, keepdims=True))
        new_c.append(colors[idx].mean(0, keepdims=True))
        a, b = idx, np.roll(idx, -1)  # boundary half-edges a -> b; the cap runs b -> a
        new_f.append(np.stack([b, a, np.full(len(idx), n)], 1))
        n += 1
    return np.concatenate(new_v), np.concatenate(new_f), np.concatenate(new_c).astype(np.float32), len(loops)


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Enclosed volume (positive for outward winding) of a closed mesh."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def orient_parts_outward(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, int]:
    """Flip every connected part whose signed volume is negative: (faces, number of faces flipped)."""
    from .clean import face_components

    labels = face_components(len(vertices), faces)
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    vol = np.bincount(labels, weights=np.einsum("ij,ij->i", a, np.cross(b, c)))
    flip = vol[labels] < 0
    out = faces.copy()
    out[flip] = out[flip][:, [0, 2, 1]]
    return out, int(flip.sum())


def to_print_frame(vertices: np.ndarray, height_mm: float) -> np.ndarray:
    """Y-up metres -> Z-up millimetres scaled so the Z extent is `height_mm`, centred in X/Y, min z = 0.
    (x, y, z) -> (x, -z, y): a rotation about X (no mirror), so the winding stays outward."""
    p = np.stack([vertices[:, 0], -vertices[:, 2], vertices[:, 1]], 1).astype(np.float64)
    lo, hi = p.min(0), p.max(0)
    scale = height_mm / (hi[2] - lo[2]) if hi[2] > lo[2] else 1000.0
    centre = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    return (p - centre) * scale


def manifold_check(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray):
    """Round-trip through manifold3d: (vertices, faces, colors, accepted, volume). Accepted: the Manifold's status
    is NoError, and the returned mesh is manifold3d's own (colours carried as vertex properties); refused: the
    input unchanged and its signed volume."""
    import manifold3d

    props = np.ascontiguousarray(np.concatenate([vertices, colors], 1), np.float64)
    solid = manifold3d.Manifold(manifold3d.Mesh64(props, np.ascontiguousarray(faces, np.uint64)))
    if solid.status() != manifold3d.Error.NoError or solid.is_empty():
        return vertices, faces, colors, False, signed_volume(vertices, faces)
    out = solid.to_mesh64()
    vp = np.asarray(out.vert_properties, np.float64)
    return vp[:, :3], np.asarray(out.tri_verts, np.int64), vp[:, 3:6].astype(np.float32), True, float(solid.volume())


_last: tuple[ExportMesh, float, PrintSolid] | None = None
"""The last print solid made, with its mesh and height: an export writing stl and 3mf and the printability report
asks for the same one three times (~0.5 s each at 20k faces)."""


def print_solid(mesh: ExportMesh, height_mm: float = DEFAULT_PRINT_HEIGHT_MM) -> PrintSolid:
    """The print solid of `mesh` (an ExportMesh: metres, Y up) at `height_mm` millimetres tall (made once for the
    same mesh object and height)."""
    global _last
    if _last is not None and _last[0] is mesh and _last[1] == height_mm:
        return _last[2]
    _last = (mesh, height_mm, make_print_solid(mesh, height_mm))
    return _last[2]


def make_print_solid(mesh: ExportMesh, height_mm: float) -> PrintSolid:
    """Weld, clean, orient, close and scale `mesh` into the print solid, checked by manifold3d."""
    extent = float(np.ptp(mesh.vertices, 0).max()) or 1.0
    v, f, c = weld(mesh.vertices, mesh.faces, mesh.colors, WELD_TOLERANCE * extent)
    keep = clean_faces(f)
    v, f, c = drop_unused(v, f[keep], c)
    f = orient_consistently(f)
    v, f, c, holes = fill_holes(v, f, c)
    f, flipped = orient_parts_outward(v, f)
    v = to_print_frame(v, height_mm)
    repairs = {"welded_vertices": int(len(mesh.vertices) - (len(v) - holes)), "dropped_faces": int((~keep).sum()),
               "holes_filled": int(holes), "flipped_faces": flipped}
    v, f, c, ok, volume = manifold_check(v, f, c)
    return PrintSolid(v, f, c, ok, volume, repairs)
