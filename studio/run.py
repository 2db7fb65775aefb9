"""THE loop: `run(cfg)` is a generator of events (Started, Progress, Preview, Exporting, Finished).

CLI, web UI, batch and tests all iterate it. Closing the generator cancels the run (status
'cancelled', and a checkpoint of the last completed step); an exception marks it 'failed'. Only a completed
run is marked 'finished'. After the last step each export stage yields an Exporting event as it starts, so
closing the generator there stops the export between two stages (the checkpoint is already saved, no asset is
moved in). `resume(run_dir)` continues a stopped, failed or killed run from its checkpoint
(or trains a finished one further) in the same folder, with the same events.

What the loop calls lives beside it: resume checks and restores in resume.py, random generator states with the
checkpoint (checkpoint.py), the prompt embeddings in prompts.py, previews in previews.py, the assets in assets.py.
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

import distillation
import representations
from distillation.base import Distillation
from distillation.guidance import Guidance
from distillation.pgc import attach_pgc
from representations.base import Representation
from representations.cameras import Cameras
from representations.shading import Shading, light_near_camera

from .assets import export_assets_atomically
from .checkpoint import load_meta, recover_checkpoint, rng_state, save_checkpoint
from .config import RunConfig, ShadingConfig, config_to_toml
from .errors import UserError
from .events import Event, Finished, Progress, RolledBack, SpeedMeter, Started
from .guard import Rollback, finite_logs, give_up, nonfinite_logs, scaled_learning_rates, scene_problem
from .memory import check_memory
from .models import embedded_prompt_warning, load_guidance
from .previews import make_preview
from .prompts import PromptBank
from .resume import check_resumable, keep_log_until, reopen, restore_generators, restore_training
from .rundir import atomic_write_text, check_out_dir, create_run_dir, run_lock, write_json, write_status
from .sampling import sample_cameras
from .threads import ThreadPolicy


def run(cfg: RunConfig, out: Path | str = "out") -> Iterator[Event]:
    """Generate `cfg.prompt` into a new run directory under `out`, yielding events as it goes."""
    cfg.validate()
    check_memory(cfg)  # a run too big for this machine's free memory fails now, not in an OOM kill later
    check_out_dir(Path(out))  # before the model loads: a bad --out fails at once
    torch.manual_seed(cfg.seed)
    guidance, note = _load_guidance(cfg)  # before the run dir: a bad --model writes nothing
    scene, loss_fn = build_training(cfg, guidance)
    if cfg.init_from:
        init_scene(scene, Path(cfg.init_from), guidance.device)
    prompts = PromptBank(guidance, cfg)

    run_dir = create_run_dir(Path(out), cfg.prompt)
    with run_lock(run_dir):
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
    check_resumable(run_dir, steps)  # bad input: UserError with nothing written, not even the lock file
    with run_lock(run_dir):  # before the model loads: a second resume stops here
        recover_checkpoint(run_dir / "checkpoint")  # a kill inside a checkpoint write: the whole one back in place
        cfg, done = check_resumable(run_dir, steps)  # again, now that nobody else can change the folder
        check_memory(cfg)
        torch.manual_seed(cfg.seed)
        guidance, note = _load_guidance(cfg)
        scene, loss_fn = build_training(cfg, guidance)
        restore_training(run_dir, scene, loss_fn, guidance.device)
        prompts = PromptBank(guidance, cfg)
        gen = restore_generators(run_dir, cfg.seed + done, guidance.device)

        reopen(run_dir, cfg, done)
        write_status(run_dir, "running", prompt=cfg.prompt, model_note=note, pid=os.getpid(), resumed_from_step=done)
        (run_dir / "previews").mkdir(exist_ok=True)
        yield from _train(cfg, run_dir, scene, loss_fn, prompts, gen, note, start=done)


def _load_guidance(cfg: RunConfig) -> tuple[Guidance, str]:
    """(Guidance, note); the note also warns when the embedded model does not know the prompt's words."""
    guidance, note = load_guidance(cfg.guidance)
    if not cfg.guidance.model:
        note = "\n".join(filter(None, [note, embedded_prompt_warning(cfg.prompt)]))
    return guidance, note


def build_training(cfg: RunConfig, guidance: Guidance) -> tuple[Representation, Distillation]:
    """(scene, distillation loss) of `cfg`, fresh, on the guidance's device (draws from torch's RNG)."""
    scene = representations.get(cfg.representation.kind)(cfg.representation, cfg.steps).to(guidance.device)
    loss_fn = distillation.get(cfg.distillation.kind)(cfg.distillation, guidance, cfg.steps)
    return scene, loss_fn


