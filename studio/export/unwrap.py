"""UV unwrapping with xatlas: charts packed into [0, 1]^2, vertices split along the seams."""
from __future__ import annotations

import numpy as np


def unwrap(vertices: np.ndarray, faces: np.ndarray, texture_size: int, padding: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vmap [V'], faces' [F, 3], uvs [V', 2]) for `vertices [V, 3]`, `faces [F, 3]`.

    New vertex i is old vertex vmap[i]; uvs are in glTF convention (v down), charts `padding` texels apart
    in a `texture_size`² atlas.
    """
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices.astype(np.float32), faces.astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(xatlas.ChartOptions(), pack)
    vmap, idx, uvs = atlas[0]
    return vmap.astype(np.int64), idx.astype(np.int64), uvs.astype(np.float32)
