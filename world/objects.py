"""Analytic signed distance functions of the world's objects, in their canonical orientation.

Conventions: Y-up, the object's front faces +Z, centred at the origin and fitting inside a sphere of
radius ~0.75 (so it fits in [-1, 1]^3 with room to spare). SDFs are exact or conservative (never
over-estimate the distance by much), so a sphere tracer with step factor < 1 converges.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

BOUND_RADIUS = 0.8
"""Every object lies inside this sphere (used by the renderer to clip rays)."""


def _box(p: Tensor, half: Tensor) -> Tensor:
    """Exact SDF of an axis-aligned box centred at the origin. p [N, 3], half [3] -> [N]."""
    q = p.abs() - half
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)


def _round_box(p: Tensor, half: Tensor, r: float) -> Tensor:
    """Box with edges rounded by r (outer extents stay `half`). p [N, 3] -> [N]."""
    return _box(p, half - r) - r


@dataclass
class SDFObject:
    """Base class of the world's objects: a signed distance function and an albedo rule."""

    name: str
    """Canonical shape name (a key of `OBJECTS`, and of [shapes] in captions.toml)."""

    def sdf(self, points: Tensor) -> Tensor:
        """Signed distance [N] of points [N, 3]: negative inside, positive outside (world units)."""
        raise NotImplementedError

    def occupancy(self, points: Tensor) -> Tensor:
        """bool [N]: whether each point [N, 3] is inside the object."""
        return self.sdf(points) < 0

    def albedo(self, points: Tensor, color: Tensor) -> Tensor:
        """Albedo [N, 3] in [0, 1] at surface points [N, 3] of an object whose colour is color [3]."""
        return color.to(points).expand(points.shape[0], 3)


class Cube(SDFObject):
    def __init__(self, half: float = 0.43, rounding: float = 0.04) -> None:
        super().__init__("cube")
        self.half, self.rounding = half, rounding

    def sdf(self, points: Tensor) -> Tensor:
        return _round_box(points, points.new_tensor([self.half] * 3), self.rounding)


class Sphere(SDFObject):
    def __init__(self, radius: float = 0.6) -> None:
        super().__init__("sphere")
        self.radius = radius

    def sdf(self, points: Tensor) -> Tensor:
        return points.norm(dim=-1) - self.radius


class Cylinder(SDFObject):
    """Upright cylinder (axis = Y)."""

    def __init__(self, radius: float = 0.45, half_height: float = 0.5) -> None:
        super().__init__("cylinder")
        self.radius, self.half_height = radius, half_height

    def sdf(self, points: Tensor) -> Tensor:
        r = points[:, [0, 2]].norm(dim=-1) - self.radius
        h = points[:, 1].abs() - self.half_height
        d = torch.stack([r, h], -1)
        return d.clamp(min=0).norm(dim=-1) + d.max(dim=-1).values.clamp(max=0)


class Cone(SDFObject):
    """Upright cone: base disc of `radius` at y = -half_height, apex at y = +half_height."""

    def __init__(self, radius: float = 0.5, half_height: float = 0.55) -> None:
        super().__init__("cone")
        self.radius, self.half_height = radius, half_height

    def sdf(self, points: Tensor) -> Tensor:
        # Exact 2D SDF of the triangle (0,h)-(r,-h)-(0,-h) in (radial, y), revolved around Y.
        q = torch.stack([points[:, [0, 2]].norm(dim=-1), points[:, 1]], -1)  # [N, 2]
        a = q.new_tensor([0.0, self.half_height])
        b = q.new_tensor([self.radius, -self.half_height])
        c = q.new_tensor([0.0, -self.half_height])
        d_slant = _segment(q, a, b)
        d_base = _segment(q, b, c)
        dist = torch.minimum(d_slant, d_base)
        # inside: below the slant line and above the base
        e = b - a
        cross = e[0] * (q[:, 1] - a[1]) - e[1] * (q[:, 0] - a[0])  # < 0 on the axis side
        inside = (cross < 0) & (q[:, 1] > -self.half_height)
        return torch.where(inside, -dist, dist)