def _train(cfg: RunConfig, run_dir: Path, scene: Representation, loss_fn: Distillation, prompts: PromptBank,
           gen: torch.Generator, note: str, start: int) -> Iterator[Event]:
    """Steps `start`..cfg.steps-1 (`_steps`), then the final preview, checkpoint, assets (an Exporting event per
    stage) and metrics (`_finish`); the status on the way.

    Closing the generator writes a checkpoint of the last completed step (if newer than the one on disk and
    finite), so a stopped run can be resumed; assets are written into a temporary folder and moved in only when all
    are done, so a finished run being trained further keeps its old assets until the new ones are complete."""
    t = Training(cfg, scene, loss_fn, gen, run_dir, done=start, saved=start)
    del scene, loss_fn, gen
    threads = ThreadPolicy()  # fewer threads while other processes hold cores (studio/threads.py)
    t_start = time.perf_counter()
    try:
        yield Started(run_dir, cfg.steps, note)
        yield from _steps(t, prompts, start, threads)
        yield from _finish(t, note, start, time.perf_counter() - t_start, t_start, threads)
    except GeneratorExit:
        try:  # closed between steps: a finite state is consistent, keep it for `studio resume`
            if t.done > t.saved and scene_problem(t.scene, t.loss_fn) is None:
                t.checkpoint(t.done)
        finally:
            write_status(run_dir, "cancelled", prompt=cfg.prompt, model_note=note, checkpoint_step=t.saved)
        raise
    except KeyboardInterrupt:  # a stop at once (in the export, or a second Ctrl-C): the last checkpoint stands
        write_status(run_dir, "cancelled", prompt=cfg.prompt, model_note=note, checkpoint_step=t.saved)
        raise
    except BaseException as e:  # noqa: BLE001 - recorded, then re-raised
        write_status(run_dir, "failed", prompt=cfg.prompt, error=f"{type(e).__name__}: {e}", checkpoint_step=t.saved)
        raise
    finally:
        threads.restore()
        del t


def _steps(t: "Training", prompts: PromptBank, start: int, threads: ThreadPolicy) -> Iterator[Event]:
    """The optimisation steps from `start`, each checked by the numerical guard (studio/guard.py): a non-finite
    loss (or a non-finite scene where a checkpoint is due, and after the last step) rolls back to the last good
    checkpoint with lower learning rates and training goes on from there."""
    cfg, speed, step = t.cfg, SpeedMeter(), start
    while True:
        if step < cfg.steps:
            logs = train_step(t.cfg, t.scene, t.loss_fn, prompts, t.gen, step, t.device)
            problem = nonfinite_logs(logs) or (
                scene_problem(t.scene, t.loss_fn) if _checkpoint_due(cfg, step) and step + 1 < cfg.steps else None)
        else:  # trained: nothing non-finite may reach the final checkpoint and the assets
            logs, problem = None, scene_problem(t.scene, t.loss_fn) if t.saved != cfg.steps else None
            if problem is None:
                return
        if problem is not None:
            rollback = _roll_back(t, step + (logs is not None), problem)
            yield RolledBack(rollback.at_step, rollback.to_step, rollback.reason, rollback.lr_scale)
            step = rollback.to_step
            continue
        t.done = step + 1
        speed.tick()
        threads.tick()
        yield from _after_step(t, step, logs, speed)
        step += 1


def _after_step(t: "Training", step: int, logs: dict[str, float], speed: SpeedMeter) -> Iterator[Event]:
    """A finished step's log.jsonl line (every log.log_every steps and the last), Progress, preview, checkpoint."""
    cfg, last = t.cfg, step + 1 == t.cfg.steps
    if step % cfg.log.log_every == 0 or last:
        with open(t.run_dir / "log.jsonl", "a") as log:  # opened per line: a rollback rewrites the file
            log.write(json.dumps({"step": step + 1, **finite_logs(logs)}, allow_nan=False) + "\n")
    yield Progress(step + 1, cfg.steps, logs["loss"], speed.rate, speed.eta(cfg.steps - step - 1), logs)
    if cfg.log.preview_every and (step + 1) % cfg.log.preview_every == 0 and not last:
        yield make_preview(cfg, t.scene, step + 1, t.run_dir)
    if _checkpoint_due(cfg, step) and not last:
        t.checkpoint(step + 1)


def _checkpoint_due(cfg: RunConfig, step: int) -> bool:
    """Whether a periodic checkpoint follows 0-based step `step`."""
    return bool(cfg.log.checkpoint_every) and (step + 1) % cfg.log.checkpoint_every == 0


