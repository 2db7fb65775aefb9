"""`Guidance`: a frozen diffusers text-to-image model behind a handful of primitives. No losses here.

Families: "sd" (Stable Diffusion 1.x / 2.x, epsilon- or v-prediction) and "sdxl" (two text encoders).
Every primitive works on latents `[B, C, h, w]` and integer timesteps `[B]` (long) in
[0, num_train_timesteps); `ddim_move` / `predict_x0` also accept t = -1, meaning "clean" (ᾱ = 1).
"""
from __future__ import annotations

import inspect
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillation.base import TextEmbeds


class GuidanceLoadError(ValueError):
    """The guidance model could not be found or read; the message says what to do."""


def cfg_combine(eps_cond: Tensor, eps_uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance, THE convention of this project (diffusers'): ε_u + s·(ε_c − ε_u).

    threestudio's SDS uses ε_c + s'·(ε_c − ε_u), i.e. s = s' + 1: its guidance_scale 100 is 101 here.
    """
    return eps_uncond + scale * (eps_cond - eps_uncond)


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """None / "auto" -> fp16 on CUDA, fp32 elsewhere; also "fp32" / "fp16" / "bf16" or "float32" / "float16" /
    "bfloat16" (GuidanceConfig.dtype) or a torch.dtype. GuidanceLoadError for any other name."""
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
             "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype not in names:
        raise GuidanceLoadError(f"unknown dtype {dtype!r}; use one of fp32, fp16, bf16")
    return names[dtype]


class Guidance:
    """A frozen (eval, requires_grad False) diffusion model. Build with `from_pretrained` or `tiny_guidance`.

    Not an nn.Module on purpose: a Distillation that keeps a reference to it must not checkpoint its weights.
    """

    def __init__(self, *, unet, vae, text_encoders: list, tokenizers: list, scheduler_config: dict,
                 device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None,
                 zero_empty_prompt: bool = False, sample_latents: bool = False) -> None:
        """text_encoders / tokenizers: one (SD) or two (SDXL: CLIPTextModel, CLIPTextModelWithProjection).
        scheduler_config: any diffusers scheduler config (betas and prediction_type are read from it).
        zero_empty_prompt: encode "" as zeros (diffusers' SDXL `force_zeros_for_empty_prompt`).
        sample_latents: encode_images samples the VAE posterior instead of taking its mean."""
        from diffusers import DDIMScheduler

        if len(text_encoders) not in (1, 2) or len(tokenizers) != len(text_encoders):
            raise GuidanceLoadError("Guidance needs one text encoder + tokenizer (SD) or two (SDXL)")
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.family = "sd" if len(text_encoders) == 1 else "sdxl"
        known = inspect.signature(DDIMScheduler.__init__).parameters
        sched = DDIMScheduler.from_config({k: v for k, v in scheduler_config.items() if k in known})
        self.prediction_type: str = sched.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise GuidanceLoadError(f"prediction_type {self.prediction_type!r} is not supported; "
                                    "use an epsilon- or v_prediction model")
        self.num_train_timesteps: int = sched.config.num_train_timesteps
        self.alphas_cumprod: Tensor = sched.alphas_cumprod.to(self.device, torch.float32)
        # The SDXL VAE overflows in fp16 (config force_upcast): keep it in fp32 then.
        upcast = self.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        self.vae_dtype = torch.float32 if upcast else self.dtype
        self.unet = _place(unet, self.device, self.dtype)
        self.vae = _place(vae, self.device, self.vae_dtype)
        self.text_encoders = [_place(enc, self.device, self.dtype) for enc in text_encoders]
        self.tokenizers = list(tokenizers)
        for module in [self.unet, self.vae, *self.text_encoders]:
            module.requires_grad_(False).eval()
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.native_resolution: int = unet.config.sample_size * self.vae_scale_factor
        self.latent_channels: int = vae.config.latent_channels
        self.zero_empty_prompt = zero_empty_prompt
        self.sample_latents = sample_latents
        self._text_cache: dict[str, tuple[Tensor, Tensor | None]] = {}

    def to_device(self, device: str | torch.device) -> "Guidance":
        """Move every component, the schedule and the text cache to `device` (dtype kept); returns self."""
        self.device = torch.device(device)
        for module in [self.unet, self.vae, *self.text_encoders]:
            module.to(self.device)
        self.alphas_cumprod = self.alphas_cumprod.to(self.device)
        self._text_cache = {k: (h.to(self.device), None if p is None else p.to(self.device))
                            for k, (h, p) in self._text_cache.items()}
        return self

    # convenient names for the components
    @property
    def text_encoder(self):
        return self.text_encoders[0]

    @property
    def tokenizer(self):
        return self.tokenizers[0]

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str | torch.device = "cpu",
                        dtype: torch.dtype | str | None = None, sample_latents: bool = False) -> "Guidance":
        """Load a diffusers SD / SDXL pipeline folder or hub id (cached, or downloaded when online).

        GuidanceLoadError (one line, with the fix) when the model is missing, incomplete or unsupported.
        """
        folder = _locate(str(name_or_path))
        index = _read_model_index(folder)
        family = "sdxl" if index.get("text_encoder_2") else "sd"
        if not index.get("text_encoder") or not index.get("unet"):
            raise GuidanceLoadError(f"{folder} ({index.get('_class_name', '?')}) is not a text-to-image SD / SDXL "
                                    "pipeline (needs unet and text_encoder); SDXL refiners are not supported")
        pieces = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]
        pieces += ["text_encoder_2", "tokenizer_2"] if family == "sdxl" else []
        for piece in pieces:
            if not (folder / piece).is_dir():
                raise GuidanceLoadError(f"{folder} is incomplete: the {piece}/ folder is missing")
        torch_dtype = resolve_dtype(dtype, torch.device(device))
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        def load(piece: str, loader):
            if piece in _WEIGHTED:
                _check_safetensors(folder / piece)
            try:
                return loader(folder / piece)
            except Exception as err:  # noqa: BLE001  (missing / corrupt / mismatched files: one line, no traceback)
                reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
                raise GuidanceLoadError(f"could not load {piece}/ from {folder}: {type(err).__name__}: {reason}; "
                                        "re-download or re-save the model") from None

        # use_safetensors: never unpickle a .bin (pickle runs code); a folder with only .bin fails in
        # _check_safetensors with the fix
        unet = load("unet", lambda p: UNet2DConditionModel.from_pretrained(p, torch_dtype=torch_dtype,
                                                                           use_safetensors=True))
        vae = load("vae", lambda p: AutoencoderKL.from_pretrained(p, torch_dtype=torch_dtype, use_safetensors=True))
        encoders = [load("text_encoder", lambda p: CLIPTextModel.from_pretrained(p, dtype=torch_dtype,
                                                                                use_safetensors=True))]
        tokenizers = [load("tokenizer", CLIPTokenizer.from_pretrained)]
        if family == "sdxl":
            encoders.append(load("text_encoder_2", lambda p: CLIPTextModelWithProjection.from_pretrained(
                p, dtype=torch_dtype, use_safetensors=True)))
            tokenizers.append(load("tokenizer_2", CLIPTokenizer.from_pretrained))
        scheduler_config = load("scheduler", lambda p: json.loads((p / "scheduler_config.json").read_text()))
        return cls(unet=unet, vae=vae, text_encoders=encoders, tokenizers=tokenizers,
                   scheduler_config=scheduler_config, device=device, dtype=torch_dtype,
                   zero_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", False)),
                   sample_latents=sample_latents)

    # ---- text -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> TextEmbeds:
        """hidden [B, L, D] (+ pooled [B, P] for SDXL) for B prompts; memoised per string."""
        if isinstance(prompts, str):
            raise TypeError("encode_text takes a list of prompts, e.g. encode_text([prompt])")
        if not prompts:
            raise ValueError("encode_text needs at least one prompt (use [\"\"] for the unconditional one)")
        missing = list(dict.fromkeys(p for p in prompts if p not in self._text_cache))
        if missing:
            hidden, pooled = self._encode_uncached(missing)
            for i, prompt in enumerate(missing):
                self._text_cache[prompt] = (hidden[i], None if pooled is None else pooled[i])
        rows = [self._text_cache[p] for p in prompts]
        pooled = None if rows[0][1] is None else torch.stack([r[1] for r in rows])
        return TextEmbeds(hidden=torch.stack([r[0] for r in rows]), pooled=pooled)

    def _encode_uncached(self, prompts: list[str]) -> tuple[Tensor, Tensor | None]:
        """([N, L, D], [N, P] or None) for N distinct prompts."""
        if self.family == "sd":
            ids = self._token_ids(self.tokenizers[0], self.text_encoders[0], prompts)
            return self.text_encoders[0](ids).last_hidden_state, None
        hidden, pooled = _sdxl_text(self, prompts)
        if self.zero_empty_prompt:
            empty = torch.tensor([p == "" for p in prompts], device=self.device)
            hidden = torch.where(empty[:, None, None], torch.zeros_like(hidden), hidden)
            pooled = torch.where(empty[:, None], torch.zeros_like(pooled), pooled)
        return hidden, pooled

    def _token_ids(self, tokenizer, encoder, prompts: list[str]) -> Tensor:
        """[N, L] ids padded / truncated to the encoder's context length (77 for CLIP)."""
        length = encoder.config.max_position_embeddings
        batch = tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        return batch.input_ids.to(self.device)

    def clear_text_cache(self) -> None:
        self._text_cache.clear()

    # ---- images <-> latents -----------------------------------------------------------------------------
    def encode_images(self, images: Tensor) -> Tensor:
        """images [B, 3, H, W] in [0, 1] -> latents [B, C, h, w] (differentiable), h = native_resolution / f."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"encode_images expects [B, 3, H, W] images, got shape {tuple(images.shape)}")
        size = self.native_resolution
        x = images.to(self.device, self.vae_dtype)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        dist = self.vae.encode(x * 2.0 - 1.0).latent_dist
        latents = dist.sample() if self.sample_latents else dist.mean
        return (latents * self.vae.config.scaling_factor).to(self.dtype)

    def decode_latents(self, latents: Tensor) -> Tensor:
        """latents [B, C, h, w] -> images [B, 3, H, W] in [0, 1] (differentiable inside the range)."""
        x = (latents / self.vae.config.scaling_factor).to(self.vae_dtype)
        return (self.vae.decode(x).sample.float() * 0.5 + 0.5).clamp(0.0, 1.0)

    # ---- noise schedule ---------------------------------------------------------------------------------
    def alpha_bar(self, t: Tensor) -> Tensor:
        """ᾱ_t [B] float32 for integer t [B]; t < 0 means clean (ᾱ = 1)."""
        t = t.to(self.device)
        a = self.alphas_cumprod[t.clamp(min=0).long()]
        return torch.where(t < 0, torch.ones_like(a), a)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·noise; x0, noise [B, C, h, w], t [B] long."""
        a = _expand(self.alpha_bar(t), x0)
        return (a.sqrt() * x0.float() + (1 - a).sqrt() * noise.float()).to(x0.dtype)

    def predict_x0(self, x_t: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """x0 estimate (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t; [B, C, h, w]."""
        a = _expand(self.alpha_bar(t), x_t)
        return ((x_t.float() - (1 - a).sqrt() * eps.float()) / a.sqrt()).to(x_t.dtype)

    def ddim_move(self, x: Tensor, eps: Tensor, t_from: Tensor, t_to: Tensor) -> Tensor:
        """Deterministic DDIM (eta 0) jump x_{t_from} -> x_{t_to} keeping ε fixed: √ᾱ_to·x0 + √(1−ᾱ_to)·ε.

        t_to < t_from denoises, t_to > t_from inverts; x, eps [B, C, h, w], t_from / t_to [B] long.
        """
        x0 = self.predict_x0(x, eps, t_from)
        return self.add_noise(x0, eps, t_to)

    # ---- noise prediction -------------------------------------------------------------------------------
    def model_output(self, x_t: Tensor, t: Tensor, embeds: TextEmbeds, class_labels: Tensor | None = None) -> Tensor:
        """The UNet's raw output [B, C, h, w] for x_t [B, C, h, w] at t [B] (ε or v, per `prediction_type`).

        Gradients flow if the caller allows them (no implicit no_grad). embeds with one row are broadcast.
        class_labels [B, K]: passed to the UNet's class embedding (only meaningful if one is attached, e.g. VSD's
        camera embedding).
        """
        b = x_t.shape[0]
        t = t.to(self.device).long().expand(b) if t.ndim == 0 else t.to(self.device).long()
        hidden, pooled = _batch_embeds(embeds, b)
        added = None
        if self.family == "sdxl":
            if pooled is None:
                raise ValueError("SDXL guidance needs TextEmbeds.pooled; build embeds with Guidance.encode_text")
            size = float(self.native_resolution)
            time_ids = torch.tensor([size, size, 0.0, 0.0, size, size], device=self.device, dtype=self.dtype)
            added = {"text_embeds": pooled.to(self.device, self.dtype), "time_ids": time_ids.expand(b, 6)}
        if class_labels is not None:
            class_labels = class_labels.to(self.device)  # the class embedding casts to its own dtype
        return self.unet(x_t.to(self.device, self.dtype), t, encoder_hidden_states=hidden.to(self.device, self.dtype),
                         class_labels=class_labels, added_cond_kwargs=added).sample

    def predict_eps(self, x_t: Tensor, t: Tensor, embeds: TextEmbeds, class_labels: Tensor | None = None) -> Tensor:
        """ε [B, C, h, w] predicted for x_t [B, C, h, w] at t [B] (v-prediction converted to ε).

        Gradients flow if the caller allows them (no implicit no_grad). embeds with one row are broadcast.
        """
        out = self.model_output(x_t, t, embeds, class_labels)
        if self.prediction_type == "v_prediction":
            t = t.expand(x_t.shape[0]) if t.ndim == 0 else t
            a = _expand(self.alpha_bar(t), out)
            out = a.sqrt() * out.float() + (1 - a).sqrt() * x_t.float().to(out.device)
        return out.to(x_t.dtype)

    def training_target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What `model_output` is trained to predict for x_t = add_noise(x0, noise, t): the noise (epsilon models)
        or v = √ᾱ_t·noise − √(1−ᾱ_t)·x0 (v-prediction models); [B, C, h, w] float32."""
        if self.prediction_type == "epsilon":
            return noise.float()
        a = _expand(self.alpha_bar(t), x0)
        return a.sqrt() * noise.float() - (1 - a).sqrt() * x0.float()

    def predict_eps_cfg(self, x_t: Tensor, t: Tensor, cond: TextEmbeds, uncond: TextEmbeds,
                        class_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(ε_cond, ε_uncond), each [B, C, h, w], from ONE UNet pass over a batch of 2B."""
        b = x_t.shape[0]
        t = t.expand(b) if t.ndim == 0 else t
        hc, pc = _batch_embeds(cond, b)
        hu, pu = _batch_embeds(uncond, b)
        both = TextEmbeds(hidden=torch.cat([hc, hu]), pooled=None if pc is None else torch.cat([pc, pu]))
        labels = None if class_labels is None else torch.cat([class_labels, class_labels])
        eps = self.predict_eps(torch.cat([x_t, x_t]), torch.cat([t, t]), both, labels)
        return eps[:b], eps[b:]

    # ---- adapters (for losses that fine-tune a copy of the model, e.g. VSD's LoRA) ------------------------
    def add_adapter(self, name: str, lora_config) -> dict[str, Tensor]:
        """Add a LoRA adapter `name` (a peft LoraConfig) to the UNet, switched off: every pass outside
        `with self.adapter(name)` still sees the pretrained model. Returns the adapter's parameters {UNet parameter
        name: tensor}, in float32 even when the UNet runs in fp16; they take gradients inside `adapter(name)` only,
        and the caller trains them (its own optimizer, its own checkpoint state)."""
        with warnings.catch_warnings():  # several adapters on one UNet (e.g. two VSDs in tests) are intended
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            self.unet.add_adapter(lora_config, adapter_name=name)
        params = {n: p for n, p in self.unet.named_parameters() if f".{name}." in n}
        for p in params.values():
            p.data = p.data.float()
        self.unet.disable_adapters()
        return params

    @property
    def class_embedding_width(self) -> int | None:
        """Width D of the [B, D] output a `class_embedding` given to `adapter` must have (the UNet's timestep
        embedding width); None when the UNet has a class embedding of its own (the slot is taken)."""
        if getattr(self.unet, "class_embedding", None) is not None:
            return None
        return self.unet.time_embedding.linear_2.out_features

    @contextmanager
    def adapter(self, name: str, class_embedding: nn.Module | None = None) -> Iterator[None]:
        """Within: the UNet runs with adapter `name` (from `add_adapter`) on and, if given, `class_embedding`
        ([B, K] class_labels -> [B, class_embedding_width]) in its class-embedding slot; both off again on exit."""
        unet = self.unet
        if class_embedding is not None and self.class_embedding_width is None:
            raise ValueError("this UNet has a class embedding of its own; adapter() cannot attach another")
        unet.set_adapter(name)
        unet.enable_adapters()
        if class_embedding is not None:
            unet.class_embedding = class_embedding
        try:
            yield
        finally:
            unet.disable_adapters()
            if class_embedding is not None:
                unet.class_embedding = None


def _sdxl_text(g: Guidance, prompts: list[str]) -> tuple[Tensor, Tensor]:
    """SDXL text: both encoders' penultimate hidden states concatenated [N, L, D1 + D2]; pooled [N, P]
    is text_encoder_2's projected output."""
    hiddens, pooled = [], None
    for tokenizer, encoder in zip(g.tokenizers, g.text_encoders):
        out = encoder(g._token_ids(tokenizer, encoder, prompts), output_hidden_states=True)
        hiddens.append(out.hidden_states[-2])
        pooled = out[0]
    return torch.cat(hiddens, dim=-1), pooled


def _batch_embeds(embeds: TextEmbeds, b: int) -> tuple[Tensor, Tensor | None]:
    """(hidden [b, L, D], pooled [b, P] or None); one row broadcasts to b rows."""
    n = embeds.hidden.shape[0]
    if n not in (1, b):
        raise ValueError(f"text embeddings have {n} rows for a batch of {b} images; pass 1 or {b}")
    hidden = embeds.hidden.expand(b, -1, -1)
    pooled = None if embeds.pooled is None else embeds.pooled.expand(b, -1)
    return hidden, pooled


def _place(module, device: torch.device, dtype: torch.dtype):
    """Move to device; cast only when needed (diffusers warns on every dtype cast)."""
    module = module.to(device)
    return module if module.dtype == dtype else module.to(dtype)


def _expand(a: Tensor, like: Tensor) -> Tensor:
    """ᾱ [B] float32 -> [B, 1, 1, 1] on like's device (schedule math stays in float32)."""
    return a.view(-1, *([1] * (like.ndim - 1))).to(like.device)


_WEIGHTED = ("unet", "vae", "text_encoder", "text_encoder_2")
"""The pipeline's pieces with weights: loaded from safetensors only."""
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _check_safetensors(piece: Path) -> None:
    """GuidanceLoadError with the fix when the folder `piece` has pickle weights (.bin, ...) but no safetensors."""
    if not piece.is_dir() or any(p.suffix == ".safetensors" for p in piece.iterdir()):
        return
    pickles = sorted(p.name for p in piece.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise GuidanceLoadError(
            f"{piece} has only pickle weights ({pickles[0]}), which are not loaded (unpickling can run code); "
            "convert them to safetensors (load the folder and save_pretrained it: that writes .safetensors) "
            "or download the model's .safetensors files")


def _is_offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    return env or bool(constants.HF_HUB_OFFLINE)


def _locate(name: str) -> Path:
    """A local diffusers folder for `name` (a folder, or a hub id found in the cache or downloaded)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise GuidanceLoadError(f"{name} is a file; pass a diffusers pipeline folder (with model_index.json)")
    parts = name.split("/")
    looks_like_id = len(parts) <= 2 and all(parts) and not name.startswith((".", "~"))
    if not looks_like_id:
        raise GuidanceLoadError(f"model folder {name} does not exist; check the path")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001  (any miss in the cache means: not cached)
        pass
    if _is_offline():
        raise GuidanceLoadError(_not_found(name, "offline mode"))
    import diffusers

    verbosity = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()  # no "Couldn't connect to the Hub" lines beside our one
    try:
        return Path(diffusers.DiffusionPipeline.download(name, use_safetensors=True))  # no pickle .bin
    except Exception as err:  # noqa: BLE001  (network, auth, unknown repo: all end as one line)
        raise GuidanceLoadError(_download_error(name, err)) from None
    finally:
        diffusers.utils.logging.set_verbosity(verbosity)


def _not_found(name: str, problem: str = "no network") -> str:
    """The one line (< 200 characters for ids of ~20) for a hub id that is neither a folder nor cached and could
    not be downloaded for want of a network."""
    return (f"model {name!r} is neither a local folder nor in the local hub cache ({problem}); download it where "
            "there is network, pass a folder, or omit --model for the embedded one")


def _download_error(name: str, err: BaseException) -> str:
    """The one line for a failed hub download: no network, no such model, gated, or the error's first line."""
    chain, e = [], err
    while e is not None and len(chain) < 12:
        chain.append(e)
        e = e.__cause__ or e.__context__
    names = {cls.__name__ for c in chain for cls in type(c).__mro__}
    if "GatedRepoError" in names:
        return f"model {name!r} is gated on the hub: accept its licence there, then hf auth login; or omit --model"
    if "RepositoryNotFoundError" in names:
        return (f"model {name!r} is neither a local folder nor on the hub; check the id (private ones need hf auth "
                "login), pass a folder, or omit --model for the embedded one")
    if names & {"ConnectionError", "TimeoutError", "gaierror", "NetworkError", "TransportError", "OfflineModeIsEnabled"}:
        return _not_found(name)
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (f"model {name!r} is not a local folder and its download failed ({reason[:60]}); pass a folder, "
            "or omit --model for the embedded one")


def _read_model_index(folder: Path) -> dict:
    index = folder / "model_index.json"
    if not index.is_file():
        raise GuidanceLoadError(f"{folder} has no model_index.json; pass a diffusers pipeline folder "
                                "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    try:
        return json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise GuidanceLoadError(f"{index} is not readable JSON ({err}); re-download the model") from None
