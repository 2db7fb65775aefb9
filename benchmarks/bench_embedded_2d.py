"""2D benchmark of the embedded text-to-image model, judged against the world's ground truth.

    python benchmarks/bench_embedded_2d.py [--model FOLDER (default: the shipped model)] [--samples 8] [--steps 25]

For every (shape, colour) pair, `--samples` images of "a {colour} {shape}" (DDIM, CFG 7.5). Judges, each
validated on real held-out renders (data/embedded/val.pt) and reported with its accuracy there:
- colour: the foreground's mean colour, nearest among the per-colour means of real renders;
- shape: best silhouette IoU of the sample's foreground mask against a bank of ground-truth silhouettes of every
  shape rendered from cameras of the training distribution (studio.sampling.CameraConfig);
- front/back (house, the object with a distinct front): "..., front view" vs "..., back view" prompts; a door is
  detected as dark foreground pixels (< 0.55 x the median foreground luminance), threshold calibrated on real renders.
Writes docs/images/embedded-samples.png and benchmarks/results/embedded_2d.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

from representations.shading import Shading, light_near_camera
from studio.sampling import CameraConfig, sample_cameras
from measure.metrics import door_score  # noqa: F401 - shared with the 3D benchmark
from world import World, get_object
from world.render import render_object



def foreground(rgb: torch.Tensor, thresh: float = 0.25) -> torch.Tensor:
    """bool [B, H, W]: pixels that differ clearly from the white background. rgb [B, 3, H, W] in [0, 1].

    0.25, not ~0.05: the autoencoder decodes the background with faint pastel tints (up to ~0.15); every world
    colour, fully lit, still differs from white by >= 0.49 in some channel."""
    return (1 - rgb).amax(1) > thresh


def fg_mean(rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, 3] mean colour over the mask."""
    m = mask[:, None].float()
    return (rgb * m).sum((2, 3)) / m.sum((2, 3)).clamp(min=1)


def silhouette_bank(world: World, per_shape: int = 300, seed: int = 123) -> torch.Tensor:
    """bool [S, per_shape, 64*64] ground-truth silhouettes of each shape from the training camera distribution."""
    gen = torch.Generator().manual_seed(seed)
    bank = []
    for shape in world.shapes:
        cams = sample_cameras(CameraConfig(), gen, n=per_shape)
        r = render_object(get_object(shape), (0.5, 0.5, 0.5), cams, Shading(light_near_camera(cams.position, gen)))
        bank.append((r.alpha[:, 0] > 0.5).reshape(per_shape, -1))
    return torch.stack(bank)