def _segment(q: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Distance [N] of 2D points q [N, 2] to the segment a-b ([2] each)."""
    ba = b - a
    h = ((q - a) @ ba / (ba @ ba)).clamp(0, 1)
    return (q - a - h[:, None] * ba).norm(dim=-1)


class Torus(SDFObject):
    """Torus lying flat (in the XZ plane, hole along Y)."""

    def __init__(self, major: float = 0.5, minor: float = 0.2) -> None:
        super().__init__("torus")
        self.major, self.minor = major, minor

    def sdf(self, points: Tensor) -> Tensor:
        ring = points[:, [0, 2]].norm(dim=-1) - self.major
        return torch.stack([ring, points[:, 1]], -1).norm(dim=-1) - self.minor


class House(SDFObject):
    """A box-shaped house with a gable roof (ridge along X) and a dark recessed door on its +Z (front) side.

    The door is the object's distinct front: visible from azimuth 0, absent from azimuth 180.
    """

    body_half = (0.42, 0.29, 0.36)
    """Half extents of the walls (x, y, z); the body spans y in [-0.5, 0.08]."""
    body_center_y = -0.21
    """Y of the body's centre."""
    roof_top = 0.5
    """Y of the roof ridge."""
    door = (0.13, -0.5, -0.08, 0.05)
    """Door half width, bottom y, top y, recess depth."""

    def __init__(self) -> None:
        super().__init__("house")

    def sdf(self, points: Tensor) -> Tensor:
        bx, by, bz = self.body_half
        cy = self.body_center_y
        p = points - points.new_tensor([0.0, cy, 0.0])
        body = _box(p, p.new_tensor([bx, by, bz]))
        # Gable roof: a triangular prism over the body, eaves slightly overhanging.
        base_y, eave = cy + by, 0.06
        roof = _prism(points, half_width=bz + eave, base_y=base_y, top_y=self.roof_top, half_len=bx + eave)
        shape = torch.minimum(body, roof)
        # Carve the door: a thin box on the front face.
        dw, d0, d1, depth = self.door
        door_c = points.new_tensor([0.0, 0.5 * (d0 + d1), bz])
        door_box = _box(points - door_c, points.new_tensor([dw, 0.5 * (d1 - d0) + 0.01, depth]))
        return torch.maximum(shape, -door_box)

    def in_door(self, points: Tensor, tol: float = 0.02) -> Tensor:
        """bool [N]: points [N, 3] on the door (its recessed panel or its jambs)."""
        dw, d0, d1, depth = self.door
        bz = self.body_half[2]
        x, y, z = points.unbind(-1)
        return (x.abs() <= dw + tol) & (y <= d1 + tol) & (y >= d0 - tol) & (z >= bz - depth - tol)

    def albedo(self, points: Tensor, color: Tensor) -> Tensor:
        base = super().albedo(points, color)
        lum = float((color * color.new_tensor([0.3, 0.59, 0.11])).sum())
        door = base * 0.3 if lum > 0.3 else torch.full_like(base, 0.8)
        return torch.where(self.in_door(points)[:, None], door, base)


def _prism(points: Tensor, half_width: float, base_y: float, top_y: float, half_len: float) -> Tensor:
    """Conservative SDF [N] of a triangular prism: triangle (±half_width, base_y)-(0, top_y) in (z, y),
    extruded along X over [-half_len, half_len]."""
    z, y = points[:, 2], points[:, 1]
    q = torch.stack([z.abs(), y], -1)
    a = q.new_tensor([0.0, top_y])
    b = q.new_tensor([half_width, base_y])
    c = q.new_tensor([0.0, base_y])
    dist = torch.minimum(_segment(q, a, b), _segment(q, b, c))
    e = b - a
    cross = e[0] * (q[:, 1] - a[1]) - e[1] * (q[:, 0] - a[0])
    inside = (cross < 0) & (q[:, 1] > base_y)
    d2 = torch.where(inside, -dist, dist)
    dx = points[:, 0].abs() - half_len
    d = torch.stack([d2, dx], -1)
    return d.clamp(min=0).norm(dim=-1) + d.max(dim=-1).values.clamp(max=0)


OBJECTS: dict[str, SDFObject] = {
    o.name: o for o in (Cube(), Sphere(), Cylinder(), Cone(), Torus(), House())
}
"""The world's objects by canonical shape name."""


def get_object(name: str) -> SDFObject:
    """The object called `name`; ValueError naming the valid shapes otherwise."""
    if name not in OBJECTS:
        raise ValueError(f"unknown shape {name!r}; valid: {', '.join(OBJECTS)}")
    return OBJECTS[name]
