"""What resuming a run needs besides the loop: whether a run folder can be resumed (and its process is gone), its
checkpoint's state put back into a fresh scene, loss and random generators, and the folder made ready to be
appended to. `studio.run.resume` puts these together.
"""
from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import torch

import representations
from distillation.base import Distillation
from representations.base import Representation

from .checkpoint import (CheckpointError, check_checkpoint, complete_checkpoint, load_distillation_state,
                         load_rng_state, load_scene_state, restore_rng)
from .config import (DEFAULT_KINDS, POLYMORPHIC, RunConfig, build_config, config_to_toml, distillation_config,
                     representation_config)
from .errors import ConfigError, UserError
from .rundir import STATUSES, atomic_write_text, read_status
from .tomlcodec import merge, to_dict


def check_resumable(run_dir: Path, steps: int | None) -> tuple[RunConfig, int]:
    """(config with the steps to train up to, steps already done) of a resumable run; UserError naming the fix
    otherwise (a missing or unreadable checkpoint file, config.toml or status.json too). Reads only."""
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; pass a folder written by studio generate")
    ckpt = complete_checkpoint(run_dir / "checkpoint")  # or the one a kill inside a checkpoint write left whole
    if ckpt is None:
        raise UserError(f"{run_dir} has no checkpoint to resume from; start it again with "
                        f"studio generate --config {run_dir / 'config.toml'} (log.checkpoint_every makes runs resumable)")
    try:
        done = check_checkpoint(ckpt)
    except CheckpointError as e:
        raise checkpoint_fix(run_dir, e) from None
    cfg = read_run_config(run_dir / "config.toml", ckpt / "config.toml")
    status, pid = _status(run_dir, done)
    if status == "running" and _alive(pid):
        raise UserError(f"{run_dir} is still running (process {pid}); stop that run first, then resume it")
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


def _status(run_dir: Path, done: int) -> tuple[str | None, object]:
    """(status, pid) of status.json; (None, None) when there is none (the run is resumed like a killed one: the
    run lock keeps out a live writer). UserError naming the fix when it is there but unreadable."""
    path = run_dir / "status.json"
    if not path.exists():
        return None, None
    st = read_status(run_dir)
    if not isinstance(st, dict) or st.get("status") not in STATUSES:
        raise UserError(f"{path} is unreadable or not a run's status (truncated?); delete it and resume again "
                        f"to continue from the checkpoint (step {done})")
    return st["status"], st.get("pid")


def checkpoint_fix(run_dir: Path, err: CheckpointError) -> UserError:
    """`err` (a file of a checkpoint of `run_dir` is missing or unreadable) with the fix: the other whole copy
    (checkpoint.tmp/ or checkpoint.old/, left by a kill inside a checkpoint write) if one is readable, else
    starting again from the run's config.toml."""
    bad = err.path.parent
    ckpt = Path(run_dir) / "checkpoint"
    for other in (ckpt, ckpt.with_name("checkpoint.tmp"), ckpt.with_name("checkpoint.old")):
        if other == bad or not other.is_dir():
            continue
        try:
            step = check_checkpoint(other)
        except CheckpointError:
            continue
        return UserError(f"{err}; {other} is a whole checkpoint (step {step}): replace {bad} with it, then try again")
    return UserError(f"{err}; the run cannot continue from it: start again with "
                     f"studio generate --config {Path(run_dir) / 'config.toml'}")


# ---- a run's config.toml: keys it lacks come from its twin, not from the defaults ---------------------------
def read_run_config(path: Path, twin: Path) -> RunConfig:
    """The validated RunConfig of the run's config file `path`. Keys it lacks (deleted by hand; or added to the
    studio after the file was written) are taken from `twin`, the other copy of the same run's config
    (RUN_DIR/config.toml and RUN_DIR/checkpoint/config.toml, which save_checkpoint writes), and only then from the
    defaults: a deleted `steps` stays the run's 20, not 800. UserError naming the file and the fix when `path`
    (or `twin`, if needed) is missing or unreadable. Reads only."""
    tree = _read_tree(path, twin)
    missing = missing_keys(tree)
    if missing and twin.is_file():
        try:
            below = _read_tree(twin, path)
        except UserError as e:
            raise UserError(f"{e}, and {path} lacks {', '.join(missing[:3])}: add them to {path}") from None
        tree = merge(below, tree, POLYMORPHIC)
    try:
        return build_config([tree])
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}; correct it, or copy {twin} over it") from None