def _finish(t: "Training", note: str, start: int, train_seconds: float, t_start: float,
            threads: ThreadPolicy) -> Iterator[Event]:
    """After the last step: the final preview and checkpoint, the assets, metrics.json, status finished."""
    cfg, run_dir = t.cfg, t.run_dir
    yield make_preview(cfg, t.scene, cfg.steps, run_dir)
    if t.saved != cfg.steps:
        t.checkpoint(cfg.steps)
    assets, mesh_metrics = yield from export_assets_atomically(cfg, t.scene, run_dir)
    metrics = {
        "prompt": cfg.prompt,
        "steps": cfg.steps,
        "train_seconds": round(train_seconds, 3),
        "total_seconds": round(time.perf_counter() - t_start, 3),
        "steps_per_second": round((cfg.steps - start) / max(train_seconds, 1e-9), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "model": note,
        **({"resumed_from_step": start} if start else {}),
        **({"rollbacks": [dataclasses.asdict(r) for r in t.rollbacks]} if t.rollbacks else {}),
        **({"thread_changes": threads.changes} if threads.changes else {}),
        **mesh_metrics,
    }
    write_json(run_dir / "metrics.json", metrics)
    write_status(run_dir, "finished", prompt=cfg.prompt, model_note=note)
    yield Finished(run_dir, assets, metrics)


@dataclass
class Training:
    """What the loop trains with and how far it got; a rollback replaces the config, scene, loss and generator."""

    cfg: RunConfig
    """The config training follows now (its learning rates lowered by each rollback)."""
    scene: Representation
    """The scene being optimised."""
    loss_fn: Distillation
    """The distillation loss (with its own trainable state, if any)."""
    gen: torch.Generator
    """The camera generator."""
    run_dir: Path
    """The run's folder."""
    done: int = 0
    """Steps completed."""
    saved: int = 0
    """The step of the checkpoint on disk."""
    rollbacks: list[Rollback] = field(default_factory=list)
    """The guard's rollbacks so far."""
    config_toml: str = ""
    """`cfg` as TOML, saved with every checkpoint."""

    def __post_init__(self) -> None:
        self.config_toml = self.config_toml or config_to_toml(self.cfg)

    @property
    def device(self) -> torch.device:
        return self.loss_fn.guidance.device

    def checkpoint(self, step: int) -> None:
        """Save the state after `step` steps as the run's checkpoint."""
        save_checkpoint(self.run_dir / "checkpoint", self.scene, self.loss_fn, step, self.config_toml,
                        rng_state(self.gen, self.device))
        self.saved = step


def _roll_back(t: Training, at_step: int, reason: str) -> Rollback:
    """Put `t` back at the run's last good checkpoint (or its start) with every learning rate times
    guard.lr_factor, and record it; RunFailed once guard.max_rollbacks are used up. config.toml gets the new rates
    and log.jsonl loses the lines after the checkpoint's step."""
    guard, run_dir = t.cfg.guard, t.run_dir
    scale = (t.rollbacks[-1].lr_scale if t.rollbacks else 1.0) * guard.lr_factor
    if len(t.rollbacks) >= guard.max_rollbacks:
        raise give_up(reason, at_step, len(t.rollbacks), scale / guard.lr_factor)
    cfg = dataclasses.replace(t.cfg, representation=scaled_learning_rates(t.cfg.representation, guard.lr_factor),
                              distillation=scaled_learning_rates(t.cfg.distillation, guard.lr_factor))
    guidance, device = t.loss_fn.guidance, t.device
    del t.scene, t.loss_fn
    torch.manual_seed(cfg.seed)
    t.scene, t.loss_fn = build_training(cfg, guidance)
    if (run_dir / "checkpoint" / "meta.json").is_file():  # the loop's own checkpoints are whole
        to_step = int(load_meta(run_dir / "checkpoint")["step"])
        restore_training(run_dir, t.scene, t.loss_fn, device)
        t.gen = restore_generators(run_dir, cfg.seed + to_step, device)
    else:  # no checkpoint yet: from the start, as `run` began
        to_step = 0
        if cfg.init_from:
            init_scene(t.scene, Path(cfg.init_from), device)
        t.gen = torch.Generator().manual_seed(cfg.seed)
    t.cfg, t.config_toml = cfg, config_to_toml(cfg)
    t.done = t.saved = to_step
    atomic_write_text(run_dir / "config.toml", t.config_toml)
    keep_log_until(run_dir / "log.jsonl", to_step)
    t.rollbacks.append(Rollback(at_step, to_step, reason, scale))
    return t.rollbacks[-1]


def init_scene(scene: Representation, source_dir: Path, device: torch.device) -> None:
    """Initialise `scene` (on `device`) from the finished run in `source_dir` (UserError if that is not possible)."""
    from .reexport import load_scene

    _, source = load_scene(source_dir)
    try:
        with torch.no_grad():
            scene.init_from(source.to(device))
    except NotImplementedError as e:
        raise UserError(f"--init-from: {e}; use flexicubes or gaussians for a refinement stage") from None


def train_step(cfg: RunConfig, scene: Representation, loss_fn: Distillation, prompts: PromptBank, gen: torch.Generator,
               step: int, device: torch.device) -> dict[str, float]:
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
