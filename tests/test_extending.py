"""Adding a representation or a loss is what docs/adding-a-representation.md and docs/adding-a-distillation.md
say it is: one new module and one registry line. Each test writes a new, small but real module into a temporary
folder, adds its registry line, and uses the studio as a person would: `--set` the kind, generate (training,
export, assets), stop and resume, see it in the UI's choices and in the generated config reference. Nothing else
in the tree is edited, so a change that needs a third file (a kind listed somewhere by hand, a hasattr on a
concrete class, an import of a private helper) fails here."""
import sys
import textwrap

import pytest

import distillation
import representations
from studio.config import build_config, field_reference
from studio.events import Finished, Progress
from studio.rundir import read_status
from studio.run import resume, run

pytestmark = pytest.mark.usefixtures("small_exports")

REPRESENTATION = '''
"""A dense density and colour grid (8^3, trilinear): the smallest ray-marched field, for tests/test_extending.py."""
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from representations.base import RepresentationConfig
from representations.marched import BlobConfig, MarchedVolume, blob
from representations.occupancy import MarchConfig, OccupancyConfig
from representations.optim import adam
from representations.regularizers import VolumeRegularizers


@dataclass
class TinyGridConfig(RepresentationConfig):
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"lr": (1e-8, 1.0), "normal_min_alpha": (0.0, 1.0)}
    kind: str = "tinygrid"
    """Registry key."""
    lr: float = 0.05
    """Adam learning rate of both grids."""
    blob: BlobConfig = field(default_factory=BlobConfig)
    """The starting density."""
    march: MarchConfig = field(default_factory=lambda: MarchConfig(samples_per_ray=32))
    """Where the samples go along each ray."""
    occupancy: OccupancyConfig = field(default_factory=lambda: OccupancyConfig(resolution=16))
    """The occupancy grid."""
    regularizers: VolumeRegularizers = field(default_factory=VolumeRegularizers)
    """Weights of the regularisers."""
    normal_min_alpha: float = 1e-3
    """Pixels with lower opacity get no normal."""


class TinyGrid(MarchedVolume):
    Config = TinyGridConfig

    def __init__(self, cfg: TinyGridConfig, total_steps: int) -> None:
        super().__init__(cfg, total_steps)
        axis = torch.linspace(-cfg.bound, cfg.bound, 8)
        verts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        self.sigma = nn.Parameter(blob(verts, cfg.blob).view(1, 1, 8, 8, 8))
        self.color = nn.Parameter(torch.zeros(1, 3, 8, 8, 8))
        self.optimizer = adam([{"params": [self.sigma, self.color], "lr": cfg.lr}])

    def _sample(self, grid: Tensor, points: Tensor) -> Tensor:  # [N, 3] -> [C, N]
        uvw = (points / self.cfg.bound).flip(-1).view(1, -1, 1, 1, 3)  # grid_sample wants (z, y, x) order
        return F.grid_sample(grid, uvw, align_corners=True).view(grid.shape[1], -1)

    def raw_density(self, points: Tensor) -> Tensor:
        return self._sample(self.sigma, points)[0]

    def raw_field(self, points: Tensor) -> tuple[Tensor, Tensor]:
        return self.raw_density(points), torch.sigmoid(self._sample(self.color, points))

    def normal_step(self) -> float:
        return 2 * self.cfg.bound / 8
'''

