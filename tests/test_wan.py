"""The Wan backbone on the tiny Wan: layout, objective, one-frame inputs, names, folders, sampling vs WanPipeline."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import synthetic_clip
from motion_lora import adapters as ad
from motion_lora.backbones import Wan, backbone_for
from motion_lora.backbones.wan import FlowMatchObjective, PLACEMENTS, to_diffusers_name, to_original_name
from motion_lora.model import load_model
from motion_lora.sampling import SamplingError, make_scheduler, sample_latents
from motion_lora.tiny_wan import build_tiny_wan

SMALL = dict(width=32, height=32, frames=5)


@pytest.fixture(scope="module")
def wan():
    """One tiny Wan for the read-only tests of this module (building one costs about a second)."""
    return build_tiny_wan(seed=0)


def test_registry_finds_wan_and_latents_have_wan_layout(wan):
    assert isinstance(backbone_for(wan.unet), Wan)
    frames = synthetic_clip(frames=5, height=32, width=32)
    latents = wan.encode_frames(frames)
    # [1, C, 1 + (F-1)/4, H/8, W/8]
    assert latents.shape == (1, 16, 2, 4, 4)
    assert wan.backbone.latent_shape(wan.unet, wan.vae, 5, 32, 32) == latents.shape
    assert wan.decode_latents(latents).shape == (5, 32, 32, 3)
    with pytest.raises(ValueError, match="1 \\+ 4n frames"):
        wan.encode_frames(synthetic_clip(frames=4, height=32, width=32))
    with pytest.raises(ValueError, match="multiples of 16"):
        wan.backbone.latent_shape(wan.unet, wan.vae, 5, 40, 32)


def test_latents_are_normalised_with_the_vae_statistics(wan):
    frames = synthetic_clip(frames=1, height=32, width=32)
    raw = wan.vae.encode(frames.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1).latent_dist.mode()
    mean = torch.tensor(wan.vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(wan.vae.config.latents_std).view(1, -1, 1, 1, 1)
    assert torch.allclose(wan.encode_frames(frames), (raw - mean) / std, atol=1e-6)


def test_image_latents_encode_each_frame_on_its_own(wan):
    frames = synthetic_clip(frames=5, height=32, width=32)
    clip = wan.encode_frames(frames)
    images = wan.backbone.image_latents(wan.vae, frames, clip, None)
    assert images.shape == (5, 16, 1, 4, 4)
    # the causal VAE encodes the first frame alone: the clip's first latent frame is frame 0 as an image
    assert torch.allclose(images[0, :, 0], clip[0, :, 0], atol=1e-5)
    # a later latent frame summarises four video frames: it is not an image of any one of them
    assert not torch.allclose(images[1, :, 0], clip[0, :, 1], atol=1e-2)
    for i in (2, 4):
        assert torch.allclose(images[i], wan.encode_frames(frames[i : i + 1])[0], atol=1e-5)
    assert wan.backbone.spatial_reuses_clip_noise is False


def test_flow_matching_objective():
    objective = Wan().objective({"num_train_timesteps": 1000})
    assert objective.num_train_timesteps == 1000
    t = objective.sample_timesteps(4000, torch.Generator().manual_seed(0))
    assert t.shape == (4000,) and t.min() > 0 and t.max() < 1000
    # shift 3 moves the median sigma from 0.5 to 0.75 (musubi-tuner's shift sampling)
    assert abs(float(t.median()) / 1000 - 0.75) < 0.02
    again = objective.sample_timesteps(4000, torch.Generator().manual_seed(0))
    assert torch.equal(t, again)

    x0 = torch.randn(2, 16, 3, 4, 4)
    noise = torch.randn_like(x0)
    steps = torch.tensor([250.0, 1000.0])
    noisy = objective.add_noise(x0, noise, steps)
    assert torch.allclose(noisy[0], 0.75 * x0[0] + 0.25 * noise[0])
    assert torch.allclose(noisy[1], noise[1])
    assert torch.equal(objective.target(x0, noise, steps), noise - x0)


def test_objective_sigma_range_keeps_timesteps_in_an_expert_range():
    high = FlowMatchObjective(sigma_range=(0.875, 1.0)).sample_timesteps(500, torch.Generator().manual_seed(1))
    assert high.min() >= 875 and high.max() <= 1000
    with pytest.raises(ValueError, match="sigma_range"):
        FlowMatchObjective(sigma_range=(0.9, 0.1))


def test_objective_matches_the_flow_match_scheduler():
    """Our noising equals diffusers' FlowMatchEulerDiscreteScheduler.scale_noise at the same sigma."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(10)
    t = scheduler.timesteps[3:4]
    x0, noise = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 16, 2, 4, 4)
    want = scheduler.scale_noise(x0, t, noise)
    got = FlowMatchObjective().add_noise(x0, noise, t)
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_placements_never_put_the_spatial_path_on_cross_attention(wan, placement):
    backbone = Wan(placement=placement)
    spatial = backbone.spatial_targets(wan.unet)
    temporal = backbone.temporal_targets(wan.unet)
    modules = dict(wan.unet.named_modules())
    assert all(isinstance(modules[n], torch.nn.Linear) for n in spatial + temporal)
    assert not any(".attn2." in n for n in spatial + temporal)
    assert all(".attn1." in n for n in temporal) == (placement != "a")  # (a): temporal on the ffn too
    assert len(spatial) == 2 * 6
    assert len(temporal) == 2 * {"a": 6, "b": 4, "c": 2}[placement]
    # the fingerprint names the model's layers, not the placement: a model has one fingerprint
    assert backbone.fingerprint(wan.unet) == wan.fingerprint
    with pytest.raises(ValueError, match="placement"):
        Wan(placement="d")


