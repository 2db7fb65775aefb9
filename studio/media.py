"""Images and animations from renders: preview grids, turntable GIFs. numpy/PIL only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[N, 3, H, W] float in [0, 1] -> [N, H, W, 3] uint8."""
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


def grid(frames: np.ndarray, columns: int | None = None) -> np.ndarray:
    """[N, H, W, 3] uint8 -> one [rows*H, columns*W, 3] image (row-major)."""
    n, h, w, c = frames.shape
    columns = columns or n
    rows = (n + columns - 1) // columns
    out = np.full((rows * h, columns * w, c), 255, dtype=np.uint8)
    for i, f in enumerate(frames):
        r, col = divmod(i, columns)
        out[r * h:(r + 1) * h, col * w:(col + 1) * w] = f
    return out


def save_png(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image).save(path)


def save_gif(frames: np.ndarray, path: Path, fps: int = 12) -> None:
    """[N, H, W, 3] uint8 -> looping GIF."""
    imgs = [Image.fromarray(f) for f in frames]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0, optimize=False)
