"""`studio-bench speed`: per-op timings, each fast op beside its reference in the same run, as ratios.

- every representation of the registry: render forward + backward at each size (the run loop's shading);
- every distillation of the registry: one step on a fixed image (render excluded), its UNet evaluations
  counted with a hook, beside (UNet evaluations x one UNet evaluation): the reference cost of the model alone;
- PAIRS: ops with a straightforward reference implementation (fast vs reference, forward + backward);
- mesh export of a representation's initial scene (marching cubes + GLB).
Times are medians over `repeats` after one warm-up.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PAIRS: dict[str, str] = {
    "hash grid + MLP (NeRF field), 64k points": "measure.speed:hash_mlp_pair",
    "Gaussian splatter, 2k Gaussians, 64²": "measure.speed:splat_pair",
}
"""Explicit registry of (fast, reference) op pairs: name -> 'module:function' returning a `Pair`."""


@dataclass
class Pair:
    """Two callables doing the same work (forward + backward); `ref` is the straightforward version."""

    fast: Callable[[], None]
    ref: Callable[[], None]


def timeit(fn: Callable[[], None], repeats: int) -> float:
    """Median wall time of fn() in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def hash_mlp_pair() -> Pair:
    import torch

    from representations.hashgrid import HashGrid, HashGridConfig, hash_mlp, hash_mlp_reference

    torch.manual_seed(0)
    grid = HashGrid(HashGridConfig())
    weights = [torch.randn(64, grid.out_dim, requires_grad=True) * 0.1, torch.randn(4, 64, requires_grad=True) * 0.1]
    weights = [w.detach().requires_grad_() for w in weights]
    biases = [torch.zeros(64, requires_grad=True), torch.zeros(4, requires_grad=True)]
    points = torch.rand(65536, 3) * 2 - 1

    def step(fn) -> Callable[[], None]:
        def go() -> None:
            fn(grid, weights, biases, points).square().mean().backward()
        return go

    return Pair(step(hash_mlp), step(hash_mlp_reference))


def splat_pair(n: int = 2000, size: int = 64) -> Pair:
    """Tile-binned splatter vs the dense every-pixel-against-every-Gaussian reference (forward + backward)."""
    import math

    import torch

    from representations.cameras import orbit_cameras
    from representations.ops.splat import rasterization
    from representations.ops.splat_reference import rasterization_reference

    g = torch.Generator().manual_seed(0)
    u = torch.randn(n, 3, generator=g)
    means = u / u.norm(dim=-1, keepdim=True) * 0.5 * torch.rand(n, 1, generator=g) ** (1 / 3)
    spacing = (4 / 3 * math.pi * 0.5**3 / n) ** (1 / 3)
    ins = [means, torch.randn(n, 4, generator=g), spacing * torch.exp(0.3 * torch.randn(n, 3, generator=g)),
           torch.sigmoid(torch.randn(n, generator=g)), torch.rand(n, 7, generator=g)]
    ins = [t.requires_grad_() for t in ins]
    cams = orbit_cameras(torch.tensor([20.0]), torch.tensor([15.0]), torch.tensor([2.7]), torch.tensor([47.5]),
                         size, size)

    def step(fn) -> Callable[[], None]:
        def go() -> None:
            img, alpha = fn(*ins, cams.w2c(), cams.focal(), size, size)
            torch.autograd.grad(img.sum() + alpha.sum(), ins)
        return go

    return Pair(step(rasterization), step(rasterization_reference))


