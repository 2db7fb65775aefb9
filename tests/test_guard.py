"""The numerical guard (studio/guard.py): a run whose training turns NaN goes back to its last good checkpoint with
lower learning rates and finishes with a finite scene, or fails with one line; never `finished` with a non-finite
state, and log.jsonl stays JSON.

A real divergence is hard to provoke on demand with the tiny model, so the runs here train `Unstable`: the real
NeRF, whose optimiser step turns its MLP into NaN when its MLP learning rate is above `stable_rate` (what too high a
learning rate does, made deterministic). It is registered for the test like any new representation."""
import dataclasses
import json
import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from safetensors.torch import load_file

import distillation
import representations
from representations.nerf import NeRF, NeRFConfig
from studio.cli import main
from studio.config import build_config, config_from_toml
from studio.errors import RunFailed
from studio.events import Finished, RolledBack
from studio.guard import finite_logs, nonfinite_logs, nonfinite_tensors, scaled_learning_rates
from studio.rundir import read_status
from studio.run import run

pytestmark = pytest.mark.usefixtures("small_exports")


@dataclass
class UnstableConfig(NeRFConfig):
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"stable_rate": (0.0, 1.0), "diverge_at": (0, 100)}
    kind: str = "unstable"
    """Registry key."""
    stable_rate: float = 0.02
    """Above this MLP learning rate, the optimiser step from step `diverge_at` on turns the MLP into NaN."""
    diverge_at: int = 6
    """The first step (0-based) that can diverge."""


class Unstable(NeRF):
    Config = UnstableConfig

    def after_backward(self, step: int) -> None:
        super().after_backward(step)
        if self.cfg.lr_mlp > self.cfg.stable_rate and step >= self.cfg.diverge_at:
            with torch.no_grad():
                self.layers[0].weight.fill_(float("nan"))


@pytest.fixture
def unstable(monkeypatch):
    monkeypatch.setitem(representations.REGISTRY, "unstable", f"{__name__}:Unstable")


TINY = ["guidance.model=tiny-random", "camera.resolution=32", "representation.march.samples_per_ray=32",
        "export.mesh_resolution=24", "export.faces=500", "export.turntable_frames=0", "log.preview_every=0",
        "log.log_every=1", "log.checkpoint_every=4"]


def strict_json(line: str) -> dict:
    """json.loads that refuses NaN / Infinity (which Python's json writes and reads, but JSON does not have)."""
    return json.loads(line, parse_constant=lambda c: pytest.fail(f"log.jsonl holds {c}: not JSON"))


def test_a_nan_rolls_back_to_the_last_checkpoint_with_lower_rates_and_finishes(tmp_path, unstable):
    cfg = build_config([{"prompt": "a red cube", "steps": 12}],
                       [*TINY, "representation.kind=unstable", "representation.lr_mlp=0.03"])
    events = list(run(cfg, tmp_path))
    rolled = [e for e in events if isinstance(e, RolledBack)]
    assert [(e.at_step, e.to_step, e.reason, e.lr_scale) for e in rolled] == [(8, 4, "loss is nan", 0.5)]
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.assets["glb"].is_file()
    run_dir = finished.run_dir
    assert read_status(run_dir)["status"] == "finished"
    assert finished.metrics["rollbacks"] == [{"at_step": 8, "to_step": 4, "reason": "loss is nan", "lr_scale": 0.5}]
    # the rest of the run trained with the lowered rate, and says so: resume and reproduction follow it
    assert config_from_toml((run_dir / "config.toml").read_text()).representation.lr_mlp == pytest.approx(0.015)
    steps = [strict_json(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # the lines of the diverged steps 5..8 were dropped, each step once
    scene = load_file(str(run_dir / "checkpoint" / "scene.safetensors"))
    assert all(torch.isfinite(v).all() for v in scene.values() if v.is_floating_point())


def test_a_run_that_keeps_diverging_fails_with_one_line_and_no_asset(tmp_path, unstable, capsys):
    code = main(["generate", "a red cube", "--out", str(tmp_path), "--steps", "12",
                 *[a for s in [*TINY, "representation.kind=unstable", "representation.lr_mlp=0.5",
                               "guard.max_rollbacks=2"] for a in ("--set", s)]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: training diverged at step ") and "after 2 rollbacks" in err[-1], err
    assert "Traceback" not in "\n".join(err)
    (run_dir,) = tmp_path.iterdir()
    status = read_status(run_dir)
    assert status["status"] == "failed" and "diverged" in status["error"]
    assert not list(run_dir.glob("asset*")) and not (run_dir / "metrics.json").exists()
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        strict_json(line)


def test_no_checkpoint_yet_rolls_back_to_the_start(tmp_path, unstable):
    cfg = build_config([{"prompt": "a red cube", "steps": 10}],
                       [*TINY, "log.checkpoint_every=0", "representation.kind=unstable", "representation.lr_mlp=0.03"])
    events = list(run(cfg, tmp_path))
    assert [(e.at_step, e.to_step) for e in events if isinstance(e, RolledBack)] == [(8, 0)]
    assert isinstance(events[-1], Finished)
    steps = [strict_json(line)["step"] for line in (events[-1].run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))


def test_what_counts_as_non_finite():
    assert nonfinite_logs({"loss": 1.0, "distill": float("inf")}) == "distill is inf"
    assert nonfinite_logs({"loss": 0.5}) is None
    assert json.dumps(finite_logs({"loss": float("nan"), "x": 2.0}), allow_nan=False) == '{"loss": null, "x": 2.0}'
    assert nonfinite_tensors([("a", torch.ones(3)), ("b", torch.tensor([1.0, math.nan]))]) == "parameter b is not finite"
    assert nonfinite_tensors([("steps", torch.tensor([3]))]) is None


@pytest.mark.parametrize("kind", sorted(representations.REGISTRY) + sorted(distillation.REGISTRY))
def test_every_learning_rate_is_scaled_and_nothing_else(kind):
    section = "representation" if kind in representations.REGISTRY else "distillation"
    before = getattr(build_config([{"prompt": "x", section: {"kind": kind}}]), section)
    after = scaled_learning_rates(before, 0.5)

    def leaves(obj, prefix=""):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value) and not hasattr(type(value), "const"):
                yield from leaves(value, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}", f.name, value

    for (key, name, old), (_, _, new) in zip(leaves(before), leaves(after)):
        is_rate = name == "lr" or name.startswith("lr_") or name.endswith("_lr")
        assert new == (old * 0.5 if is_rate else old), key
    if kind != "sds" and kind not in ("csm", "ism", "tsm"):
        assert any(n == "lr" or n.startswith("lr_") or n.endswith("_lr") for _, n, _ in leaves(before)), kind
