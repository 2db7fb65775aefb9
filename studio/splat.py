"""The standard 3D Gaussian Splatting PLY (`splat.ply`), written and read back. Torch is imported lazily.

Layout (binary little-endian, one float32 per property, one vertex per Gaussian), as the 3DGS reference
code writes it and common splat viewers read it:
    x y z  nx ny nz  f_dc_0..2  f_rest_0..(3K-1)  opacity  scale_0..2  rot_0..3
- opacity is the LOGIT of the opacity, scale_* the LOG of the standard deviations, rot_* a unit quaternion
  (w, x, y, z); f_dc_* are the degree-0 SH coefficients (colour = 0.5 + 0.2821 * f_dc).
- f_rest is channel-major: f_rest_{c * K + k} is coefficient k of colour channel c (K = (degree + 1)^2 - 1).
- normals are written as zeros (the reference code does the same).

Tensors use the names of `Gaussians.splat_tensors()`: means [N, 3], log_scales [N, 3], quats [N, 4],
opacity_logits [N], sh_dc [N, 3], sh_rest [N, K, 3].
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UserError
from .rundir import atomic_write_bytes

KEYS = ("means", "log_scales", "quats", "opacity_logits", "sh_dc", "sh_rest")


def splat_properties(k: int) -> list[str]:
    """The PLY property names, in file order, for K = k higher-order SH coefficients per channel."""
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(3 * k)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def splat_array(tensors: dict) -> np.ndarray:
    """splat_tensors() dict -> [N, P] float32 rows in PLY property order."""
    t = {k: np.asarray(_numpy(tensors[k]), dtype=np.float32) for k in KEYS}
    n = t["means"].shape[0]
    rest = t["sh_rest"].reshape(n, -1, 3).transpose(0, 2, 1).reshape(n, -1)  # channel-major
    q = t["quats"] / np.maximum(np.linalg.norm(t["quats"], axis=1, keepdims=True), 1e-12)
    return np.concatenate([t["means"], np.zeros((n, 3), np.float32), t["sh_dc"], rest,
                           t["opacity_logits"].reshape(n, 1), t["log_scales"], q], axis=1).astype(np.float32)


def splat_ply_bytes(tensors: dict) -> bytes:
    """The encoded file: ASCII header + binary little-endian float32 rows."""
    rows = splat_array(tensors)
    if not np.isfinite(rows).all():
        raise UserError("the Gaussians contain NaN or infinite values; nothing was written")
    k = (rows.shape[1] - 17) // 3
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {rows.shape[0]}"]
    header += [f"property float {name}" for name in splat_properties(k)] + ["end_header"]
    return ("\n".join(header) + "\n").encode("ascii") + rows.astype("<f4").tobytes()


def write_splat_ply(path: Path | str, tensors: dict) -> Path:
    """Write the Gaussians as a 3DGS PLY at `path`, atomically. Returns the path."""
    path = Path(path)
    atomic_write_bytes(path, splat_ply_bytes(tensors))
    return path


def read_splat_ply(path: Path | str) -> dict:
    """Read a 3DGS PLY (binary little-endian float32) -> dict of torch tensors named as splat_tensors()."""
    import torch

    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise UserError(f"{path} is not a PLY file")
    lines = data[:end].decode("ascii", "replace").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise UserError(f"{path}: only binary little-endian 3DGS PLY files are supported")
    count = next((int(line.split()[2]) for line in lines if line.startswith("element vertex ")), None)
    props = [line.split() for line in lines if line.startswith("property ")]
    names = [p[-1] for p in props]
    if count is None or any(p[1] != "float" for p in props):
        raise UserError(f"{path}: expected one 'element vertex' of float properties")
    k = sum(name.startswith("f_rest_") for name in names) // 3
    if names != splat_properties(k):
        raise UserError(f"{path}: not a 3D Gaussian splat PLY (properties {', '.join(names[:6])}, ...)")
    body = data[end + len(b"end_header\n"):]
    if len(body) < count * len(names) * 4:
        raise UserError(f"{path} is truncated")
    rows = np.frombuffer(body, dtype="<f4", count=count * len(names)).reshape(count, len(names)).astype(np.float32)
    col = {name: i for i, name in enumerate(names)}

    def take(*keys: str) -> np.ndarray:
        return rows[:, [col[key] for key in keys]]

    rest = rows[:, 9:9 + 3 * k].reshape(count, 3, k).transpose(0, 2, 1)
    out = {"means": take("x", "y", "z"), "log_scales": take("scale_0", "scale_1", "scale_2"),
           "quats": take("rot_0", "rot_1", "rot_2", "rot_3"), "opacity_logits": rows[:, col["opacity"]],
           "sh_dc": take("f_dc_0", "f_dc_1", "f_dc_2"), "sh_rest": rest}
    return {key: torch.from_numpy(np.ascontiguousarray(v)) for key, v in out.items()}


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


__all__ = ["splat_properties", "splat_array", "splat_ply_bytes", "write_splat_ply", "read_splat_ply"]
