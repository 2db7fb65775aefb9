"""Shared pytest fixtures. Append new fixtures; keep each one cheap (tiny models, 32-64 px)."""
from __future__ import annotations

import pytest


# ---- distillation: tiny random guidance models (real diffusers / transformers classes) ----------------------
@pytest.fixture(scope="session")
def tiny_sd():
    """Tiny random SD guidance (epsilon-prediction), 64 px native resolution, latents [B, 4, 8, 8]."""
    from distillation.tiny import tiny_guidance

    return tiny_guidance("sd", "epsilon", seed=0, size=64)


@pytest.fixture(scope="session")
def tiny_sd_v():
    """Tiny random SD 2.x-style guidance with v-prediction, 64 px."""
    from distillation.tiny import tiny_guidance

    return tiny_guidance("sd", "v_prediction", seed=0, size=64)


@pytest.fixture(scope="session")
def tiny_sdxl():
    """Tiny random SDXL guidance (two text encoders, pooled embeds, add_time_ids), 64 px."""
    from distillation.tiny import tiny_guidance

    return tiny_guidance("sdxl", "epsilon", seed=0, size=64)
