"""The optimiser every representation uses, and its state as flat tensors (for checkpoints)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def adam(groups: list[dict]) -> torch.optim.Adam:
    """Adam over parameter `groups` (each {"params": [...], "lr": ...}) with the representations' settings:
    betas (0.9, 0.99), eps 1e-15 (Instant-NGP's), and one fused kernel for all parameters where this torch has it."""
    return torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15, **_kernel_flags())


def _kernel_flags() -> dict[str, bool]:
    """fused=True where this torch supports it, else foreach."""
    try:
        torch.optim.Adam([nn.Parameter(torch.zeros(1))], fused=True)
        return {"fused": True}
    except (RuntimeError, TypeError, ValueError):
        return {"foreach": True}


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, Tensor]:
    """The optimiser's per-parameter state as tensors named "group.param.key" (scalars become 0-d tensors)."""
    out: dict[str, Tensor] = {}
    for gi, group in enumerate(opt.param_groups):
        for pi, p in enumerate(group["params"]):
            for k, v in opt.state.get(p, {}).items():
                t = v if torch.is_tensor(v) else torch.tensor(float(v))
                out[f"{gi}.{pi}.{k}"] = t.detach().clone().contiguous()
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, flat: dict[str, Tensor]) -> None:
    """Inverse of `optimizer_tensors`: put the saved state back onto the optimiser's parameters."""
    for key, v in flat.items():
        gi, pi, k = key.split(".", 2)
        p = opt.param_groups[int(gi)]["params"][int(pi)]
        opt.state.setdefault(p, {})[k] = v.clone()


__all__ = ["adam", "optimizer_tensors", "load_optimizer_tensors"]
