"""Differentiable triangle rasterisation in the nvdiffrast style, in pure torch and fast on CPU.

Three composable ops (docs/raster-ops.md):

    rast = rasterize(pos, tri, (H, W))           # [B, H, W, 4] = (u, v, z/w, triangle_id + 1), 0 = background
    out = interpolate(attr, rast, tri)           # [B, H, W, C] perspective-correct vertex attributes
    out = antialias(out, rast, pos, tri)         # silhouette blending: gradients reach vertex positions

Conventions follow nvdiffrast: `pos` is clip space ([B, V, 4] or [V, 4], float32), `tri` is [F, 3] int32,
pixel (i, j) samples NDC ((j + 0.5) / W * 2 - 1, (i + 0.5) / H * 2 - 1), so image row i grows with NDC y.
`clip_from_cameras` builds clip positions from the studio's `Cameras` with y flipped, so row 0 is the top
of the image as everywhere else in the studio (docs/conventions.md). Interpolated attribute value at a
pixel = u * a[t0] + v * a[t1] + (1 - u - v) * a[t2].

Differences from nvdiffrast: the ops return single tensors (no `rast_db` / `out_da` derivative images, no
OpenGL/CUDA context argument); triangles with a vertex behind the camera (w <= 1e-6) are dropped instead
of clipped; both facings are rasterised (no culling), as in nvdiffrast.

How it is fast on CPU (no Python loop over triangles):
- visibility is computed without autograd: every triangle enumerates the pixel centres in its screen
  bounding box (vectorised with repeat_interleave, in chunks of bounded size), tests them with affine
  edge functions, and a single `scatter_reduce(amin)` over packed int64 keys (quantised depth << 32 |
  triangle) resolves the nearest triangle per pixel;
- only covered pixels then recompute their perspective-correct barycentrics with autograd, from the
  homogeneous 2D edge functions of their one triangle: the backward pass touches O(covered pixels).
When CUDA tensors are passed and nvdiffrast is importable, nvdiffrast runs behind the same functions
(licence: NVIDIA Source Code License, non-commercial; see docs/raster-ops.md).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

_W_EPS = 1e-6
_PAIR_CHUNK = 1 << 22
"""Maximum (triangle, pixel) candidate pairs tested at once (bounds memory to ~200 MB)."""
_DEPTH_BITS = 31


# ---------------------------------------------------------------------------------------------------------
# backend selection
# ---------------------------------------------------------------------------------------------------------
_NV_CTX = {}


def _nvdiffrast(device: torch.device):
    """The nvdiffrast module and a CUDA context for `device`, or None (CPU tensors, or not installed)."""
    if device.type != "cuda":
        return None
    try:
        import nvdiffrast.torch as dr  # noqa: PLC0415  (lazy: CUDA only, non-commercial licence)
    except ImportError:
        return None
    if device not in _NV_CTX:
        _NV_CTX[device] = dr.RasterizeCudaContext(device=device)
    return dr, _NV_CTX[device]


def _batched(pos: Tensor) -> Tensor:
    if pos.dim() == 2:
        return pos[None]
    if pos.dim() != 3 or pos.shape[-1] != 4:
        raise ValueError(f"pos must be [B, V, 4] or [V, 4] clip-space positions, got {tuple(pos.shape)}")
    return pos


# ---------------------------------------------------------------------------------------------------------
# rasterize
# ---------------------------------------------------------------------------------------------------------
def rasterize(pos: Tensor, tri: Tensor, resolution: tuple[int, int], backend: str = "auto") -> Tensor:
    """Rasterise triangles: which triangle each pixel sees, its barycentrics and depth.

    pos: [B, V, 4] or [V, 4] float32 clip-space vertex positions (a [V, 4] input gives B = 1).
    tri: [F, 3] int32 (or int64) vertex indices, shared by the batch.
    resolution: (H, W) in pixels.
    backend: 'auto' (nvdiffrast for CUDA tensors when installed, else torch) or 'torch'.
    Returns rast [B, H, W, 4] float32: (u, v, z/w, triangle_id + 1); all zeros where no triangle covers the
    pixel centre. u, v and z/w are differentiable w.r.t. `pos`; which triangle is visible is not.
    """
    pos = _batched(pos)
    H, W = int(resolution[0]), int(resolution[1])
    if backend == "auto":
        nv = _nvdiffrast(pos.device)
        if nv is not None:
            dr, ctx = nv
            return dr.rasterize(ctx, pos.contiguous(), tri.int().contiguous(), (H, W))[0]
    tri = tri.long()
    B = pos.shape[0]
    with torch.no_grad():
        pix, face = _visible(pos.detach(), tri, H, W)  # [N] flat pixel index in B*H*W, [N] triangle index
    b = torch.div(pix, H * W, rounding_mode="floor")
    rest = pix - b * (H * W)
    row = torch.div(rest, W, rounding_mode="floor")
    col = rest - row * W
    # NDC of the covered pixel centres; homogeneous 2D edge functions of their triangle (differentiable).
    qx = (col.to(pos.dtype) + 0.5) * (2.0 / W) - 1.0
    qy = (row.to(pos.dtype) + 0.5) * (2.0 / H) - 1.0
    v = pos[b[:, None], tri[face]]  # [N, 3, 4]
    x, y, z, w = v.unbind(-1)  # each [N, 3]
    # e_i = q . (p_j x p_k) with p = (x, y, w) and q = (qx, qy, 1): proportional to perspective-correct b_i.
    j, k = [1, 2, 0], [2, 0, 1]
    cx = y[:, j] * w[:, k] - w[:, j] * y[:, k]
    cy = w[:, j] * x[:, k] - x[:, j] * w[:, k]
    cw = x[:, j] * y[:, k] - y[:, j] * x[:, k]
    e = qx[:, None] * cx + qy[:, None] * cy + cw  # [N, 3]
    bary = e / e.sum(-1, keepdim=True)
    zw = (bary * z).sum(-1) / (bary * w).sum(-1)
    vals = torch.stack([bary[:, 0], bary[:, 1], zw, (face + 1).to(pos.dtype)], dim=-1)  # [N, 4]
    rast = pos.new_zeros(B * H * W, 4).index_put((pix,), vals)
    return rast.view(B, H, W, 4)


def _visible(pos: Tensor, tri: Tensor, H: int, W: int) -> tuple[Tensor, Tensor]:
    """Nearest covering triangle per pixel (no autograd).

    pos [B, V, 4] clip space; tri [F, 3] int64. Returns (pix [N] flat index into B*H*W, face [N]) for the N
    covered pixels, sorted by pixel.
    """
    B, F = pos.shape[0], tri.shape[0]
    dev = pos.device
    v = pos[:, tri]  # [B, F, 3, 4]
    w = v[..., 3]
    ok = (w > _W_EPS).all(-1)
    wsafe = torch.where(w > _W_EPS, w, torch.ones_like(w))
    sx = (v[..., 0] / wsafe + 1.0) * (0.5 * W) - 0.5  # pixel-centre coordinates: centre j at sx = j
    sy = (v[..., 1] / wsafe + 1.0) * (0.5 * H) - 0.5
    sz = v[..., 2] / wsafe
    # affine edge functions in screen space: l_i(x, y) = A_i x + B_i y + C_i, normalised so sum l_i = 1
    j, k = [1, 2, 0], [2, 0, 1]
    A = sy[..., j] - sy[..., k]
    Bc = sx[..., k] - sx[..., j]
    C = sx[..., j] * sy[..., k] - sx[..., k] * sy[..., j]
    area = C.sum(-1)  # twice the signed area
    ok &= area.abs() > 1e-12
    inv = torch.where(ok, 1.0 / torch.where(ok, area, torch.ones_like(area)), torch.zeros_like(area))
    A, Bc, C = A * inv[..., None], Bc * inv[..., None], C * inv[..., None]
    # depth z/w is affine in screen space: zc(x, y) = sum_i l_i(x, y) z_i
    Az, Bz, Cz = (A * sz).sum(-1), (Bc * sz).sum(-1), (C * sz).sum(-1)
    x0 = sx.amin(-1).ceil().clamp(min=0)
    x1 = sx.amax(-1).floor().clamp(max=W - 1)
    y0 = sy.amin(-1).ceil().clamp(min=0)
    y1 = sy.amax(-1).floor().clamp(max=H - 1)
    ok &= (x1 >= x0) & (y1 >= y0) & (sz.amin(-1) <= 1.0) & (sz.amax(-1) >= -1.0)
    bw = (x1 - x0 + 1).long()
    count = torch.where(ok, bw * (y1 - y0 + 1).long(), torch.zeros_like(bw)).reshape(-1)  # [B*F]
    ids = count.nonzero().squeeze(1)  # candidate (batch, triangle) flat ids
    count = count[ids]
    ends = count.cumsum(0)
    keys = torch.full((B * H * W,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=dev)
    flat = lambda t: t.reshape(B * F, *t.shape[2:])  # noqa: E731
    A, Bc, C, Az, Bz, Cz = flat(A), flat(Bc), flat(C), flat(Az), flat(Bz), flat(Cz)
    x0, y0, bw = flat(x0).long(), flat(y0).long(), flat(bw)
    scale = float(2**_DEPTH_BITS - 1) / 2.0
    start = 0
    total = int(ends[-1]) if len(ends) else 0
    while start < total:
        # triangles whose pairs fall in [start, start + chunk); at least one triangle per chunk
        lo = int(torch.searchsorted(ends, torch.tensor(start, device=dev), right=True))
        hi = int(torch.searchsorted(ends, torch.tensor(start + _PAIR_CHUNK, device=dev), right=True))
        hi = max(hi, lo + 1)
        sel = ids[lo:hi]
        cnt = count[lo:hi]
        first = ends[lo:hi] - cnt
        owner = torch.repeat_interleave(torch.arange(len(sel), device=dev), cnt)
        off = torch.arange(int(first[0]), int(ends[hi - 1]), device=dev) - first[owner]
        t = sel[owner]
        rb = bw[t]
        px = x0[t] + off % rb
        py = y0[t] + torch.div(off, rb, rounding_mode="floor")
        fx, fy = px.to(pos.dtype), py.to(pos.dtype)
        l = A[t] * fx[:, None] + Bc[t] * fy[:, None] + C[t]  # [P, 3]
        zc = Az[t] * fx + Bz[t] * fy + Cz[t]
        inside = (l >= 0).all(-1) & (zc >= -1.0) & (zc <= 1.0)
        t, px, py, zc = t[inside], px[inside], py[inside], zc[inside]
        bidx = torch.div(t, F, rounding_mode="floor")
        face = t - bidx * F
        q = ((zc + 1.0) * scale).round().long().clamp(0, 2**_DEPTH_BITS - 1)
        key = (q << 32) | face
        keys.scatter_reduce_(0, bidx * (H * W) + py * W + px, key, reduce="amin")
        start = int(ends[hi - 1])
    pix = (keys != torch.iinfo(torch.int64).max).nonzero().squeeze(1)
    face = keys[pix] & 0xFFFFFFFF
    return pix, face


# ---------------------------------------------------------------------------------------------------------
# interpolate
# ---------------------------------------------------------------------------------------------------------
def interpolate(attr: Tensor, rast: Tensor, tri: Tensor, backend: str = "auto") -> Tensor:
    """Interpolate vertex attributes at every covered pixel (perspective-correct, differentiable).

    attr: [B, V, C] or [V, C] float vertex attributes (a [V, C] input is shared by the batch).
    rast: [B, H, W, 4] from `rasterize`. tri: [F, 3] int vertex indices.
    Returns [B, H, W, C]: u * a[t0] + v * a[t1] + (1 - u - v) * a[t2]; 0 where rast says background.
    Gradients reach `attr` and rast's (u, v).
    """
    if backend == "auto":
        nv = _nvdiffrast(rast.device)
        if nv is not None:
            return nv[0].interpolate(attr.contiguous(), rast, tri.int().contiguous())[0]
    B, H, W, _ = rast.shape
    C = attr.shape[-1]
    flat = rast.reshape(-1, 4)
    pix = (flat[:, 3] > 0).nonzero().squeeze(1)
    sel = flat[pix]
    face = sel[:, 3].long() - 1
    vid = tri.long()[face]  # [N, 3]
    if attr.dim() == 2:
        a = attr[vid]  # [N, 3, C]
    else:
        b = torch.div(pix, H * W, rounding_mode="floor")
        a = attr[b[:, None], vid]
    u, v = sel[:, 0:1], sel[:, 1:2]
    vals = u * a[:, 0] + v * a[:, 1] + (1.0 - u - v) * a[:, 2]
    out = attr.new_zeros(B * H * W, C).index_put((pix,), vals.to(attr.dtype))
    return out.view(B, H, W, C)


# ---------------------------------------------------------------------------------------------------------
# antialias
# ---------------------------------------------------------------------------------------------------------
def edge_neighbors(tri: Tensor) -> Tensor:
    """[F, 3] int64: for edge i of each triangle (from vertex i to vertex (i + 1) % 3), the other triangle
    sharing that edge, or -1 (open boundary; edges shared by more than two triangles pick one of them).
    Pass it to `antialias(topology=...)` to avoid recomputing it every call."""
    tri = tri.long()
    F = tri.shape[0]
    a = tri
    b = tri[:, [1, 2, 0]]
    lo, hi = torch.minimum(a, b).reshape(-1), torch.maximum(a, b).reshape(-1)
    key = lo * (int(tri.max()) + 1 if F else 1) + hi
    order = torch.argsort(key, stable=True)
    ks = key[order]
    nb = torch.full((F * 3,), -1, dtype=torch.long, device=tri.device)
    same = ks[1:] == ks[:-1]
    i = same.nonzero().squeeze(1)
    left, right = order[i], order[i + 1]
    nb[left] = torch.div(right, 3, rounding_mode="floor")
    nb[right] = torch.div(left, 3, rounding_mode="floor")
    return nb.view(F, 3)


def antialias(
    color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor, topology: Tensor | None = None, backend: str = "auto"
) -> Tensor:
    """Blend colours across silhouette edges so that vertex positions get gradients from coverage.

    color: [B, H, W, C] float (e.g. `interpolate` output, shaded and composited over the background).
    rast: [B, H, W, 4] from `rasterize(pos, tri, ...)`; pos: [B, V, 4] or [V, 4] clip space (the same one);
    tri: [F, 3] int; topology: `edge_neighbors(tri)`, computed when None.
    Returns [B, H, W, C]. For each pair of 4-neighbour pixels that see different triangles, the nearer
    pixel's triangle is checked for a silhouette edge (an edge whose neighbouring triangle is missing or
    faces the other way in this view) crossing the segment between the two pixel centres, at fraction t
    from the nearer centre. The pixel on the far side of the edge's crossing is blended by the length of the
    segment the other surface covers inside it (1D box coverage): the farther pixel gets
    (t - 1/2) (front - back) when t > 1/2, the nearer one (1/2 - t) (back - front) when t < 1/2.
    The result is continuous in the vertex positions, and d(out)/d(pos) flows through t.
    """
    if backend == "auto":
        nv = _nvdiffrast(color.device)
        if nv is not None:
            return nv[0].antialias(color.contiguous(), rast, _batched(pos).contiguous(), tri.int().contiguous())
    pos = _batched(pos)
    tri = tri.long()
    B, H, W, C = color.shape
    if topology is None:
        topology = edge_neighbors(tri)
    with torch.no_grad():
        tid = rast[..., 3].long() - 1  # [B, H, W], -1 background
        depth = torch.where(tid >= 0, rast[..., 2], torch.full_like(rast[..., 2], math.inf))
        # facing of every triangle in every view: sign of its screen-space area
        v = pos.detach()[:, tri]  # [B, F, 3, 4]
        # with every w > 0 the sign of det[(x, y, w) rows] is the sign of the screen-space area
        x, y, w = v[..., 0], v[..., 1], v[..., 3]
        det = (x[..., 0] * (y[..., 1] * w[..., 2] - w[..., 1] * y[..., 2])
               - y[..., 0] * (x[..., 1] * w[..., 2] - w[..., 1] * x[..., 2])
               + w[..., 0] * (x[..., 1] * y[..., 2] - y[..., 1] * x[..., 2]))  # [B, F]
        facing = det > 0
        idx = torch.arange(B * H * W, device=color.device).view(B, H, W)
        pairs = []
        for dim in (2, 1):  # horizontal neighbours, vertical neighbours
            n = tid.shape[dim] - 1
            ta, tb = tid.narrow(dim, 0, n), tid.narrow(dim, 1, n)
            da, db = depth.narrow(dim, 0, n), depth.narrow(dim, 1, n)
            ia, ib = idx.narrow(dim, 0, n), idx.narrow(dim, 1, n)
            m = ta != tb
            a_front = da <= db
            f = torch.where(a_front, ia, ib)[m]
            g = torch.where(a_front, ib, ia)[m]
            pairs.append((f, g))
        f = torch.cat([p[0] for p in pairs])  # nearer pixel (flat index)
        g = torch.cat([p[1] for p in pairs])  # farther pixel
        b = torch.div(f, H * W, rounding_mode="floor")
        face = tid.reshape(-1)[f]
        keep = face >= 0
        f, g, b, face = f[keep], g[keep], b[keep], face[keep]

        def centre(p: Tensor) -> tuple[Tensor, Tensor]:
            r = p - torch.div(p, H * W, rounding_mode="floor") * (H * W)
            row = torch.div(r, W, rounding_mode="floor")
            return (r - row * W).to(pos.dtype), row.to(pos.dtype)

        fx, fy = centre(f)
        gx, gy = centre(g)
        nb = topology[face]  # [P, 3]
        nb_face = torch.where(nb >= 0, facing[b[:, None], nb.clamp(min=0)], ~facing[b, face][:, None])
        silhouette = (nb < 0) | (nb_face != facing[b, face][:, None])  # [P, 3]
    # screen-space edge endpoints (differentiable), in pixel-centre coordinates
    ends = tri[face]  # [P, 3]
    p = pos[b[:, None], ends]  # [P, 3, 4]
    w = p[..., 3].clamp(min=_W_EPS)
    sx = (p[..., 0] / w + 1.0) * (0.5 * W) - 0.5
    sy = (p[..., 1] / w + 1.0) * (0.5 * H) - 0.5
    ax, ay = sx, sy
    cx, cy = sx[:, [1, 2, 0]], sy[:, [1, 2, 0]]
    ex, ey = cx - ax, cy - ay  # edge vectors [P, 3]
    dx, dy = (gx - fx)[:, None], (gy - fy)[:, None]  # segment f -> g (unit length, axis-aligned)
    denom = dx * ey - dy * ex
    rx, ry = ax - fx[:, None], ay - fy[:, None]
    safe = torch.where(denom.abs() > 1e-12, denom, torch.ones_like(denom))
    t = (rx * ey - ry * ex) / safe  # along f -> g
    s = (rx * dy - ry * dx) / safe  # along the edge
    with torch.no_grad():
        hit = silhouette & (denom.abs() > 1e-12) & (t >= 0) & (t <= 1) & (s >= 0) & (s <= 1)
        any_hit = hit.any(-1)
        which = hit.float().argmax(-1)
    sel = any_hit.nonzero().squeeze(1)
    t = t[sel, which[sel]]
    f, g = f[sel], g[sel]
    flat = color.reshape(-1, C)
    cf, cg = flat[f], flat[g]
    far_side = t > 0.5
    wgt = torch.where(far_side, t - 0.5, 0.5 - t)[:, None]
    target = torch.where(far_side, g, f)
    delta = torch.where(far_side[:, None], cf - cg, cg - cf) * wgt
    out = flat.index_add(0, target, delta.to(flat.dtype))
    return out.view(B, H, W, C)


# ---------------------------------------------------------------------------------------------------------
# cameras -> clip space
# ---------------------------------------------------------------------------------------------------------
def projection(fov_y: Tensor, height: int, width: int, near: float = 0.1, far: float = 100.0) -> Tensor:
    """[B, 4, 4] OpenGL-style perspective matrices for vertical fov `fov_y` [B] (radians), with NDC y
    flipped so that `rasterize`'s image row 0 is the TOP of the picture (studio image layout)."""
    f = 1.0 / torch.tan(0.5 * fov_y)
    P = torch.zeros(fov_y.shape[0], 4, 4, dtype=fov_y.dtype, device=fov_y.device)
    P[:, 0, 0] = f * (height / width)
    P[:, 1, 1] = -f
    P[:, 2, 2] = (far + near) / (near - far)
    P[:, 2, 3] = 2.0 * far * near / (near - far)
    P[:, 3, 2] = -1.0
    return P


def clip_from_cameras(verts: Tensor, cams, near: float = 0.1, far: float = 100.0) -> Tensor:
    """Clip-space positions of world-space vertices as seen by each camera.

    verts: [V, 3] (shared) or [B, V, 3] world positions; cams: `representations.cameras.Cameras` (B cameras,
    OpenGL camera axes). Returns [B, V, 4] float32 for `rasterize(pos, tri, (cams.height, cams.width))`;
    the rasterised pixel (i, j) is the pixel of `cams.rays()` (i, j).
    """
    c2w = cams.c2w.to(verts.dtype)
    mvp = projection(cams.fov_y.to(verts.dtype), cams.height, cams.width, near, far) @ torch.linalg.inv(c2w)
    if verts.dim() == 2:
        verts = verts[None].expand(c2w.shape[0], -1, -1)
    homo = torch.cat([verts, torch.ones_like(verts[..., :1])], dim=-1)
    return homo @ mvp.transpose(1, 2)


__all__ = ["rasterize", "interpolate", "antialias", "edge_neighbors", "clip_from_cameras", "projection"]