def test_checkpoint_units_are_the_blocks(wan):
    assert wan.backbone.checkpoint_units(wan.unet) == list(wan.unet.blocks)


def test_text_is_trimmed_to_each_prompt_and_zero_padded(wan):
    text = wan.encode_prompt(["the red car moves left", "a"])
    assert text.shape == (2, 512, 4096)
    lengths = [len(wan.tokenizer(p).input_ids) for p in ("the red car moves left", "a")]
    for row, n in zip(text, lengths):
        assert row[:n].abs().sum(-1).gt(0).all()
        assert row[n:].abs().max() == 0


def test_text_length_is_a_backbone_setting_that_placements_keep(wan):
    """Real Wan pads to 512; a backbone built with another length pads (and cuts) to it, and changing the
    placement keeps every other setting."""
    from motion_lora.backbones.wan import MAX_TEXT_TOKENS

    short = Wan(text_tokens=4, shift=5.0)
    text = short.encode_prompt(wan.tokenizer, wan.text_encoder, ["a", "the red car moves left"])
    assert MAX_TEXT_TOKENS == 512 and Wan().text_tokens == 512
    assert text.shape == (2, 4, 4096)
    n = len(wan.tokenizer("a").input_ids)
    assert text[0, n:].abs().max() == 0 and text[1].abs().sum(-1).gt(0).all()  # the long prompt is cut
    moved = short.with_placement("c")
    assert (moved.placement, moved.text_tokens, moved.shift) == ("c", 4, 5.0)
    with pytest.raises(ValueError, match="text_tokens"):
        Wan(text_tokens=0)


