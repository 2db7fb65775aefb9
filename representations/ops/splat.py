"""Gaussian splatting (3DGS) that is fast on a CPU: projection, tile binning, per-tile depth order,
front-to-back compositing, with a hand-written backward for the compositing.

    rasterization(means, quats, scales, opacities, features, w2c, focal, width, height) -> (features, alpha)

Pipeline:
1. `project_gaussians` (plain autograd, vectorised over views x Gaussians): camera-space means, 2D means in
   pixels, 2D covariance `J W Sigma W^T J^T + 0.3 I` (EWA with the usual low-pass dilation), its inverse (the
   "conic"), and a screen radius that depends on the opacity: beyond `r = sqrt(2 ln(255 o) lambda_max)` a
   Gaussian's alpha is below 1/255 in every direction, so it is skipped there anyway. Behind the near plane
   or off screen -> radius 0 (culled).
2. `bin_tiles` (no gradient): every (Gaussian, tile) pair whose box overlaps, sorted by (tile, depth). One
   integer sort; no per-tile Python loop.
3. `_Composite` (custom autograd Function): every pair is evaluated on every pixel of its tile at once
   ([tile^2, P], pixel-major), alpha = min(0.999, o exp(-d^T conic d / 2)); only the contributions with
   alpha >= 1/255 are kept, packed, already grouped by pixel and front to back (pixel-major order, pairs
   depth-sorted within their tile), so no second sort is needed. Transmittance is a segmented exclusive
   cumsum of log(1 - alpha) per pixel (one global float64 cumsum minus its value at each pixel's first entry).
   The backward uses the closed form dL/dalpha_i = T_i G_i - (sum_{k>i} w_k G_k) / (1 - alpha_i),
   G = dL/dout . f (+ dL/dalpha_out), with the suffix sums from the same segmented cumsum; autograd through
   the packed arrays would keep ~10 of them alive.

Conventions: `w2c` [B, 4, 4] world-to-camera in OpenGL axes (camera looks down -Z, +Y up; docs/conventions.md);
pixel (i, j) is sampled at (j + 0.5, i + 0.5); quaternions are (w, x, y, z). Features are composited, not
normalised: a pixel's output is sum_i w_i f_i with sum_i w_i = alpha.

With CUDA tensors and gsplat installed, `rasterization` calls gsplat's instead (same signature and
outputs); a `gpu`-marked test compares the two.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_MAX = 0.999
"""Per-Gaussian alpha is clamped here (keeps 1 - alpha > 0 for the backward)."""
ALPHA_MIN = 1.0 / 255.0
"""Contributions with a smaller alpha are skipped."""
DILATION = 0.3
"""Added to the 2D covariance's diagonal (pixels^2): low-pass filter, every Gaussian covers ~a pixel."""


