"""The run generator: event order, export stages, cancellation by closing, failure marking, checkpoints."""
import json

import pytest
import torch

import representations
from representations.base import RenderOut
from representations.nerf import NeRF
from studio.config import build_config
from studio.events import Exporting, Finished, Preview, Progress, Started
from studio.assets import export_plan
from studio.resume import check_resumable
from studio.run import resume, run

pytestmark = pytest.mark.usefixtures("small_exports")  # tests/conftest.py: small bakes and fidelity checks

FAST = ["guidance.model=tiny-random", "camera.resolution=32", "export.mesh_resolution=32",
        "export.turntable_frames=2", "export.turntable_size=32", "log.preview_every=2"]


def cfg_for(prompt="a red cube", steps=4, extra=()):
    return build_config([{"prompt": prompt, "steps": steps}], [*FAST, *extra])


def status(run_dir):
    return json.loads((run_dir / "status.json").read_text())


DENSE = ["representation.blob.bias=0.0"]  # a solid blob: even 2 random steps leave a surface to export
FULL_EXPORT = ["extract mesh", "simplify", "unwrap UVs", "bake texture", "fidelity check",
               "write glb", "write obj", "write ply", "turntable"]


@pytest.mark.parametrize("extra, stages", [
    ([], FULL_EXPORT),  # tests' defaults (conftest.SMALL_EXPORT): texture, fidelity check, three formats, turntable
    (["export.texture_size=0", "export.fidelity_views=0", 'export.formats=["glb"]', "export.turntable_frames=0"],
     ["extract mesh", "simplify", "write glb"]),
])
def test_export_stages_come_between_the_last_preview_and_finished(tmp_path, extra, stages):
    events = list(run(cfg_for(steps=2, extra=[*DENSE, *extra]), tmp_path))
    kinds = [type(e) for e in events]
    first = kinds.index(Exporting)
    last_preview = len(kinds) - 1 - kinds[::-1].index(Preview)
    assert first == last_preview + 1 and kinds[first:] == [Exporting] * len(stages) + [Finished]
    exporting = events[first:-1]
    assert [e.stage for e in exporting] == stages
    assert [e.index for e in exporting] == list(range(1, len(stages) + 1))
    assert {e.count for e in exporting} == {len(stages)}
    seconds = [e.seconds for e in exporting]
    assert seconds == sorted(seconds) and seconds[0] >= 0
    assert "export_faces" in events[-1].metrics  # the mesh stages ran: every planned stage was emitted


def test_the_export_plan_adds_splat_ply_for_gaussian_scenes():
    class Scene:
        def __init__(self, splats):
            self.splats = splats

        def splat_tensors(self):
            return self.splats

    cfg = cfg_for(extra=['export.formats=["ply"]', "export.texture_size=0"])
    assert export_plan(cfg, Scene({"means": None})) == ["extract mesh", "simplify", "fidelity check", "write ply",
                                                         "write splat.ply", "turntable"]
    assert export_plan(cfg, Scene(None))[-2:] == ["write ply", "turntable"]


def test_closing_during_the_export_cancels_with_a_checkpoint_and_no_asset(tmp_path):
    """Closed at the last stage (the mesh files are already in .assets.tmp): nothing is moved in."""
    gen = run(cfg_for(steps=2, extra=DENSE), tmp_path)
    for ev in gen:
        if isinstance(ev, Exporting) and ev.stage == "turntable":
            break
    gen.close()
    (run_dir,) = tmp_path.iterdir()
    assert status(run_dir)["status"] == "cancelled" and status(run_dir)["checkpoint_step"] == 2
    assert not (run_dir / "asset.glb").exists() and not (run_dir / ".assets.tmp").exists()
    assert not (run_dir / "metrics.json").exists()
    assert check_resumable(run_dir, None)[1] == 2
    events = list(resume(run_dir))  # no steps left: the final preview, the export again, finished
    assert [type(e) for e in events] == [Started, Preview] + [Exporting] * len(FULL_EXPORT) + [Finished]
    assert status(run_dir)["status"] == "finished" and (run_dir / "asset.glb").exists()


def test_event_sequence(tmp_path):
    events = list(run(cfg_for(steps=4), tmp_path))
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    steps = [e.step for e in events if isinstance(e, Progress)]
    assert steps == [1, 2, 3, 4]
    previews = [e for e in events if isinstance(e, Preview)]
    assert [p.step for p in previews] == [2, 4] and previews[0].image.shape == (32, 32 * 4, 3)
    assert status(events[0].run_dir)["status"] == "finished"


def test_closing_the_generator_cancels(tmp_path):
    gen = run(cfg_for(steps=50), tmp_path)
    run_dir = None
    for ev in gen:
        if isinstance(ev, Started):
            run_dir = ev.run_dir
        if isinstance(ev, Progress) and ev.step == 2:
            break
    gen.close()
    assert status(run_dir)["status"] == "cancelled"
    assert not (run_dir / "asset.glb").exists() and not (run_dir / "metrics.json").exists()


class ExplodingNeRF(NeRF):
    """A real NeRF that fails at its third step, to exercise the failure path."""

    def before_step(self, step):
        if step == 2:
            raise RuntimeError("boom at step 2")
        super().before_step(step)


def test_an_exception_marks_the_run_failed(tmp_path, monkeypatch):
    monkeypatch.setitem(representations.REGISTRY, "nerf", "tests.test_run:ExplodingNeRF")
    gen = run(cfg_for(steps=5), tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        for ev in gen:
            pass
    (run_dir,) = list(tmp_path.iterdir())
    st = status(run_dir)
    assert st["status"] == "failed" and "boom at step 2" in st["error"]
    assert not (run_dir / "asset.glb").exists()


def test_checkpoint_restores_the_scene(tmp_path):
    """The scene restored from checkpoint/ renders exactly the final preview the run saved."""
    import numpy as np
    from PIL import Image

    from studio.reexport import load_scene
    from studio.previews import make_preview

    events = list(run(cfg_for(steps=3), tmp_path))
    run_dir = events[-1].run_dir
    saved = np.asarray(Image.open(run_dir / "previews" / "step_000003.png"))
    cfg, scene = load_scene(run_dir)
    (tmp_path / "again" / "previews").mkdir(parents=True)
    again = make_preview(cfg, scene, 3, tmp_path / "again").image
    assert np.abs(again.astype(int) - saved.astype(int)).max() <= 1