LOSS = '''
"""SDS without classifier-free guidance, for tests/test_extending.py: g = ε̂(x_t, t, y) − ε."""
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from distillation.base import Distillation, DistillationConfig, LossOut, TextEmbeds, gradient_loss
from distillation.schedule import check_timestep_range, sample_timesteps


@dataclass
class PlainConfig(DistillationConfig):
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"t_min": (0.0, 1.0), "t_max": (0.0, 1.0)}
    kind: str = "plain"
    """Registry key."""
    t_min: float = 0.3
    """Lowest sampled timestep (fraction)."""
    t_max: float = 0.9
    """Highest sampled timestep (fraction)."""

    def __post_init__(self) -> None:
        check_timestep_range("plain", self.t_min, self.t_max)


class Plain(Distillation):
    Config = PlainConfig

    def forward(self, images: Tensor, cond: TextEmbeds, uncond: TextEmbeds, c2w: Tensor, step: int) -> LossOut:
        g = self.guidance
        x0 = g.encode_images(images)
        t = sample_timesteps(x0.shape[0], self.cfg.t_min, self.cfg.t_max, g.num_train_timesteps, device=g.device)
        with torch.no_grad():
            noise = torch.randn_like(x0)
            eps = g.predict_eps(g.add_noise(x0.detach(), noise, t), t, cond)
            grad = torch.nan_to_num(eps.float() - noise.float())
        return LossOut(loss=gradient_loss(x0, grad), logs={"unet_evals": 1.0})
'''


@pytest.fixture
def new_module(tmp_path, monkeypatch):
    """write(name, source): a new module importable as `name` (the one new file)."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(name, None)

    yield write


FAST = ["guidance.model=tiny-random", "camera.resolution=32", "export.mesh_resolution=24", "export.faces=500",
        "export.turntable_frames=0", "log.preview_every=0", "log.checkpoint_every=1"]


def generate_stop_resume(tmp_path, overrides: list[str]):
    """Generate 3 steps with `overrides`, stop after step 2, resume to the end: the finished event."""
    cfg = build_config([{"prompt": "a red cube", "steps": 3}], [*FAST, *overrides])
    gen = run(cfg, tmp_path / "out")
    for ev in gen:
        if isinstance(ev, Progress) and ev.step == 2:
            break
    gen.close()
    (run_dir,) = (tmp_path / "out").iterdir()
    assert read_status(run_dir)["status"] == "cancelled"
    events = list(resume(run_dir))
    assert isinstance(events[-1], Finished) and read_status(run_dir)["status"] == "finished"
    return events[-1]


def test_a_new_representation_is_one_module_and_one_registry_line(tmp_path, new_module, monkeypatch):
    new_module("tinygrid_rep", REPRESENTATION)
    monkeypatch.setitem(representations.REGISTRY, "tinygrid", "tinygrid_rep:TinyGrid")  # the registry line

    crisp = ["representation.blob.bias=0.0", "representation.blob.scale=40.0", "representation.blob.radius=0.6"]
    fin = generate_stop_resume(tmp_path, ["representation.kind=tinygrid", "representation.lr=0.02",
                                          "representation.regularizers.entropy_weight=0.0", *crisp])
    assert (fin.run_dir / "asset.glb").is_file() and fin.metrics["mesh_faces"] > 0
    assert "tinygrid" in (fin.run_dir / "config.toml").read_text()
    from ui.form import registry_choices

    assert "tinygrid" in registry_choices()["representation"]
    cfg = build_config([{"prompt": "x", "representation": {"kind": "tinygrid"}}], [])
    keys = {k for k, _, _ in field_reference(inst=cfg)}
    assert {"representation.lr", "representation.march.samples_per_ray"} <= keys


def test_a_new_loss_is_one_module_and_one_registry_line(tmp_path, new_module, monkeypatch):
    new_module("plain_loss", LOSS)
    monkeypatch.setitem(distillation.REGISTRY, "plain", "plain_loss:Plain")  # the registry line

    fin = generate_stop_resume(tmp_path, ["distillation.kind=plain", "distillation.t_max=0.8"])
    assert (fin.run_dir / "asset.glb").is_file() and fin.metrics["steps"] == 3
    from ui.form import registry_choices

    assert "plain" in registry_choices()["distillation"]
    with pytest.raises(Exception, match="t_min"):
        build_config([{"prompt": "x"}], ["distillation.kind=plain", "distillation.t_min=0.95"])
