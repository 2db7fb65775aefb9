"""Batched pinhole cameras and ray generation.

Conventions (docs/conventions.md): world is right-handed and Y-up; objects face +Z ("front");
camera space is OpenGL-style (looks down -Z, +Y up, +X right); `c2w` maps camera to world.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Cameras:
    """A batch of B pinhole cameras that share one image size."""

    c2w: Tensor
    """[B, 4, 4] float32 camera-to-world matrices (OpenGL camera axes)."""
    fov_y: Tensor
    """[B] vertical field of view in radians."""
    height: int
    """Image height in pixels."""
    width: int
    """Image width in pixels."""

    def __len__(self) -> int:
        return self.c2w.shape[0]

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    @property
    def position(self) -> Tensor:
        """[B, 3] camera centres in world space."""
        return self.c2w[:, :3, 3]

    def focal(self) -> Tensor:
        """[B] focal length in pixels (same for x and y; square pixels)."""
        return 0.5 * self.height / torch.tan(0.5 * self.fov_y)

    def intrinsics(self) -> Tensor:
        """[B, 3, 3] pixel-space intrinsics K (principal point at the image centre)."""
        f = self.focal()
        K = torch.zeros(len(self), 3, 3, device=self.device, dtype=self.c2w.dtype)
        K[:, 0, 0] = f
        K[:, 1, 1] = f
        K[:, 0, 2] = 0.5 * self.width
        K[:, 1, 2] = 0.5 * self.height
        K[:, 2, 2] = 1.0
        return K

    def w2c(self) -> Tensor:
        """[B, 4, 4] world-to-camera matrices."""
        return torch.linalg.inv(self.c2w)

    def rays(self) -> tuple[Tensor, Tensor]:
        """Ray origins and unit directions through pixel centres.

        Returns (origins [B, H, W, 3], dirs [B, H, W, 3]) in world space.
        """
        B, H, W = len(self), self.height, self.width
        dev, dt = self.device, self.c2w.dtype
        f = self.focal().to(dt)[:, None, None]
        j = torch.arange(W, device=dev, dtype=dt) + 0.5
        i = torch.arange(H, device=dev, dtype=dt) + 0.5
        x = ((j[None, None, :] - 0.5 * W) / f).expand(B, H, W)
        y = (-(i[None, :, None] - 0.5 * H) / f).expand(B, H, W)
        d_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # [B,H,W,3]
        R = self.c2w[:, :3, :3]
        d = torch.einsum("bij,bhwj->bhwi", R, d_cam)
        d = d / d.norm(dim=-1, keepdim=True)
        o = self.position[:, None, None, :].expand(B, H, W, 3)
        return o, d

    def to(self, device: torch.device | str) -> "Cameras":
        return Cameras(self.c2w.to(device), self.fov_y.to(device), self.height, self.width)

    def __getitem__(self, idx: slice | int) -> "Cameras":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Cameras(self.c2w[idx], self.fov_y[idx], self.height, self.width)


def look_at(eye: Tensor, target: Tensor | None = None, up: Tensor | None = None) -> Tensor:
    """Camera-to-world matrices [B, 4, 4] for cameras at `eye` [B, 3] looking at `target` [B, 3].

    `up` defaults to world +Y. Degenerate (straight up/down) views fall back to +Z as up.
    """
    B = eye.shape[0]
    target = torch.zeros_like(eye) if target is None else target
    up = torch.tensor([0.0, 1.0, 0.0], device=eye.device, dtype=eye.dtype).expand(B, 3) if up is None else up
    back = eye - target
    back = back / back.norm(dim=-1, keepdim=True)
    right = torch.cross(up, back, dim=-1)
    small = right.norm(dim=-1, keepdim=True) < 1e-6
    alt = torch.tensor([0.0, 0.0, 1.0], device=eye.device, dtype=eye.dtype).expand(B, 3)
    right = torch.where(small, torch.cross(alt, back, dim=-1), right)
    right = right / right.norm(dim=-1, keepdim=True)
    true_up = torch.cross(back, right, dim=-1)
    c2w = torch.eye(4, device=eye.device, dtype=eye.dtype).repeat(B, 1, 1)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = true_up
    c2w[:, :3, 2] = back
    c2w[:, :3, 3] = eye
    return c2w


def orbit_position(azimuth_deg: Tensor, elevation_deg: Tensor, radius: Tensor) -> Tensor:
    """[B, 3] camera centres on a sphere. Azimuth 0 is on +Z (the front), 90 on +X; elevation up from XZ."""
    az = torch.deg2rad(azimuth_deg)
    el = torch.deg2rad(elevation_deg)
    return torch.stack(
        [radius * torch.cos(el) * torch.sin(az), radius * torch.sin(el), radius * torch.cos(el) * torch.cos(az)],
        dim=-1,
    )


def orbit_cameras(
    azimuth_deg: Tensor, elevation_deg: Tensor, radius: Tensor, fov_y_deg: Tensor, height: int, width: int
) -> Cameras:
    """Cameras on an orbit around the origin, all looking at it. Every argument is [B]."""
    eye = orbit_position(azimuth_deg, elevation_deg, radius)
    return Cameras(look_at(eye), torch.deg2rad(fov_y_deg.to(eye.dtype)), height, width)


def view_angles(cams: Cameras) -> tuple[Tensor, Tensor]:
    """(azimuth_deg [B] in (-180, 180], elevation_deg [B]) of each camera centre seen from the origin."""
    p = cams.position
    az = torch.rad2deg(torch.atan2(p[:, 0], p[:, 2]))
    el = torch.rad2deg(torch.atan2(p[:, 1], torch.sqrt(p[:, 0] ** 2 + p[:, 2] ** 2)))
    return az, el


def ring_cameras(n: int, size: int, elevation_deg: float = 15.0, radius: float = 2.7, fov_deg: float = 47.5) -> Cameras:
    """n evenly spaced views around the object, starting at the front: for previews, turntables, evaluation."""
    az = torch.arange(n, dtype=torch.float32) * (360.0 / n)
    az = torch.where(az > 180, az - 360, az)
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    return orbit_cameras(az, full(elevation_deg), full(radius), full(fov_deg), size, size)


__all__ = ["Cameras", "look_at", "orbit_position", "orbit_cameras", "view_angles", "ring_cameras"]
