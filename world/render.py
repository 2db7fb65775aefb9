"""A vectorised pure-torch sphere tracer for the world's SDF objects, shaded like the studio's representations.

`render_object` traces one object for a batch of cameras, supersamples (ss x ss rays per pixel, box filter)
and shades hits with `representations.shading.shade`, so its images match what representations render.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from representations.base import RenderOut
from representations.cameras import Cameras
from representations.shading import Shading, shade
from world.objects import BOUND_RADIUS, SDFObject


def _bound_interval(o: Tensor, d: Tensor, radius: float) -> tuple[Tensor, Tensor, Tensor]:
    """Ray / origin-centred sphere intersection. o, d [N, 3] -> (hit bool [N], t_near [N], t_far [N])."""
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - radius**2
    disc = b * b - c
    root = disc.clamp(min=0).sqrt()
    return disc > 0, (-b - root).clamp(min=0), -b + root


@torch.no_grad()
def sphere_trace(
    obj: SDFObject, o: Tensor, d: Tensor, max_steps: int = 64, eps: float = 1e-3, step_scale: float = 0.95
) -> tuple[Tensor, Tensor]:
    """March rays o, d [N, 3] (d unit) against obj.sdf. Returns (hit bool [N], t [N] distance along the ray).

    A ray hits when the SDF drops below `eps` (world units). Only unconverged rays are evaluated each step
    (the active set is compacted), which keeps the CPU cost proportional to the work left.
    """
    inside, t, t_far = _bound_interval(o, d, BOUND_RADIUS)
    hit = torch.zeros_like(inside)
    idx = inside.nonzero().squeeze(1)
    o_a, d_a, t_a, far_a = o[idx], d[idx], t[idx], t_far[idx]
    for _ in range(max_steps):
        if idx.numel() == 0:
            break
        s = obj.sdf(torch.addcmul(o_a, t_a[:, None], d_a))
        done = s < eps
        t_a = t_a + step_scale * s.clamp(min=0)
        hit[idx[done]] = True
        t[idx[done]] = t_a[done]
        keep = (~done & (t_a < far_a)).nonzero().squeeze(1)
        if keep.numel() < idx.numel():
            idx, o_a, d_a, t_a, far_a = idx[keep], o_a[keep], d_a[keep], t_a[keep], far_a[keep]
    t[idx] = t_a
    return hit, t


@torch.no_grad()
def sdf_normal(obj: SDFObject, p: Tensor, h: float = 1e-3) -> Tensor:
    """Unit normals [N, 3] at points p [N, 3] by the tetrahedron finite-difference of the SDF."""
    k = p.new_tensor([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]])  # [4, 3]
    vals = obj.sdf((p[:, None, :] + h * k[None]).reshape(-1, 3)).reshape(-1, 4)  # [N, 4]
    n = vals @ k
    return n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)


@torch.no_grad()
def render_object(
    obj: SDFObject,
    color_rgb: Tensor | tuple[float, float, float],
    cams: Cameras,
    shading: Shading,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    supersample: int = 2,
) -> RenderOut:
    """Render `obj` with albedo colour color_rgb [3] (in [0, 1]) for B cameras at cams.height x cams.width.

    Returns a RenderOut with rgb [B, 3, H, W] (over `background`), alpha [B, 1, H, W] (pixel coverage),
    depth [B, 1, H, W] (mean hit distance along the ray; 0 where empty), normal [B, 3, H, W] (unit, 0 where
    empty) and albedo [B, 3, H, W] (over `background`).
    """
    ss = supersample
    B, H, W = len(cams), cams.height, cams.width
    hi = Cameras(cams.c2w.float(), cams.fov_y.float(), H * ss, W * ss)
    o, d = hi.rays()
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    pixel = 2.0 * float(torch.tan(0.5 * cams.fov_y.max())) / (H * ss)  # pixel footprint at unit distance
    hit, t = sphere_trace(obj, o, d, eps=0.5 * pixel * 2.0)
    idx = hit.nonzero().squeeze(1)
    p = o[idx] + t[idx, None] * d[idx]
    color = torch.as_tensor(color_rgb, dtype=torch.float32)
    n_full = o.new_zeros(o.shape[0], 3)
    a_full = o.new_zeros(o.shape[0], 3)
    n_full[idx] = sdf_normal(obj, p)
    a_full[idx] = obj.albedo(p, color)
    n_full, a_full = n_full.reshape(B, -1, 3), a_full.reshape(B, -1, 3)
    rgb = shade(a_full, n_full, shading)  # [B, N, 3]
    mask = hit.reshape(B, -1, 1).float()
    bg = torch.tensor(background, dtype=torch.float32)
    to_img = lambda x: x.reshape(B, H * ss, W * ss, -1).permute(0, 3, 1, 2)  # noqa: E731
    pool = lambda x: F.avg_pool2d(to_img(x), ss) if ss > 1 else to_img(x)  # noqa: E731
    alpha = pool(mask)
    rgb = pool(mask * rgb + (1 - mask) * bg)
    albedo = pool(mask * a_full + (1 - mask) * bg)
    depth = pool(mask * t.reshape(B, -1, 1)) / alpha.clamp(min=1e-8)
    normal = pool(mask * n_full)
    normal = normal / normal.norm(dim=1, keepdim=True).clamp(min=1e-8)
    return RenderOut(rgb=rgb.clamp(0, 1), alpha=alpha, depth=depth * (alpha > 0), normal=normal, albedo=albedo.clamp(0, 1))
