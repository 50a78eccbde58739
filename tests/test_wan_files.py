"""ComfyUI's Wan files (original layout), written tiny here: diffusion model (fp16 / fp8 / scaled fp8), VAE."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from motion_lora.backbones.wan import TextEmbeddings, to_original_name
from motion_lora.model import ModelLoadError
from motion_lora.sampling import sample_latents
from motion_lora.tiny_wan import build_tiny_wan
from motion_lora.wan_files import (Fp8Linear, architecture_name, architectures, load_wan_files, load_wan_transformer,
                                   load_wan_vae, save_wan_transformer, transformer_config_from_weights)
from wan_layout import vae_to_original


@pytest.fixture(scope="module")
def wan():
    return build_tiny_wan(seed=0)


@pytest.fixture(scope="module")
def files(wan, tmp_path_factory):
    folder = tmp_path_factory.mktemp("comfy_models")
    save_wan_transformer(wan.unet, folder / "diffusion_models" / "tiny_wan_fp32.safetensors")
    (folder / "vae").mkdir()
    save_file(vae_to_original(wan.vae.state_dict()), str(folder / "vae" / "tiny_wan_vae.safetensors"))
    return folder


def _run(transformer, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 2, 4, 4, generator=g)
    text = torch.randn(1, 512, 4096, generator=g)
    with torch.no_grad():
        return transformer(hidden_states=x, timestep=torch.tensor([700.0]), encoder_hidden_states=text,
                           return_dict=False)[0]


def test_diffusion_model_file_loads_back_identical(wan, files):
    loaded = load_wan_transformer(files / "diffusion_models" / "tiny_wan_fp32.safetensors", dtype="fp32")
    for key in ("num_attention_heads", "num_layers", "ffn_dim", "in_channels", "out_channels", "text_dim"):
        assert loaded.config[key] == wan.unet.config[key], key
    want, got = wan.unet.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert torch.equal(loaded.rope.freqs_cos, wan.unet.rope.freqs_cos)
    # Equal weights, bit for bit (above); the outputs of two module instances may take other CPU kernels.
    torch.testing.assert_close(_run(loaded), _run(wan.unet), rtol=1e-4, atol=1e-5)


def test_vae_file_loads_back_identical(wan, files):
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    original = vae_to_original(wan.vae.state_dict())
    assert sorted(convert_wan_vae_to_diffusers(dict(original))) == sorted(wan.vae.state_dict())  # helper is exact
    vae = load_wan_vae(files / "vae" / "tiny_wan_vae.safetensors", dtype="fp32")
    assert vae.config.base_dim == 8 and vae.config.z_dim == 16
    want, got = wan.vae.state_dict(), vae.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)


def _fp8_file(wan, path, scaled: bool):
    """The tiny transformer as ComfyUI's fp8 files hold it: block linears in float8_e4m3fn (scaled: + scale_weight)."""
    state = {}
    for k, v in wan.unet.state_dict().items():
        name = to_original_name(k)
        if k.startswith("blocks.") and k.endswith(".weight") and v.dim() == 2:
            if scaled:
                scale = v.abs().max() / 448.0
                state[name] = (v / scale).to(torch.float8_e4m3fn)
                state[name[: -len(".weight")] + ".scale_weight"] = scale.reshape(1)
            else:
                state[name] = v.to(torch.float8_e4m3fn)
        else:
            state[name] = v
    if scaled:
        state["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    save_file(state, str(path))


@pytest.mark.parametrize("scaled", [False, True])
def test_fp8_files_stay_fp8_and_match_their_upcast(wan, tmp_path, scaled):
    path = tmp_path / "fp8.safetensors"
    _fp8_file(wan, path, scaled)
    kept = load_wan_transformer(path, dtype="fp32", keep_fp8=True)
    upcast = load_wan_transformer(path, dtype="fp32", keep_fp8=False)
    q = kept.blocks[0].attn1.to_q
    assert isinstance(q, Fp8Linear) and q.weight.dtype == torch.float8_e4m3fn
    assert upcast.blocks[0].attn1.to_q.weight.dtype == torch.float32
    assert kept.proj_out.weight.dtype == torch.float32  # only the blocks' linears were fp8 in the file
    assert torch.allclose(_run(kept), _run(upcast), atol=1e-5)
    assert (_run(kept) - _run(wan.unet)).abs().max() < 0.2 * _run(wan.unet).abs().max()  # fp8 is close, not equal


def test_lora_trains_on_top_of_fp8_weights(wan, tmp_path):
    from motion_lora import adapters as ad

    path = tmp_path / "fp8.safetensors"
    _fp8_file(wan, path, scaled=True)
    model = load_wan_transformer(path, dtype="fp32")
    ad.inject(model, wan.backbone, "t", ad.TEMPORAL, rank=2)
    ad.set_strengths(model, {"t": 1.0})
    ad.set_trainable(model, ["t"], True)
    g = torch.Generator().manual_seed(0)
    out = model(hidden_states=torch.randn(1, 16, 2, 4, 4, generator=g), timestep=torch.tensor([500.0]),
                encoder_hidden_states=torch.randn(1, 8, 4096, generator=g), return_dict=False)[0]
    out.square().mean().backward()
    grads = [p.grad for p in ad.adapter_parameters(model, ["t"])]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_shipped_architectures_are_what_the_weights_say(wan):
    """Each shipped config, built on the meta device and written in the original layout, reads back as itself."""
    from diffusers import WanTransformer3DModel

    for name, arch in architectures()["architectures"].items():
        with torch.device("meta"):
            model = WanTransformer3DModel.from_config(arch["transformer"])
        shapes = {to_original_name(k): v for k, v in model.state_dict().items()}
        config = transformer_config_from_weights(shapes)
        assert {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()} == arch["transformer"], name
        assert architecture_name(config) in (name, "wan2.1_t2v_14B")  # A14B experts are 14B-shaped
    assert architecture_name(dict(wan.unet.config)) is None  # the tiny one is no shipped size
    assert architectures()["architectures"]["wan2.2_ti2v_5B"]["transformer"]["in_channels"] == 48
    assert len(architectures()["vaes"]["wan2.2_vae"]["latents_mean"]) == 48


def test_wrong_files_are_refused_with_a_reason(files, tmp_path):
    with pytest.raises(ModelLoadError, match="no head.modulation"):
        load_wan_transformer(files / "vae" / "tiny_wan_vae.safetensors")
    with pytest.raises(ModelLoadError, match="not a Wan VAE"):
        load_wan_vae(files / "diffusion_models" / "tiny_wan_fp32.safetensors")
    with pytest.raises(ModelLoadError, match="not found"):
        load_wan_transformer(tmp_path / "missing.safetensors")


def test_bundle_from_files_samples_with_text_from_elsewhere(wan, files):
    text = TextEmbeddings()
    model = load_wan_files(files / "diffusion_models" / "tiny_wan_fp32.safetensors",
                           files / "vae" / "tiny_wan_vae.safetensors", text, dtype="fp32")
    with pytest.raises(ValueError, match="no text embedding for prompt 'a car'"):
        model.encode_prompt("a car")
    for prompt in ("a car", ""):
        text.add(prompt, wan.encode_prompt(prompt)[0, : len(wan.tokenizer(prompt).input_ids)])
    got = sample_latents(model, "a car", steps=2, guidance=3.0, width=32, height=32, frames=5)
    want = sample_latents(wan, "a car", steps=2, guidance=3.0, width=32, height=32, frames=5)
    assert torch.allclose(got, want, atol=1e-5)


def test_a14b_experts_from_comfyui_files_train_high_noise_and_sample_both(wan, files, tmp_path, caplog):
    """Two expert files make one two-expert model; which expert a lone A14B file is comes from ComfyUI's
    file name, and sets the training sigmas (high noise: at or above the boundary)."""
    from motion_lora.wan_files import expert_of, load_wan_files

    high = files / "diffusion_models" / "tiny_wan_fp32.safetensors"
    other = tmp_path / "other_arch.safetensors"
    save_wan_transformer(build_tiny_wan(seed=1).unet, tmp_path / "wan2.2_t2v_low_noise_14B_fp16.safetensors")
    vae = next((files / "vae").iterdir())
    model = load_wan_files(high, vae, dtype="fp32", low_noise_model=tmp_path / "wan2.2_t2v_low_noise_14B_fp16.safetensors",
                           boundary_ratio=0.875)
    assert model.low_noise_unet is not None and model.boundary_ratio == 0.875
    assert model.backbone.sigma_range == (0.875, 1.0)
    with pytest.raises(ModelLoadError, match="not a two-expert Wan"):  # the tiny layout is no A14B
        load_wan_files(high, vae, dtype="fp32", low_noise_model=tmp_path / "wan2.2_t2v_low_noise_14B_fp16.safetensors")
    from diffusers import WanTransformer3DModel

    from motion_lora.tiny_wan import TRANSFORMER_CONFIG

    save_wan_transformer(WanTransformer3DModel(**{**TRANSFORMER_CONFIG, "num_layers": 1}), other)
    with pytest.raises(ModelLoadError, match="not the same architecture"):
        load_wan_files(high, vae, dtype="fp32", low_noise_model=other, boundary_ratio=0.875)
    assert expert_of("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors") == "high"
    assert expert_of("models/diffusion_models/wan2.2_t2v_low_noise_14B_fp16.safetensors") == "low"
    assert expert_of("wan2.1_t2v_1.3B_fp16.safetensors") is None
    assert load_wan_files(high, vae, dtype="fp32").backbone.sigma_range == (0.0, 1.0)


def test_a_ti2v_file_samples_image_to_video(wan, files, tmp_path, monkeypatch):
    """Wan 2.2 TI2V-5B's file (told by its shape, as every ComfyUI file) takes an image; a T2V file does not."""
    import motion_lora.wan_files as wf

    vae = next((files / "vae").iterdir())
    save_wan_transformer(wan.unet, tmp_path / "wan2.2_ti2v_5B_fp16.safetensors")
    assert not wf.load_wan_files(tmp_path / "wan2.2_ti2v_5B_fp16.safetensors", vae, dtype="fp32").backbone.image_to_video
    monkeypatch.setattr(wf, "architecture_name", lambda config: "wan2.2_ti2v_5B")  # a real one is 5B
    model = wf.load_wan_files(tmp_path / "wan2.2_ti2v_5B_fp16.safetensors", vae, dtype="fp32", placement="c")
    assert model.backbone.image_to_video and model.backbone.placement == "c"


def test_lone_a14b_expert_file_trains_on_its_own_timesteps(wan, files, tmp_path, monkeypatch, caplog):
    import motion_lora.wan_files as wf

    monkeypatch.setattr(wf, "architecture_name", lambda config: "wan2.2_t2v_A14B")  # a real one is 14B
    vae = next((files / "vae").iterdir())
    for name, sigmas in (("wan2.2_t2v_high_noise_14B_fp16.safetensors", (0.875, 1.0)),
                         ("wan2.2_t2v_low_noise_14B_fp16.safetensors", (0.0, 0.875))):
        save_wan_transformer(wan.unet, tmp_path / name)
        model = wf.load_wan_files(tmp_path / name, vae, dtype="fp32", placement="c")
        assert model.backbone.sigma_range == sigmas and model.backbone.placement == "c"
        assert model.low_noise_unet is None
    assert "low-noise expert" in caplog.text and "high-noise expert" in caplog.text