def test_names_invert_diffusers_single_file_converter(wan):
    """Our diffusers -> original names are exactly what diffusers' converter maps back, for every parameter."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    keys = list(wan.unet.state_dict())
    original = {to_original_name(k): torch.zeros(1) for k in keys}
    assert "head.modulation" in original and "blocks.0.self_attn.q.weight" in original
    assert "blocks.1.norm3.weight" in original and "blocks.0.ffn.2.bias" in original
    assert sorted(convert_wan_transformer_to_diffusers(dict(original))) == sorted(keys)
    assert [to_diffusers_name(to_original_name(k)) for k in keys] == keys
    with pytest.raises(ValueError, match="not a Wan transformer module"):
        to_diffusers_name("blocks.0.mystery")


def test_tiny_wan_is_deterministic_and_folder_round_trips(wan, tmp_path):
    other = build_tiny_wan(seed=0)
    state = wan.unet.state_dict()
    assert all(torch.equal(v, other.unet.state_dict()[k]) for k, v in state.items())
    other_seed = build_tiny_wan(seed=1).unet.blocks[0].attn1.to_q.weight
    assert not torch.equal(other_seed, wan.unet.blocks[0].attn1.to_q.weight)
    folder = wan.save(tmp_path / "tiny_wan")
    assert (folder / "transformer" / "config.json").is_file()
    loaded = load_model(folder, dtype="fp32")
    assert isinstance(loaded.backbone, Wan) and loaded.fingerprint == wan.fingerprint
    for part in ("unet", "vae", "text_encoder"):
        a, b = getattr(wan, part).state_dict(), getattr(loaded, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(wan.encode_prompt("the red car"), loaded.encode_prompt("the red car"))


def _wan_pipeline(model, scheduler):
    from diffusers import WanPipeline

    pipe = WanPipeline(tokenizer=model.tokenizer, text_encoder=model.text_encoder, vae=model.vae,
                       transformer=model.unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("scheduler", ["unipc", "euler"])
def test_sampling_matches_wan_pipeline(wan, scheduler):
    pipe = _wan_pipeline(wan, make_scheduler(scheduler, wan.scheduler_config, wan.backbone))
    want = pipe("the red car moves left", negative_prompt="static, blurred", height=32, width=32, num_frames=5,
                num_inference_steps=3, guidance_scale=5.0, generator=torch.Generator().manual_seed(3),
                output_type="latent").frames
    got = sample_latents(wan, "the red car moves left", "static, blurred", steps=3, guidance=5.0, seed=3,
                         scheduler=scheduler, **SMALL)
    assert got.shape == want.shape == (1, 16, 2, 4, 4)
    assert (got - want).abs().max() < 1e-5


def test_sampling_default_is_unipc_and_applies_adapters(wan):
    base = sample_latents(wan, "a car", steps=2, guidance=1.0, seed=0, **SMALL)
    assert torch.equal(base, sample_latents(wan, "a car", steps=2, guidance=1.0, seed=0, scheduler="unipc", **SMALL))
    ad.inject(wan.unet, wan.backbone, "tmp", ad.TEMPORAL, rank=2)
    g = torch.Generator().manual_seed(0)
    tensors = {k: (torch.randn(v.shape, generator=g) if ".lora_B." in k else v)
               for k, v in ad.get_tensors(wan.unet, "tmp").items()}
    ad.remove(wan.unet, "tmp")
    adapter = ad.LoraAdapter(ad.TEMPORAL, 2, 2.0, tensors, wan.fingerprint)
    moved = sample_latents(wan, "a car", steps=2, guidance=1.0, seed=0, adapters=[(adapter, 1.0)], **SMALL)
    assert (moved - base).abs().max() > 1e-3
    assert torch.equal(base, sample_latents(wan, "a car", steps=2, guidance=1.0, seed=0, **SMALL))


def _image(seed: int = 5, size: int = 32):
    """A random RGB picture as uint8 (what a PIL image holds) and as our [H, W, 3] floats in 0..1."""
    pixels = torch.randint(0, 256, (size, size, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return pixels, pixels.float() / 255


@pytest.mark.parametrize("scheduler", ["unipc", "euler"])
def test_image_to_video_matches_wan_image_to_video_pipeline(wan, scheduler):
    """Wan 2.2 TI2V's image-to-video (the image as the clean first latent frame, timestep 0 on its tokens) gives
    WanImageToVideoPipeline's latents (`expand_timesteps=True`, the TI2V-5B folder's setting) for the same seed."""
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    ti2v = dataclasses.replace(wan, backbone=Wan(image_to_video=True))
    pipe = WanImageToVideoPipeline(tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, vae=wan.vae,
                                   transformer=wan.unet, scheduler=make_scheduler(scheduler, wan.scheduler_config,
                                                                                  wan.backbone),
                                   expand_timesteps=True)
    pipe.set_progress_bar_config(disable=True)
    pixels, image = _image()
    # the prompts go in encoded: this pipeline's own text cleaning needs ftfy (WanPipeline's does not), and the
    # encoding is WanPipeline's (test_sampling_matches_wan_pipeline)
    negative, positive = wan.encode_prompt(["static", "the red car moves left"]).chunk(2)
    want = pipe(Image.fromarray(pixels.numpy()), prompt_embeds=positive, negative_prompt_embeds=negative, height=32,
                width=32, num_frames=5, num_inference_steps=3, guidance_scale=5.0,
                generator=torch.Generator().manual_seed(3), output_type="latent").frames
    got = sample_latents(ti2v, "the red car moves left", "static", steps=3, guidance=5.0, seed=3,
                         scheduler=scheduler, image=image, **SMALL)
    assert got.shape == want.shape == (1, 16, 2, 4, 4)
    assert (got - want).abs().max() < 1e-5
    first = ti2v.backbone.first_frame(ti2v.unet, ti2v.vae, image, got.shape).latent
    assert torch.equal(got[:, :, :1], first)  # the first latent frame is the image's
    plain = sample_latents(ti2v, "the red car moves left", "static", steps=3, guidance=5.0, seed=3,
                           scheduler=scheduler, **SMALL)
    assert (plain[:, :, 1:] - got[:, :, 1:]).abs().max() > 1e-3  # and the later frames follow it


def test_image_to_video_is_refused_where_the_model_cannot_take_an_image(wan, tmp_path):
    _, image = _image()
    with pytest.raises(SamplingError, match="does not take an image: image-to-video needs Wan 2.2 TI2V-5B"):
        sample_latents(wan, "a car", steps=1, image=image, **SMALL)
    with pytest.raises(SamplingError, match=r"one RGB frame \[H, W, 3\]"):
        sample_latents(dataclasses.replace(wan, backbone=Wan(image_to_video=True)), "a car", steps=1,
                       image=image[..., :1], **SMALL)
    # a picture of another size is fitted to the clip (scaled to cover it, centre-cropped)
    _, big = _image(size=48)
    ti2v = dataclasses.replace(wan, backbone=Wan(image_to_video=True))
    assert sample_latents(ti2v, "a car", steps=1, image=big, **SMALL).shape == (1, 16, 2, 4, 4)
    # a TI2V folder says so (`expand_timesteps`, as diffusers' Wan 2.2 TI2V-5B folder) and keeps it on a round trip
    loaded = load_model(ti2v.save(tmp_path / "ti2v"), dtype="fp32")
    assert loaded.backbone.image_to_video and not load_model(wan.save(tmp_path / "t2v"), dtype="fp32"
                                                             ).backbone.image_to_video


def test_sampling_refuses_what_wan_cannot_do(wan):
    with pytest.raises(SamplingError, match="unknown scheduler 'ddim' for Wan"):
        sample_latents(wan, "a car", steps=1, scheduler="ddim", **SMALL)


def test_the_wan_noise_prior_inverts_the_flow_ode(wan, monkeypatch):
    """On a straight flow (the velocity is `noise - x_0` everywhere) the inversion lands on the noise exactly,
    and the Euler sampler started from the full prior (p = 1) returns the reference clip: the inversion walks
    the sampler's own sigma grid backwards, from t = 0 up, with the empty prompt."""
    from motion_lora.noise_prior import flow_invert

    shape = wan.backbone.latent_shape(wan.unet, wan.vae, SMALL["frames"], SMALL["height"], SMALL["width"])
    g = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    calls = []

    def straight(unet, x, t, text):
        calls.append(float(torch.as_tensor(t).reshape(-1)[0]))
        return (noise - clean).expand(x.shape[0], *shape[1:]).to(x.dtype)

    monkeypatch.setattr(wan.backbone, "predict", straight)
    assert torch.allclose(flow_invert(wan, clean, steps=4), noise, atol=1e-5)
    assert calls[0] == 0.0 and calls == sorted(calls) and calls[-1] < 1000 and len(calls) == 4
    back = sample_latents(wan, "a car", steps=4, guidance=1.0, seed=3, scheduler="euler", noise_prior=1.0,
                          reference=clean, inversion_steps=4, **SMALL)
    assert torch.allclose(back, clean, atol=1e-4)


