"""THE loop: `run(cfg)` is a generator of events (Started, Progress, Preview, Finished).

CLI, web UI, batch and tests all iterate it. Closing the generator cancels the run (status
'cancelled'); an exception marks it 'failed'. Only a completed run is marked 'finished'.
"""
from __future__ import annotations

import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import torch

import distillation
import representations
from distillation.base import TextEmbeds
from distillation.pgc import attach_pgc
from representations.cameras import Cameras, ring_cameras
from representations.shading import Shading, front_light, light_near_camera

from . import media
from .checkpoint import save_checkpoint
from .config import RunConfig, ShadingConfig, config_to_toml
from .events import Event, Finished, Preview, Progress, Started
from .errors import UserError
from .export.pipeline import prepare, write_formats
from .models import embedded_prompt_warning, load_guidance
from .rundir import atomic_write_text, create_run_dir, write_json, write_status
from .sampling import VIEW_SUFFIXES, sample_cameras, view_names, view_prompt


def run(cfg: RunConfig, out: Path | str = "out") -> Iterator[Event]:
    """Generate `cfg.prompt` into a new run directory under `out`, yielding events as it goes."""
    cfg.validate()
    torch.manual_seed(cfg.seed)
    guidance, note = load_guidance(cfg.guidance)  # before the run dir: a bad --model writes nothing
    if not cfg.guidance.model:
        note = "\n".join(filter(None, [note, embedded_prompt_warning(cfg.prompt)]))
    device = guidance.device
    scene = representations.get(cfg.representation.kind)(cfg.representation, cfg.steps).to(device)
    if cfg.init_from:
        init_scene(scene, Path(cfg.init_from))
    loss_fn = distillation.get(cfg.distillation.kind)(cfg.distillation, guidance, cfg.steps)
    prompts = PromptBank(guidance, cfg)

    run_dir = create_run_dir(Path(out), cfg.prompt)
    config_toml = config_to_toml(cfg)
    atomic_write_text(run_dir / "config.toml", config_toml)
    write_status(run_dir, "running", prompt=cfg.prompt, model_note=note)
    (run_dir / "previews").mkdir()
    t_start = time.perf_counter()
    try:
        yield Started(run_dir, cfg.steps, note)
        gen = torch.Generator().manual_seed(cfg.seed)
        log = open(run_dir / "log.jsonl", "a")
        speed = _Speed()
        try:
            for step in range(cfg.steps):
                logs = train_step(cfg, scene, loss_fn, prompts, gen, step, device)
                speed.tick()
                last = step + 1 == cfg.steps
                if step % cfg.log.log_every == 0 or last:
                    log.write(json.dumps({"step": step + 1, **logs}) + "\n")
                    log.flush()
                yield Progress(step + 1, cfg.steps, logs["loss"], speed.rate, speed.eta(cfg.steps - step - 1), logs)
                if cfg.log.preview_every and (step + 1) % cfg.log.preview_every == 0 and not last:
                    yield make_preview(cfg, scene, step + 1, run_dir)
                if cfg.log.checkpoint_every and (step + 1) % cfg.log.checkpoint_every == 0 and not last:
                    save_checkpoint(run_dir / "checkpoint", scene, loss_fn, step + 1, config_toml)
        finally:
            log.close()
        train_seconds = time.perf_counter() - t_start
        yield make_preview(cfg, scene, cfg.steps, run_dir)
        save_checkpoint(run_dir / "checkpoint", scene, loss_fn, cfg.steps, config_toml)
        assets, mesh_metrics = export_assets(cfg, scene, run_dir)
        metrics = {
            "prompt": cfg.prompt,
            "steps": cfg.steps,
            "train_seconds": round(train_seconds, 3),
            "total_seconds": round(time.perf_counter() - t_start, 3),
            "steps_per_second": round(cfg.steps / max(train_seconds, 1e-9), 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "model": note,
            **mesh_metrics,
        }
        write_json(run_dir / "metrics.json", metrics)
        write_status(run_dir, "finished", prompt=cfg.prompt, model_note=note)
        yield Finished(run_dir, assets, metrics)
    except GeneratorExit:
        write_status(run_dir, "cancelled", prompt=cfg.prompt, model_note=note)
        raise
    except BaseException as e:  # noqa: BLE001 - recorded, then re-raised
        write_status(run_dir, "failed", prompt=cfg.prompt, error=f"{type(e).__name__}: {e}")
        raise
    finally:
        del scene, loss_fn


def init_scene(scene, source_dir: Path) -> None:
    """Initialise `scene` from the finished run in `source_dir` (UserError if that is not possible)."""
    from .reexport import load_scene

    _, source = load_scene(source_dir)
    try:
        with torch.no_grad():
            scene.init_from(source.to(next_device(scene)))
    except NotImplementedError as e:
        raise UserError(f"--init-from: {e}; use flexicubes or gaussians for a refinement stage") from None


def train_step(cfg: RunConfig, scene, loss_fn, prompts: "PromptBank", gen: torch.Generator, step: int, device) -> dict:
    """One optimisation step; returns the step's scalar logs."""
    scene.before_step(step)
    cams = sample_cameras(cfg.camera, gen).to(device)
    shading = sample_shading(cfg.shading, cams, gen, step)
    out = scene.render(cams, shading)
    images = attach_pgc(out.rgb, cfg.pgc)
    cond, uncond = prompts.for_cameras(cams)
    result = loss_fn(images, cond, uncond, cams.c2w, step)
    total = result.loss + sum(out.terms.values(), torch.zeros((), device=device))
    total.backward()
    scene.after_backward(step)
    logs = {"loss": float(total.detach()), "distill": float(result.loss.detach())}
    logs.update({k: float(v.detach()) for k, v in out.terms.items()})
    logs.update({k: float(v) for k, v in result.logs.items()})
    return logs


def sample_shading(cfg: ShadingConfig, cams: Cameras, gen: torch.Generator, step: int) -> Shading:
    """Random light near the camera; the shading mode drawn per step from the configured probabilities."""
    light = light_near_camera(cams.position.cpu(), gen, cfg.light_spread_deg).to(cams.device)
    if step < cfg.warmup_steps:
        mode = "albedo"
    else:
        u = float(torch.rand((), generator=gen))
        mode = "textureless" if u < cfg.textureless_prob else "albedo" if u < cfg.textureless_prob + cfg.albedo_prob else "lambertian"
    return Shading(light, mode, cfg.ambient, cfg.diffuse)


class PromptBank:
    """Text embeddings of the prompt (plain and with each view suffix) and of the negative prompt, computed once."""

    def __init__(self, guidance, cfg: RunConfig) -> None:
        self.view_dependent = cfg.view_dependent_prompt
        texts = [cfg.prompt] + [view_prompt(cfg.prompt, v) for v in VIEW_SUFFIXES]
        self.keys = ["plain", *VIEW_SUFFIXES]
        self.cond = guidance.encode_text(texts)
        self.uncond = guidance.encode_text([cfg.negative_prompt])

    def for_cameras(self, cams: Cameras) -> tuple[TextEmbeds, TextEmbeds]:
        """(cond, uncond), one row per camera; cond carries each camera's view suffix."""
        names = view_names(cams) if self.view_dependent else ["plain"] * len(cams)
        idx = torch.tensor([self.keys.index(n) for n in names])
        return _take(self.cond, idx), _take(self.uncond, torch.zeros(len(cams), dtype=torch.long))


def _take(e: TextEmbeds, idx: torch.Tensor) -> TextEmbeds:
    idx = idx.to(e.hidden.device)
    return TextEmbeds(e.hidden[idx], None if e.pooled is None else e.pooled[idx])


@torch.no_grad()
def render_views(scene, cams: Cameras, chunk: int = 4) -> torch.Tensor:
    """[N, 3, H, W] lit renders (front light) of `cams`, in chunks to bound memory."""
    frames = []
    for i in range(0, len(cams), chunk):
        c = cams[i:i + chunk]
        shading = Shading(front_light(c.position), "lambertian")
        frames.append(scene.render(c, shading).rgb.float().cpu())
    return torch.cat(frames)


def make_preview(cfg: RunConfig, scene, step: int, run_dir: Path) -> Preview:
    cams = ring_cameras(cfg.log.preview_views, cfg.camera.resolution).to(next_device(scene))
    image = media.grid(media.to_uint8(render_views(scene, cams).numpy()))
    path = run_dir / "previews" / f"step_{step:06d}.png"
    media.save_png(image, path)
    return Preview(step, image, path)


def export_assets(cfg: RunConfig, scene, run_dir: Path) -> tuple[dict[str, Path], dict]:
    """Mesh files and turntable of a finished scene, plus mesh statistics and the fidelity check for metrics.json."""
    prepared = prepare(scene, cfg.export)
    stats = prepared.stats
    assets: dict[str, Path] = {}
    if prepared.mesh is not None:
        assets.update(write_formats(prepared, scene, cfg.export.formats, run_dir))
    if hasattr(scene, "splat_tensors"):  # Gaussians: the 3DGS PLY that splat viewers read
        from .splat import write_splat_ply

        assets["splat"] = write_splat_ply(run_dir / "splat.ply", scene.splat_tensors())
    if cfg.export.turntable_frames:
        cams = ring_cameras(cfg.export.turntable_frames, cfg.export.turntable_size).to(next_device(scene))
        frames = media.to_uint8(render_views(scene, cams).numpy())
        assets["turntable"] = run_dir / "turntable.gif"
        media.save_gif(frames, assets["turntable"])
    return assets, stats


def next_device(module: torch.nn.Module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


class _Speed:
    """Exponentially smoothed steps per second."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.rate = 0.0

    def tick(self) -> None:
        now = time.perf_counter()
        inst = 1.0 / max(now - self.t, 1e-9)
        self.rate = inst if self.rate == 0.0 else 0.9 * self.rate + 0.1 * inst
        self.t = now

    def eta(self, remaining: int) -> float:
        return remaining / self.rate if self.rate > 0 else float("inf")
