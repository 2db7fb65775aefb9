"""THE loop: `run(cfg)` is a generator of events (Started, Progress, Preview, Exporting, Finished).

CLI, web UI, batch and tests all iterate it. Closing the generator cancels the run (status
'cancelled', and a checkpoint of the last completed step); an exception marks it 'failed'. Only a completed
run is marked 'finished'. After the last step each export stage yields an Exporting event as it starts, so
closing the generator there stops the export between two stages (the checkpoint is already saved, no asset is
moved in). `resume(run_dir)` continues a stopped, failed or killed run from its checkpoint
(or trains a finished one further) in the same folder, with the same events.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import torch

import distillation
import representations
from distillation.base import TextEmbeds
from distillation.pgc import attach_pgc
from representations.cameras import Cameras, ring_cameras
from representations.shading import Shading, front_light, light_near_camera

from . import media
from .checkpoint import load_distillation_state, load_meta, load_rng_state, load_scene_state, save_checkpoint
from .config import RunConfig, ShadingConfig, config_from_toml, config_to_toml
from .events import Event, Exporting, Finished, Preview, Progress, Started
from .errors import UserError
from .export.pipeline import prepare_stages, write_formats_stages
from .export.stages import TURNTABLE, Stages, mesh_plan, numbered, write_stage
from .models import embedded_prompt_warning, load_guidance
from .rundir import STATUSES, atomic_write_text, create_run_dir, read_status, write_json, write_status
from .sampling import VIEW_SUFFIXES, sample_cameras, view_names, view_prompt


def run(cfg: RunConfig, out: Path | str = "out") -> Iterator[Event]:
    """Generate `cfg.prompt` into a new run directory under `out`, yielding events as it goes."""
    cfg.validate()
    torch.manual_seed(cfg.seed)
    guidance, note = _load_guidance(cfg)  # before the run dir: a bad --model writes nothing
    scene, loss_fn = build_training(cfg, guidance)
    if cfg.init_from:
        init_scene(scene, Path(cfg.init_from))
    prompts = PromptBank(guidance, cfg)

    run_dir = create_run_dir(Path(out), cfg.prompt)
    atomic_write_text(run_dir / "config.toml", config_to_toml(cfg))
    write_status(run_dir, "running", prompt=cfg.prompt, model_note=note, pid=os.getpid())
    (run_dir / "previews").mkdir()
    gen = torch.Generator().manual_seed(cfg.seed)
    yield from _train(cfg, run_dir, scene, loss_fn, prompts, gen, note, start=0)


def resume(run_dir: Path | str, steps: int | None = None) -> Iterator[Event]:
    """Continue the run in `run_dir` from its last checkpoint, in the same folder with its config.toml, up to
    its configured steps (or `steps` in total, which may also extend a finished run), yielding the same events
    as `run` (Progress counts from the checkpoint's step) and ending the same way (assets, metrics, finished).

    Bad input (no checkpoint, finished and `steps` not above the steps done, ...) raises UserError on the first
    `next()`, before anything in `run_dir` changes. log.jsonl keeps its lines up to the checkpoint's step (lines
    a killed run wrote after its last checkpoint are dropped, those steps are trained again) and is appended to.

    Exactness: the checkpoint holds the scene's parameters and optimiser moments, the distillation's state (VSD's
    LoRA, camera embedding and AdamW moments), the step and the random generator states (the camera generator and
    torch's global one, which draws timesteps, noise and ray jitter; previews do not draw from it). So on CPU a run
    resumed from step k matches the uninterrupted run to float precision (tests/test_resume.py). Not exact:
    `steps` other than the configured ones (schedules that ramp over the run, e.g. t_max or voxel upscaling, are
    stretched to the new total), checkpoints written before rng.safetensors existed (the cameras restart from
    seed + step), and CUDA kernels that are not deterministic.
    """
    run_dir = Path(run_dir)
    cfg, done = check_resumable(run_dir, steps)
    ckpt = run_dir / "checkpoint"
    torch.manual_seed(cfg.seed)
    guidance, note = _load_guidance(cfg)
    scene, loss_fn = build_training(cfg, guidance)
    try:
        scene.load_state_tensors({k: v if k.endswith(".step") else v.to(guidance.device)  # Adam's step stays on the CPU
                                  for k, v in load_scene_state(ckpt).items()})
        load_distillation_state(ckpt, loss_fn)
    except (KeyError, ValueError, RuntimeError) as e:
        raise UserError(f"{ckpt} does not fit {run_dir / 'config.toml'} ({str(e).splitlines()[0][:200]}); "
                        f"was config.toml edited? put back {ckpt / 'config.toml'}") from None
    prompts = PromptBank(guidance, cfg)
    gen = torch.Generator()
    rng = load_rng_state(ckpt)
    if rng is None:
        gen.manual_seed(cfg.seed + done)
        torch.manual_seed(cfg.seed + done)
    else:
        restore_rng(rng, gen, guidance.device)

    if cfg.steps != config_from_toml((run_dir / "config.toml").read_text()).steps:
        atomic_write_text(run_dir / "config.toml", config_to_toml(cfg))
    keep_log_until(run_dir / "log.jsonl", done)
    write_status(run_dir, "running", prompt=cfg.prompt, model_note=note, pid=os.getpid(), resumed_from_step=done)
    (run_dir / "previews").mkdir(exist_ok=True)
    yield from _train(cfg, run_dir, scene, loss_fn, prompts, gen, note, start=done)


def check_resumable(run_dir: Path, steps: int | None) -> tuple[RunConfig, int]:
    """(config with the steps to train up to, steps already done) of a resumable run; UserError naming the fix
    otherwise. Reads only."""
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; pass a folder written by studio generate")
    ckpt = run_dir / "checkpoint"
    if not (ckpt / "meta.json").exists() or not (ckpt / "scene.safetensors").exists():
        raise UserError(f"{run_dir} has no checkpoint to resume from; start it again with "
                        f"studio generate --config {run_dir / 'config.toml'} (log.checkpoint_every makes runs resumable)")
    if not (run_dir / "config.toml").exists():
        raise UserError(f"{run_dir} has no config.toml; pass a run directory written by studio generate")
    st = read_status(run_dir)
    status = st["status"]
    if status not in STATUSES:
        raise UserError(f"{run_dir} has no readable status.json; pass a run directory written by studio generate")
    if status == "running" and _alive(st.get("pid")):
        raise UserError(f"{run_dir} is still running (process {st['pid']}); stop that run first, then resume it")
    done = int(load_meta(ckpt)["step"])
    cfg = config_from_toml((run_dir / "config.toml").read_text())
    if steps is not None:
        if status == "finished" and steps <= done:
            raise UserError(f"{run_dir} is already finished at step {done}; pass --steps N with N > {done} to train it further")
        if steps < done:
            raise UserError(f"--steps {steps} is below the {done} steps the checkpoint has done; pass --steps N with N >= {done}")
        cfg.steps = steps
    elif status == "finished":
        raise UserError(f"{run_dir} is already finished at step {done}; pass --steps N with N > {done} to train it further")
    elif done > cfg.steps:
        raise UserError(f"the checkpoint of {run_dir} is at step {done}, beyond its {cfg.steps} steps; pass --steps N with N >= {done}")
    return cfg.validate(), done


def _alive(pid) -> bool:
    """Whether another process with this id exists (a run that was killed left its old id behind)."""
    if not isinstance(pid, int) or pid == os.getpid():
        return False  # same process (e.g. the web UI): the caller knows whether it still iterates the run
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def keep_log_until(path: Path, step: int) -> None:
    """Drop the log.jsonl lines of steps after `step` (a killed run wrote them after its last checkpoint) and a
    half-written last line, so that the resumed run appends whole lines after whole lines."""
    if not path.exists():
        return
    text = path.read_text()
    kept = [line.rstrip("\n") + "\n" for line in text.splitlines(keepends=True) if _log_step(line) <= step]
    if "".join(kept) != text:
        atomic_write_text(path, "".join(kept))


def _log_step(line: str) -> float:
    """The step of a log.jsonl line; infinity for a line that is not a whole JSON object with a step."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


def _load_guidance(cfg: RunConfig):
    """(Guidance, note); the note also warns when the embedded model does not know the prompt's words."""
    guidance, note = load_guidance(cfg.guidance)
    if not cfg.guidance.model:
        note = "\n".join(filter(None, [note, embedded_prompt_warning(cfg.prompt)]))
    return guidance, note


def build_training(cfg: RunConfig, guidance):
    """(scene, distillation loss) of `cfg`, fresh, on the guidance's device (draws from torch's RNG)."""
    scene = representations.get(cfg.representation.kind)(cfg.representation, cfg.steps).to(guidance.device)
    loss_fn = distillation.get(cfg.distillation.kind)(cfg.distillation, guidance, cfg.steps)
    return scene, loss_fn


def rng_state(gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """The random generator states a resumed run needs: the camera generator, torch's CPU (and CUDA) RNG."""
    state = {"camera": gen.get_state(), "torch": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, torch.Tensor], gen: torch.Generator, device: torch.device) -> None:
    """Inverse of `rng_state`."""
    gen.set_state(state["camera"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _train(cfg: RunConfig, run_dir: Path, scene, loss_fn, prompts: "PromptBank", gen: torch.Generator, note: str,
           start: int) -> Iterator[Event]:
    """Steps `start`..cfg.steps-1, then the final preview, checkpoint, assets (an Exporting event per stage) and
    metrics; the status on the way.

    Closing the generator writes a checkpoint of the last completed step (if newer than the one on disk), so a
    stopped run can be resumed; assets are written into a temporary folder and moved in only when all are done,
    so a finished run being trained further keeps its old assets until the new ones are complete."""
    device = loss_fn.guidance.device
    config_toml = config_to_toml(cfg)
    ckpt = run_dir / "checkpoint"
    done = saved = start
    t_start = time.perf_counter()
    try:
        yield Started(run_dir, cfg.steps, note)
        log = open(run_dir / "log.jsonl", "a")
        speed = _Speed()
        try:
            for step in range(start, cfg.steps):
                logs = train_step(cfg, scene, loss_fn, prompts, gen, step, device)
                done = step + 1
                speed.tick()
                last = step + 1 == cfg.steps
                if step % cfg.log.log_every == 0 or last:
                    log.write(json.dumps({"step": step + 1, **logs}) + "\n")
                    log.flush()
                yield Progress(step + 1, cfg.steps, logs["loss"], speed.rate, speed.eta(cfg.steps - step - 1), logs)
                if cfg.log.preview_every and (step + 1) % cfg.log.preview_every == 0 and not last:
                    yield make_preview(cfg, scene, step + 1, run_dir)
                if cfg.log.checkpoint_every and (step + 1) % cfg.log.checkpoint_every == 0 and not last:
                    save_checkpoint(ckpt, scene, loss_fn, step + 1, config_toml, rng_state(gen, device))
                    saved = step + 1
        finally:
            log.close()
        train_seconds = time.perf_counter() - t_start
        yield make_preview(cfg, scene, cfg.steps, run_dir)
        if saved != cfg.steps:
            save_checkpoint(ckpt, scene, loss_fn, cfg.steps, config_toml, rng_state(gen, device))
            saved = cfg.steps
        assets, mesh_metrics = yield from export_assets_atomically(cfg, scene, run_dir)
        metrics = {
            "prompt": cfg.prompt,
            "steps": cfg.steps,
            "train_seconds": round(train_seconds, 3),
            "total_seconds": round(time.perf_counter() - t_start, 3),
            "steps_per_second": round((cfg.steps - start) / max(train_seconds, 1e-9), 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "model": note,
            **({"resumed_from_step": start} if start else {}),
            **mesh_metrics,
        }
        write_json(run_dir / "metrics.json", metrics)
        write_status(run_dir, "finished", prompt=cfg.prompt, model_note=note)
        yield Finished(run_dir, assets, metrics)
    except GeneratorExit:
        try:
            if done > saved:  # closed between steps: the state is consistent, keep it for `studio resume`
                save_checkpoint(ckpt, scene, loss_fn, done, config_toml, rng_state(gen, device))
                saved = done
        finally:
            write_status(run_dir, "cancelled", prompt=cfg.prompt, model_note=note, checkpoint_step=saved)
        raise
    except BaseException as e:  # noqa: BLE001 - recorded, then re-raised
        write_status(run_dir, "failed", prompt=cfg.prompt, error=f"{type(e).__name__}: {e}", checkpoint_step=saved)
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
    """Render and save the preview grid of `step`. Draws nothing from torch's RNG (a NeRF in training mode jitters
    its samples): previews do not change the training's random numbers, so resumed runs match uninterrupted ones."""
    device = next_device(scene)
    cams = ring_cameras(cfg.log.preview_views, cfg.camera.resolution).to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        image = media.grid(media.to_uint8(render_views(scene, cams).numpy()))
    path = run_dir / "previews" / f"step_{step:06d}.png"
    media.save_png(image, path)
    return Preview(step, image, path)


def export_assets_atomically(cfg: RunConfig, scene,
                             run_dir: Path) -> Generator[Exporting, None, tuple[dict[str, Path], dict]]:
    """`export_assets` into run_dir/.assets.tmp, then each file moved into `run_dir` (replacing older ones) only
    once all are written: an export that fails or is stopped leaves the run's previous assets as they were.

    Yields an Exporting event as each stage of `export_plan` starts; returns (assets by kind, stats)."""
    tmp = run_dir / ".assets.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        assets, stats = yield from numbered(export_assets(cfg, scene, tmp), export_plan(cfg, scene))
        for f in sorted(tmp.iterdir()):
            os.replace(f, run_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {k: run_dir / p.relative_to(tmp) for k, p in assets.items()}, stats


def export_plan(cfg: RunConfig, scene) -> list[str]:
    """The stages `export_assets` runs for `cfg` and `scene`, in order (a scene without a surface skips the mesh
    stages after "extract mesh" and the mesh writes)."""
    splat = [write_stage("splat")] if scene.splat_tensors() is not None else []
    turntable = [TURNTABLE] if cfg.export.turntable_frames else []
    return [*mesh_plan(cfg.export), *map(write_stage, cfg.export.formats), *splat, *turntable]


def export_assets(cfg: RunConfig, scene, run_dir: Path) -> Stages[tuple[dict[str, Path], dict]]:
    """Mesh files and turntable of a finished scene, plus mesh statistics and the fidelity check for metrics.json.
    Yields each stage's name as it starts (stages.py)."""
    prepared = yield from prepare_stages(scene, cfg.export)
    stats = prepared.stats
    assets: dict[str, Path] = {}
    if prepared.mesh is not None:
        assets.update((yield from write_formats_stages(prepared, scene, cfg.export.formats, run_dir)))
    if scene.splat_tensors() is not None:  # Gaussians: the 3DGS PLY that splat viewers read
        from .splat import write_splat_ply

        yield write_stage("splat")
        assets["splat"] = write_splat_ply(run_dir / "splat.ply", scene.splat_tensors())
    if cfg.export.turntable_frames:
        yield TURNTABLE
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
