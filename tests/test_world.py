"""The procedural world: SDF sanity, renderer contract, the house's front, captions and vocabulary."""
from __future__ import annotations

import random

import pytest
import torch

from representations.cameras import orbit_cameras
from representations.shading import Shading, front_light
from world import OBJECTS, World, get_object
from world.objects import BOUND_RADIUS, House
from world.render import render_object


def _cams(az: list[float], el: float = 10.0, size: int = 32):
    n = len(az)
    return orbit_cameras(torch.tensor(az), torch.full((n,), el), torch.full((n,), 2.7), torch.full((n,), 47.5), size, size)


@pytest.mark.parametrize("name", list(OBJECTS))
def test_sdf_sign_and_bounds(name):
    obj = get_object(name)
    far = torch.randn(256, 3, generator=torch.Generator().manual_seed(0))
    far = far / far.norm(dim=-1, keepdim=True) * 1.5
    assert (obj.sdf(far) > 0).all()
    # conservative distance: outside the bound sphere, sdf >= distance to it
    assert (obj.sdf(far) >= 1.5 - BOUND_RADIUS - 1e-4).all()
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 41)] * 3, indexing="ij"), -1).reshape(-1, 3)
    occ = obj.occupancy(grid)
    assert occ.any(), "object has no inside"
    assert (grid[occ].norm(dim=-1) <= 0.78).all(), "object exceeds radius ~0.75"
    assert torch.equal(occ, obj.sdf(grid) < 0)


@pytest.mark.parametrize("name", ["cube", "sphere", "cylinder", "cone", "torus"])
def test_sdf_is_a_distance(name):
    """|grad sdf| ~ 1 away from the medial axis (finite differences at random points near the surface)."""
    obj = get_object(name)
    p = torch.rand(2000, 3, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    h = 1e-3
    g = torch.stack([(obj.sdf(p + h * e) - obj.sdf(p - h * e)) / (2 * h) for e in torch.eye(3)], -1).norm(dim=-1)
    assert (g < 1.01).all()
    assert (g > 0.99).float().mean() > 0.9


def test_known_distances():
    assert get_object("sphere").sdf(torch.tensor([[0.0, 0.0, 1.0]])).item() == pytest.approx(0.4)
    assert get_object("cube").sdf(torch.tensor([[1.0, 0.0, 0.0]])).item() == pytest.approx(0.57, abs=1e-5)
    assert get_object("torus").sdf(torch.tensor([[0.5, 0.0, 0.0]])).item() == pytest.approx(-0.2)
    assert get_object("cone").occupancy(torch.tensor([[0.0, 0.5, 0.0], [0.3, 0.5, 0.0]])).tolist() == [True, False]


def test_render_contract():
    cams = _cams([0.0, 90.0, 180.0])
    out = render_object(get_object("cube"), (0.8, 0.1, 0.1), cams, Shading(front_light(cams.position)))
    assert out.rgb.shape == (3, 3, 32, 32) and out.alpha.shape == (3, 1, 32, 32)
    assert out.depth.shape == (3, 1, 32, 32) and out.normal.shape == (3, 3, 32, 32)
    assert 0 <= out.rgb.min() and out.rgb.max() <= 1 and 0 <= out.alpha.min() and out.alpha.max() <= 1
    assert (out.rgb[:, :, 0, 0] == 1).all(), "corners show the white background"
    assert out.alpha[:, :, 16, 16].min() == 1
    d = out.depth[:, 0, 16, 16]
    assert torch.allclose(d, torch.full_like(d, 2.7 - 0.43), atol=0.02), "depth = distance to the cube's face"
    n = out.normal[0, :, 16, 16]
    assert torch.allclose(n, torch.tensor([0.0, 0.0, 1.0]), atol=0.02), "front face normal is +Z"


def test_house_door_is_on_the_front():
    house = House()
    cams = _cams([0.0, 180.0], el=5.0, size=64)
    out = render_object(house, (0.9, 0.8, 0.2), cams, Shading(front_light(cams.position), mode="albedo"))
    dark = (out.rgb.mean(1) < 0.5) & (out.alpha[:, 0] > 0.99)
    assert dark[0].sum() > 30, "door visible from the front"
    assert dark[1].sum() == 0, "no door from the back"


def test_world_captions_and_vocabulary():
    world = World.load()
    assert len(world.colors) >= 8 and set(world.shapes) <= set(OBJECTS)
    assert all(max(c) < 0.99 or min(c) < 0.9 for c in world.colors.values()), "no white objects"
    assert len(world.pairs()) == len(world.colors) * len(world.shapes)
    rng = random.Random(0)
    vocab = set(world.vocabulary())
    for shape, color in world.pairs():
        cap = world.caption(shape, color, rng, view="front")
        assert cap.endswith(", front view")
        assert set(cap.replace(",", " ").split()) <= vocab
    assert {"front", "side", "back", "overhead", "view", "house"} <= vocab
    assert world.canonical_caption("cube", "red") == "a red cube"


def test_unknown_words_are_reported_and_known_prompts_pass():
    from studio.models import embedded_prompt_warning

    assert embedded_prompt_warning("a red cube, front view") is None
    assert embedded_prompt_warning("A Grey Donut") is None  # synonyms and case
    msg = embedded_prompt_warning("a ceramic mug")
    assert "'ceramic', 'mug'" in msg and "torus" in msg and "purple" in msg and "--model" in msg
