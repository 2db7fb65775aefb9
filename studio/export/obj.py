"""OBJ writer: asset.obj + asset.mtl + asset_albedo.png (map_Kd), with UVs and smooth normals."""
from __future__ import annotations

import io
from pathlib import Path


from ..rundir import atomic_write_bytes
from .asset import ExportMesh


def obj_files(mesh: ExportMesh, stem: str) -> dict[str, bytes]:
    """{file name: contents} of the OBJ, its MTL and (when textured) its PNG, all named after `stem`."""
    from PIL import Image

    textured = mesh.uvs is not None and mesh.texture is not None
    mtl = [f"newmtl {stem}", "Ka 1 1 1", "Kd 1 1 1", "Ks 0 0 0", "d 1", "illum 1"]
    files: dict[str, bytes] = {}
    if textured:
        buf = io.BytesIO()
        Image.fromarray(mesh.texture).save(buf, format="PNG")
        files[f"{stem}_albedo.png"] = buf.getvalue()
        mtl.append(f"map_Kd {stem}_albedo.png")
    files[f"{stem}.mtl"] = ("\n".join(mtl) + "\n").encode()
    lines = [f"# text3d-studio export: metres, Y up, {len(mesh.faces)} faces", f"mtllib {stem}.mtl", f"o {stem}"]
    if textured:
        lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
        lines += [f"vt {u:.6f} {1.0 - v:.6f}" for u, v in mesh.uvs]  # OBJ's v points up
    else:
        lines += [f"v {x:.6f} {y:.6f} {z:.6f} {r:.4f} {g:.4f} {b:.4f}"
                  for (x, y, z), (r, g, b) in zip(mesh.vertices, mesh.colors)]
    lines += [f"vn {x:.5f} {y:.5f} {z:.5f}" for x, y, z in mesh.normals]
    lines.append(f"usemtl {stem}")
    f = mesh.faces + 1
    if textured:
        lines += [f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}" for a, b, c in f]
    else:
        lines += [f"f {a}//{a} {b}//{b} {c}//{c}" for a, b, c in f]
    files[f"{stem}.obj"] = ("\n".join(lines) + "\n").encode()
    return files


def write_obj(mesh: ExportMesh, path: Path) -> list[Path]:
    """Write `path` (.obj) and its .mtl / .png next to it, the .obj last; returns [obj, mtl, (png)]."""
    path = Path(path)
    files = obj_files(mesh, path.stem)
    order = sorted(files, key=lambda name: name.endswith(".obj"))  # the .obj last: it only appears complete
    for name in order:
        atomic_write_bytes(path.with_name(name), files[name])
    return [path.with_name(name) for name in reversed(order)]



