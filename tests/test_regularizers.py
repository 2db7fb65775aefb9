"""The shared regularisers of the ray-marched volumes (representations/regularizers.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from representations.cameras import ring_cameras
from representations.nerf import NeRF, NeRFConfig
from representations.regularizers import masked_tv
from representations.shading import Shading, front_light
from representations.voxel import VoxelGrid, VoxelConfig


def _flat(h: int, w: int, n: tuple[float, float, float]) -> torch.Tensor:
    return torch.tensor(n).expand(1, h, w, 3).clone()


def test_masked_tv_of_normals_is_zero_on_a_flat_face_and_counts_a_crease_once():
    alpha = torch.ones(1, 8, 8)
    flat = _flat(8, 8, (0.0, 0.0, 1.0))
    assert float(masked_tv(alpha, flat)) == 0.0
    crease = flat.clone()
    crease[:, :, 4:] = torch.tensor([1.0, 0.0, 0.0])  # two flat faces meeting along one column boundary
    # 8 of the 8 x 7 horizontal pairs straddle the crease, each |(0,0,1) - (1,0,0)|_1 = 2; no vertical pair differs
    assert float(masked_tv(alpha, crease)) == pytest.approx(0.5 * (8 * 2 / 56))
    noisy = F.normalize(torch.randn(1, 8, 8, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert float(masked_tv(alpha, noisy)) > 5 * float(masked_tv(alpha, crease))


def test_masked_tv_of_normals_ignores_uncovered_pixels_and_moves_only_normals():
    noisy = F.normalize(torch.randn(1, 8, 8, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert float(masked_tv(torch.zeros(1, 8, 8), noisy)) == 0.0
    alpha = torch.zeros(1, 8, 8)
    alpha[:, :, :4] = 1.0  # only the left half is covered
    left = noisy.clone()
    left[:, :, 4:] = 0.0
    assert float(masked_tv(alpha, noisy)) == pytest.approx(float(masked_tv(alpha, left)))
    alpha.requires_grad_(True)
    normals = noisy.clone().requires_grad_(True)
    masked_tv(alpha, normals).backward()
    assert alpha.grad is None and float(normals.grad.abs().sum()) > 0.0


@pytest.mark.parametrize("kind", ["nerf", "voxel"])
def test_volumes_add_the_normal_tv_term_and_it_reaches_the_field(kind):
    """With normal_tv_weight > 0 the render's terms hold 'normal_tv' (weighted), a speckled field scores higher
    than the smooth start, and the term's gradient reaches the field's parameters."""
    torch.manual_seed(0)
    cams = ring_cameras(2, 24, elevation_deg=20.0)
    shading = Shading(front_light(cams.position), "lambertian")
    if kind == "nerf":
        rep = NeRF(NeRFConfig(regularizers={"normal_tv_weight": 10.0}, blob={"bias": 0.0}), 10)
    else:
        rep = VoxelGrid(VoxelConfig(regularizers={"normal_tv_weight": 10.0}, blob={"bias": 0.0}), 10)
    smooth = rep.render(cams, shading).terms["normal_tv"]
    assert smooth.requires_grad and float(smooth.detach()) > 0.0
    smooth.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in rep.parameters())
    with torch.no_grad():  # specks everywhere
        for p in rep.parameters():
            if p.dim() > 1:
                p.add_(3.0 * torch.randn_like(p))
    rep.update_occupancy(full=True)
    assert float(rep.render(cams, shading).terms["normal_tv"].detach()) > 2 * float(smooth.detach())
    off_cfg = {"regularizers": {"normal_tv_weight": 0.0}}
    off = NeRF(NeRFConfig(**off_cfg), 10) if kind == "nerf" else VoxelGrid(VoxelConfig(**off_cfg), 10)
    assert "normal_tv" not in off.render(cams, shading).terms


def test_masked_tv_of_albedo_is_zero_on_a_uniform_colour_ignores_the_silhouette_and_moves_only_albedo():
    alpha = torch.zeros(1, 8, 8)
    alpha[:, 2:6, 2:6] = 1.0  # a covered square on an empty background
    red = _flat(8, 8, (0.9, 0.1, 0.1))
    assert float(masked_tv(alpha, red)) == 0.0  # uniform inside: the square's edge costs nothing
    painted = red.clone()
    painted[:, 3:5, 3:5] = torch.tensor([0.2, 0.0, 0.0])  # a dark patch painted in the middle
    # 4 horizontal + 4 vertical covered pairs cross the patch's border, each |dc|_1 = 0.7 + 0.1 + 0.1; means over
    # the 8 x 7 pairs per direction
    assert float(masked_tv(alpha, painted)) == pytest.approx(0.5 * (4 * 0.9 / 56 + 4 * 0.9 / 56))
    alpha.requires_grad_(True)
    albedo = painted.clone().requires_grad_(True)
    masked_tv(alpha, albedo).backward()
    assert alpha.grad is None and float(albedo.grad.abs().sum()) > 0.0


@pytest.mark.parametrize("kind", ["nerf", "voxel"])
def test_volumes_add_the_albedo_tv_term_and_it_reaches_the_field(kind):
    torch.manual_seed(0)
    cams = ring_cameras(2, 24, elevation_deg=20.0)
    shading = Shading(front_light(cams.position), "lambertian")

    def make(weight: float):
        cfg = dict(regularizers={"albedo_tv_weight": weight}, blob={"bias": 0.0})
        return NeRF(NeRFConfig(**cfg), 10) if kind == "nerf" else VoxelGrid(VoxelConfig(**cfg), 10)

    assert "albedo_tv" not in make(0.0).render(cams, shading).terms
    rep = make(10.0)
    term = rep.render(cams, shading).terms["albedo_tv"]
    assert term.requires_grad
    term.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in rep.parameters())
