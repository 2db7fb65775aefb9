"""Variational Score Distillation (ProlificDreamer): g = w(t)·(ε̂_pretrained(x_t, t, y) − ε_lora(x_t, t, y, c)).

SDS compares the guided prediction with the noise it added; VSD compares it with the prediction of a second
noise predictor that is fitted, online, to the renders of the current scene: ε_lora = the frozen UNet + LoRA
adapters on every attention projection + a camera embedding (an MLP from the flattened camera-to-world matrix
c, added to the timestep embedding through the UNet's class-embedding slot). Each step:
  1. distillation: x_t = add_noise(x0, ε, t); ε̂ = CFG(ε_c, ε_u) of the pretrained UNet (adapters off);
     ε_lora(x_t, t, y, c) with adapters and camera on (no CFG: guidance_scale_lora = 1);
     g = w(t)·(ε̂ − ε_lora), w = 1 − ᾱ_t.
  2. LoRA step (own AdamW, the run loop never sees it): on x0.detach(), fresh t ~ U{0..T−1} and fresh noise,
     MSE between the adapted UNet's raw output and its training target (ε, or v for v-prediction models),
     with the camera condition zeroed for a random 10% of the images.

Cost per step: 2 (pretrained CFG) + 1 (ε_lora) UNet evaluations of the batch, plus one forward AND backward of
the adapted UNet for the LoRA step (about 3 more evaluations' time).

Choices where the paper is silent (noted so they can be changed): the camera MLP's output layer and the LoRA
up-projections start at zero, so ε_lora starts as the pretrained conditional prediction; the adapters are
trained on the per-view prompt the run passes as `cond` (threestudio uses the view-independent prompt there; the
camera embedding carries the view either way).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillation.base import Distillation, DistillationConfig, LossOut, TextEmbeds, gradient_loss
from distillation.guidance import cfg_combine
from distillation.schedule import (Ramp, Weighting, at_step, check_timestep_range, check_weighting, sample_timesteps,
                                   weight)

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
"""The attention projections that get a LoRA adapter (every attention processor of the UNet)."""

_ADAPTER_IDS = itertools.count()


@dataclass
class VSDConfig(DistillationConfig):
    """Variational Score Distillation (ProlificDreamer, Wang et al. 2023)."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"t_min": (0.0, 1.0), "t_max": (0.0, 1.0),
        "lora_rank": (1, 256), "lora_lr": (1e-08, 1.0), "camera_dropout": (0.0, 1.0)}
    # the allowed range of each number (studio/limits.py checks them before a run starts)

    kind: str = "vsd"
    """Registry key."""
    guidance_scale: float = 7.5
    """CFG scale s of the pretrained prediction ε̂ = ε_u + s·(ε_c − ε_u) (ProlificDreamer: 7.5)."""
    t_min: float = 0.02
    """Lowest sampled timestep of the distillation term, as a fraction of num_train_timesteps."""
    t_max: Ramp = field(default_factory=lambda: Ramp(0.98, 0.5, 0, -1))
    """Highest sampled timestep (fraction), annealed (threestudio: 0.98, then 0.5 from step 5000 of 25000)."""
    weighting: Weighting = "sds"
    """Timestep weighting w(t) (schedule.WEIGHTINGS); "sds" = 1 − ᾱ_t is the paper's."""
    lora_rank: int = 4
    """Rank of the LoRA adapters on every attention projection (to_q, to_k, to_v, to_out)."""
    lora_lr: float = 1e-4
    """AdamW learning rate of the LoRA adapters and the camera embedding."""
    camera_dropout: float = 0.1
    """Probability of training the LoRA step on an image with its camera condition zeroed."""

    def __post_init__(self) -> None:
        check_weighting(self.weighting)
        check_timestep_range("vsd", self.t_min, self.t_max)
        if self.lora_rank < 1 or not self.lora_lr > 0:
            raise ValueError("vsd.lora_rank must be >= 1 and vsd.lora_lr > 0")
        if not 0.0 <= self.camera_dropout <= 1.0:
            raise ValueError(f"vsd.camera_dropout must be in [0, 1] (got {self.camera_dropout})")


class CameraEmbedding(nn.Module):
    """Flattened camera-to-world matrix [B, 16] -> [B, D] added to the UNet's timestep embedding (D = its width).

    Linear(16, D) -> SiLU -> Linear(D, D); the output layer starts at zero (no effect until trained).
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, width), nn.SiLU(), nn.Linear(width, width))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, cameras: Tensor) -> Tensor:
        """cameras [B, 16] (any float dtype) -> [B, D] in this module's dtype."""
        return self.net(cameras.to(self.net[0].weight.dtype))