def test_the_wan_noise_prior_changes_a_real_sample_and_is_reproducible(wan):
    shape = wan.backbone.latent_shape(wan.unet, wan.vae, SMALL["frames"], SMALL["height"], SMALL["width"])
    reference = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    settings = dict(steps=2, guidance=1.0, seed=0, reference=reference, inversion_steps=2, **SMALL)
    plain = sample_latents(wan, "a car", **settings)
    prior = sample_latents(wan, "a car", noise_prior=0.5, **settings)
    assert (prior - plain).abs().max() > 1e-3
    assert torch.equal(prior, sample_latents(wan, "a car", noise_prior=0.5, **settings))


def test_wan22_ti2v_layout_48_channels_16x():
    """Wan 2.2 TI2V-5B's layout (48 latent channels, 16x VAE with 2x2 patchify), shrunk; one timestep per clip
    equals WanPipeline's one-per-token form when every token has the same t (text-to-video)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from motion_lora.tiny_wan import TRANSFORMER_CONFIG
    from motion_lora.wan_files import architectures

    torch.manual_seed(0)
    vae = AutoencoderKLWan(**{**architectures()["vaes"]["wan2.2_vae"], "base_dim": 8, "decoder_base_dim": 16}).eval()
    transformer = WanTransformer3DModel(**{**TRANSFORMER_CONFIG, "in_channels": 48, "out_channels": 48}).eval()
    backbone = Wan()
    frames = synthetic_clip(frames=5, height=64, width=64)
    latents = backbone.frames_to_latents(vae, frames)
    assert latents.shape == backbone.latent_shape(transformer, vae, 5, 64, 64) == (1, 48, 2, 4, 4)
    assert backbone.image_latents(vae, frames, latents).shape == (5, 48, 1, 4, 4)
    with pytest.raises(ValueError, match="multiples of 32"):
        backbone.latent_shape(transformer, vae, 5, 48, 64)
    text = torch.randn(1, 512, 4096)
    with torch.no_grad():
        ours = backbone.predict(transformer, latents, torch.tensor(700.0), text)
        per_token = transformer(hidden_states=latents, timestep=torch.full((1, 2 * 2 * 2), 700.0),
                                encoder_hidden_states=text, return_dict=False)[0]
    assert torch.allclose(ours, per_token, atol=1e-5)
    assert backbone.latents_to_frames(vae, latents).shape == (5, 64, 64, 3)


def test_open_model_knows_the_tiny_wan():
    from motion_lora.model import open_model

    model = open_model("tiny-wan", dtype="fp32")
    assert isinstance(model.backbone, Wan) and model.source == "tiny-wan"


def test_checkpointing_the_blocks_changes_no_gradient(wan):
    """Our checkpointing of the backbone's units (the blocks) gives the LoRA the same gradients as without it."""
    from motion_lora import grad_checkpoint

    ad.inject(wan.unet, wan.backbone, "ckpt", ad.TEMPORAL, rank=2)
    try:
        g = torch.Generator().manual_seed(0)
        ad.set_tensors(wan.unet, "ckpt", {k: torch.randn(v.shape, generator=g)
                                          for k, v in ad.get_tensors(wan.unet, "ckpt").items()})
        ad.set_strengths(wan.unet, {"ckpt": 1.0})
        ad.set_trainable(wan.unet, ["ckpt"], True)
        params = ad.adapter_parameters(wan.unet, ["ckpt"])
        x, text = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 16, 4096, generator=g)
        grads = []
        for units in ([], wan.backbone.checkpoint_units(wan.unet)):
            with grad_checkpoint.checkpointed(units):
                out = wan.backbone.predict(wan.unet, x, torch.tensor([400.0]), text)
                out.square().mean().backward()
            grads.append([p.grad.clone() for p in params])
            for p in params:
                p.grad = None
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))
        assert all(a.abs().sum() > 0 for a in grads[0])  # down and up weights both learn
    finally:
        ad.remove(wan.unet, "ckpt")


