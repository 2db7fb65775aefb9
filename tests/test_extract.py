"""Mesh extraction from density fields: marching cubes geometry, orientation, and the render-matched level."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from representations.base import RenderOut, Representation, RepresentationConfig
from representations.cameras import Cameras, ring_cameras
from representations.extract import (
    DensityVolume, choose_level, default_cameras, extract_mesh, marching_cubes, ray_max_density, sample_volume,
)
from representations.nerf import NeRF, NeRFConfig
from representations.shading import Shading


class Cone(Representation):
    """Analytic field: density 10 * (1 - |x|) (a cone in r), rendered as the opaque ball of radius `radius`.

    The level whose iso-surface matches the renders is therefore 10 * (1 - radius).
    """

    def __init__(self, radius: float = 0.5, peak: float = 10.0) -> None:
        super().__init__(RepresentationConfig(kind="cone"), total_steps=1)
        self.radius, self.peak = radius, peak

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return (self.peak * (1.0 - points.norm(dim=-1))).clamp(min=0.0)

    def albedo_at(self, points: torch.Tensor) -> torch.Tensor:
        return (0.5 + 0.5 * points).clamp(0, 1)

    def render(self, cams: Cameras, shading: Shading) -> RenderOut:
        o, d = (x.reshape(-1, 3) for x in cams.rays())
        b = (o * d).sum(-1)
        hit = (b * b - (o * o).sum(-1) + self.radius**2 > 0).float() if self.peak > 0 else torch.zeros(len(o))
        alpha = hit.view(len(cams), 1, cams.height, cams.width)
        rgb = torch.ones(len(cams), 3, cams.height, cams.width) * (1 - alpha)
        return RenderOut(rgb=rgb, alpha=alpha, depth=alpha * 2.0)


def analytic_sphere_volume(radius: float, resolution: int = 64, bound: float = 1.0) -> DensityVolume:
    axis = torch.linspace(-bound, bound, resolution + 1)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    r = torch.sqrt(x**2 + y**2 + z**2)
    return DensityVolume(torch.exp(10.0 * (radius - r)), bound)  # smooth, positive, = 1 at r = radius


def test_marching_cubes_on_a_sphere_has_the_right_radius_and_outward_faces():
    volume = analytic_sphere_volume(0.6)
    mesh = marching_cubes(volume, level=1.0)
    assert not mesh.is_empty and mesh.colors is None
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(r.mean() - 0.6) < 0.005 and r.std() < 0.005
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=True)
    assert tm.is_watertight
    assert tm.volume == pytest.approx(4 / 3 * np.pi * 0.6**3, rel=0.02)
    outward = (tm.face_normals * tm.triangles_center).sum(1) > 0
    assert outward.mean() > 0.99


def test_marching_cubes_closes_a_field_that_fills_the_box():
    volume = DensityVolume(torch.ones(33, 33, 33) * 5.0, 1.0)
    mesh = marching_cubes(volume, level=1.0)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=True)
    assert tm.is_watertight and tm.volume > 7.0


def test_empty_fields_give_empty_meshes_not_errors():
    volume = DensityVolume(torch.zeros(17, 17, 17), 1.0)
    assert marching_cubes(volume, 1.0).is_empty
    empty = Cone(peak=0.0)
    mesh = extract_mesh(empty, resolution=16)
    assert mesh.is_empty and mesh.faces.shape == (0, 3) and mesh.vertices.shape == (0, 3)
    faint = NeRF(NeRFConfig(blob={"bias": -30.0}), total_steps=1)
    assert extract_mesh(faint, resolution=16).is_empty


def test_ray_max_density_reads_the_volume_along_rays():
    rep = Cone()
    volume = sample_volume(rep, resolution=32)
    cams = ring_cameras(2, 17)
    peak = ray_max_density(volume, cams)
    assert peak[:, 8, 8].min() > 9.0  # the central ray passes through the apex
    assert peak[:, 0, 0].max() < peak[:, 8, 8].min()
    far = ray_max_density(volume, Cameras(cams.c2w, cams.fov_y * 0 + 0.01, 3, 3))
    assert far.min() > 9.0  # a very narrow view: all rays near the centre


def test_choose_level_matches_the_rendered_silhouette():
    rep = Cone(radius=0.5)
    level, iou = choose_level(rep, default_cameras(48), resolution=48)
    assert iou > 0.95
    assert level == pytest.approx(5.0, abs=0.5)  # density 10 * (1 - 0.5) at the rendered radius
    mesh = extract_mesh(rep, resolution=48)
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(np.median(r) - 0.5) < 0.03
    assert mesh.colors is not None and mesh.colors.min() >= 0 and mesh.colors.max() <= 1
    expected = (0.5 + 0.5 * mesh.vertices).clip(0, 1)
    np.testing.assert_allclose(mesh.colors, expected, atol=1e-5)


def test_choose_level_follows_the_renders_not_the_field():
    """Same field, a fatter rendered silhouette -> a lower level."""
    thin, _ = choose_level(Cone(radius=0.4), default_cameras(48), resolution=48)
    fat, _ = choose_level(Cone(radius=0.7), default_cameras(48), resolution=48)
    assert thin == pytest.approx(6.0, abs=0.5) and fat == pytest.approx(3.0, abs=0.5)
