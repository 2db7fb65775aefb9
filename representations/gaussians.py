"""3D Gaussians (3DGS; as in GaussianDreamer / DreamGaussian) for text-to-3D, rendered by the CPU splatter.

Parameters (N Gaussians, N changes during the run): means [N, 3], log_scales [N, 3], quats [N, 4]
(w, x, y, z), opacity_logits [N], sh_dc [N, 3], sh_rest [N, K, 3] (K = 0 at SH degree 0, 3 at degree 1).
Albedo = clamp(0.5 + C0 * sh_dc (+ degree-1 terms by view direction), 0, 1), the 3DGS colour convention, so
`splat.ply` holds the same numbers that splat viewers read.

Rendering (representations/ops/splat.py): each Gaussian carries per-view features [albedo, normal, distance];
the splatter composites them front to back. A Gaussian's normal is its SHORTEST axis turned toward the
camera (a flat Gaussian's surface normal; without the flip half the normals point away and the
Lambertian shading shows dark speckles). Shading is deferred, per pixel, as in the NeRF: the composited
normal is normalised and `shade` lights the composited albedo, then the result goes over the background.
Depth is the composited distance of the means from the camera centre.

Densification and pruning (after_backward, every `densify_every` steps inside [densify_from, densify_until)):
the Gaussians with the largest mean position gradient (averaged since the last densification; the top
`densify_fraction`) are cloned when small and split in two (scales / 1.6) when large; Gaussians whose
opacity fell below `prune_opacity` are removed. Adam moments follow their rows (zero for new rows). A fraction
instead of 3DGS's absolute gradient threshold, because SDS gradient magnitudes depend on the model and the
guidance scale.

Regularisers (already weighted): mean of the largest scale (no huge blobs), opacity entropy per Gaussian
(opaque or gone), opacity sparsity on the rendered alpha.

Mesh: the Gaussians are summed into a density grid (each Gaussian on the vertices within 3 sigma;
representations/gaussian_field.py), then the shared extraction (representations/extract.py) picks the level
from the renders and runs marching cubes; the same cached grid colours the vertices and serves texture bakes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from .base import RenderOut, Representation, RepresentationConfig
from .cameras import Cameras
from .gaussian_field import VoxelCache, sample_albedo, voxelize
from .mesh import Mesh
from .ops.splat import covariance_3d, quat_to_rotmat, rasterization
from .optim import adam
from .regularizers import opacity_entropy, opacity_sparsity
from .shading import Shading, shade

SH_C0 = 0.28209479177387814
"""Degree-0 real spherical harmonic constant: colour = 0.5 + SH_C0 * f_dc."""
SH_C1 = 0.4886025119029199
"""Degree-1 constant."""
PARAMS = ("means", "log_scales", "quats", "opacity_logits", "sh_dc", "sh_rest")


@dataclass
class GaussiansConfig(RepresentationConfig):
    """3D Gaussians: initialisation, optimisation, densification, regularisers."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"num_init": (1, 1_000_000), "init_radius": (0.01, 10.0),
        "init_opacity": (0.0001, 0.9999), "init_scale": (0.0, 10.0), "sh_degree": (0, 1), "lr_means": (1e-08, 1.0),
        "lr_scales": (1e-08, 1.0), "lr_quats": (1e-08, 1.0), "lr_opacity": (1e-08, 1.0), "lr_color": (1e-08, 1.0),
        "densify_every": (1, float("inf")), "densify_from": (0, float("inf")), "densify_until": (0.0, 1.0),
        "densify_fraction": (0.0, 1.0), "split_scale": (0.0, 10.0), "prune_opacity": (0.0, 1.0),
        "max_gaussians": (1, 5_000_000), "scale_weight": (0.0, 1000000.0), "opacity_weight": (0.0, 1000000.0),
        "sparsity_weight": (0.0, 1000000.0), "normal_min_alpha": (0.0, 1.0), "tile_size": (1, 64)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    kind: str = "gaussians"
    """Registry key."""
    num_init: int = 4096
    """Gaussians at the start (random in a ball, or sampled from --init-from's density)."""
    init_radius: float = 0.5
    """Radius of the ball the random initial means are drawn from (world units)."""
    init_opacity: float = 0.3
    """Initial opacity of every Gaussian (a visible blob at the start)."""
    init_scale: float = 0.0
    """Initial standard deviation (world units); 0 = the mean spacing of the initial means."""
    sh_degree: Literal[0, 1] = 0
    """Spherical-harmonic degree of the colour (0: view-independent, enough for SDS)."""
    lr_means: float = 2e-3
    """Adam learning rate of the means (world units)."""
    lr_scales: float = 1e-2
    """Adam learning rate of the log-scales."""
    lr_quats: float = 1e-2
    """Adam learning rate of the quaternions."""
    lr_opacity: float = 5e-2
    """Adam learning rate of the opacity logits."""
    lr_color: float = 2e-2
    """Adam learning rate of the SH colour coefficients."""
    densify_every: int = 50
    """Steps between densification / pruning passes."""
    densify_from: int = 50
    """First step of densification."""
    densify_until: float = 0.7
    """Fraction of the run after which the set of Gaussians stays fixed."""
    densify_fraction: float = 0.05
    """Fraction of the Gaussians (largest mean gradient) densified per pass (not 3DGS's gradient threshold)."""
    split_scale: float = 0.03
    """Gaussians whose largest scale exceeds this (world units) are split in two; smaller ones are cloned."""
    prune_opacity: float = 0.02
    """Gaussians below this opacity are removed at each densification pass."""
    max_gaussians: int = 20000
    """Densification stops adding above this count."""
    scale_weight: float = 1.0
    """Weight of mean(largest scale) (world units): keeps Gaussians small."""
    opacity_weight: float = 1e-3
    """Weight of the per-Gaussian opacity entropy mean(H(o)): opaque or prunable."""
    sparsity_weight: float = 1e-3
    """Weight of the opacity sparsity term mean(sqrt(alpha^2 + 0.01)) on the rendered alpha (against floaters)."""
    normal_min_alpha: float = 1e-3
    """Pixels with lower opacity get no normal (shaded with ambient light only)."""
    tile_size: int = 8
    """Splatter tile side in pixels."""

    def training_bytes(self, pixels: int) -> float:
        """About 16 KB a pixel (the splatter's per-tile lists, measured at 64 and 128 px) plus up to max_gaussians
        Gaussians of 59 floats with their Adam moments."""
        return 16e3 * pixels + 12.0 * 59 * self.max_gaussians

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sh_degree not in (0, 1):
            raise ValueError(f"gaussians: sh_degree must be 0 or 1, got {self.sh_degree}")
        if self.num_init < 1:
            raise ValueError("gaussians: num_init must be >= 1")


