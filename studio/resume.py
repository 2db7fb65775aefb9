"""What resuming a run needs besides the loop: whether a run folder can be resumed (and its process is gone), its
checkpoint's state put back into a fresh scene, loss and random generators, and the folder made ready to be
appended to. `studio.run.resume` puts these together.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from distillation.base import Distillation
from representations.base import Representation

from .checkpoint import complete_checkpoint, load_distillation_state, load_meta, load_rng_state, load_scene_state, restore_rng
from .config import RunConfig, config_from_toml, config_to_toml
from .errors import UserError
from .rundir import STATUSES, atomic_write_text, read_status


def check_resumable(run_dir: Path, steps: int | None) -> tuple[RunConfig, int]:
    """(config with the steps to train up to, steps already done) of a resumable run; UserError naming the fix
    otherwise. Reads only."""
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; pass a folder written by studio generate")
    ckpt = complete_checkpoint(run_dir / "checkpoint")  # or the one a kill inside a checkpoint write left whole
    if ckpt is None:
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


def restore_training(run_dir: Path, scene: Representation, loss_fn: Distillation, device: torch.device) -> None:
    """Load the checkpoint of `run_dir` into a fresh `scene` and `loss_fn` on `device`; UserError when it does not
    fit the run's config.toml."""
    ckpt = run_dir / "checkpoint"
    try:
        scene.load_state_tensors({k: v if k.endswith(".step") else v.to(device)  # Adam's step stays on the CPU
                                  for k, v in load_scene_state(ckpt).items()})
        load_distillation_state(ckpt, loss_fn)
    except (KeyError, ValueError, RuntimeError) as e:
        raise UserError(f"{ckpt} does not fit {run_dir / 'config.toml'} ({str(e).splitlines()[0][:200]}); "
                        f"was config.toml edited? put back {ckpt / 'config.toml'}") from None


def restore_generators(run_dir: Path, seed: int, device: torch.device) -> torch.Generator:
    """The camera generator of the resumed run, torch's global RNG set to match: the states saved with the
    checkpoint, or both seeded with `seed` (seed + step) for checkpoints written before rng.safetensors existed."""
    gen = torch.Generator()
    rng = load_rng_state(run_dir / "checkpoint")
    if rng is None:
        gen.manual_seed(seed)
        torch.manual_seed(seed)
    else:
        restore_rng(rng, gen, device)
    return gen


def reopen(run_dir: Path, cfg: RunConfig, done: int) -> None:
    """Ready `run_dir` to be trained further from step `done`: config.toml rewritten if `cfg` changed its steps,
    log.jsonl cut back to the checkpoint's step."""
    if cfg.steps != config_from_toml((run_dir / "config.toml").read_text()).steps:
        atomic_write_text(run_dir / "config.toml", config_to_toml(cfg))
    keep_log_until(run_dir / "log.jsonl", done)


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