def judge_shape(mask: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(shape index [B], best IoU [B]) of masks [B, H, W] against the bank [S, K, H*W]."""
    m = mask.reshape(mask.shape[0], -1).float()
    b = bank.float()
    inter = torch.einsum("bp,skp->bsk", m, b)
    union = m.sum(1)[:, None, None] + b.sum(2)[None] - inter
    iou = (inter / union.clamp(min=1)).amax(2)  # [B, S]
    best, idx = iou.max(1)
    return idx, best


def color_means(val: dict) -> torch.Tensor:
    """[C, 3] per-colour mean foreground colour of real renders."""
    rgb = val["images"].float() / 255
    a = val["alpha"][:, 0] > 127
    means = fg_mean(rgb, a)
    return torch.stack([means[val["color"] == c].mean(0) for c in range(len(val["color_names"]))])


def validate_judges(val: dict, bank: torch.Tensor, cmeans: torch.Tensor, world: World) -> dict:
    """Accuracy of each judge on real held-out renders, and the calibrated door threshold."""
    rgb = val["images"].float() / 255
    mask = foreground(rgb)
    c_pred = torch.cdist(fg_mean(rgb, mask), cmeans).argmin(1)
    s_pred, _ = judge_shape(mask, bank)
    house = list(world.shapes).index("house")
    az = val["azimuth"]
    front = (val["shape"] == house) & (az.abs() < 30) & (val["elevation"] < 45)
    back = (val["shape"] == house) & (az.abs() > 150) & (val["elevation"] < 45)
    sf, sb = door_score(rgb[front], mask[front]), door_score(rgb[back], mask[back])
    cands = torch.cat([sf, sb]).sort().values
    accs = torch.stack([torch.cat([sf > c, sb <= c]).float().mean() for c in cands])
    thresh, acc_door = cands[accs.argmax()].item(), accs.max().item()  # best separating threshold on real renders
    return {
        "colour_judge_accuracy_real": (c_pred == val["color"]).float().mean().item(),
        "shape_judge_accuracy_real": (s_pred == val["shape"]).float().mean().item(),
        "door_threshold": thresh,
        "door_judge_accuracy_real": acc_door,
        "n_real": len(rgb),
        "n_real_house_front_back": int(front.sum() + back.sum()),
    }


@torch.no_grad()
def sample(pipe, prompts: list[str], n: int, steps: int, cfg: float, seed: int) -> torch.Tensor:
    """[len(prompts) * n, 3, 64, 64] images in [0, 1]."""
    out = []
    for i, p in enumerate(prompts):
        g = torch.Generator().manual_seed(seed + i)
        out.append(pipe([p] * n, num_inference_steps=steps, guidance_scale=cfg, height=64, width=64,
                        generator=g, output_type="pt").images)
    return torch.cat(out)


def save_grid(images: torch.Tensor, cols: int, path: Path, scale: int = 2) -> None:
    rows = (len(images) + cols - 1) // cols
    grid = torch.ones(3, rows * 66, cols * 66)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        grid[:, r * 66 + 1 : r * 66 + 65, c * 66 + 1 : c * 66 + 65] = im
    img = Image.fromarray((grid.permute(1, 2, 0) * 255).round().byte().numpy())
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="diffusers folder (default: studio.paths.EMBEDDED_MODEL)")
    ap.add_argument("--val", default="data/embedded/val.pt")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/embedded_2d.json")
    ap.add_argument("--grid", default="docs/images/embedded-samples.png")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.model is None:
        from studio.paths import EMBEDDED_MODEL, shown

        args.model = shown(EMBEDDED_MODEL)
    torch.set_num_threads(args.threads)
    from diffusers import StableDiffusionPipeline

    world = World.load()
    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    val = torch.load(args.val, weights_only=False)
    bank = silhouette_bank(world)
    cmeans = color_means(val)
    judges = validate_judges(val, bank, cmeans, world)
    print(json.dumps(judges), flush=True)

    t0 = time.time()
    pairs = world.pairs()
    prompts = [world.canonical_caption(s, c) for s, c in pairs]
    imgs = sample(pipe, prompts, args.samples, args.steps, args.cfg, args.seed)
    sample_s = time.time() - t0
    mask = foreground(imgs)
    c_pred = torch.cdist(fg_mean(imgs, mask), cmeans).argmin(1)
    s_pred, s_iou = judge_shape(mask, bank)
    colors, shapes = list(world.colors), list(world.shapes)
    c_true = torch.tensor([colors.index(c) for s, c in pairs]).repeat_interleave(args.samples)
    s_true = torch.tensor([shapes.index(s) for s, c in pairs]).repeat_interleave(args.samples)
    c_ok, s_ok = c_pred == c_true, s_pred == s_true
    real_fg = {i: (val["alpha"][val["shape"] == i].float() / 255 > 0.5).float().mean().item() for i in range(len(shapes))}
    per_shape = {s: {"shape_acc": s_ok[s_true == i].float().mean().item(), "colour_acc": c_ok[s_true == i].float().mean().item(),
                     # sqrt(foreground area of the samples / of real renders): > 1 means drawn too big
                     "linear_size_ratio": (mask[s_true == i].float().mean().item() / real_fg[i]) ** 0.5}
                 for i, s in enumerate(shapes)}
    per_color = {c: {"colour_acc": c_ok[c_true == i].float().mean().item(), "shape_acc": s_ok[c_true == i].float().mean().item()}
                 for i, c in enumerate(colors)}
    confusion = torch.zeros(len(shapes), len(shapes), dtype=torch.long)
    for t, p in zip(s_true, s_pred):
        confusion[t, p] += 1

    fb_colors = ["red", "blue", "yellow", "green"]
    fb_prompts = [f"a {c} house, {v} view" for c in fb_colors for v in ("front", "back")]
    fb = sample(pipe, fb_prompts, args.samples, args.steps, args.cfg, args.seed + 1000)
    score = door_score(fb, foreground(fb)).reshape(len(fb_colors), 2, args.samples)
    door = score > judges["door_threshold"]
    results = {
        "model": args.model, "samples_per_caption": args.samples, "ddim_steps": args.steps, "cfg": args.cfg,
        "judges_on_real_renders": judges,
        "colour_accuracy": c_ok.float().mean().item(),
        "shape_accuracy": s_ok.float().mean().item(),
        "both_correct": (c_ok & s_ok).float().mean().item(),
        "mean_best_silhouette_iou": s_iou.mean().item(),
        "empty_samples": (mask.flatten(1).sum(1) < 20).float().mean().item(),
        "per_shape": per_shape, "per_color": per_color,
        "shape_confusion": {"rows_true_cols_pred": shapes, "counts": confusion.tolist()},
        "front_back": {
            "door_seen_given_front_prompt": door[:, 0].float().mean().item(),
            "door_seen_given_back_prompt": door[:, 1].float().mean().item(),
            "accuracy": torch.cat([door[:, 0].flatten(), ~door[:, 1].flatten()]).float().mean().item(),
        },
        "sampling_seconds_main": sample_s,
        "seconds_per_image": sample_s / len(imgs),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
    first = imgs.reshape(len(pairs), args.samples, 3, 64, 64)[:, :2].reshape(-1, 3, 64, 64)
    save_grid(first, 2 * len(colors), Path(args.grid))
    save_grid(fb.reshape(len(fb_prompts), args.samples, 3, 64, 64)[:, :4].reshape(-1, 3, 64, 64), 16,
              Path(args.grid).with_name("embedded-front-back.png"))
    print(json.dumps({k: results[k] for k in ("colour_accuracy", "shape_accuracy", "both_correct", "front_back")}))


if __name__ == "__main__":
    main()
