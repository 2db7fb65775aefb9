"""GLB writer: one mesh, a PBR metallic-roughness material (the mesh's metallic / roughness factors) with the
baked albedo as baseColorTexture, a PNG that carries an sRGB chunk (glTF reads baseColorTexture as sRGB); with a
baked normal map, also TANGENT and normalTexture (a PNG without colour chunks: glTF reads it as linear)."""
from __future__ import annotations

import io
import json
import struct
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
    if mesh.normal_texture is None:
        return buf.getvalue()
    return with_normal_map(buf.getvalue(), mesh.tangents, linear_png(mesh.normal_texture))


def with_normal_map(glb: bytes, tangents: np.ndarray, png: bytes) -> bytes:
    """`glb` (one primitive with a material, as trimesh writes it) with `tangents [V, 4]` float32 as the primitive's
    TANGENT and the PNG `png` as its material's normalTexture (same TEXCOORD_0), appended to the BIN chunk."""
    n = struct.unpack_from("<I", glb, 12)[0]
    doc = json.loads(glb[20:20 + n])
    blob = bytearray(glb[20 + n + 8:])
    primitive = doc["meshes"][0]["primitives"][0]
    assert len(tangents) == doc["accessors"][primitive["attributes"]["POSITION"]]["count"]

    def view(data: bytes, **extra) -> int:
        blob.extend(b"\0" * (-len(blob) % 4))
        doc["bufferViews"].append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(data), **extra})
        blob.extend(data)
        return len(doc["bufferViews"]) - 1

    doc["accessors"].append({"bufferView": view(np.ascontiguousarray(tangents, "<f4").tobytes(), target=34962),
                             "componentType": 5126, "count": len(tangents), "type": "VEC4"})
    primitive["attributes"]["TANGENT"] = len(doc["accessors"]) - 1
    doc["images"].append({"bufferView": view(png), "mimeType": "image/png"})
    doc["textures"].append({"source": len(doc["images"]) - 1})
    doc["materials"][primitive["material"]]["normalTexture"] = {"index": len(doc["textures"]) - 1}
    blob.extend(b"\0" * (-len(blob) % 4))
    doc["buffers"][0]["byteLength"] = len(blob)
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(blob)
    return (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(text), b"JSON") + text
            + struct.pack("<I4s", len(blob), b"BIN\0") + bytes(blob))


def linear_png(texture: np.ndarray) -> bytes:
    """PNG bytes of `texture [T, T, 3] uint8` with no sRGB / gAMA / iCCP chunk (data, not colour)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(texture).save(out, format="png")
    return out.getvalue()


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
