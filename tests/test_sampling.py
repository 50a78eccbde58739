"""The sampler and the noise prior, on the tiny model: same results as diffusers, seeds, adapters, errors."""

from __future__ import annotations

import pytest
import torch

from conftest import synthetic_clip
from motion_lora import adapters as ad
from motion_lora.noise_prior import ddim_invert, mix_noise_prior, resize_latents
from motion_lora.sampling import (SCHEDULERS, SamplingCancelled, SamplingError, make_scheduler, sample,
                                  sample_latents)

SMALL = dict(width=64, height=64, frames=4)
TINY = dict(width=32, height=32, frames=3)  # where the size does not matter


def _pipeline(model, scheduler: str):
    module = pytest.importorskip(
        "diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_synth",
        reason="this diffusers has no TextToVideoSDPipeline to compare against",
    )
    pipe = module.TextToVideoSDPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                        unet=model.unet, scheduler=make_scheduler(scheduler, model.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _random_temporal_adapter(model, rank: int = 4, seed: int = 0) -> ad.LoraAdapter:
    """A temporal adapter whose up weights are nonzero, so it changes the output."""
    ad.inject(model.unet, model.backbone, "tmp", ad.TEMPORAL, rank=rank)
    g = torch.Generator().manual_seed(seed)
    tensors = {k: (torch.randn(v.shape, generator=g) * 0.5 if ".lora_B." in k else v)
               for k, v in ad.get_tensors(model.unet, "tmp").items()}
    ad.remove(model.unet, "tmp")
    return ad.LoraAdapter(ad.TEMPORAL, rank, float(rank), tensors, model.fingerprint)


@pytest.mark.parametrize("scheduler", ["ddim", "dpmpp_2m"])
def test_matches_diffusers_text_to_video_pipeline(tiny_model, scheduler):
    pipe = _pipeline(tiny_model, scheduler)
    steps = []  # the pipeline's latents after each step
    want_frames = pipe("a car", negative_prompt="blurry", num_inference_steps=3, height=64, width=64, num_frames=4,
                       guidance_scale=9.0, generator=torch.Generator().manual_seed(3), output_type="pt",
                       callback=lambda i, t, latents: steps.append(latents.clone())).frames[0].permute(0, 2, 3, 1)

    latents = sample_latents(tiny_model, "a car", "blurry", steps=3, guidance=9.0, seed=3, scheduler=scheduler,
                             **SMALL)
    frames = tiny_model.decode_latents(latents)  # what sample() returns
    assert len(steps) == 3 and latents.shape == steps[-1].shape
    assert (latents - steps[-1]).abs().max() < 1e-4
    assert frames.shape == want_frames.shape == (4, 64, 64, 3)
    assert (frames - want_frames).abs().max() < 1e-4


def test_same_seed_same_video_other_seed_other_video(tiny_model):
    a = sample(tiny_model, "a car", steps=2, seed=7, **TINY)
    b = sample(tiny_model, "a car", steps=2, seed=7, **TINY)
    c = sample(tiny_model, "a car", steps=2, seed=8, **TINY)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_gives_finite_frames(tiny_model, name):
    frames = sample(tiny_model, "a car", steps=2, guidance=1.0, scheduler=name, width=32, height=48, frames=3)
    assert frames.shape == (3, 48, 32, 3)
    assert frames.dtype == torch.float32 and frames.device.type == "cpu"
    assert torch.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1


def test_guidance_one_makes_one_unconditional_free_call_per_step(tiny_model):
    batches = []
    tiny_model.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    sample_latents(tiny_model, "a car", steps=3, guidance=1.0, **TINY)
    assert batches == [1, 1, 1]
    batches.clear()
    sample_latents(tiny_model, "a car", steps=3, guidance=5.0, **TINY)
    assert batches == [2, 2, 2]


def test_progress_and_cancel(tiny_model):
    seen = []
    sample_latents(tiny_model, "a car", steps=3, progress=lambda i, n: seen.append((i, n)), **TINY)
    assert seen == [(1, 3), (2, 3), (3, 3)]

    calls = []
    with pytest.raises(SamplingCancelled, match="step 2"):
        sample_latents(tiny_model, "a car", steps=5, cancel=lambda: len(calls) >= 2,
                       progress=lambda i, n: calls.append(i), **TINY)
    assert calls == [1, 2]


def test_noise_prior_one_reconstructs_the_reference_better_than_pure_noise(tiny_model):
    reference = tiny_model.encode_frames(synthetic_clip(3, 32, 32), torch.Generator().manual_seed(0))
    settings = dict(steps=6, guidance=1.0, seed=1, reference=reference, inversion_steps=6, **TINY)
    from_noise = sample_latents(tiny_model, "", noise_prior=0.0, **settings)
    from_prior = sample_latents(tiny_model, "", noise_prior=1.0, **settings)
    err_noise = ((from_noise - reference) ** 2).mean()
    err_prior = ((from_prior - reference) ** 2).mean()
    assert err_prior < 0.1 * err_noise, (err_prior, err_noise)


def test_noise_prior_accepts_frames_and_reports_inversion_progress(tiny_model):
    clip = synthetic_clip(6, 64, 64)  # other size and frame count than requested: resampled
    seen = []
    frames = sample(tiny_model, "a car", steps=2, noise_prior=0.5, reference=clip, inversion_steps=3,
                    progress=lambda i, n: seen.append((i, n)), **TINY)
    assert frames.shape == (3, 32, 32, 3) and torch.isfinite(frames).all()
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_mix_noise_prior_endpoints_and_resizing():
    inverted = torch.randn(1, 4, 6, 8, 8)
    noise = torch.randn(1, 4, 4, 12, 10)
    assert torch.equal(mix_noise_prior(inverted, noise, 0.0), noise)
    resized = resize_latents(inverted, tuple(noise.shape))
    assert resized.shape == noise.shape
    assert torch.allclose(mix_noise_prior(inverted, noise, 1.0), resized)
    half = mix_noise_prior(inverted, noise, 0.5)
    assert torch.allclose(half, (resized + noise) / 2**0.5, atol=1e-6)
    same = torch.randn(1, 4, 4, 12, 10)
    assert resize_latents(same, tuple(same.shape)) is same


def _official_ddim_inversion(model, latents, steps):
    """The official loop (Tune-A-Video's `ddim_loop` / `next_step`, used by MotionDirector_inference.py)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(model.scheduler_config)
    scheduler.set_timesteps(steps)
    text = model.encode_prompt("")
    for i in range(steps):
        t = scheduler.timesteps[len(scheduler.timesteps) - i - 1]
        eps = model.unet(latents, t, encoder_hidden_states=text).sample
        current, nxt = min(t - scheduler.config.num_train_timesteps // steps, 999), t
        alpha = scheduler.alphas_cumprod[current] if current >= 0 else scheduler.final_alpha_cumprod
        alpha_next = scheduler.alphas_cumprod[nxt]
        x0 = (latents - (1 - alpha) ** 0.5 * eps) / alpha**0.5
        latents = alpha_next**0.5 * x0 + (1 - alpha_next) ** 0.5 * eps
    return latents


def test_ddim_inversion_is_the_official_one(tiny_model):
    clean = tiny_model.encode_frames(synthetic_clip(3, 32, 32), torch.Generator().manual_seed(0))
    seen = []
    inverted = ddim_invert(tiny_model, clean, steps=3, progress=lambda i, n: seen.append((i, n)))
    with torch.no_grad():
        official = _official_ddim_inversion(tiny_model, clean, 3)
    assert inverted.shape == clean.shape
    assert (inverted - official).abs().max() < 1e-4
    assert not torch.allclose(inverted, clean, atol=1e-2)
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_adapter_strength_zero_is_base_and_adapters_are_removed(tiny_model):
    adapter = _random_temporal_adapter(tiny_model)
    settings = dict(steps=2, seed=5, **TINY)
    base = sample_latents(tiny_model, "a car", **settings)
    off = sample_latents(tiny_model, "a car", adapters=[(adapter, 0.0)], **settings)
    on = sample_latents(tiny_model, "a car", adapters=[(adapter, 1.0)], **settings)
    assert torch.equal(off, base)
    assert (on - base).abs().max() > 1e-3
    assert list(ad.lora_layers(tiny_model.unet)) == []
    assert torch.equal(sample_latents(tiny_model, "a car", **settings), base)


def test_adapters_none_uses_the_unet_as_it_is(tiny_model):
    """A trainer's preview: adapters already in the UNet at their current strengths are used, and kept."""
    adapter = _random_temporal_adapter(tiny_model)
    settings = dict(steps=2, seed=5, **TINY)
    with_adapter = sample_latents(tiny_model, "a car", adapters=[(adapter, 1.0)], **settings)
    ad.add_adapter(tiny_model.unet, tiny_model.backbone, "temporal", adapter)
    ad.set_strengths(tiny_model.unet, {"temporal": 1.0})
    assert torch.allclose(sample_latents(tiny_model, "a car", **settings), with_adapter, atol=1e-5)
    assert ad.current_strengths(tiny_model.unet) == {"temporal": 1.0}


def test_noise_prior_inverts_with_the_base_model_unless_asked(tiny_model, monkeypatch):
    """Official flow: the inversion noise is the base model's. `invert_with_adapters=True` uses the sampling adapters."""
    import motion_lora.noise_prior as noise_prior

    inversions = []
    real = noise_prior.ddim_invert
    monkeypatch.setitem(noise_prior.INVERSIONS, "ddim",
                        lambda *a, **k: inversions.append(real(*a, **k)) or inversions[-1])
    reference = tiny_model.encode_frames(synthetic_clip(3, 32, 32), torch.Generator().manual_seed(0))
    motion = _random_temporal_adapter(tiny_model, seed=0)
    other = _random_temporal_adapter(tiny_model, seed=1)
    settings = dict(steps=1, guidance=1.0, seed=2, noise_prior=0.5, reference=reference, inversion_steps=2, **TINY)

    def inversion(**kwargs):
        sample_latents(tiny_model, "a car", **settings, **kwargs)
        return inversions[-1]

    base = real(tiny_model, reference, 2)
    assert torch.equal(inversion(), base)
    assert torch.equal(inversion(adapters=[(motion, 1.0)]), base)  # default: the adapters do not matter
    assert torch.equal(inversion(adapters=[(other, 1.0)]), base)
    with_motion = inversion(adapters=[(motion, 1.0)], invert_with_adapters=True)
    with_other = inversion(adapters=[(other, 1.0)], invert_with_adapters=True)
    with ad.applied(tiny_model.unet, tiny_model.backbone, [(motion, 1.0)]):
        torch.testing.assert_close(with_motion, real(tiny_model, reference, 2), rtol=0, atol=1e-6)
    assert (with_motion - base).abs().max() > 1e-3 and (with_motion - with_other).abs().max() > 1e-3

    # adapters=None (a trainer's preview): the UNet's own adapters are off for the inversion only, and kept
    ad.add_adapter(tiny_model.unet, tiny_model.backbone, "temporal", motion)
    ad.set_strengths(tiny_model.unet, {"temporal": 1.0})
    assert torch.equal(inversion(), base)
    assert ad.current_strengths(tiny_model.unet) == {"temporal": 1.0}
    torch.testing.assert_close(inversion(invert_with_adapters=True), with_motion, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=100), "width=100"),
    (dict(height=60), "height=60"),
    (dict(scheduler="heun"), "unknown scheduler 'heun'"),
    (dict(noise_prior=0.5), "needs a reference"),
    (dict(noise_prior=1.5, reference=torch.zeros(1, 4, 4, 8, 8)), "between 0 and 1"),
    (dict(frames=0), "frames must be at least 1"),
    (dict(reference=torch.zeros(4, 8, 8), noise_prior=0.5), "reference must be frames"),
])
def test_bad_input_is_a_clear_error(tiny_model, kwargs, message):
    settings = {**dict(steps=1, **TINY), **kwargs}
    with pytest.raises(SamplingError, match=message):
        sample(tiny_model, "a car", **settings)


def test_unknown_scheduler_lists_the_choices():
    with pytest.raises(ValueError, match="ddim, dpmpp_2m"):
        make_scheduler("nope", {})
