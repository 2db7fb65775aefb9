"""Guidance primitives on tiny random SD (eps, v) and SDXL models built from the real diffusers classes."""
from __future__ import annotations

import shutil
import typing

import pytest
import torch

from distillation.base import TextEmbeds
from distillation.guidance import Guidance, GuidanceLoadError, cfg_combine
from distillation.tiny import save_tiny_pipeline, scheduler_config, tiny_guidance

ALL = ["tiny_sd", "tiny_sd_v", "tiny_sdxl"]


@pytest.fixture(params=ALL)
def guidance(request) -> Guidance:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("pipe") / "tiny-sd", "sd", seed=0)


def test_attributes_and_frozen(guidance):
    assert guidance.native_resolution == 64 and guidance.latent_channels == 4
    assert guidance.num_train_timesteps == 1000 and guidance.alphas_cumprod.shape == (1000,)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    assert torch.allclose(guidance.alphas_cumprod.double(), torch.cumprod(1 - betas, 0), atol=1e-6)
    for module in [guidance.unet, guidance.vae, *guidance.text_encoders]:
        assert not module.training and not any(p.requires_grad for p in module.parameters())
    assert guidance.dtype == torch.float32 and guidance.device.type == "cpu"


def test_family_and_prediction_type(tiny_sd, tiny_sd_v, tiny_sdxl):
    assert (tiny_sd.family, tiny_sd.prediction_type) == ("sd", "epsilon")
    assert (tiny_sd_v.family, tiny_sd_v.prediction_type) == ("sd", "v_prediction")
    assert tiny_sdxl.family == "sdxl" and len(tiny_sdxl.text_encoders) == 2


def test_encode_text_shapes_determinism_and_cache(guidance):
    guidance.clear_text_cache()
    calls = []
    handle = guidance.text_encoders[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        e = guidance.encode_text(["a red cube", "a blue sphere", "a red cube"])
        assert len(calls) == 1  # two distinct prompts, one batched encoder pass
        again = guidance.encode_text(["a red cube"])
        assert len(calls) == 1  # memoised
    finally:
        handle.remove()
    width = 64 if guidance.family == "sdxl" else 32
    assert e.hidden.shape == (3, 77, width) and not e.hidden.requires_grad
    assert torch.equal(e.hidden[0], e.hidden[2]) and torch.equal(again.hidden[0], e.hidden[0])
    assert not torch.allclose(e.hidden[0], e.hidden[1])
    if guidance.family == "sdxl":
        assert e.pooled.shape == (3, 32) and not torch.allclose(e.pooled[0], e.pooled[1])
    else:
        assert e.pooled is None
    guidance.clear_text_cache()
    assert torch.equal(guidance.encode_text(["a red cube"]).hidden[0], e.hidden[0])


def test_same_seed_same_model_different_seed_different():
    a, b, c = tiny_guidance(seed=3), tiny_guidance(seed=3), tiny_guidance(seed=4)
    ea, eb, ec = (g.encode_text(["a red cube"]).hidden for g in (a, b, c))
    assert torch.equal(ea, eb) and not torch.allclose(ea, ec)


def test_sdxl_empty_prompt_is_zeros_and_penultimate_layer(tiny_sdxl):
    empty = tiny_sdxl.encode_text([""])
    assert torch.count_nonzero(empty.hidden) == 0 and torch.count_nonzero(empty.pooled) == 0
    ids = tiny_sdxl._token_ids(tiny_sdxl.tokenizers[0], tiny_sdxl.text_encoders[0], ["a cube"])
    with torch.no_grad():
        out = tiny_sdxl.text_encoders[0](ids, output_hidden_states=True)
    assert torch.allclose(tiny_sdxl.encode_text(["a cube"]).hidden[0, :, :32], out.hidden_states[-2][0])


def test_encode_decode_shapes_range_and_gradient(guidance):
    images = torch.rand(2, 3, 48, 48, requires_grad=True)  # resized to the native 64 px
    latents = guidance.encode_images(images)
    assert latents.shape == (2, 4, 8, 8) and latents.requires_grad
    latents.square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0 and torch.isfinite(images.grad).all()
    decoded = guidance.decode_latents(latents.detach())
    assert decoded.shape == (2, 3, 64, 64) and decoded.min() >= 0 and decoded.max() <= 1
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        guidance.encode_images(torch.rand(2, 4, 64, 64))


def test_add_noise_and_predict_x0_formulas(tiny_sd):
    x0, noise, t = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.tensor([0, 499, 999])
    a = tiny_sd.alphas_cumprod[t].view(3, 1, 1, 1)
    x_t = tiny_sd.add_noise(x0, noise, t)
    assert torch.allclose(x_t, a.sqrt() * x0 + (1 - a).sqrt() * noise, atol=1e-6)
    assert torch.allclose(tiny_sd.predict_x0(x_t, noise, t), x0, atol=1e-4)


def test_predict_eps_shape_and_epsilon_passthrough(guidance):
    x_t, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 700])
    embeds = guidance.encode_text(["a red cube", "a blue sphere"])
    eps = guidance.predict_eps(x_t, t, embeds)
    assert eps.shape == x_t.shape and torch.isfinite(eps).all()
    if guidance.family == "sd" and guidance.prediction_type == "epsilon":
        with torch.no_grad():
            raw = guidance.unet(x_t, t, encoder_hidden_states=embeds.hidden).sample
        assert torch.allclose(eps, raw, atol=1e-6)


