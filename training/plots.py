"""Loss-curve figures drawn with pillow (matplotlib is not a dependency)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def line_plot(series: dict[str, tuple[list[float], list[float]]], path: str | Path, title: str, xlabel: str,
              ylabel: str, log_y: bool = True, size: tuple[int, int] = (640, 400)) -> None:
    """Save a line plot of series {name: (xs, ys)} as PNG (log-scale y by default)."""
    W, H = size
    left, right, top, bottom = 70, 20, 30, 50
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    f = (lambda v: math.log10(max(v, 1e-12))) if log_y else (lambda v: v)  # noqa: E731
    xs = [x for s in series.values() for x in s[0]]
    ys = [f(y) for s in series.values() for y in s[1]]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    px = lambda x: left + (x - x0) / (x1 - x0) * (W - left - right)  # noqa: E731
    py = lambda y: H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom)  # noqa: E731
    d.rectangle([left, top, W - right, H - bottom], outline="black")
    for k in range(5):
        yv = y0 + (y1 - y0) * k / 4
        d.line([left - 4, py(yv), left, py(yv)], fill="black")
        d.text((4, py(yv) - 6), f"{10 ** yv:.3g}" if log_y else f"{yv:.3g}", fill="black")
        xv = x0 + (x1 - x0) * k / 4
        d.line([px(xv), H - bottom, px(xv), H - bottom + 4], fill="black")
        d.text((px(xv) - 12, H - bottom + 8), f"{xv:.3g}", fill="black")
    for i, (name, (sx, sy)) in enumerate(series.items()):
        c = COLORS[i % len(COLORS)]
        pts = [(px(x), py(f(y))) for x, y in zip(sx, sy)]
        if len(pts) > 1:
            d.line(pts, fill=c, width=2)
        d.text((left + 10, top + 8 + 14 * i), name, fill=c)
    d.text((left, 8), title, fill="black")
    d.text((W // 2 - 40, H - 20), xlabel, fill="black")
    d.text((4, top - 22), ylabel, fill="black")
    img.save(path)


def smooth(ys: list[float], k: int = 10) -> list[float]:
    """Trailing moving average over k points."""
    return [sum(ys[max(0, i - k + 1) : i + 1]) / len(ys[max(0, i - k + 1) : i + 1]) for i in range(len(ys))]


def plot_runs(vae_log: str | Path, diffusion_log: str | Path, out_dir: str | Path, label: str = "") -> None:
    """embedded-ae-loss.png, embedded-ae-psnr.png and embedded-diffusion-loss.png in out_dir from the two training
    logs; `label` is appended to the titles (e.g. which run of a warm-started chain the logs belong to)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if Path(vae_log).exists():
        recs = read_jsonl(vae_log)
        tr = [r for r in recs if "loss" in r]
        ev = [r for r in recs if "eval" in r]
        line_plot({"train loss (weighted L1+MSE+colour)": ([r["time"] / 60 for r in tr], smooth([r["loss"] for r in tr]))},
                  out / "embedded-ae-loss.png", f"autoencoder training loss{label}", "minutes", "loss")
        if ev:
            line_plot({"held-out PSNR (dB)": ([r["time"] / 60 for r in ev], [r["eval"]["psnr"] for r in ev]),
                       "object-pixel PSNR (dB)": ([r["time"] / 60 for r in ev], [r["eval"]["psnr_object"] for r in ev])},
                      out / "embedded-ae-psnr.png", f"autoencoder held-out PSNR{label}", "minutes", "dB", log_y=False)
    if Path(diffusion_log).exists():
        recs = [r for r in read_jsonl(diffusion_log) if "loss" in r]
        line_plot({"epsilon MSE (20-step means, smoothed)": ([r["time"] / 60 for r in recs],
                                                             smooth([r["loss"] for r in recs]))},
                  out / "embedded-diffusion-loss.png", f"diffusion training loss{label}", "minutes", "loss")


if __name__ == "__main__":
    import sys

    plot_runs("runs/embedded/vae/log.jsonl", "runs/embedded/diffusion/log.jsonl", "docs/images",
              label=sys.argv[1] if len(sys.argv) > 1 else "")
