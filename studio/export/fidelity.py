"""Fidelity check: the exported (cleaned, simplified, textured) mesh rendered from the run's evaluation views
versus the representation's own unlit renders. Catches exports that look different from what was trained."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from representations.cameras import Cameras, orbit_cameras
from representations.shading import Shading, front_light


def eval_cameras(size: int = 64, n: int = 8) -> Cameras:
    """2n held-out views: two rings (elevation 10 and 35 degrees), azimuths offset from the preview ring."""
    az = torch.arange(n, dtype=torch.float32) * (360.0 / n) + 180.0 / n
    az = torch.cat([az, az]) % 360
    az = torch.where(az > 180, az - 360, az)
    el = torch.cat([torch.full((n,), 10.0), torch.full((n,), 35.0)])
    return orbit_cameras(az, el, torch.full((2 * n,), 2.6), torch.full((2 * n,), 47.5), size, size)


@torch.no_grad()
def render_albedo(scene, cams: Cameras, chunk: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(albedo [B, 3, H, W] over white, alpha [B, 1, H, W]) of a representation, unlit."""
    rgb, alpha = [], []
    for i in range(0, len(cams), chunk):
        c = cams[i:i + chunk]
        out = scene.render(c, Shading(front_light(c.position), "albedo"))
        rgb.append(out.rgb.float().cpu())
        alpha.append(out.alpha.float().cpu())
    return torch.cat(rgb), torch.cat(alpha)


@torch.no_grad()
def render_mesh_albedo(vertices: np.ndarray, faces: np.ndarray, cams, uvs: np.ndarray | None = None,
                       texture: np.ndarray | None = None, colors: np.ndarray | None = None,
                       background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[Tensor, Tensor]:
    """(albedo [B, 3, H, W] over `background`, coverage [B, 1, H, W] in {0, 1}) of a mesh, unlit.

    vertices [V, 3] in the cameras' world frame, faces [F, 3]; colour from `texture [T, T, 3] uint8` at
    `uvs [V, 2]` (glTF convention) when given, else from `colors [V, 3]`.
    """
    from representations.ops.raster import clip_from_cameras, interpolate, rasterize

    v = torch.from_numpy(np.ascontiguousarray(vertices)).float()
    tri = torch.from_numpy(np.ascontiguousarray(faces)).long()
    pos = clip_from_cameras(v, cams)
    rast = rasterize(pos, tri, (cams.height, cams.width), backend="torch")
    covered = rast[..., 3:] > 0  # [B, H, W, 1]
    if texture is not None and uvs is not None:
        uv = interpolate(torch.from_numpy(uvs).float(), rast, tri, backend="torch")  # [B, H, W, 2]
        tex = torch.from_numpy(texture).float().div(255).permute(2, 0, 1)[None]  # [1, 3, T, T]
        grid = uv * 2 - 1  # u -> x (columns), v -> y (rows): glTF's v grows downwards like image rows
        rgb = torch.cat([F.grid_sample(tex, g[None], mode="bilinear", align_corners=False) for g in grid])
    else:
        rgb = interpolate(torch.from_numpy(colors).float(), rast, tri, backend="torch").permute(0, 3, 1, 2)
    cov = covered.permute(0, 3, 1, 2).float()
    bg = torch.tensor(background, dtype=torch.float32).view(1, 3, 1, 1)
    return rgb * cov + bg * (1 - cov), cov


def compare(mesh_rgb: Tensor, mesh_alpha: Tensor, ref_rgb: Tensor, ref_alpha: Tensor,
            background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> dict[str, float]:
    """Silhouette IoU (alpha > 0.5) and mean absolute colour error on the pixels both silhouettes cover.

    All inputs [B, C, H, W]; colours in [0, 1], composited over `background`. The reference colour is
    un-composited first (a half-transparent volume pixel is compared by its own colour, not its blend with
    the background). Returns {"export_iou", "export_color_error"}.
    """
    a, b = mesh_alpha[:, 0] > 0.5, ref_alpha[:, 0] > 0.5
    union = int((a | b).sum())
    both = a & b
    iou = int(both.sum()) / union if union else 0.0
    bg = torch.tensor(background, dtype=ref_rgb.dtype).view(1, 3, 1, 1)
    ref_own = ((ref_rgb - bg * (1 - ref_alpha)) / ref_alpha.clamp(min=1e-3)).clamp(0, 1)
    diff = (mesh_rgb - ref_own).abs().mean(1)  # [B, H, W]
    err = float(diff[both].mean()) if bool(both.any()) else 1.0
    return {"export_iou": round(iou, 4), "export_color_error": round(err, 4)}


@torch.no_grad()
def fidelity(scene, vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray | None, texture: np.ndarray | None,
             colors: np.ndarray | None, views: int, size: int) -> dict[str, float]:
    """Compare the mesh (vertices [V, 3] in the scene frame) with the scene on 2 * `views` evaluation views."""
    cams = eval_cameras(size, views)
    was_training = scene.training
    scene.eval()
    try:
        ref_rgb, ref_alpha = render_albedo(scene, cams)
    finally:
        scene.train(was_training)
    background = tuple(float(x) for x in scene.cfg.background)
    rgb, alpha = render_mesh_albedo(vertices, faces, cams, uvs, texture, colors, background)
    return compare(rgb, alpha, ref_rgb, ref_alpha, background)