def test_v_prediction_converted_to_eps(tiny_sd_v):
    x_t, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 700])
    embeds = tiny_sd_v.encode_text(["a red cube", "a red cube"])
    with torch.no_grad():
        v = tiny_sd_v.unet(x_t, t, encoder_hidden_states=embeds.hidden).sample
        eps = tiny_sd_v.predict_eps(x_t, t, embeds)
    a = tiny_sd_v.alphas_cumprod[t].view(2, 1, 1, 1)
    assert torch.allclose(eps, a.sqrt() * v + (1 - a).sqrt() * x_t, atol=1e-6)
    assert not torch.allclose(eps, v, atol=1e-3)


def test_predict_eps_is_differentiable(tiny_sd):
    x_t = torch.randn(1, 4, 8, 8, requires_grad=True)
    tiny_sd.predict_eps(x_t, torch.tensor([300]), tiny_sd.encode_text(["a cube"])).sum().backward()
    assert x_t.grad is not None and x_t.grad.abs().sum() > 0


def test_cfg_pass_matches_two_single_passes(guidance):
    x_t, t = torch.randn(2, 4, 8, 8), torch.tensor([100, 800])
    cond, uncond = guidance.encode_text(["a red cube", "a green cone"]), guidance.encode_text([""])  # 1 row broadcasts
    with torch.no_grad():
        eps_c, eps_u = guidance.predict_eps_cfg(x_t, t, cond, uncond)
        ref_c = guidance.predict_eps(x_t, t, cond)
        ref_u = guidance.predict_eps(x_t, t, guidance.encode_text(["", ""]))
    assert torch.allclose(eps_c, ref_c, atol=1e-5) and torch.allclose(eps_u, ref_u, atol=1e-5)
    assert not torch.allclose(eps_c, eps_u)


def test_cfg_combine_convention():
    c, u = torch.tensor([3.0]), torch.tensor([1.0])
    assert cfg_combine(c, u, 7.5).item() == pytest.approx(1 + 7.5 * 2)
    assert cfg_combine(c, u, 1.0).item() == 3.0 and cfg_combine(c, u, 0.0).item() == 1.0


def test_ddim_invert_then_denoise_returns_x(tiny_sd):
    x, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t_from, t_to = torch.tensor([100, 20]), torch.tensor([600, 900])
    up = tiny_sd.ddim_move(x, eps, t_from, t_to)
    assert not torch.allclose(up, x)
    assert torch.allclose(tiny_sd.ddim_move(up, eps, t_to, t_from), x, atol=1e-5)
    # to "clean" (t = -1) is the x0 estimate
    assert torch.allclose(tiny_sd.ddim_move(up, eps, t_to, torch.tensor([-1, -1])),
                          tiny_sd.predict_x0(up, eps, t_to), atol=1e-6)


def test_ddim_move_matches_diffusers_ddim_step(tiny_sd):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(scheduler_config("epsilon"))
    sched.set_timesteps(10)
    t = int(sched.timesteps[3])
    x, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    ref = sched.step(eps, t, x, eta=0.0).prev_sample
    ours = tiny_sd.ddim_move(x, eps, torch.tensor([t]), torch.tensor([t - 100]))
    assert torch.allclose(ours, ref, atol=1e-5)