def _outward_quats(means: Tensor) -> Tensor:
    """[n, 3] -> [n, 4] (w, x, y, z) rotations taking the x axis to the direction from the centroid to each mean.

    With x the shortest axis, the normals of a fresh cloud point outward, so a blob starts out shaded like a
    ball; with identity rotations every normal would be +-x and the start would render dark and flat."""
    d = means - means.mean(0, keepdim=True)
    d = d / d.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    q = torch.stack([1.0 + d[:, 0], torch.zeros_like(d[:, 0]), -d[:, 2], d[:, 1]], dim=-1)
    flip = q.norm(dim=-1) < 1e-6  # d = -x: half a turn around z
    q[flip] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    return q / q.norm(dim=-1, keepdim=True)


class Gaussians(Representation):
    """A set of 3D Gaussians with its own Adam optimiser; densifies and prunes itself during the run."""

    Config = GaussiansConfig

    def __init__(self, cfg: GaussiansConfig | None = None, total_steps: int = 1000) -> None:
        cfg = GaussiansConfig() if cfg is None else cfg
        super().__init__(cfg, total_steps)
        self.cfg: GaussiansConfig = cfg
        n = cfg.num_init
        u = torch.randn(n, 3)
        means = u / u.norm(dim=-1, keepdim=True) * cfg.init_radius * torch.rand(n, 1) ** (1.0 / 3.0)
        spacing = cfg.init_scale or (4.0 / 3.0 * math.pi * cfg.init_radius**3 / n) ** (1.0 / 3.0)
        self._set(self._fresh(means, torch.full((n, 3), 0.5), spacing))
        self.optimizer = self._make_optimizer()
        self._grad_sum = torch.zeros(n)
        self._grad_count = 0
        self._voxel_cache = VoxelCache()

    # -- parameters ------------------------------------------------------------------------------
    def _fresh(self, means: Tensor, albedo: Tensor, scale: float) -> dict[str, Tensor]:
        """Parameter values for Gaussians at `means` [n, 3] with colour `albedo` [n, 3] and scale `scale`."""
        n = means.shape[0]
        K = (self.cfg.sh_degree + 1) ** 2 - 1
        o = self.cfg.init_opacity
        log_scales = torch.full((n, 3), math.log(scale))
        log_scales[:, 0] += math.log(0.5)  # flat along x, which is turned to face outward:
        return {"means": means, "log_scales": log_scales, "quats": _outward_quats(means),
                "opacity_logits": torch.full((n,), math.log(o / (1 - o))),
                "sh_dc": (albedo - 0.5) / SH_C0, "sh_rest": torch.zeros(n, K, 3)}

    def _set(self, values: dict[str, Tensor]) -> None:
        for name in PARAMS:  # sh_rest is empty at degree 0: kept (for the PLY layout), not trained
            grad = name != "sh_rest" or values[name].shape[1] > 0
            setattr(self, name, nn.Parameter(values[name].contiguous(), requires_grad=grad))

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.cfg
        lrs = {"means": c.lr_means, "log_scales": c.lr_scales, "quats": c.lr_quats,
               "opacity_logits": c.lr_opacity, "sh_dc": c.lr_color, "sh_rest": c.lr_color / 20}
        groups = [{"params": [getattr(self, n)], "lr": lrs[n], "name": n} for n in PARAMS]
        return adam(groups)

    @property
    def count(self) -> int:
        return self.means.shape[0]

    def splat_tensors(self) -> dict[str, Tensor]:
        """The 3DGS tensors (detached): means [N, 3], log_scales [N, 3], quats [N, 4] (w, x, y, z, unit),
        opacity_logits [N], sh_dc [N, 3], sh_rest [N, K, 3]."""
        q = self.quats.detach()
        return {"means": self.means.detach().clone(), "log_scales": self.log_scales.detach().clone(),
                "quats": q / q.norm(dim=-1, keepdim=True).clamp(min=1e-12),
                "opacity_logits": self.opacity_logits.detach().clone(), "sh_dc": self.sh_dc.detach().clone(),
                "sh_rest": self.sh_rest.detach().clone()}

    # -- colour and geometry per view ----------------------------------------------------------------
    def colors(self, cam_pos: Tensor | None = None) -> Tensor:
        """Albedo in [0, 1]: [N, 3] (degree 0, or cam_pos None) or [B, N, 3] seen from cam_pos [B, 3]."""
        base = 0.5 + SH_C0 * self.sh_dc
        if self.cfg.sh_degree == 0 or cam_pos is None:
            return base.clamp(0.0, 1.0)
        d = self.means[None] - cam_pos[:, None, :]
        d = d / d.norm(dim=-1, keepdim=True).clamp(min=1e-9)
        x, y, z = d[..., 0:1], d[..., 1:2], d[..., 2:3]
        r = self.sh_rest
        rest = SH_C1 * (-y * r[None, :, 0] + z * r[None, :, 1] - x * r[None, :, 2])
        return (base[None] + rest).clamp(0.0, 1.0)

    def normals(self, cam_pos: Tensor) -> Tensor:
        """[B, N, 3] unit normals: each Gaussian's shortest axis, turned toward camera b (cam_pos [B, 3])."""
        R = quat_to_rotmat(self.quats)  # [N, 3, 3], columns are the axes
        idx = self.log_scales.detach().argmin(dim=-1)
        axis = R.gather(2, idx[:, None, None].expand(-1, 3, 1))[..., 0]  # [N, 3]
        to_cam = cam_pos[:, None, :] - self.means[None].detach()
        sign = torch.where((axis[None] * to_cam).sum(-1, keepdim=True) >= 0, 1.0, -1.0)
        return axis[None] * sign

    # -- rendering -------------------------------------------------------------------------------------
    def render(self, cams: Cameras, shading: Shading) -> RenderOut:
        """Render B views [B, *, H, W] with the tile-binned splatter."""
        c = self.cfg
        B, H, W = len(cams), cams.height, cams.width
        pos = cams.position
        albedo = self.colors(pos)
        if albedo.dim() == 2:
            albedo = albedo[None].expand(B, -1, -1)
        dist = (self.means[None] - pos[:, None, :]).norm(dim=-1, keepdim=True)
        feats = torch.cat([albedo, self.normals(pos), dist], dim=-1)  # [B, N, 7]
        opac = torch.sigmoid(self.opacity_logits)
        img, alpha = rasterization(self.means, self.quats, torch.exp(self.log_scales), opac, feats,
                                   cams.w2c(), cams.focal(), W, H, tile_size=c.tile_size)
        a = alpha.clamp(0.0, 1.0).reshape(B, H * W, 1)
        img = img.reshape(B, H * W, 7)
        n_raw = img[..., 3:6]
        covered = a > c.normal_min_alpha
        normal = torch.where(covered, n_raw / n_raw.norm(dim=-1, keepdim=True).clamp(min=1e-6), torch.zeros_like(n_raw))
        base = (img[..., 0:3] / a.clamp(min=1e-6)).clamp(0.0, 1.0)
        bg = torch.tensor(c.background, dtype=a.dtype, device=a.device)
        rgb = shade(base, normal, shading) * a + bg * (1.0 - a)

        terms: dict[str, Tensor] = {}
        if c.scale_weight > 0:
            terms["scale"] = c.scale_weight * torch.exp(self.log_scales).amax(dim=-1).mean()
        if c.opacity_weight > 0:
            terms["opacity"] = c.opacity_weight * opacity_entropy(opac)
        if c.sparsity_weight > 0:
            terms["sparsity"] = c.sparsity_weight * opacity_sparsity(a)

        def out(x: Tensor) -> Tensor:  # [B, H*W, C] -> [B, C, H, W]
            return x.view(B, H, W, -1).permute(0, 3, 1, 2).contiguous()

        return RenderOut(rgb=out(rgb.clamp(0.0, 1.0)), alpha=out(a), depth=out(img[..., 6:7].clamp(min=0.0)),
                         normal=out(normal * a), albedo=out((img[..., 0:3] + bg * (1.0 - a)).clamp(0.0, 1.0)),
                         terms=terms)

    # -- the per-step protocol -------------------------------------------------------------------------
    def after_backward(self, step: int) -> None:
        """Record the mean-gradient statistics, Adam step, zero the gradients, then densify/prune on schedule."""
        c = self.cfg
        if self.means.grad is not None:
            self._grad_sum += self.means.grad.detach().norm(dim=-1).cpu()
            self._grad_count += 1
        super().after_backward(step)
        self._voxel_cache.clear()
        until = c.densify_until * self.total_steps
        if c.densify_from <= step < until and step > 0 and step % c.densify_every == 0:
            self.densify_and_prune()

    @torch.no_grad()
    def densify_and_prune(self) -> None:
        """Clone / split the Gaussians with the largest mean gradients, then drop the transparent ones."""
        c = self.cfg
        N = self.count
        dev = self.means.device
        grad = self._grad_sum / max(self._grad_count, 1)
        k = min(int(c.densify_fraction * N), max(c.max_gaussians - N, 0))
        rows = torch.arange(N, device=dev)
        fresh = torch.zeros(N, dtype=torch.bool, device=dev)
        vals = {n: getattr(self, n).detach() for n in PARAMS}
        if k > 0:
            pick = torch.topk(grad, k).indices.to(dev)
            scales = torch.exp(vals["log_scales"][pick])
            big = scales.amax(-1) > c.split_scale
            new = {n: v[pick].clone() for n, v in vals.items()}
            # split: two samples of the parent's distribution, both smaller; clone: an identical copy
            R = quat_to_rotmat(vals["quats"][pick])
            offset = (R @ (torch.randn(k, 3, 1, device=dev) * scales[..., None]))[..., 0]
            new["means"] = torch.where(big[:, None], new["means"] + offset, new["means"])
            shrink = torch.where(big, math.log(1.6), 0.0)[:, None]
            new["log_scales"] = new["log_scales"] - shrink
            vals["log_scales"] = vals["log_scales"].clone()
            vals["log_scales"][pick] -= shrink
            vals["means"] = vals["means"].clone()
            vals["means"][pick] -= torch.where(big[:, None], offset, torch.zeros_like(offset))
            vals = {n: torch.cat([vals[n], new[n]]) for n in PARAMS}
            rows = torch.cat([rows, pick])
            fresh = torch.cat([fresh, torch.ones(k, dtype=torch.bool, device=dev)])
        keep = torch.sigmoid(vals["opacity_logits"]) >= c.prune_opacity
        if not bool(keep.any()):
            keep[torch.argmax(vals["opacity_logits"])] = True
        self._reindex({n: v[keep] for n, v in vals.items()}, rows[keep], fresh[keep])

    @torch.no_grad()
    def _reindex(self, values: dict[str, Tensor], rows: Tensor, fresh: Tensor) -> None:
        """Replace the parameters by `values`; Adam moments follow `rows` (old row of each new one), 0 if fresh."""
        old = {n: self.optimizer.state.get(getattr(self, n), {}) for n in PARAMS}
        self._set(values)
        self.optimizer = self._make_optimizer()
        for n in PARAMS:
            p = getattr(self, n)
            state = {}
            for key, v in old[n].items():
                if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == len(self._grad_sum):
                    moved = v[rows.to(v.device)].clone()
                    moved[fresh.to(v.device)] = 0
                    state[key] = moved
                else:
                    state[key] = v.clone() if torch.is_tensor(v) else v
            if state:
                self.optimizer.state[p] = state
        self._grad_sum = torch.zeros(self.count)
        self._grad_count = 0

    def state_tensors(self) -> dict[str, Tensor]:
        """Parameters, Adam moments and the densification statistics gathered since the last densify (so a
        resumed run densifies the same Gaussians as an uninterrupted one)."""
        return {**super().state_tensors(), "densify.grad_sum": self._grad_sum.clone(),
                "densify.grad_count": torch.tensor(self._grad_count)}

    def load_state_tensors(self, state: dict[str, Tensor]) -> None:
        """Resize every parameter to the saved count first (densification changes it), then load. Checkpoints
        without densification statistics (written before they were saved) start them from zero."""
        n = state["model.means"].shape[0]
        if n != self.count:
            self._set({k: torch.zeros_like(state[f"model.{k}"]) for k in PARAMS})
            self.optimizer = self._make_optimizer()
        super().load_state_tensors(state)
        self._grad_sum = state["densify.grad_sum"].float().cpu().clone() if "densify.grad_sum" in state else torch.zeros(n)
        self._grad_count = int(state["densify.grad_count"]) if "densify.grad_count" in state else 0

    # -- fields ----------------------------------------------------------------------------------------
    def _precisions(self) -> Tensor:
        """[N, 3, 3] inverse covariances."""
        cov = covariance_3d(self.quats, torch.exp(self.log_scales))
        return torch.linalg.inv(cov + 1e-10 * torch.eye(3))

    def _kernel(self, points: Tensor, prec: Tensor) -> Tensor:
        """points [Q, 3] -> [Q, N] opacity * exp(-d^T P d / 2) of every Gaussian."""
        d = points[:, None, :] - self.means[None]
        quad = torch.einsum("qni,nij,qnj->qn", d, prec, d)
        return torch.sigmoid(self.opacity_logits)[None] * torch.exp(-0.5 * quad)

    def density(self, points: Tensor, chunk: int = 1024) -> Tensor:
        """[Q, 3] -> [Q] sum of the Gaussians' opacity-weighted kernels (an occupancy-like density)."""
        prec = self._precisions()
        parts = [self._kernel(points[s:s + chunk], prec).sum(1) for s in range(0, len(points), chunk)]
        return torch.cat(parts) if parts else points.new_zeros(0)

    def albedo_at(self, points: Tensor, chunk: int = 1024, grid_above: int = 16384) -> Tensor:
        """[Q, 3] -> [Q, 3] kernel-weighted mean albedo of the Gaussians (grey where none reaches).

        Exact (every point against every Gaussian) for small queries or when gradients are needed; for more
        than `grid_above` points without grad (a texture bake: ~10^6 texels) it samples the same weighted mean
        voxelised on a 128³ grid, trilinearly (gaussian_field.py; the grid is cached until a parameter changes):
        43 s -> ~2 s for a 1024² bake of 4k Gaussians."""
        if len(points) > grid_above and not torch.is_grad_enabled():
            return sample_albedo(self._voxels(128)[1], points, self.cfg.bound)
        prec, col = self._precisions(), self.colors()
        out = []
        for s in range(0, len(points), chunk):
            k = self._kernel(points[s:s + chunk], prec)
            out.append((k @ col + 0.5 * 1e-6) / (k.sum(1, keepdim=True) + 1e-6))
        return torch.cat(out) if out else points.new_zeros(0, 3)

    @torch.no_grad()
    def voxelize(self, resolution: int, max_half_width: int = 6) -> tuple[Tensor, Tensor]:
        """(density [G, G, G], albedo [G, G, G, 3]) on the G = resolution + 1 vertices of the box: these
        Gaussians through gaussian_field.voxelize (each on the vertices within 3 sigma of its mean)."""
        return voxelize(self.means, self._precisions(), torch.sigmoid(self.opacity_logits), self.colors(),
                        torch.exp(self.log_scales).amax(-1), self.cfg.bound, resolution, max_half_width)

    def _voxels(self, resolution: int) -> tuple[Tensor, Tensor]:
        """voxelize(resolution), cached until a parameter changes (a bake and a mesh extraction share it)."""
        params = (self.means, self.log_scales, self.quats, self.opacity_logits, self.sh_dc)
        return self._voxel_cache.get(resolution, params, lambda: self.voxelize(resolution))

    @torch.no_grad()
    def init_from(self, source: Representation) -> None:
        """Gaussians where the source is dense: num_init cells of a 64^3 grid drawn in proportion to their
        opacity, one Gaussian per cell (jittered), coloured with the source's albedo."""
        c = self.cfg
        R = 64
        h = 2.0 * c.bound / R
        axis = -c.bound + (torch.arange(R, dtype=torch.float32) + 0.5) * h
        pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
        dev = self.means.device
        dens = source.density(pts.to(dev)).float().cpu().clamp(min=0)
        alpha = -torch.expm1(-dens * h)
        if float(alpha.max()) < 1e-3:
            raise NotImplementedError("the source run's scene is empty; nothing to initialise from")
        weights = torch.where(alpha > 0.05 * float(alpha.max()), alpha, torch.zeros_like(alpha))
        n = min(c.num_init, int((weights > 0).sum()))
        cells = torch.multinomial(weights, n, replacement=False)
        means = pts[cells] + (torch.rand(n, 3) - 0.5) * h
        albedo = source.albedo_at(means.to(dev)).float().cpu().clamp(0, 1)
        self._set({k: v.to(dev) for k, v in self._fresh(means, albedo, 0.5 * h).items()})
        self.optimizer = self._make_optimizer()
        self._grad_sum = torch.zeros(n)
        self._grad_count = 0

    def extract_mesh(self, resolution: int = 128) -> Mesh:
        """Density grid from the Gaussians -> level chosen from the renders -> marching cubes, coloured."""
        from .extract import DensityVolume, choose_level, marching_cubes

        dens, albedo = self._voxels(resolution)
        volume = DensityVolume(dens, float(self.cfg.bound))
        level, _ = choose_level(self, None, volume)
        if level is None:
            return Mesh.empty()
        mesh = marching_cubes(volume, level)
        if not mesh.is_empty:
            col = sample_albedo(albedo, torch.from_numpy(mesh.vertices).float(), self.cfg.bound)
            mesh.colors = col.clamp(0.0, 1.0).numpy().astype("float32")
        return mesh


__all__ = ["GaussiansConfig", "Gaussians", "SH_C0", "SH_C1"]
