"""Mesh clean-up: drop floaters, outward winding, smooth normals, and placement in metres on the ground plane."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from representations.mesh import Mesh


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[F] triangle areas of `vertices [V, 3]`, `faces [F, 3]`."""
    a, b, c = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def face_components(n_vertices: int, faces: np.ndarray) -> np.ndarray:
    """[F] connected-component label of each face (faces sharing a vertex are connected)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n_vertices, n_vertices))
    _, vertex_label = connected_components(graph, directed=False)
    return vertex_label[faces[:, 0]]


def compact(mesh: Mesh, keep_faces: np.ndarray) -> Mesh:
    """The sub-mesh made of faces `keep_faces [F] bool`, with unused vertices removed."""
    faces = mesh.faces[keep_faces]
    used = np.unique(faces)
    remap = np.full(len(mesh.vertices), -1, np.int64)
    remap[used] = np.arange(len(used))
    colors = None if mesh.colors is None else mesh.colors[used]
    return Mesh(mesh.vertices[used], remap[faces], colors)


def drop_floaters(mesh: Mesh, min_part_fraction: float) -> Mesh:
    """Keep the connected parts whose surface area is at least `min_part_fraction` of the largest part's."""
    if mesh.is_empty:
        return mesh
    labels = face_components(len(mesh.vertices), mesh.faces)
    area = np.bincount(labels, weights=face_areas(mesh.vertices, mesh.faces))
    keep_labels = area >= min_part_fraction * area.max()
    return compact(mesh, keep_labels[labels])


def orient_outward(mesh: Mesh) -> Mesh:
    """Flip every connected part whose signed volume is negative, so all normals point outward."""
    if mesh.is_empty:
        return mesh
    labels = face_components(len(mesh.vertices), mesh.faces)
    a, b, c = (mesh.vertices[mesh.faces[:, i]].astype(np.float64) for i in range(3))
    vol = np.bincount(labels, weights=np.einsum("ij,ij->i", a, np.cross(b, c)))
    flip = vol[labels] < 0
    faces = mesh.faces.copy()
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return Mesh(mesh.vertices, faces, mesh.colors)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[V, 3] smooth unit normals: area-weighted average of the adjacent faces' normals."""
    a, b, c = (vertices[faces[:, i]].astype(np.float64) for i in range(3))
    fn = np.cross(b - a, c - a)  # length = 2 * area: area weighting for free
    n = np.zeros((len(vertices), 3))
    for i in range(3):
        np.add.at(n, faces[:, i], fn)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(length > 1e-20, n / np.maximum(length, 1e-20), np.array([0.0, 1.0, 0.0]))
    return n.astype(np.float32)


@dataclass
class Placement:
    """world_metres = (scene_point - offset) * scale: centred in X/Z, min y on the ground, longest side = size."""

    offset: np.ndarray
    """[3] scene-frame point that moves to the origin (bounding-box centre in X/Z, minimum in Y)."""
    scale: float
    """Metres per scene unit."""

    def apply(self, points: np.ndarray) -> np.ndarray:
        """[N, 3] scene points -> [N, 3] metres."""
        return ((points - self.offset) * self.scale).astype(np.float32)

    def invert(self, points: np.ndarray) -> np.ndarray:
        """[N, 3] metres -> [N, 3] scene points."""
        return (points / self.scale + self.offset).astype(np.float32)


def placement(vertices: np.ndarray, size: float) -> Placement:
    """Placement for `vertices [V, 3]` whose bounding box's longest side becomes `size` metres (size <= 0: keep scale)."""
    lo, hi = vertices.min(0).astype(np.float64), vertices.max(0).astype(np.float64)
    offset = np.array([(lo[0] + hi[0]) / 2, lo[1], (lo[2] + hi[2]) / 2])
    extent = float((hi - lo).max())
    scale = size / extent if size > 0 and extent > 0 else 1.0
    return Placement(offset, scale)