@dataclass
class Projected:
    """Gaussians seen by B cameras (every tensor [B, N, ...])."""

    mean2d: Tensor
    """[B, N, 2] pixel coordinates (x right, y down) of the projected means."""
    conic: Tensor
    """[B, N, 3] (a, b, c) of the inverse 2D covariance [[a, b], [b, c]] (pixels^-2)."""
    depth: Tensor
    """[B, N] camera-space depth (distance along the viewing axis) of the means."""
    radius: Tensor
    """[B, N] screen radius in pixels beyond which alpha < 1/255; 0 = culled. No gradient."""


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """[N, 4] quaternions (w, x, y, z), any norm -> [N, 3, 3] rotation matrices."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).view(-1, 3, 3)


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """quats [N, 4], scales [N, 3] (positive) -> [N, 3, 3] world covariance R S S^T R^T."""
    M = quat_to_rotmat(quats) * scales[:, None, :]
    return _matmul(M, M.transpose(1, 2))


def _matmul(a: Tensor, b: Tensor) -> Tensor:
    """[..., i, k] @ [..., k, j] as broadcast multiply-and-sum: for millions of tiny matrices this is much
    faster on CPU than bmm (and its backward)."""
    return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)


def project_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, w2c: Tensor,
                      focal: Tensor, width: int, height: int, near: float = 0.01) -> Projected:
    """Project N Gaussians into B pinhole cameras (principal point at the image centre, square pixels).

    means [N, 3]; quats [N, 4] (w, x, y, z); scales [N, 3] > 0; opacities [N] in (0, 1);
    w2c [B, 4, 4] (OpenGL axes); focal [B] in pixels. Differentiable w.r.t. means, quats, scales.
    """
    R, T = w2c[:, :3, :3], w2c[:, :3, 3]
    t = torch.einsum("bij,nj->bni", R, means) + T[:, None, :]  # [B, N, 3], OpenGL camera space
    x, y, d = t[..., 0], -t[..., 1], -t[..., 2]  # image x right, y down, depth forward
    f = focal[:, None]
    d_safe = d.clamp(min=near)
    # Jacobian of (u, v) w.r.t. (x, y, d), with x/d, y/d clamped to 1.3x the view frustum (as 3DGS does)
    lim_x = 1.3 * 0.5 * width / f
    lim_y = 1.3 * 0.5 * height / f
    tx = (x / d_safe).clamp(-lim_x, lim_x) * d_safe
    ty = (y / d_safe).clamp(-lim_y, lim_y) * d_safe
    zero = torch.zeros_like(d)
    J = torch.stack([f / d_safe, zero, -f * tx / d_safe**2,
                     zero, f / d_safe, -f * ty / d_safe**2], dim=-1).view(*d.shape, 2, 3)
    # camera axes (x right, y down, d forward) = diag(1, -1, -1) @ OpenGL camera axes
    flip = torch.tensor([1.0, -1.0, -1.0], dtype=means.dtype, device=means.device)
    Rcv = R * flip[None, :, None]  # [B, 3, 3]
    M = quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3], covariance = M M^T
    JM = _matmul(_matmul(J, Rcv[:, None]), M[None])  # [B, N, 2, 3]
    cov2 = _matmul(JM, JM.transpose(-1, -2))  # [B, N, 2, 2] = J W Sigma W^T J^T
    a = cov2[..., 0, 0] + DILATION
    b = cov2[..., 0, 1]
    c = cov2[..., 1, 1] + DILATION
    det = (a * c - b * b).clamp(min=1e-12)
    conic = torch.stack([c / det, -b / det, a / det], dim=-1)
    mean2d = torch.stack([f * x / d_safe + 0.5 * width, f * y / d_safe + 0.5 * height], dim=-1)
    with torch.no_grad():
        mid = 0.5 * (a + c)
        lam = mid + torch.sqrt((mid * mid - det).clamp(min=0.1))
        o = opacities.detach()[None, :].expand_as(d)
        reach = torch.log((255.0 * o).clamp(min=1.0))  # 0 when o < 1/255: never visible
        radius = torch.ceil(torch.sqrt(2.0 * reach * lam))
        mx, my = mean2d[..., 0], mean2d[..., 1]
        visible = (d > near) & (mx + radius > 0) & (mx - radius < width) & (my + radius > 0) & (my - radius < height)
        radius = torch.where(visible & (reach > 0), radius, torch.zeros_like(radius))
    return Projected(mean2d, conic, d, radius)


@dataclass
class Tiles:
    """The (Gaussian, tile) pairs of a batch, sorted by tile and then by depth."""

    gauss: Tensor
    """[P] int64 index of each pair's Gaussian in the flattened visible set."""
    tile: Tensor
    """[P] int64 global tile index (view * tiles_per_view + ty * tiles_x + tx), non-decreasing."""
    tiles_x: int
    """Tiles per image row."""
    tiles_y: int
    """Tiles per image column."""
    size: int
    """Tile side in pixels."""


