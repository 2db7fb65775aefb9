"""Checkpoints in safetensors (no pickle), written atomically, with the random generator states that make a resumed
run draw the same numbers as an uninterrupted one."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .rundir import atomic_write_text


def save_checkpoint(folder: Path, representation, distill, step: int, config_toml: str,
                    rng: dict[str, torch.Tensor] | None = None) -> None:
    """Write folder/{scene.safetensors, distillation.safetensors, meta.json, config.toml} atomically as a whole:
    into a sibling temp folder first, then swapped in. `rng` (name -> uint8 state, see `rng_state`) goes
    to rng.safetensors, so that a resumed run draws the same random numbers as an uninterrupted one."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_cpu(representation.state_tensors()), str(tmp / "scene.safetensors"))
    save_file(_cpu(distill.state_tensors()) or {"_empty": torch.zeros(1)}, str(tmp / "distillation.safetensors"))
    if rng:
        save_file(_cpu(rng), str(tmp / "rng.safetensors"))
    atomic_write_text(tmp / "config.toml", config_toml)
    atomic_write_text(tmp / "meta.json", json.dumps({"step": step}) + "\n")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


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
    """The representation's tensors from a checkpoint folder."""
    return load_file(str(Path(folder) / "scene.safetensors"))


def load_meta(folder: Path) -> dict:
    return json.loads((Path(folder) / "meta.json").read_text())


def load_rng_state(folder: Path) -> dict[str, torch.Tensor] | None:
    """The random generator states saved with the checkpoint, or None (checkpoints written before resume existed)."""
    path = Path(folder) / "rng.safetensors"
    return load_file(str(path)) if path.exists() else None


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
    state = load_file(str(Path(folder) / "distillation.safetensors"))
    state.pop("_empty", None)
    if not distill.state_tensors():
        return
    try:
        distill.load_state_tensors(state)
    except KeyError as e:
        raise ValueError(f"{folder}: the checkpoint has no {e.args[0]!r} for distillation "
                         f"{distill.cfg.kind!r}; was it written by a run with another distillation?") from None
