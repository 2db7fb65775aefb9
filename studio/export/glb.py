"""GLB writer: one mesh, a PBR metallic-roughness material (the mesh's metallic / roughness factors) with the
baked albedo as baseColorTexture, a PNG that carries an sRGB chunk (glTF reads baseColorTexture as sRGB)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..rundir import atomic_write_bytes
from .asset import ExportMesh


def glb_bytes(mesh: ExportMesh) -> bytes:
    """The encoded .glb file of `mesh` (textured when it has UVs and a texture, else vertex colours)."""
    import trimesh

    if mesh.uvs is not None and mesh.texture is not None:
        material = trimesh.visual.material.PBRMaterial(
            name="albedo", baseColorTexture=srgb_image(mesh.texture), metallicFactor=float(mesh.metallic),
            roughnessFactor=float(mesh.roughness), doubleSided=False)
        uv = np.stack([mesh.uvs[:, 0], 1.0 - mesh.uvs[:, 1]], 1)  # trimesh takes OBJ-style v (up) and flips it
        visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    else:
        rgba = np.concatenate([_u8(mesh.colors), np.full((len(mesh.colors), 1), 255, np.uint8)], 1)
        visual = trimesh.visual.ColorVisuals(vertex_colors=rgba)
    tm = trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, vertex_normals=mesh.normals, visual=visual,
                         process=False)
    buf = io.BytesIO()
    tm.export(buf, file_type="glb", include_normals=True)
    return buf.getvalue()


def srgb_image(texture: np.ndarray):
    """A PIL image of `texture [T, T, 3] uint8` whose PNG encoding carries an sRGB chunk (perceptual intent).

    trimesh re-encodes the image with a plain `img.save(f, format="png")`; this image's save adds the chunk.
    """
    from functools import partial

    from PIL import Image, PngImagePlugin

    img = Image.fromarray(texture)
    info = PngImagePlugin.PngInfo()
    info.add(b"sRGB", b"\x00")
    img.save = partial(img.save, pnginfo=info)
    return img


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_glb(mesh: ExportMesh, path: Path) -> list[Path]:
    """Write `path` (.glb) atomically; returns [path]."""
    atomic_write_bytes(path, glb_bytes(mesh))
    return [path]
