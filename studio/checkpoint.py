"""Checkpoints in safetensors (no pickle), written atomically, with the random generator states that make a resumed
run draw the same numbers as an uninterrupted one."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import UserError
from .rundir import atomic_write_text


class CheckpointError(UserError):
    """A checkpoint file that is missing or cannot be read (truncated, garbage, not what save_checkpoint wrote).
    The message names the file; `path` is that file. Callers add the fix (studio.resume.checkpoint_fix)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path = Path(path)


def save_checkpoint(folder: Path, representation, distill, step: int, config_toml: str,
                    rng: dict[str, torch.Tensor] | None = None) -> None:
    """Write folder/{scene.safetensors, distillation.safetensors, meta.json, config.toml} atomically as a whole:
    into a sibling temp folder first, then swapped in. `rng` (name -> uint8 state, see `rng_state`) goes
    to rng.safetensors, so that a resumed run draws the same random numbers as an uninterrupted one."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save(_cpu(representation.state_tensors()), tmp / "scene.safetensors")
    _save(_cpu(distill.state_tensors()) or {"_empty": torch.zeros(1)}, tmp / "distillation.safetensors")
    if rng:
        _save(_cpu(rng), tmp / "rng.safetensors")
    atomic_write_text(tmp / "config.toml", config_toml)
    atomic_write_text(tmp / "meta.json", json.dumps({"step": step}) + "\n")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors' save_file, its write errors as the OSError they are (safetensors wraps them in its own type:
    a full disk was a traceback, not the studio's one-line 'no room' error)."""
    from safetensors import SafetensorError

    try:
        save_file(tensors, str(path))
    except SafetensorError as e:
        found = re.search(r"os error (\d+)", str(e))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None


def _sibling(folder: Path, suffix: str) -> Path:
    return folder.with_name(folder.name + suffix)


def complete_checkpoint(folder: Path) -> Path | None:
    """The whole checkpoint among `folder`, `folder.tmp` (written, not yet swapped in) and `folder.old` (the one
    before, moved aside during the swap): save_checkpoint writes meta.json last, so a folder with meta.json and
    scene.safetensors is whole. None if there is none. Reads only."""
    folder = Path(folder)
    for candidate in (folder, _sibling(folder, ".tmp"), _sibling(folder, ".old")):
        if (candidate / "meta.json").is_file() and (candidate / "scene.safetensors").is_file():
            return candidate
    return None


def recover_checkpoint(folder: Path) -> None:
    """After a kill inside save_checkpoint: put the whole checkpoint (complete_checkpoint) back at `folder` and
    drop the leftovers, so that a kill at any point of a checkpoint write loses at most that write."""
    folder = Path(folder)
    whole = complete_checkpoint(folder)
    if whole is not None and whole != folder:
        shutil.rmtree(folder, ignore_errors=True)
        whole.rename(folder)
    for suffix in (".tmp", ".old"):
        shutil.rmtree(_sibling(folder, suffix), ignore_errors=True)


def load_scene_state(folder: Path) -> dict[str, torch.Tensor]:
    """The representation's tensors from a checkpoint folder; CheckpointError if the file is missing or unreadable."""
    return _load_tensors(Path(folder) / "scene.safetensors")


def load_meta(folder: Path) -> dict:
    """meta.json of a checkpoint folder ({"step": int >= 0, ...}); CheckpointError if missing or not that."""
    path = Path(folder) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(path, "is missing") from None
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bytes that are not UTF-8
        raise CheckpointError(path, f"is unreadable ({_first_line(e)})") from None
    step = meta.get("step") if isinstance(meta, dict) else None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(path, f"is not a checkpoint's meta.json (it needs a step >= 0, not {str(meta)[:60]!r})")
    return meta


def load_rng_state(folder: Path) -> dict[str, torch.Tensor] | None:
    """The random generator states saved with the checkpoint, or None (checkpoints written before resume existed).
    CheckpointError if the file is there but unreadable or lacks a state."""
    path = Path(folder) / "rng.safetensors"
    if not path.exists():
        return None
    state = _load_tensors(path)
    size = torch.get_rng_state().numel()  # a CPU generator's state: the camera one and torch's global one
    for name in ("camera", "torch"):
        if name not in state or state[name].dtype != torch.uint8 or state[name].numel() != size:
            raise CheckpointError(path, f"has no valid {name!r} generator state")
    return state


def check_checkpoint(folder: Path) -> int:
    """The step of the checkpoint in `folder` once every file of it is found readable (meta.json parsed, the
    safetensors headers checked against the file sizes, so a truncated or garbage file is caught; the tensors
    themselves are not loaded). CheckpointError naming the first bad file. Reads only."""
    folder = Path(folder)
    step = int(load_meta(folder)["step"])
    for name in ("scene.safetensors", "distillation.safetensors"):
        _check_header(folder / name)
    load_rng_state(folder)
    return step


def _check_header(path: Path) -> None:
    """CheckpointError unless `path` is a whole safetensors file (its header read, its size what the header says)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except FileNotFoundError:
        raise CheckpointError(path, "is missing") from None
    except (SafetensorError, OSError) as e:
        raise CheckpointError(path, f"is unreadable ({_first_line(e)}): truncated or not a checkpoint file") from None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """load_file, with CheckpointError naming `path` when it is missing, truncated or garbage."""
    _check_header(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(path, f"is unreadable ({_first_line(e)}): truncated or not a checkpoint file") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:120] if text else type(e).__name__


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


def _cpu(state: dict) -> dict:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def load_distillation_state(folder: Path, distill) -> None:
    """Restore a distillation's own trainable state (e.g. VSD's LoRA, camera embedding and optimizer moments)
    from a checkpoint folder written by `save_checkpoint`, so a resumed run continues where it stopped.

    ValueError (naming the folder) if the checkpoint holds no state for a loss that has some, e.g. it was
    written by a run with another distillation kind.
    """
    state = _load_tensors(Path(folder) / "distillation.safetensors")
    state.pop("_empty", None)
    if not distill.state_tensors():
        return
    try:
        distill.load_state_tensors(state)
    except KeyError as e:
        raise ValueError(f"{folder}: the checkpoint has no {e.args[0]!r} for distillation "
                         f"{distill.cfg.kind!r}; was it written by a run with another distillation?") from None
