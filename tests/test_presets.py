"""Every shipped preset is a valid config and runs a few steps at 32 px on CPU. No blacklist."""
import json

import pytest

from studio import paths
from studio.config import build_config, preset_layer
from studio.run import run

pytestmark = pytest.mark.usefixtures("small_exports")  # tests/conftest.py: small bakes and fidelity checks

SMALL = ["guidance.model=tiny-random", "camera.resolution=32", "export.mesh_resolution=24",
         "export.turntable_frames=2", "export.turntable_size=24", "log.checkpoint_every=0"]
DENSE = "representation.blob.bias=0.0"
"""Volume representations start from a solid blob, so even 2 random steps leave a surface to export."""


def small_overrides(layer: dict) -> list[str]:
    """SMALL, plus DENSE when the preset's representation starts from a blob."""
    cfg = build_config([layer, {"prompt": "x"}])
    return SMALL + ([DENSE] if hasattr(cfg.representation, "blob") else [])


def test_presets_are_shipped():
    assert {"fast", "quality"} <= set(paths.preset_names())


@pytest.mark.parametrize("name", paths.preset_names())
def test_preset_runs(name, tmp_path):
    layer = preset_layer(name)
    small = small_overrides(layer)
    cfg = build_config([layer, {"prompt": "a red cube", "steps": 2}], small)
    # the preset's own values survive where the test does not override them
    overridden = {item.split("=")[0] for item in small} | {"steps"}
    checked = 0
    for dotted, value in _leaves(layer):
        if dotted not in overridden:
            node = cfg
            for part in dotted.split("."):
                node = getattr(node, part)
            assert node == (tuple(value) if isinstance(value, list) else value), dotted
            checked += 1
    assert checked > 0
    *_, finished = run(cfg, tmp_path)
    assert json.loads((finished.run_dir / "status.json").read_text())["status"] == "finished"


def _leaves(tree, prefix=""):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v
