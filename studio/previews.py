"""Renders for people rather than for the loss: the preview grid saved every `log.preview_every` steps and the
turntable frames of the export, lit by a front light, rendered in chunks, on the scene's own device."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from representations.base import Representation
from representations.cameras import Cameras, ring_cameras
from representations.shading import Shading, front_light

from . import media
from .config import RunConfig
from .events import Preview


@torch.no_grad()
def render_views(scene: Representation, cams: Cameras, chunk: int = 4) -> torch.Tensor:
    """[N, 3, H, W] lit renders (front light) of `cams`, in chunks to bound memory."""
    frames = []
    for i in range(0, len(cams), chunk):
        c = cams[i:i + chunk]
        shading = Shading(front_light(c.position), "lambertian")
        frames.append(scene.render(c, shading).rgb.float().cpu())
    return torch.cat(frames)


def make_preview(cfg: RunConfig, scene: Representation, step: int, run_dir: Path) -> Preview:
    """Render and save the preview grid of `step`. Draws nothing from torch's RNG (a NeRF in training mode jitters
    its samples): previews do not change the training's random numbers, so resumed runs match uninterrupted ones."""
    device = next_device(scene)
    cams = ring_cameras(cfg.log.preview_views, cfg.camera.resolution).to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        image = media.grid(media.to_uint8(render_views(scene, cams).numpy()))
    path = run_dir / "previews" / f"step_{step:06d}.png"
    media.save_png(image, path)
    return Preview(step, image, path)


def turntable_frames(scene: Representation, frames: int, size: int) -> np.ndarray:
    """[frames, size, size, 3] uint8 renders from a ring of cameras around the scene."""
    cams = ring_cameras(frames, size).to(next_device(scene))
    return media.to_uint8(render_views(scene, cams).numpy())


def next_device(module: torch.nn.Module) -> torch.device:
    """The device of the module's first parameter or buffer (CPU for a module without tensors)."""
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")