def bench_pairs(repeats: int) -> list[dict]:
    import importlib

    rows = []
    for name, target in PAIRS.items():
        module, fn = target.split(":")
        pair: Pair = getattr(importlib.import_module(module), fn)()
        fast, ref = timeit(pair.fast, repeats), timeit(pair.ref, max(1, repeats // 3))
        rows.append({"op": name, "ms": round(fast, 2), "reference_ms": round(ref, 2), "ratio": round(ref / fast, 2)})
    return rows


def bench_renders(sizes: list[int], repeats: int) -> list[dict]:
    """Render forward + backward for every registered representation at each size (batch 1)."""
    import torch

    import representations
    from representations.shading import Shading, light_near_camera
    from studio.sampling import CameraConfig, sample_cameras

    rows = []
    for kind in sorted(representations.REGISTRY):
        cls = representations.get(kind)
        scene = cls(cls.Config(), total_steps=1000)
        scene.before_step(0)
        for size in sizes:
            gen = torch.Generator().manual_seed(0)
            cams = sample_cameras(CameraConfig(resolution=size), gen)
            shading = Shading(light_near_camera(cams.position, gen))

            def step() -> None:
                out = scene.render(cams, shading)
                (out.rgb.mean() + sum(out.terms.values(), torch.zeros(()))).backward()
                scene.zero_grad(set_to_none=True)

            rows.append({"op": f"render {kind} {size}² fwd+bwd", "ms": round(timeit(step, repeats), 2)})
    return rows


def bench_distillations(model: str, size: int, repeats: int) -> list[dict]:
    """One distillation step (render excluded) per registered loss, beside its UNet evaluations' cost."""
    import torch

    import distillation
    from studio.config import build_config
    from studio.models import load_guidance
    from studio.prompts import PromptBank
    from studio.sampling import CameraConfig, sample_cameras

    cfg = build_config([{"prompt": "a red cube", "guidance": {"model": model}}], [f"camera.resolution={size}"])
    guidance, _ = load_guidance(cfg.guidance)
    prompts = PromptBank(guidance, cfg)
    cams = sample_cameras(CameraConfig(resolution=size), torch.Generator().manual_seed(0))
    cond, uncond = prompts.for_cameras(cams)
    calls = [0]  # UNet evaluations, counted per sample (a CFG pass over a batch of 2 counts 2)

    def count(_module, args, kwargs) -> None:
        calls[0] += (args[0] if args else kwargs["sample"]).shape[0]

    hook = guidance.unet.register_forward_pre_hook(count, with_kwargs=True)
    try:
        unet_ms = _unet_eval_ms(guidance, cond, size, repeats)
        rows = []
        for kind in sorted(distillation.REGISTRY):
            dcfg = build_config([{"prompt": "x", "distillation": {"kind": kind}}], []).distillation
            loss_fn = distillation.get(kind)(dcfg, guidance, 1000)
            image = torch.rand(1, 3, size, size, requires_grad=True)
            step_no = [0]

            def step() -> None:
                loss_fn(image, cond, uncond, cams.c2w, step_no[0]).loss.backward()
                step_no[0] += 1

            step()
            calls[0] = 0
            ms = timeit(step, repeats)
            evals = calls[0] / (repeats + 1)
            rows.append({"op": f"distill {kind} {size}²", "ms": round(ms, 2), "unet_evals": round(evals, 2),
                         "reference_ms": round(evals * unet_ms, 2),
                         "ratio": round(ms / max(evals * unet_ms, 1e-9), 2)})
            if kind == "vsd":  # its LoRA step's backward and AdamW are work, not bookkeeping
                rows[-1]["op"] += " (incl. the LoRA training step's backward + AdamW; bench_losses.py budgets it)"
        return rows
    finally:
        hook.remove()


def _unet_eval_ms(guidance, cond, size: int, repeats: int) -> float:
    """One UNet evaluation at batch 1 (no grad): the unit of a distillation step's cost."""
    import torch

    latent = size // guidance.vae_scale_factor
    x = torch.randn(1, guidance.unet.config.in_channels, latent, latent, dtype=guidance.dtype)
    t = torch.tensor([500])
    with torch.no_grad():
        return timeit(lambda: guidance.predict_eps(x, t, cond), repeats)


def bench_export(repeats: int) -> list[dict]:
    """The whole export pipeline at the user defaults (extract, clean, simplify, unwrap, bake, fidelity, GLB)
    for each representation's start scene (volumes made crisp, so there is a surface)."""
    import dataclasses

    import torch

    import representations
    from studio.config import ExportConfig
    from studio.export.pipeline import prepare, write_formats

    rows = []
    cfg = ExportConfig()
    for kind in sorted(representations.REGISTRY):
        cls = representations.get(kind)
        rcfg = cls.Config()
        if hasattr(rcfg, "blob"):
            rcfg = dataclasses.replace(rcfg, blob=dataclasses.replace(rcfg.blob, bias=0.0))
        torch.manual_seed(0)
        scene = cls(rcfg, total_steps=1000)
        with tempfile.TemporaryDirectory() as tmp:
            def step() -> None:
                write_formats(prepare(scene, cfg), scene, ["glb"], Path(tmp))
            rows.append({"op": f"export {kind}: {cfg.mesh_resolution}³ mesh -> {cfg.faces} faces, "
                               f"{cfg.texture_size}² texture, fidelity, GLB",
                         "ms": round(timeit(step, max(1, repeats // 5)), 1)})
    return rows


def markdown(rows: list[dict], title: str) -> str:
    from .report import machine

    lines = [title, "", f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}.", "",
             "| op | ms | UNet evals | reference ms | ratio |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['ms']} | {r.get('unet_evals', '')} | {r.get('reference_ms', '')} | "
                     f"{r.get('ratio', '')} |")
    lines += ["", "ratio: reference / fast for op pairs (higher is better); for distillation steps, step time / "
              "(UNet evaluations × one UNet evaluation), the bookkeeping overhead (goal ≤ 1.3)."]
    return "\n".join(lines) + "\n"
