"""3MF writer: the print solid (studio/export/printable.py) in millimetres with per-vertex colour (a 3MF
materials-extension colour group: each triangle's three corners point at their vertices' colours)."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from ..rundir import atomic_write_bytes
from .asset import ExportMesh
from .printable import DEFAULT_PRINT_HEIGHT_MM, PrintSolid, print_solid

CORE = "http://schemas.microsoft.com/3dmanufacturing/core/2015/02"
MATERIAL = "http://schemas.microsoft.com/3dmanufacturing/material/2015/02"
CONTENT_TYPES = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                 '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                 '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
                 '<Default Extension="model" ContentType="application/vnd.ms-package.3dmanufacturing-3dmodel+xml"/>'
                 '</Types>')
RELS = ('<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Target="/3D/3dmodel.model" Id="rel0" '
        'Type="http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"/></Relationships>')


def model_xml(solid: PrintSolid) -> str:
    """3D/3dmodel.model of `solid`: one colour group (the distinct 8-bit vertex colours), one mesh object."""
    rgb = (np.clip(solid.colors, 0, 1) * 255 + 0.5).astype(np.uint8)
    palette, index = np.unique(rgb, axis=0, return_inverse=True)
    index = index.reshape(-1)
    colors = "".join(f'<m:color color="#{r:02X}{g:02X}{b:02X}"/>' for r, g, b in palette.tolist())
    verts = "".join(f'<vertex x="{x:.5f}" y="{y:.5f}" z="{z:.5f}"/>' for x, y, z in solid.vertices.tolist())
    tris = "".join(f'<triangle v1="{a}" v2="{b}" v3="{c}" pid="1" '  # lib3mf reads p2 / p3 only beside a pid
                   f'p1="{index[a]}" p2="{index[b]}" p3="{index[c]}"/>' for a, b, c in solid.faces.tolist())
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<model unit="millimeter" xml:lang="en-US" xmlns="{CORE}" xmlns:m="{MATERIAL}">'
            '<metadata name="Application">text3d-studio</metadata><resources>'
            f'<m:colorgroup id="1">{colors}</m:colorgroup>'
            f'<object id="2" type="model" pid="1" pindex="{index[solid.faces[0, 0]] if len(solid.faces) else 0}">'
            f'<mesh><vertices>{verts}</vertices><triangles>{tris}</triangles></mesh></object>'
            '</resources><build><item objectid="2"/></build></model>')


def threemf_bytes(solid: PrintSolid) -> bytes:
    """The .3mf package (a zip: content types, relationships, the model) of `solid`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", CONTENT_TYPES)
        z.writestr("_rels/.rels", RELS)
        z.writestr("3D/3dmodel.model", model_xml(solid))
    return buf.getvalue()


def write_3mf(mesh: ExportMesh, path: Path, height_mm: float = DEFAULT_PRINT_HEIGHT_MM) -> list[Path]:
    """Write the print solid of `mesh` at `height_mm` as `path` (.3mf) atomically; returns [path]."""
    atomic_write_bytes(path, threemf_bytes(print_solid(mesh, height_mm)))
    return [path]