def test_fp16_folder_keeps_umt5_feed_forward_output_in_fp32(wan, tmp_path):
    """UMT5's `wo` overflows in fp16; transformers keeps it in fp32 and so do we."""
    loaded = load_model(wan.save(tmp_path / "tiny_wan"), dtype="fp16")
    ff = loaded.text_encoder.encoder.block[0].layer[-1].DenseReluDense
    assert ff.wo.weight.dtype == torch.float32 and ff.wi_0.weight.dtype == torch.float16
    assert torch.isfinite(loaded.encode_prompt("a car").float()).all()


# --- Wan 2.2 A14B: two experts --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_experts(wan):
    """The tiny Wan with a second, differently seeded transformer as its low-noise expert."""
    from dataclasses import replace

    low = build_tiny_wan(seed=1).unet
    return replace(wan, low_noise_unet=low, boundary_ratio=0.6)


@pytest.mark.parametrize("scheduler", ["unipc", "euler"])
def test_two_expert_sampling_matches_wan_pipeline(two_experts, scheduler):
    """WanPipeline's A14B rule: transformer for t >= boundary_ratio * 1000, transformer_2 (at guidance_scale_2)
    below; 4 steps with boundary 0.6 run both experts."""
    from diffusers import WanPipeline

    m = two_experts
    pipe = WanPipeline(tokenizer=m.tokenizer, text_encoder=m.text_encoder, vae=m.vae, transformer=m.unet,
                       transformer_2=m.low_noise_unet, boundary_ratio=m.boundary_ratio,
                       scheduler=make_scheduler(scheduler, m.scheduler_config, m.backbone))
    pipe.set_progress_bar_config(disable=True)
    want = pipe("the red car moves left", negative_prompt="static", height=32, width=32, num_frames=5,
                num_inference_steps=4, guidance_scale=5.0, guidance_scale_2=3.0,
                generator=torch.Generator().manual_seed(3), output_type="latent").frames
    got = sample_latents(m, "the red car moves left", "static", steps=4, guidance=5.0, guidance_low_noise=3.0, seed=3,
                         scheduler=scheduler, **SMALL)
    assert (got - want).abs().max() < 1e-5
    one = sample_latents(replace_low(m, None), "the red car moves left", "static", steps=4, guidance=5.0, seed=3,
                         scheduler=scheduler, **SMALL)
    assert (got - one).abs().max() > 1e-3  # the low-noise expert did run


