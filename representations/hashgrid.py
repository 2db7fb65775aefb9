"""Multi-resolution hash encoding (Instant-NGP, Mueller et al. 2022) in pure torch, written for CPU speed.

L levels of trilinearly interpolated feature grids whose resolutions grow geometrically from
`base_resolution` to `max_resolution`. A level whose vertex grid fits in the table is stored densely
(no collisions); finer levels index a table of 2^log2_table entries through a spatial hash.

How it is made fast on a small CPU (measured on the 2-core build machine, see benchmarks/bench_nerf.py):
- Points are processed in chunks of `CHUNK` so every temporary stays in cache (ops on 16k-64k elements
  run ~4x faster per element there than on multi-MB tensors, which page-fault on every allocation).
- Every per-corner tensor is level-major and sample-minor ([L, 2, 2, 2, n]): elementwise ops run over
  long contiguous rows (broadcasting over a tiny innermost dim is very slow in torch).
- Corner indices come from per-(axis, level) lookup tables: `lut[c] = (c * prime) & mask` with the
  level's table offset folded into the z table, so an index is `lut_x ^ lut_y ^ lut_z`. For a dense level
  the per-axis strides are powers of two, so the xor equals the usual `x + Rx*y + Rx*Ry*z`; levels are
  stored largest first so every offset is a multiple of the level's size and xor-ing it equals adding it.
- Features are stored in pairs viewed as complex64 ([F/2, S, 2] real = [F/2, S] complex): one gather
  fetches two features, and `torch.lerp` interpolates both at once.
- The backward is a custom autograd Function: trilinear corner weights times the incoming gradient,
  scattered into the table with `scatter_add_`.
- `hash_mlp` fuses the encoding with a small ReLU MLP, chunk by chunk and with a hand-written backward,
  so the MLP's activations never become multi-MB tensors either (the NeRF field is one call).

Two public ops: `HashGrid` (the encoding, [N, 3] -> [N, L*F]) and `hash_mlp` (encoding + MLP), each with a
straightforward pure-autograd twin for tests (`hash_encode_reference`, `hash_mlp_reference`).
Gradients flow to the table (and MLP), never to the query points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
from torch import Tensor, nn

_PRIMES = (1, 2654435761, 805459861)
"""Per-axis multipliers of the spatial hash (Teschner et al. 2003, as used by Instant-NGP)."""

CHUNK = 4096
"""Points per chunk inside the encoder: 4096 x 8 levels x 8 corners keeps temporaries ~1 MB."""


@dataclass
class HashGridConfig:
    """Sizes of the multi-resolution hash encoding. Defaults are sized for a 2-core CPU at 64-128 px."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"levels": (1, 32), "features": (1, 8), "log2_table": (8, 24),
        "base_resolution": (2, 4096), "max_resolution": (2, 16384), "init_scale": (0.0, 1.0)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    levels: int = 8
    """Number of resolution levels L."""
    features: int = 2
    """Features per level F (must be even: features are stored and gathered in pairs)."""
    log2_table: int = 15
    """log2 of the entries per hashed level (T = 2^log2_table)."""
    base_resolution: int = 16
    """Grid resolution (cells per axis across the box) of the coarsest level."""
    max_resolution: int = 256
    """Grid resolution of the finest level."""
    init_scale: float = 1e-4
    """Table entries start uniform in [-init_scale, init_scale]."""

    def table_bytes(self) -> float:
        """Bytes of the hash tables with their two Adam moments (float32)."""
        return 12.0 * self.levels * 2 ** self.log2_table * self.features


@dataclass(frozen=True)
class Level:
    """Layout of one level inside the table."""

    resolution: int
    """Cells per axis; vertices are 0..resolution."""
    dense: bool
    """True when stored without hashing (one entry per vertex, power-of-two strides)."""
    size: int
    """Entries reserved in the table (a power of two)."""
    multipliers: tuple[int, int, int]
    """Per-axis multipliers: strides (dense) or hash primes."""
    offset: int
    """First entry of the level in the table."""


