"""Simplification to a target face count with quadric edge collapse (fast-simplification)."""
from __future__ import annotations

import numpy as np

from representations.mesh import Mesh

from .clean import compact


def simplify(mesh: Mesh, faces: int) -> Mesh:
    """At most about `faces` triangles (quadric error keeps the silhouette); colours are dropped (resampled later).

    A mesh already at or under the target is returned unchanged; `faces <= 0` means no limit.
    """
    if faces <= 0 or len(mesh.faces) <= faces:
        return mesh
    import fast_simplification

    reduction = 1.0 - faces / len(mesh.faces)
    v, f = fast_simplification.simplify(mesh.vertices.astype(np.float32), mesh.faces.astype(np.int64),
                                        target_reduction=reduction, agg=5)
    f = np.asarray(f, np.int64)
    a, b, c = f[:, 0], f[:, 1], f[:, 2]
    f = f[(a != b) & (b != c) & (a != c)]
    return compact(Mesh(np.asarray(v, np.float32), f, None), np.ones(len(f), bool))  # no unused vertices
