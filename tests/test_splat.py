"""The CPU Gaussian splatter against its dense reference (forward and backward), its rules, and splat.ply."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from representations.cameras import orbit_cameras
from representations.ops.splat import ALPHA_MAX, project_gaussians, rasterization
from representations.ops.splat_reference import rasterization_reference
from studio.errors import UserError
from studio.splat import read_splat_ply, splat_properties, write_splat_ply

pytestmark = pytest.mark.usefixtures("small_exports")  # tests/conftest.py: small bakes and fidelity checks


def scene(n: int, seed: int = 0, log_scale: float = -3.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) * 2 - 1) * 0.6
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.4 + log_scale)
    opac = torch.sigmoid(torch.randn(n, generator=g) * 2)
    return [means, quats, scales, opac]


def two_cameras(h: int, w: int):
    return orbit_cameras(torch.tensor([10.0, 130.0]), torch.tensor([20.0, -5.0]), torch.tensor([2.7, 2.5]),
                         torch.tensor([47.0, 52.0]), h, w)


@pytest.mark.parametrize("tile", [4, 8, 16])
def test_fast_splatter_equals_reference_forward_and_backward(tile):
    means, quats, scales, opac = scene(400)
    feats = torch.rand(2, 400, 5, generator=torch.Generator().manual_seed(1))
    cams = two_cameras(36, 44)  # not a multiple of the tile size
    ins = [t.clone().requires_grad_() for t in (means, quats, scales, opac, feats)]
    w = torch.rand(2, 36, 44, 6, generator=torch.Generator().manual_seed(2))  # a loss that weights every output

    def run(fn, **kw):
        img, alpha = fn(*ins, cams.w2c(), cams.focal(), 44, 36, **kw)
        loss = (torch.cat([img, alpha], -1) * w).sum()
        return img, alpha, torch.autograd.grad(loss, ins)

    img, alpha, grads = run(rasterization, tile_size=tile)
    ref_img, ref_alpha, ref_grads = run(rasterization_reference)
    assert img.shape == (2, 36, 44, 5) and alpha.shape == (2, 36, 44, 1)
    assert 0.05 < float(alpha.detach().mean()) < 0.95  # a scene with overlaps, not an empty or solid image
    torch.testing.assert_close(img, ref_img, atol=1e-5, rtol=0)
    torch.testing.assert_close(alpha, ref_alpha, atol=1e-5, rtol=0)
    for name, g, r in zip(["means", "quats", "scales", "opacities", "features"], grads, ref_grads):
        assert r.abs().sum() > 0, name
        err = float((g - r).norm() / r.norm())
        assert err < 1e-3, f"{name}: relative gradient error {err}"


def test_projection_puts_a_point_on_its_pixel():
    cams = two_cameras(32, 40)
    o, d = cams.rays()
    i, j = 7, 29
    point = o[1, i, j] + 2.0 * d[1, i, j]  # on the ray through pixel (i, j) of camera 1
    proj = project_gaussians(point[None], torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.01),
                             torch.tensor([0.9]), cams.w2c(), cams.focal(), 40, 32)
    torch.testing.assert_close(proj.mean2d[1, 0], torch.tensor([j + 0.5, i + 0.5]), atol=1e-3, rtol=0)
    assert proj.radius[1, 0] > 0


def test_alpha_is_clamped_and_faint_gaussians_are_skipped():
    cams = two_cameras(33, 33)[:1]  # odd: the centre pixel sits exactly on the projected mean
    q = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0]])
    s = torch.full((2, 3), 0.2)
    means = torch.zeros(2, 3)
    feats = torch.ones(2, 1)
    # an almost opaque Gaussian: centre alpha is exactly the clamp
    _, alpha = rasterization(means[:1], q[:1], s[:1], torch.tensor([0.99999]), feats[:1], cams.w2c(), cams.focal(), 33, 33)
    assert float(alpha.max()) == pytest.approx(ALPHA_MAX, abs=1e-6)
    # below 1/255 opacity a Gaussian contributes nowhere and is culled
    proj = project_gaussians(means[:1], q[:1], s[:1], torch.tensor([0.003]), cams.w2c(), cams.focal(), 33, 33)
    assert int(proj.radius.sum()) == 0
    _, alpha = rasterization(means[:1], q[:1], s[:1], torch.tensor([0.003]), feats[:1], cams.w2c(), cams.focal(), 33, 33)
    assert float(alpha.abs().max()) == 0.0


def test_front_gaussian_hides_the_one_behind():
    cams = two_cameras(25, 25)[:1]
    eye = cams.position[0]
    means = torch.stack([0.3 * eye / eye.norm(), -0.3 * eye / eye.norm()])  # first is nearer the camera
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    args = (torch.tensor([[1.0, 0, 0, 0]] * 2), torch.full((2, 3), 0.15), torch.tensor([0.99999, 0.99999]))
    for order in ([0, 1], [1, 0]):  # the result does not depend on the input order
        img, _ = rasterization(means[order], args[0], args[1], args[2], feats[order], cams.w2c(), cams.focal(), 25, 25)
        centre = img[0, 12, 12]
        assert centre[0] > 0.99 and centre[1] < 0.002


def splat_dict(n: int, k: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g)
    return {"means": torch.randn(n, 3, generator=g), "log_scales": torch.randn(n, 3, generator=g) - 3,
            "quats": q / q.norm(dim=-1, keepdim=True), "opacity_logits": torch.randn(n, generator=g),
            "sh_dc": torch.randn(n, 3, generator=g), "sh_rest": torch.randn(n, k, 3, generator=g)}


@pytest.mark.parametrize("k", [0, 3])
def test_splat_ply_round_trip_and_layout(tmp_path, k):
    import trimesh

    t = splat_dict(50, k)
    path = write_splat_ply(tmp_path / "splat.ply", t)
    back = read_splat_ply(path)
    assert set(back) == set(t)
    for key in t:
        torch.testing.assert_close(back[key], t[key], atol=1e-6 if key == "quats" else 0, rtol=0, msg=key)
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    names = [line.split()[-1] for line in header.splitlines() if line.startswith("property")]
    assert names == splat_properties(k) and names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert len(names) == 17 + 3 * k
    # f_rest is channel-major: f_rest_{c*K + j} is coefficient j of channel c
    rows = np.frombuffer(path.read_bytes().split(b"end_header\n")[1], "<f4").reshape(50, -1)
    if k:
        assert rows[4, 9 + 2 * k + 1] == t["sh_rest"][4, 1, 2]
    # an independent reader sees the same points
    cloud = trimesh.load(path)
    np.testing.assert_allclose(np.asarray(cloud.vertices), t["means"].numpy(), atol=1e-6)


def test_reading_a_file_that_is_not_a_splat_is_a_user_error(tmp_path):
    bad = tmp_path / "mesh.ply"
    bad.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n")
    with pytest.raises(UserError, match="binary little-endian"):
        read_splat_ply(bad)
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nend_header\n\0\0\0\0")
    with pytest.raises(UserError, match="not a 3D Gaussian splat"):
        read_splat_ply(bad)
    with pytest.raises(UserError, match="NaN"):
        t = splat_dict(3, 0)
        t["means"][0, 0] = float("nan")
        write_splat_ply(tmp_path / "nan.ply", t)
    assert not (tmp_path / "nan.ply").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gsplat_backend_matches_torch_forward_and_backward():
    pytest.importorskip("gsplat")
    means, quats, scales, opac = scene(2000)
    feats = torch.rand(2, 2000, 4)
    cams = two_cameras(64, 64)
    outs = []
    for backend, dev in (("torch", "cpu"), ("gsplat", "cuda")):
        ins = [t.clone().to(dev).requires_grad_() for t in (means, quats, scales, opac, feats)]
        img, alpha = rasterization(*ins, cams.w2c().to(dev), cams.focal().to(dev), 64, 64, backend=backend)
        grads = torch.autograd.grad(img.sum() + alpha.sum(), ins)
        outs.append([x.detach().cpu() for x in (img, alpha, *grads)])
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-2)