def plan_levels(cfg: HashGridConfig) -> list[Level]:
    """Resolution, storage kind, size and table offset of every level (in level order, coarse first)."""
    if cfg.levels < 1:
        raise ValueError("HashGridConfig.levels must be >= 1")
    if cfg.features < 2 or cfg.features % 2:
        raise ValueError(f"HashGridConfig.features must be even and >= 2, got {cfg.features}")
    if not 4 <= cfg.log2_table <= 26:
        raise ValueError(f"HashGridConfig.log2_table must be in [4, 26], got {cfg.log2_table}")
    if not 1 <= cfg.base_resolution <= cfg.max_resolution <= 4096:
        raise ValueError("HashGridConfig needs 1 <= base_resolution <= max_resolution <= 4096")
    growth = 1.0 if cfg.levels == 1 else math.exp(
        (math.log(cfg.max_resolution) - math.log(cfg.base_resolution)) / (cfg.levels - 1)
    )
    plans = []
    for lvl in range(cfg.levels):
        res = max(1, int(math.floor(cfg.base_resolution * growth**lvl + 1e-6)))
        bits = max(1, math.ceil(math.log2(res + 1)))  # vertex coordinates 0..res need `bits` bits
        if 3 * bits <= cfg.log2_table:
            plans.append((res, True, 1 << (3 * bits), (1, 1 << bits, 1 << (2 * bits))))
        else:
            plans.append((res, False, 1 << cfg.log2_table, _PRIMES))
    order = sorted(range(cfg.levels), key=lambda i: -plans[i][2])  # largest first: offsets stay aligned
    offsets, acc = [0] * cfg.levels, 0
    for i in order:
        offsets[i] = acc
        acc += plans[i][2]
    return [Level(r, d, s, m, o) for (r, d, s, m), o in zip(plans, offsets)]


