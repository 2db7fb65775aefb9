"""The prompt's text embeddings for the loop: encoded once per run, then picked per camera (the view suffix of
each camera's direction when `view_dependent_prompt` is on)."""
from __future__ import annotations

import torch

from distillation.base import TextEmbeds
from distillation.guidance import Guidance
from representations.cameras import Cameras

from .config import RunConfig
from .sampling import VIEW_SUFFIXES, view_names, view_prompt


class PromptBank:
    """Text embeddings of the prompt (plain and with each view suffix) and of the negative prompt, computed once."""

    def __init__(self, guidance: Guidance, cfg: RunConfig) -> None:
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
    """Rows `idx` [B] of `e` (hidden [N, L, D] -> [B, L, D], pooled [N, P] -> [B, P])."""
    idx = idx.to(e.hidden.device)
    return TextEmbeds(e.hidden[idx], None if e.pooled is None else e.pooled[idx])