class VSD(Distillation):
    """ProlificDreamer's VSD. Adds a LoRA adapter to the guidance UNet (active only inside this loss's own passes;
    everyone else sees the pretrained model) and owns its camera embedding and optimizer."""

    Config = VSDConfig

    def __init__(self, cfg: VSDConfig, guidance, total_steps: int) -> None:
        super().__init__(cfg, guidance, total_steps)
        from peft import LoraConfig

        width = guidance.class_embedding_width
        if width is None:
            raise ValueError("vsd needs a guidance UNet without its own class embedding (the camera embedding "
                             "takes that slot); use another distillation with this model")
        self.adapter = f"vsd{next(_ADAPTER_IDS)}"  # unique per guidance: several VSDs (tests) each get their own
        lora = guidance.add_adapter(self.adapter, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_rank,
                                                             init_lora_weights=True, target_modules=LORA_TARGETS))
        self.lora_names, self.lora_params = list(lora), list(lora.values())
        self.camera = CameraEmbedding(width).to(guidance.device)
        params = self.lora_params + list(self.camera.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lora_lr)

    def adapted(self):
        """Context: the guidance UNet is ε_lora within (this loss's adapters on, camera embedding attached)."""
        return self.guidance.adapter(self.adapter, class_embedding=self.camera)

    def timesteps(self, batch: int, step: int) -> Tensor:
        """[batch] long t ~ U[t_min, t_max(step)] for the distillation term."""
        t_max = at_step(self.cfg.t_max, step, self.total_steps)
        g = self.guidance
        return sample_timesteps(batch, self.cfg.t_min, t_max, g.num_train_timesteps, device=g.device)

    def forward(self, images: Tensor, cond: TextEmbeds, uncond: TextEmbeds, c2w: Tensor, step: int) -> LossOut:
        """images [B, 3, H, W] in [0, 1], c2w [B, 4, 4]; loss whose gradient on the latents x0 is
        w(t)·(ε̂ − ε_lora) / B. Also takes one optimizer step of the LoRA on the detached latents."""
        g, cfg = self.guidance, self.cfg
        x0 = g.encode_images(images)  # [B, C, h, w], differentiable
        b = x0.shape[0]
        cameras = c2w.reshape(b, 16).to(g.device)
        t = self.timesteps(b, step)
        with torch.no_grad():
            noise = torch.randn_like(x0)
            x_t = g.add_noise(x0.detach(), noise, t)
            eps_c, eps_u = g.predict_eps_cfg(x_t, t, cond, uncond)
            eps_hat = cfg_combine(eps_c.float(), eps_u.float(), cfg.guidance_scale)
            with self.adapted():
                eps_lora = g.predict_eps(x_t, t, cond, class_labels=cameras)
            w = weight(cfg.weighting, g.alphas_cumprod[t].float()).view(b, 1, 1, 1)
            grad = torch.nan_to_num(w * (eps_hat - eps_lora.float()))
        lora_loss = self.train_lora(x0.detach(), cond, cameras)
        loss = gradient_loss(x0, grad)
        logs = {
            "t": (t.float().mean() / g.num_train_timesteps).item(),
            "grad_norm": grad.flatten(1).norm(dim=1).mean().item(),
            "lora_loss": lora_loss,
            "unet_evals": 4.0,
        }
        return LossOut(loss=loss, logs=logs)

    def train_lora(self, x0: Tensor, cond: TextEmbeds, cameras: Tensor) -> float:
        """One AdamW step of the adapters + camera embedding on detached latents x0 [B, C, h, w] with cameras
        [B, 16]: fresh t ~ U{0..T−1}, fresh noise, camera zeroed with p = camera_dropout; returns the MSE."""
        g = self.guidance
        b = x0.shape[0]
        t = sample_timesteps(b, 0.0, 1.0, g.num_train_timesteps, device=g.device)
        noise = torch.randn_like(x0)
        x_t = g.add_noise(x0, noise, t)
        keep = (torch.rand(b, device=cameras.device) >= self.cfg.camera_dropout).to(cameras.dtype)
        with torch.enable_grad(), self.adapted():
            out = g.model_output(x_t, t, cond, class_labels=cameras * keep[:, None])
            loss = F.mse_loss(out.float(), g.training_target(x0, noise, t))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    # ---- checkpoint state ---------------------------------------------------------------------------------
    def _params(self) -> dict[str, Tensor]:
        """Every trainable tensor under a stable name (independent of this instance's adapter name)."""
        named = {"lora." + n.replace(f".{self.adapter}.", ".vsd."): p for n, p in zip(self.lora_names, self.lora_params)}
        named |= {"camera." + n: p for n, p in self.camera.named_parameters()}
        return named

    def state_tensors(self) -> dict[str, Tensor]:
        """LoRA weights, camera embedding and the AdamW moments, so a resumed run continues where it stopped."""
        state = {name: p.detach() for name, p in self._params().items()}
        for name, p in self._params().items():
            for key, value in self.optimizer.state.get(p, {}).items():
                state[f"optim.{key}.{name}"] = torch.as_tensor(value).detach()
        return state

    def load_state_tensors(self, state: dict[str, Tensor]) -> None:
        """Inverse of `state_tensors`; KeyError naming the first missing tensor."""
        with torch.no_grad():
            for name, p in self._params().items():
                p.copy_(state[name].to(p.device, p.dtype))
                moments = {k.split(".", 2)[1]: v for k, v in state.items()
                           if k.startswith("optim.") and k.split(".", 2)[2] == name}
                if moments:
                    self.optimizer.state[p] = {k: v.clone() if k == "step" else v.to(p.device).clone()  # step stays on the CPU
                                               for k, v in moments.items()}
