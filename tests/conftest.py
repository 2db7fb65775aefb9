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


# ---- export: small textures in tests ----------------------------------------------------------------------
SMALL_EXPORT = {"texture_size": 64, "fidelity_views": 2, "fidelity_size": 32}
"""ExportConfig values for tests that do not set them: the user defaults (1024² bake, 16 fidelity views at
64 px) would add seconds to every generate in the suite."""


@pytest.fixture
def small_exports(monkeypatch):
    """Every ExportConfig built while the test runs gets SMALL_EXPORT for the fields it was not given explicitly.
    Not autouse: a module that generates assets asks for it (`pytestmark = pytest.mark.usefixtures(...)`), so a
    test that reads the user defaults sees them."""
    from studio.config import ExportConfig

    init = ExportConfig.__init__

    def small_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        for key, value in SMALL_EXPORT.items():
            if key not in kwargs:
                setattr(self, key, value)

    monkeypatch.setattr(ExportConfig, "__init__", small_init)


CRISP_SPHERE = ["representation.blob.bias=0.0", "representation.blob.scale=40.0", "representation.blob.radius=0.6"]
"""NeRF overrides whose initial field is an opaque sphere of radius ~0.58 with a sharp edge."""


@pytest.fixture(scope="session")
def crisp_run(tmp_path_factory):
    """A finished 1-step tiny-model NeRF run whose scene is a crisp sphere: textured GLB/OBJ/PLY at 128²."""
    from studio.config import build_config
    from studio.run import run

    cfg = build_config([{"prompt": "a grey ball", "steps": 1}], [
        "guidance.model=tiny-random", "camera.resolution=32", "export.mesh_resolution=40", "export.faces=1500",
        "export.texture_size=128", "export.fidelity_views=4", "export.fidelity_size=48",
        "export.turntable_frames=0", "log.preview_every=0", *CRISP_SPHERE])
    events = list(run(cfg, tmp_path_factory.mktemp("crisp")))
    return events[-1]