def test_save_tiny_pipeline_loads_in_diffusers_and_guidance(sd_folder, tiny_sd):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(sd_folder)
    out = pipe("a red cube", num_inference_steps=2, height=64, width=64, output_type="np",
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 64, 64, 3) and (out.images >= 0).all() and (out.images <= 1).all()
    loaded = Guidance.from_pretrained(str(sd_folder))
    assert (loaded.family, loaded.prediction_type, loaded.native_resolution) == ("sd", "epsilon", 64)
    # same seed -> same weights as tiny_guidance
    assert torch.equal(loaded.encode_text(["a red cube"]).hidden, tiny_sd.encode_text(["a red cube"]).hidden)
    x, t, e = torch.randn(1, 4, 8, 8), torch.tensor([400]), tiny_sd.encode_text(["a"])
    with torch.no_grad():
        assert torch.allclose(loaded.predict_eps(x, t, e), tiny_sd.predict_eps(x, t, e), atol=1e-6)


def test_save_tiny_sdxl_pipeline_loads_in_diffusers_and_guidance(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    folder = save_tiny_pipeline(tmp_path / "tiny-xl", "sdxl", prediction_type="v_prediction", size=32)
    pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    out = pipe("a red cube", num_inference_steps=2, height=32, width=32, output_type="np")
    assert out.images.shape == (1, 32, 32, 3)
    loaded = Guidance.from_pretrained(str(folder))
    assert (loaded.family, loaded.prediction_type, loaded.native_resolution) == ("sdxl", "v_prediction", 32)
    assert loaded.zero_empty_prompt
    e = loaded.encode_text(["a red cube"])
    assert e.hidden.shape == (1, 77, 64) and e.pooled.shape == (1, 32)
    assert loaded.predict_eps(torch.randn(1, 4, 4, 4), torch.tensor([5]), e).shape == (1, 4, 4, 4)


def test_missing_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(GuidanceLoadError, match="does not exist") as err:
        Guidance.from_pretrained(str(tmp_path / "nowhere" / "deeper" / "model"))
    assert "\n" not in str(err.value)
    with pytest.raises(GuidanceLoadError, match="model_index.json"):
        Guidance.from_pretrained(str(tmp_path))


def test_incomplete_folder_names_the_missing_piece(sd_folder, tmp_path):
    broken = shutil.copytree(sd_folder, tmp_path / "broken")
    shutil.rmtree(broken / "vae")
    with pytest.raises(GuidanceLoadError, match="vae/ folder is missing"):
        Guidance.from_pretrained(str(broken))
    broken2 = shutil.copytree(sd_folder, tmp_path / "broken2")
    for weights in (broken2 / "unet").glob("diffusion_pytorch_model*"):
        weights.unlink()
    with pytest.raises(GuidanceLoadError, match="could not load unet/") as err:
        Guidance.from_pretrained(str(broken2))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("piece", ["unet", "text_encoder"])
def test_pickle_weights_are_never_loaded(sd_folder, tmp_path, piece):
    """A piece with only a pickle .bin (diffusers' save_pretrained(safe_serialization=False); transformers 5 writes
    safetensors only, so its .bin is torch.save'd) used to be unpickled: from_pretrained now passes
    use_safetensors=True and names the fix."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = shutil.copytree(sd_folder, tmp_path / "pickled")
    shutil.rmtree(folder / piece)
    if piece == "unet":
        UNet2DConditionModel.from_pretrained(sd_folder / "unet").save_pretrained(folder / "unet", safe_serialization=False)
        weights = "diffusion_pytorch_model.bin"
    else:
        shutil.copytree(sd_folder / "text_encoder", folder / "text_encoder")
        (folder / "text_encoder" / "model.safetensors").unlink()
        weights = "pytorch_model.bin"
        torch.save(CLIPTextModel.from_pretrained(sd_folder / "text_encoder").state_dict(), folder / piece / weights)
    assert sorted(p.suffix for p in (folder / piece).iterdir()) == [".bin", ".json"]
    with pytest.raises(GuidanceLoadError, match=f"{piece} has only pickle weights \\({weights}\\)") as err:
        Guidance.from_pretrained(str(folder))
    msg = str(err.value)
    assert "\n" not in msg and "convert them to safetensors" in msg


def test_hub_id_offline_and_not_cached(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(GuidanceLoadError) as err:
        Guidance.from_pretrained("someone/not-a-cached-model")
    msg = str(err.value)
    assert "neither a local folder nor in the local hub cache (offline mode)" in msg
    assert "download it where there is network" in msg and "omit --model" in msg
    assert "\n" not in msg and len(f"error: {msg}") < 200


def test_embeds_batch_mismatch_is_an_error(tiny_sd):
    embeds = TextEmbeds(hidden=torch.zeros(2, 77, 32))
    with pytest.raises(ValueError, match="rows"):
        tiny_sd.predict_eps(torch.randn(3, 4, 8, 8), torch.tensor([1, 2, 3]), embeds)


def test_dtype_names_and_to_device(tiny_sd):
    from distillation.guidance import resolve_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype(None, cpu) == torch.float32 and resolve_dtype("auto", cuda) == torch.float16
    assert resolve_dtype("bf16", cpu) == torch.bfloat16 and resolve_dtype("float16", cpu) == torch.float16
    from studio.config import GuidanceConfig  # studio.models resolves GuidanceConfig.dtype with this function

    for name in typing.get_args(typing.get_type_hints(GuidanceConfig)["dtype"]):
        assert resolve_dtype(name, cpu) == (torch.float32 if name == "auto" else getattr(torch, name))
    with pytest.raises(GuidanceLoadError, match="fp32, fp16, bf16"):
        resolve_dtype("fp8", cpu)
    e = tiny_sd.encode_text(["moved"])
    assert tiny_sd.to_device("cpu") is tiny_sd and tiny_sd.device == cpu
    assert torch.equal(tiny_sd.encode_text(["moved"]).hidden, e.hidden)


def test_adapter_is_off_outside_its_context_and_trains_in_fp32():
    from peft import LoraConfig

    g = tiny_guidance("sd", seed=3)  # a fresh model: the adapter must not leak into the session fixtures
    x, t, e = torch.randn(2, 4, 8, 8), torch.tensor([100, 700]), g.encode_text(["a red cube"] * 2)
    with torch.no_grad():
        before = g.predict_eps(x, t, e)
    params = g.add_adapter("test", LoraConfig(r=2, lora_alpha=2, init_lora_weights=True,
                                              target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    assert params and all(".test." in n and p.dtype == torch.float32 for n, p in params.items())
    with g.adapter("test"):  # they take gradients inside the context only
        assert all(p.requires_grad for p in params.values())
    assert not any(p.requires_grad for p in params.values())
    with torch.no_grad():
        for p in params.values():
            p.add_(0.05)
        outside = g.predict_eps(x, t, e)
        with g.adapter("test"):
            inside = g.predict_eps(x, t, e)
        after = g.predict_eps(x, t, e)
    assert torch.equal(outside, before) and torch.equal(after, before) and not torch.allclose(inside, before)


def test_adapter_attaches_a_class_embedding_only_inside(tiny_sd):
    from peft import LoraConfig

    g = tiny_guidance("sd", seed=4)
    g.add_adapter("cam", LoraConfig(r=1, lora_alpha=1, target_modules=["to_q"]))
    width = g.class_embedding_width
    assert width == g.unet.time_embedding.linear_2.out_features
    embedding = torch.nn.Linear(16, width)
    x, t, e = torch.randn(1, 4, 8, 8), torch.tensor([500]), g.encode_text(["x"])
    with pytest.raises(RuntimeError, match="boom"), g.adapter("cam", class_embedding=embedding):
        assert g.unet.class_embedding is embedding
        out = g.predict_eps(x, t, e, class_labels=torch.randn(1, 16))
        assert out.shape == x.shape
        raise RuntimeError("boom")
    assert g.unet.class_embedding is None  # released even when the pass fails
    g.unet.class_embedding = embedding  # a UNet with its own class embedding: nothing to attach to
    assert g.class_embedding_width is None
    with pytest.raises(ValueError, match="class embedding of its own"), g.adapter("cam", class_embedding=embedding):
        pass
