"""Random camera sampling and view-dependent prompts (DreamFusion-style).

The same distribution renders the embedded model's training data (training/) and drives
distillation, so the diffusion model sees at train time what it is shown at distillation time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from representations.cameras import Cameras, orbit_cameras, view_angles


@dataclass
class CameraConfig:
    """Distribution of training cameras: they orbit the origin and look at it."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"radius": (0.1, 100.0), "elevation_deg": (-90.0, 90.0),
        "azimuth_deg": (-360.0, 360.0), "fov_deg": (1.0, 170.0), "batch_size": (1, 64), "resolution": (8, 1024)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    radius: tuple[float, float] = (2.4, 3.0)
    """Range of camera distances from the origin (world units; the object fits in [-1, 1]^3)."""
    elevation_deg: tuple[float, float] = (-10.0, 45.0)
    """Range of elevations above the horizontal plane, in degrees."""
    azimuth_deg: tuple[float, float] = (-180.0, 180.0)
    """Range of azimuths in degrees; 0 is the object's front (+Z), 90 its right side (+X)."""
    fov_deg: tuple[float, float] = (40.0, 55.0)
    """Range of vertical fields of view, in degrees."""
    batch_size: int = 1
    """Views rendered per step."""
    resolution: int = 64
    """Render height and width in pixels."""


def _uniform(lo_hi: tuple[float, float], n: int, gen: torch.Generator | None) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def sample_cameras(cfg: CameraConfig, generator: torch.Generator | None = None, n: int | None = None) -> Cameras:
    """n (default cfg.batch_size) random cameras from the configured ranges."""
    n = cfg.batch_size if n is None else n
    az = _uniform(cfg.azimuth_deg, n, generator)
    el = _uniform(cfg.elevation_deg, n, generator)
    r = _uniform(cfg.radius, n, generator)
    fov = _uniform(cfg.fov_deg, n, generator)
    return orbit_cameras(az, el, r, fov, cfg.resolution, cfg.resolution)


VIEW_SUFFIXES = ("front", "side", "back", "overhead")


def view_name(azimuth_deg: float, elevation_deg: float, overhead_above_deg: float = 60.0) -> str:
    """'front' within 45 deg of azimuth 0, 'back' within 45 deg of 180, 'overhead' above 60 deg elevation, else 'side'."""
    if elevation_deg > overhead_above_deg:
        return "overhead"
    a = (azimuth_deg + 180.0) % 360.0 - 180.0
    if abs(a) <= 45.0:
        return "front"
    if abs(a) >= 135.0:
        return "back"
    return "side"


def view_prompt(prompt: str, view: str) -> str:
    """The prompt with its view suffix, exactly as the embedded model's captions are written."""
    return f"{prompt}, {view} view"


def view_names(cams: Cameras) -> list[str]:
    """The view name of every camera in the batch."""
    az, el = view_angles(cams)
    return [view_name(float(a), float(e)) for a, e in zip(az, el)]