def missing_keys(tree: dict) -> list[str]:
    """The dotted keys of a full config (the defaults of the kinds `tree` names) that the TOML tree `tree` lacks;
    keys that moved (representations.MOVED_KEYS) count at their new place."""
    kinds = {}
    for section in POLYMORPHIC:
        kind = tree.get(section, {}).get("kind") if isinstance(tree.get(section), dict) else None
        kinds[section] = kind if isinstance(kind, str) else DEFAULT_KINDS[section]
    full = to_dict(RunConfig(representation=representation_config(kinds["representation"]),
                             distillation=distillation_config(kinds["distillation"])))
    return _missing(full, _upgraded(tree), "")


def _missing(full: dict, tree: dict, prefix: str) -> list[str]:
    out = []
    for key, value in full.items():
        if key not in tree:
            out.append(prefix + key)
        elif isinstance(value, dict) and isinstance(tree[key], dict):  # a Ramp written as a number is given
            out += _missing(value, tree[key], f"{prefix}{key}.")
    return out


def _upgraded(tree: dict) -> dict:
    """`tree` with the moved keys of its [representation] table at their new places."""
    section = tree.get("representation")
    if not isinstance(section, dict):
        return tree
    kind = section.get("kind", DEFAULT_KINDS["representation"])
    return {**tree, "representation": representations.upgrade_keys(kind if isinstance(kind, str) else "", section)}


def _read_tree(path: Path, twin: Path) -> dict:
    """The TOML tree of config file `path` (moved keys upgraded); UserError naming it and the fix (`twin`)."""
    fix = f"copy {twin} there" if twin.is_file() else "start again with studio generate"
    try:
        return _upgraded(tomllib.loads(path.read_text()))
    except FileNotFoundError:
        raise UserError(f"{path} is missing; {fix}") from None
    except (OSError, ValueError) as e:  # ValueError: TOMLDecodeError, bytes that are not UTF-8
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        fix = f"correct it, or copy {twin} over it" if twin.is_file() else "correct it"
        raise UserError(f"{path} is not readable TOML ({reason}); {fix}") from None


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
    except CheckpointError as e:  # a UserError, so a ValueError too: not "does not fit"
        raise checkpoint_fix(run_dir, e) from None
    except (KeyError, ValueError, RuntimeError) as e:
        raise UserError(f"{ckpt} does not fit {run_dir / 'config.toml'} ({str(e).splitlines()[0][:200]}); "
                        f"was config.toml edited? put back {ckpt / 'config.toml'}") from None


def restore_generators(run_dir: Path, seed: int, device: torch.device) -> torch.Generator:
    """The camera generator of the resumed run, torch's global RNG set to match: the states saved with the
    checkpoint, or both seeded with `seed` (seed + step) for checkpoints written before rng.safetensors existed."""
    gen = torch.Generator()
    try:
        rng = load_rng_state(run_dir / "checkpoint")
    except CheckpointError as e:
        raise checkpoint_fix(run_dir, e) from None
    if rng is None:
        gen.manual_seed(seed)
        torch.manual_seed(seed)
    else:
        restore_rng(rng, gen, device)
    return gen


def reopen(run_dir: Path, cfg: RunConfig, done: int) -> None:
    """Ready `run_dir` to be trained further from step `done`: config.toml rewritten if it does not say `cfg` (new
    steps, keys it lacked filled in by read_run_config), log.jsonl cut back to the checkpoint's step."""
    path = run_dir / "config.toml"
    if tomllib.loads(path.read_text()) != to_dict(cfg):
        atomic_write_text(path, config_to_toml(cfg))
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