def replace_low(model, low):
    from dataclasses import replace

    return replace(model, low_noise_unet=low, boundary_ratio=None if low is None else model.boundary_ratio)


def test_two_expert_adapters_go_on_the_high_noise_expert_only(two_experts):
    m = two_experts
    ad.inject(m.unet, m.backbone, "tmp", ad.TEMPORAL, rank=2)
    g = torch.Generator().manual_seed(0)
    tensors = {k: (torch.randn(v.shape, generator=g) if ".lora_B." in k else v)
               for k, v in ad.get_tensors(m.unet, "tmp").items()}
    ad.remove(m.unet, "tmp")
    adapter = ad.LoraAdapter(ad.TEMPORAL, 2, 2.0, tensors, m.fingerprint)
    low_before = {k: v.clone() for k, v in m.low_noise_unet.state_dict().items()}
    seen = []
    hook = m.low_noise_unet.register_forward_pre_hook(
        lambda module, args: seen.append(any("lora" in n for n, _ in module.named_modules())))
    try:
        base = sample_latents(m, "a car", steps=4, guidance=1.0, seed=0, **SMALL)
        moved = sample_latents(m, "a car", steps=4, guidance=1.0, seed=0, adapters=[(adapter, 1.0)], **SMALL)
    finally:
        hook.remove()
    assert (moved - base).abs().max() > 1e-3
    assert seen and not any(seen)  # the low-noise expert ran, never with a LoRA in it
    assert all(torch.equal(v, low_before[k]) for k, v in m.low_noise_unet.state_dict().items())


def test_two_expert_folder_saves_and_loads_as_wan_pipeline_lays_it_out(two_experts, tmp_path):
    import json

    folder = two_experts.save(tmp_path / "a14b_tiny")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["transformer_2"] == ["diffusers", "WanTransformer3DModel"] and index["boundary_ratio"] == 0.6
    loaded = load_model(folder, dtype="fp32")
    assert loaded.boundary_ratio == 0.6
    assert loaded.backbone.sigma_range == (0.6, 1.0)  # it trains the high-noise expert, on its own sigmas
    a, b = two_experts.low_noise_unet.state_dict(), loaded.low_noise_unet.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    plain = build_tiny_wan(seed=0).save(tmp_path / "one_expert")
    one = load_model(plain, dtype="fp32")
    assert one.low_noise_unet is None and one.backbone.sigma_range == (0.0, 1.0)
