"""Lighting and shading shared by every representation and by the ground-truth world renderer.

The embedded diffusion model is trained on images shaded with exactly these functions, so a
representation rendered for distillation looks like its training data.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SHADING_MODES = ("albedo", "lambertian", "textureless")


@dataclass
class Shading:
    """How one batch of B views is lit."""

    light_dir: Tensor
    """[B, 3] unit vectors pointing from the object TOWARD the light (world space)."""
    mode: str = "lambertian"
    """'albedo' (no lighting), 'lambertian' (albedo x light) or 'textureless' (white x light)."""
    ambient: float = 0.35
    """Ambient term of the Lambertian model, in [0, 1]."""
    diffuse: float = 0.65
    """Diffuse term; ambient + diffuse = 1 keeps a lit white surface white."""

    def __post_init__(self) -> None:
        if self.mode not in SHADING_MODES:
            raise ValueError(f"unknown shading mode {self.mode!r}; valid: {', '.join(SHADING_MODES)}")


def shade(albedo: Tensor, normal: Tensor, shading: Shading) -> Tensor:
    """Colour of surface points.

    albedo [B, N, 3] in [0, 1]; normal [B, N, 3] unit (zero where undefined); returns rgb [B, N, 3] in [0, 1].
    """
    if shading.mode == "albedo":
        return albedo
    light = shading.light_dir.to(normal)[:, None, :]
    lambert = (normal * light).sum(-1, keepdim=True).clamp(min=0.0)
    intensity = shading.ambient + shading.diffuse * lambert
    base = torch.ones_like(albedo) if shading.mode == "textureless" else albedo
    return (base * intensity).clamp(0.0, 1.0)


def light_near_camera(cam_pos: Tensor, generator: torch.Generator | None = None, spread_deg: float = 45.0) -> Tensor:
    """[B, 3] random light directions within `spread_deg` of the direction to the camera (cam_pos [B, 3]).

    Lights roughly behind the viewer, as in DreamFusion: the visible side is mostly lit.
    """
    B = cam_pos.shape[0]
    to_cam = cam_pos / cam_pos.norm(dim=-1, keepdim=True)
    jitter = torch.randn(B, 3, generator=generator, device=cam_pos.device, dtype=cam_pos.dtype)
    jitter = jitter - (jitter * to_cam).sum(-1, keepdim=True) * to_cam
    jitter = jitter / jitter.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    angle = torch.rand(B, 1, generator=generator, device=cam_pos.device, dtype=cam_pos.dtype)
    angle = torch.deg2rad(torch.tensor(spread_deg, dtype=cam_pos.dtype)) * angle
    d = torch.cos(angle) * to_cam + torch.sin(angle) * jitter
    return d / d.norm(dim=-1, keepdim=True)


def front_light(cam_pos: Tensor) -> Tensor:
    """[B, 3] deterministic light for previews: from the camera, raised by 30 degrees."""
    up = torch.tensor([0.0, 1.0, 0.0], dtype=cam_pos.dtype, device=cam_pos.device)
    d = cam_pos / cam_pos.norm(dim=-1, keepdim=True) + 0.6 * up
    return d / d.norm(dim=-1, keepdim=True)
