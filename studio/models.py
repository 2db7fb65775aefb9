"""Choosing and loading the guidance model: --model, the embedded model, or (tests) a tiny random one."""
from __future__ import annotations

import torch

from distillation.guidance import resolve_dtype

from . import paths
from .config import GuidanceConfig
from .errors import UserError
from .vocabulary import Vocabulary, prompt_token_warning

RANDOM_MODEL = "tiny-random"
"""Special --model value: a small random model (tests and smoke runs; results are meaningless)."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA if available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"guidance.device {name}: this machine has no CUDA GPU (or torch is a CPU build); "
                        "use guidance.device=auto or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"guidance.device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                        "pick one of them or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"guidance.device {name}: MPS is not available here; use guidance.device=auto or cpu")
    return device


def load_guidance(cfg: GuidanceConfig):
    """(Guidance, note). The note says which model is used, with a plain warning for a random one."""
    from distillation.guidance import Guidance
    from distillation.tiny import tiny_guidance

    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    name = cfg.model
    if name == RANDOM_MODEL:
        return tiny_guidance("sd").to_device(device), (
            "WARNING: using a small RANDOM diffusion model: the asset will not resemble the prompt."
        )
    _quiet_loading()
    if not name:
        if (paths.EMBEDDED_MODEL / "model_index.json").exists():
            return Guidance.from_pretrained(str(paths.EMBEDDED_MODEL), device=device, dtype=dtype), (
                f"model: the embedded primitives model ({paths.EMBEDDED_MODEL.name})"
            )
        return tiny_guidance("sd").to_device(device), (
            "WARNING: the embedded model is not installed yet; using a small RANDOM diffusion model: "
            "the asset will not resemble the prompt. Pass --model PATH_OR_HUB_ID for a real one."
        )
    return Guidance.from_pretrained(name, device=device, dtype=dtype), f"model: {name}"


def embedded_prompt_warning(prompt: str) -> str | None:
    """'WARNING: ...' lines when the embedded model cannot draw `prompt` (words it never saw, several objects or
    colours, relations; studio.vocabulary, from the model folder's vocabulary.json) or the prompt is longer than
    its text encoder reads; None when the prompt is fine."""
    vocab = Vocabulary.load(paths.EMBEDDED_MODEL)
    lines = vocab.prompt_warnings(prompt) if vocab else []
    if lines:
        lines[-1] += " Pass --model PATH_OR_HUB_ID for anything else."
    token = prompt_token_warning(prompt, tokenizer_dir=paths.EMBEDDED_MODEL / "tokenizer")
    lines += [token] if token else []
    return "\n".join(f"WARNING: {line}" for line in lines) or None


def _quiet_loading() -> None:
    """No weight-loading progress bars on stderr: the CLI's output stays one progress line and the result."""
    import diffusers
    import transformers

    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()