class _Lookup:
    """Per-level index tables shared by forward and backward (plain tensors, built once per grid)."""

    def __init__(self, levels: list[Level], bound: float, device: torch.device) -> None:
        L = len(levels)
        width = max(lv.resolution for lv in levels) + 2
        coord = torch.arange(width, dtype=torch.int64)
        lut = torch.zeros(3, L, width, dtype=torch.int64)
        for li, lv in enumerate(levels):
            for axis in range(3):
                term = (coord * lv.multipliers[axis]) & (lv.size - 1)
                lut[axis, li] = term ^ lv.offset if axis == 2 else term
        self.lut0 = lut.to(torch.int32).reshape(-1).to(device)  # term of vertex c
        self.lut1 = torch.roll(lut, -1, dims=2).to(torch.int32).reshape(-1).to(device)  # term of vertex c + 1
        self.base = (torch.arange(3 * L, dtype=torch.int32) * width)[:, None].to(device)  # [3L, 1]
        scale = torch.zeros(3 * L, 3)
        for axis in range(3):
            for li, lv in enumerate(levels):
                scale[axis * L + li, axis] = float(lv.resolution)
        self.scale = scale.to(device)  # [3L, 3]: u -> per-level continuous vertex coordinates
        self.bound = bound
        self.levels = L

    def corners(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """points [n, 3] -> (idx [L, 2, 2, 2, n] int32 table entries, frac [3, L, n] in [0, 1)).

        Corner order is (x, y, z) bits, x slowest.
        """
        n, L = points.shape[0], self.levels
        u = ((points.detach().t().float() + self.bound) * (0.5 / self.bound)).clamp_(0.0, 1.0 - 1e-6)  # [3, n]
        pos = self.scale @ u  # [3L, n]
        cell = pos.floor()
        frac = (pos - cell).view(3, L, n)
        ci = (cell.to(torch.int32) + self.base).view(-1)
        t0 = self.lut0.index_select(0, ci).view(3, L, n)
        t1 = self.lut1.index_select(0, ci).view(3, L, n)
        yz = torch.empty(L, 2, 2, n, dtype=torch.int32, device=points.device)
        torch.bitwise_xor(t0[1], t0[2], out=yz[:, 0, 0])
        torch.bitwise_xor(t0[1], t1[2], out=yz[:, 0, 1])
        torch.bitwise_xor(t1[1], t0[2], out=yz[:, 1, 0])
        torch.bitwise_xor(t1[1], t1[2], out=yz[:, 1, 1])
        idx = torch.empty(L, 2, 2, 2, n, dtype=torch.int32, device=points.device)
        torch.bitwise_xor(yz, t0[0][:, None, None, :], out=idx[:, 0])
        torch.bitwise_xor(yz, t1[0][:, None, None, :], out=idx[:, 1])
        return idx, frac


def _corner_weights(frac: Tensor) -> Tensor:
    """frac [3, L, n] -> trilinear corner weights [L, 2, 2, 2, n] (x, y, z bits, x slowest)."""
    L, n = frac.shape[1], frac.shape[2]
    inv = 1.0 - frac
    wyz = torch.empty(L, 2, 2, n, dtype=frac.dtype, device=frac.device)
    torch.mul(inv[1], inv[2], out=wyz[:, 0, 0])
    torch.mul(inv[1], frac[2], out=wyz[:, 0, 1])
    torch.mul(frac[1], inv[2], out=wyz[:, 1, 0])
    torch.mul(frac[1], frac[2], out=wyz[:, 1, 1])
    w = torch.empty(L, 2, 2, 2, n, dtype=frac.dtype, device=frac.device)
    torch.mul(wyz, inv[0][:, None, None, :], out=w[:, 0])
    torch.mul(wyz, frac[0][:, None, None, :], out=w[:, 1])
    return w


def _encode_chunk(pairs: Tensor, lookup: _Lookup, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """pairs [P, S] complex table, points [n, 3] -> (features [L, 2P, n], idx [L, 2, 2, 2, n], frac [3, L, n])."""
    P, L = pairs.shape[0], lookup.levels
    idx, frac = lookup.corners(points)
    n = idx.shape[-1]
    flat = idx.view(-1)
    fc = frac.to(torch.complex64)
    fx, fy, fz = fc[0][:, None, None, :], fc[1][:, None, :], fc[2]
    feat = torch.empty(L, 2 * P, n, dtype=torch.float32, device=points.device)
    for p in range(P):
        v = pairs[p].index_select(0, flat).view(L, 2, 2, 2, n)
        v = torch.lerp(v[:, 0], v[:, 1], fx)  # [L, 2, 2, n]  (y, z)
        v = torch.lerp(v[:, 0], v[:, 1], fy)  # [L, 2, n]     (z)
        v = torch.lerp(v[:, 0], v[:, 1], fz)  # [L, n]
        feat[:, 2 * p : 2 * p + 2] = torch.view_as_real(v).transpose(1, 2)
    return feat, idx, frac


def _scatter_chunk(acc: Tensor, idx: Tensor, frac: Tensor, grad: Tensor) -> None:
    """Add the table gradient of one chunk: acc [P, 2, S] planar, grad [L, 2P, n] w.r.t. its features."""
    L, n = idx.shape[0], idx.shape[-1]
    w = _corner_weights(frac)
    flat = idx.view(-1).long()  # scatter_add_ (int64 only) beats index_add_ on CPU
    tmp = torch.empty_like(w)
    for c in range(grad.shape[1]):
        torch.mul(w, grad[:, c].reshape(L, 1, 1, 1, n), out=tmp)
        acc[c // 2, c % 2].scatter_add_(0, flat, tmp.view(-1))


class _HashEncode(torch.autograd.Function):
    """table [P, S, 2] (P feature pairs), points [N, 3] -> features [L, 2P, N]."""

    @staticmethod
    def forward(ctx, table: Tensor, points: Tensor, lookup: _Lookup) -> Tensor:  # type: ignore[override]
        pairs = torch.view_as_complex(table)
        parts, saved = [], []
        for start in range(0, points.shape[0], CHUNK):
            feat, idx, frac = _encode_chunk(pairs, lookup, points[start : start + CHUNK])
            parts.append(feat)
            saved.append((idx, frac))
        ctx.saved = saved
        ctx.table_shape = table.shape
        if not parts:
            return table.new_zeros(lookup.levels, 2 * table.shape[0], 0)
        return torch.cat(parts, dim=2)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        if not ctx.needs_input_grad[0]:
            return None, None, None
        P, S, _ = ctx.table_shape
        acc = torch.zeros(P, 2, S, dtype=grad.dtype, device=grad.device)
        start = 0
        for idx, frac in ctx.saved:
            n = idx.shape[-1]
            _scatter_chunk(acc, idx, frac, grad[:, :, start : start + n])
            start += n
        return acc.transpose(1, 2).contiguous(), None, None


class _HashMLP(torch.autograd.Function):
    """Hash encoding followed by a ReLU MLP, fused and chunked so every temporary stays in cache.

    forward(points [N, 3], lookup, table [P, S, 2], W_1, b_1, ..., W_k, b_k) -> [out, N] (channels first).
    Hidden layers use ReLU; the last layer is linear. The backward is written by hand, chunk by chunk.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, points: Tensor, lookup: _Lookup, table: Tensor, *params: Tensor
    ) -> Tensor:
        pairs = torch.view_as_complex(table)
        weights, biases = params[0::2], params[1::2]
        N = points.shape[0]
        out = table.new_empty(weights[-1].shape[0], N)
        saved = []
        for start in range(0, N, CHUNK):
            feat, idx, frac = _encode_chunk(pairs, lookup, points[start : start + CHUNK])
            x = feat.view(-1, feat.shape[-1])
            acts = [x]
            for W, b in zip(weights[:-1], biases[:-1]):
                x = torch.addmm(b[:, None], W, x).clamp_(min=0.0)
                acts.append(x)
            torch.addmm(biases[-1][:, None], weights[-1], x, out=out[:, start : start + x.shape[1]])
            saved.append((idx, frac, acts))
        ctx.saved = saved
        ctx.params = params
        ctx.table_shape = table.shape
        ctx.levels = lookup.levels
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        params = ctx.params
        weights = params[0::2]
        grads_w = [torch.zeros_like(W) for W in weights]
        grads_b = [torch.zeros_like(b) for b in params[1::2]]
        need_table = ctx.needs_input_grad[2]
        P, S, _ = ctx.table_shape
        acc = torch.zeros(P, 2, S, dtype=grad.dtype, device=grad.device) if need_table else None
        start = 0
        for idx, frac, acts in ctx.saved:
            n = idx.shape[-1]
            g = grad[:, start : start + n]
            for i in range(len(weights) - 1, -1, -1):
                grads_w[i].addmm_(g, acts[i].t())
                grads_b[i].add_(g.sum(dim=1))
                if i == 0 and not need_table:
                    break
                g = weights[i].t() @ g
                if i > 0:  # ReLU; threshold_backward is ~15x faster here than masked_fill_ / where
                    g = torch.ops.aten.threshold_backward(g, acts[i], 0.0)
            if need_table:
                _scatter_chunk(acc, idx, frac, g.view(ctx.levels, -1, n))
            start += n
        grad_table = acc.transpose(1, 2).contiguous() if need_table else None
        flat = [x for pair in zip(grads_w, grads_b) for x in pair]
        return (None, None, grad_table, *flat)


class HashGrid(nn.Module):
    """Multi-resolution hash encoding of points in the box [-bound, bound]^3.

    `forward(points [N, 3]) -> [N, L*F]`; `encode_channels_first(points) -> [L*F, N]` (contiguous).
    Channel c = level * F + feature. Points outside the box are clamped onto it.
    The only parameter is `table` [F/2, S, 2]: feature pairs, all levels concatenated along S.
    """

    def __init__(self, cfg: HashGridConfig, bound: float = 1.0) -> None:
        super().__init__()
        self.cfg = cfg
        self.bound = float(bound)
        self.levels = plan_levels(cfg)
        size = sum(lv.size for lv in self.levels)
        table = torch.empty(cfg.features // 2, size, 2).uniform_(-cfg.init_scale, cfg.init_scale)
        self.table = nn.Parameter(table)
        self._lookup: _Lookup | None = None

    @property
    def out_dim(self) -> int:
        return self.cfg.levels * self.cfg.features

    def lookup(self) -> _Lookup:
        """The index tables (built lazily on the table's device)."""
        if self._lookup is None or self._lookup.lut0.device != self.table.device:
            self._lookup = _Lookup(self.levels, self.bound, self.table.device)
        return self._lookup

    def encode_channels_first(self, points: Tensor) -> Tensor:
        """points [N, 3] -> features [L*F, N] (contiguous)."""
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"points must be [N, 3], got {tuple(points.shape)}")
        out = _HashEncode.apply(self.table, points, self.lookup())
        return out.view(self.out_dim, -1)

    def forward(self, points: Tensor) -> Tensor:
        """points [N, 3] -> features [N, L*F] (a transposed view of `encode_channels_first`)."""
        return self.encode_channels_first(points).t()


def hash_mlp(grid: HashGrid, weights: Sequence[Tensor], biases: Sequence[Tensor], points: Tensor) -> Tensor:
    """Hash encoding of points [N, 3], then an MLP: -> [out, N] channels first.

    weights[i] [out_i, in_i], biases[i] [out_i] (nn.Linear layout); ReLU after every layer but the last.
    Fused and chunked (see `_HashMLP`); equal to `hash_mlp_reference` up to float rounding.
    """
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be [N, 3], got {tuple(points.shape)}")
    if len(weights) != len(biases) or not weights or weights[0].shape[1] != grid.out_dim:
        raise ValueError("hash_mlp needs one bias per weight and a first layer taking grid.out_dim inputs")
    params = [t for pair in zip(weights, biases) for t in pair]
    return _HashMLP.apply(points, grid.lookup(), grid.table, *params)


def hash_mlp_reference(grid: HashGrid, weights: Sequence[Tensor], biases: Sequence[Tensor], points: Tensor) -> Tensor:
    """Unfused twin of `hash_mlp` (encoder Function + plain autograd MLP): points [N, 3] -> [out, N]."""
    x = grid(points)
    for i, (W, b) in enumerate(zip(weights, biases)):
        x = torch.nn.functional.linear(x, W, b)
        if i < len(weights) - 1:
            x = torch.relu(x)
    return x.t()


def hash_encode_reference(grid: HashGrid, points: Tensor) -> Tensor:
    """Straightforward per-level, per-corner twin of `HashGrid.forward` (int64 hashing, plain autograd).

    points [N, 3] -> [N, L*F]. Slow; for tests.
    """
    b = grid.bound
    table = grid.table.reshape(-1, grid.table.shape[1], 2).permute(0, 2, 1).reshape(-1, grid.table.shape[1])  # [F, S]
    u = ((points.detach().float() + b) / (2 * b)).clamp(0.0, 1.0 - 1e-6)  # [N, 3]
    feats = []
    for lv in grid.levels:
        pos = u * lv.resolution
        cell = pos.floor()
        frac = pos - cell
        cell = cell.long()
        acc = 0.0
        for bits in range(8):
            cx, cy, cz = bits >> 2 & 1, bits >> 1 & 1, bits & 1
            cc = cell + torch.tensor([cx, cy, cz])
            if lv.dense:
                k = cc[:, 0] * lv.multipliers[0] + cc[:, 1] * lv.multipliers[1] + cc[:, 2] * lv.multipliers[2]
            else:
                k = ((cc[:, 0] * _PRIMES[0]) ^ (cc[:, 1] * _PRIMES[1]) ^ (cc[:, 2] * _PRIMES[2])) & (lv.size - 1)
            w = torch.ones(len(points))
            for axis, bit in enumerate((cx, cy, cz)):
                w = w * (frac[:, axis] if bit else 1.0 - frac[:, axis])
            acc = acc + w[:, None] * table[:, lv.offset + k].t()
        feats.append(acc)
    return torch.cat(feats, dim=1)


__all__ = [
    "HashGridConfig", "HashGrid", "Level", "plan_levels", "hash_mlp", "hash_mlp_reference",
    "hash_encode_reference", "CHUNK",
]