@torch.no_grad()
def bin_tiles(mean2d: Tensor, radius: Tensor, depth: Tensor, view: Tensor, width: int, height: int,
              size: int = 8) -> Tiles:
    """Every (Gaussian, tile) pair whose square [mean - r, mean + r] overlaps the tile.

    mean2d [M, 2], radius [M] (> 0), depth [M], view [M] int64 (which camera) -> Tiles sorted by tile, depth.
    """
    TX, TY = math.ceil(width / size), math.ceil(height / size)
    r = radius
    x0 = ((mean2d[:, 0] - r) / size).floor().clamp(0, TX - 1).long()
    x1 = ((mean2d[:, 0] + r) / size).floor().clamp(0, TX - 1).long()
    y0 = ((mean2d[:, 1] - r) / size).floor().clamp(0, TY - 1).long()
    y1 = ((mean2d[:, 1] + r) / size).floor().clamp(0, TY - 1).long()
    nx = x1 - x0 + 1
    counts = nx * (y1 - y0 + 1)
    M = mean2d.shape[0]
    gauss = torch.repeat_interleave(torch.arange(M, device=mean2d.device), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(gauss.numel(), device=mean2d.device) - start[gauss]
    tx = x0[gauss] + local % nx[gauss]
    ty = y0[gauss] + local // nx[gauss]
    tile = (view[gauss] * TY + ty) * TX + tx
    rank = torch.empty(M, dtype=torch.int64, device=mean2d.device)
    rank[torch.argsort(depth, stable=True)] = torch.arange(M, device=mean2d.device)
    order = torch.argsort(tile * M + rank[gauss])
    return Tiles(gauss[order], tile[order], TX, TY, size)


def _segment_first(tile: Tensor) -> Tensor:
    """[P] non-decreasing tile ids -> [P] index of the first pair of each pair's tile."""
    first = torch.ones_like(tile, dtype=torch.bool)
    first[1:] = tile[1:] != tile[:-1]
    starts = first.nonzero().squeeze(1)
    return starts[torch.cumsum(first.long(), 0) - 1]


def _pixel_offsets(tiles: Tiles, dtype: torch.dtype, device) -> tuple[Tensor, Tensor]:
    """(px [S*S, P], py [S*S, P]) pixel-centre coordinates of every pair's tile pixels (pixel-major)."""
    S = tiles.size
    local = torch.arange(S * S, device=device)
    lx, ly = (local % S).to(dtype) + 0.5, (local // S).to(dtype) + 0.5
    t = tiles.tile % (tiles.tiles_x * tiles.tiles_y)
    ox, oy = (t % tiles.tiles_x).to(dtype) * S, (t // tiles.tiles_x).to(dtype) * S
    return lx[:, None] + ox[None, :], ly[:, None] + oy[None, :]


class _Composite(torch.autograd.Function):
    """Front-to-back compositing of sorted (Gaussian, tile) pairs over the tiles' pixels.

    Alpha is evaluated densely on [S*S, P] (every pair on every pixel of its tile), then only the
    contributions with alpha >= 1/255 are kept ("entries", typically a quarter of the pair-pixels), in
    pixel-major order, which groups each pixel's entries front to back. Everything after that works on the
    packed entries: transmittance and the backward's suffix sums are segmented cumsums per pixel.
    """

    @staticmethod
    def forward(ctx, mean2d: Tensor, conic: Tensor, opac: Tensor, feats: Tensor, tiles: Tiles,
                n_tiles: int) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """mean2d [M, 2], conic [M, 3], opac [M], feats [M, C] -> (out [n_tiles, S*S, C], alpha [n_tiles, S*S])."""
        g_idx, t_idx = tiles.gauss, tiles.tile
        P = g_idx.shape[0]
        px, py = _pixel_offsets(tiles, mean2d.dtype, mean2d.device)  # [S2, P]: pixel-major
        S2 = px.shape[0]
        dx = px.sub_(mean2d[g_idx, 0][None])
        dy = py.sub_(mean2d[g_idx, 1][None])
        k = conic[g_idx].t()[:, None, :]  # [3, 1, P]
        power = (k[0] * dx * dx).add_(k[2] * dy * dy).mul_(-0.5).sub_(k[1] * dx * dy)
        raw = power.exp_().mul_(opac[g_idx][None])  # [S2, P]
        # entries in (pixel-in-tile, pair) order: each pixel's entries are contiguous (pairs are grouped by
        # tile) and front to back (pairs are depth-sorted within a tile), so no sort is needed
        flat = (raw.view(-1) >= ALPHA_MIN).nonzero().squeeze(1)
        pair = flat % P
        pixel = t_idx[pair] * S2 + flat // P
        e_raw = raw.view(-1)[flat]
        e_dx, e_dy = dx.view(-1)[flat], dy.view(-1)[flat]
        e_g = g_idx[pair]
        alpha = e_raw.clamp(max=ALPHA_MAX)
        first = _segment_first(pixel)
        trans = _exclusive_transmittance(alpha, first)
        w = alpha * trans
        C, n_pix = feats.shape[1], n_tiles * S2
        out = w.new_zeros(n_pix, C).index_add_(0, pixel, w[:, None] * feats[e_g])
        acc = w.new_zeros(n_pix).index_add_(0, pixel, w)
        ctx.n_pix = n_pix
        ctx.save_for_backward(conic, opac, feats, e_g, pixel, first, e_raw, trans, e_dx, e_dy)
        return out.view(n_tiles, S2, C), acc.view(n_tiles, S2)

    @staticmethod
    def backward(ctx, g_out: Tensor, g_acc: Tensor):  # type: ignore[override]
        conic, opac, feats, e_g, pixel, first, raw, trans, dx, dy = ctx.saved_tensors
        M, C = conic.shape[0], feats.shape[1]
        alpha = raw.clamp(max=ALPHA_MAX)
        w = alpha * trans
        f = feats[e_g]  # [E, C]
        G = g_acc.reshape(-1)[pixel] if g_acc is not None else torch.zeros_like(w)
        if g_out is not None:
            go = g_out.reshape(-1, C)[pixel]  # [E, C]
            G = G + (go * f).sum(-1)
            g_f = go * w[:, None]
        else:
            g_f = torch.zeros_like(f)
        after = _suffix_sum(w * G, first)  # sum over the later entries of the same pixel
        g_alpha = trans * G - after / (1.0 - alpha)
        g_raw = torch.where(raw < ALPHA_MAX, g_alpha, torch.zeros_like(g_alpha))  # clamped: no gradient
        o = opac[e_g]
        g_opac_e = g_raw * raw / o
        g_pow = g_raw * raw  # d alpha / d power = alpha
        k = conic[e_g]
        g_conic_e = torch.stack([-0.5 * g_pow * dx * dx, -g_pow * dx * dy, -0.5 * g_pow * dy * dy], dim=1)
        g_mean_e = torch.stack([g_pow * (k[:, 0] * dx + k[:, 1] * dy), g_pow * (k[:, 1] * dx + k[:, 2] * dy)], dim=1)
        g_mean = conic.new_zeros(M, 2).index_add_(0, e_g, g_mean_e)
        g_conic = conic.new_zeros(M, 3).index_add_(0, e_g, g_conic_e)
        g_opac = opac.new_zeros(M).index_add_(0, e_g, g_opac_e)
        g_feats = feats.new_zeros(M, C).index_add_(0, e_g, g_f)
        return g_mean, g_conic, g_opac, g_feats, None, None


def _exclusive_transmittance(alpha: Tensor, first: Tensor) -> Tensor:
    """alpha [E] sorted by pixel, front to back; first [E] index of each entry's first entry in its pixel
    -> T [E] = product over the earlier entries of the same pixel of (1 - alpha). One float64 cumsum."""
    if alpha.shape[0] == 0:
        return alpha.clone()
    log1m = torch.log1p(-alpha).double()
    cum = torch.cumsum(log1m, 0) - log1m  # exclusive, across all pixels
    return torch.exp(cum - cum[first]).to(alpha.dtype)


def _suffix_sum(x: Tensor, first: Tensor) -> Tensor:
    """x [E] sorted by pixel; first [E] as above -> [E] sum of x over the LATER entries of the same pixel."""
    if x.shape[0] == 0:
        return x.clone()
    incl = torch.cumsum(x.double(), 0)
    starts = (first == torch.arange(len(x), device=x.device)).nonzero().squeeze(1)
    seg_end = torch.full_like(first, len(x) - 1)
    seg_end[starts[:-1]] = starts[1:] - 1
    return (incl[seg_end[first]] - incl).to(x.dtype)


def rasterize_pixels(proj: Projected, opacities: Tensor, features: Tensor, width: int, height: int,
                     tile_size: int = 8) -> tuple[Tensor, Tensor]:
    """Composite projected Gaussians: features [B, N, C] -> (image [B, H, W, C], alpha [B, H, W, 1])."""
    B, N, C = features.shape
    vis = (proj.radius > 0).reshape(-1).nonzero().squeeze(1)  # flattened (view, gaussian) indices
    view = vis // N
    mean2d = proj.mean2d.reshape(-1, 2)[vis]
    conic = proj.conic.reshape(-1, 3)[vis]
    opac = opacities[None, :].expand(B, N).reshape(-1)[vis]
    feats = features.reshape(-1, C)[vis]
    tiles = bin_tiles(mean2d.detach(), proj.radius.reshape(-1)[vis], proj.depth.detach().reshape(-1)[vis],
                      view, width, height, tile_size)
    n_tiles = B * tiles.tiles_x * tiles.tiles_y
    out, acc = _Composite.apply(mean2d, conic, opac, feats, tiles, n_tiles)
    S, TX, TY = tile_size, tiles.tiles_x, tiles.tiles_y

    def image(x: Tensor) -> Tensor:  # [n_tiles, S*S, K] -> [B, H, W, K]
        K = x.shape[-1]
        x = x.view(B, TY, TX, S, S, K).permute(0, 1, 3, 2, 4, 5).reshape(B, TY * S, TX * S, K)
        return x[:, :height, :width]

    return image(out), image(acc[:, :, None])


def rasterization(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, features: Tensor,
                  w2c: Tensor, focal: Tensor, width: int, height: int, tile_size: int = 8,
                  backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Render N Gaussians into B cameras.

    means [N, 3]; quats [N, 4] (w, x, y, z); scales [N, 3] > 0 (not log); opacities [N] in (0, 1) (not logits);
    features [B, N, C] per-view or [N, C]; w2c [B, 4, 4] (OpenGL axes); focal [B] pixels.
    Returns (features [B, H, W, C] composited, not normalised; alpha [B, H, W, 1]).
    backend: 'auto' (gsplat when the tensors are on CUDA and it is installed, else torch), 'torch', 'gsplat'.
    """
    B = w2c.shape[0]
    if features.dim() == 2:
        features = features[None].expand(B, *features.shape)
    if backend == "gsplat" or (backend == "auto" and means.is_cuda and _has_gsplat()):
        return _gsplat_rasterization(means, quats, scales, opacities, features, w2c, focal, width, height, tile_size)
    proj = project_gaussians(means, quats, scales, opacities, w2c, focal, width, height)
    return rasterize_pixels(proj, opacities, features, width, height, tile_size)


def _has_gsplat() -> bool:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def _gsplat_rasterization(means, quats, scales, opacities, features, w2c, focal, width, height, tile_size):
    """gsplat's CUDA rasteriser behind the same signature (imported lazily: CUDA only)."""
    from gsplat import rasterization as gs_rasterization

    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=w2c.dtype, device=w2c.device))
    viewmats = flip[None] @ w2c  # OpenGL -> OpenCV camera axes
    K = torch.zeros(len(w2c), 3, 3, dtype=w2c.dtype, device=w2c.device)
    K[:, 0, 0] = focal
    K[:, 1, 1] = focal
    K[:, 0, 2] = 0.5 * width
    K[:, 1, 2] = 0.5 * height
    K[:, 2, 2] = 1.0
    colors, alphas, _ = gs_rasterization(means, quats, scales, opacities, features, viewmats, K, width, height,
                                         tile_size=tile_size, eps2d=DILATION, packed=False)
    return colors, alphas


__all__ = ["Projected", "Tiles", "quat_to_rotmat", "covariance_3d", "project_gaussians", "bin_tiles",
           "rasterize_pixels", "rasterization", "ALPHA_MAX", "ALPHA_MIN", "DILATION"]
