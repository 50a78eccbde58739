"""The shipped toy model: it loads offline under its name, and a short customisation, sampled from the noise
prior, transfers a held-out motion."""

from pathlib import Path

import pytest
import torch

from motion_lora.toyworld import metrics
from motion_lora.toyworld.model import TOY_NAME, WEIGHTS
from motion_lora.toyworld.world import MOTIONS

pytestmark = pytest.mark.skipif(not (WEIGHTS / "model_index.json").is_file(), reason="toy model weights not shipped")

# Margins set from measured spreads (toy model as shipped, one CPU thread):
# - noise prior: mean motion fidelity over EVAL_OBJECTS, base vs noise prior 0.5, on the zig-zag, sample seeds
#   1000-1004: gaps per seed 0.12, 0.09, 0.29, 0.32, 0.34; the test averages seeds 1000-1002 (gap 0.17)
#   -> PRIOR_GAIN 0.08. (On the circle the prior's gain is within noise on this model: -0.03..0.17.)
# - customisation: the clip's flow-free denoising loss with the motion LoRA alone over the base's, after
#   100 steps (the demo's settings), training seeds 0-2 on zig-zag and circle: 0.26..0.35 -> LOSS_RATIO 0.6.
# Motion fidelity of the LoRA alone (without the noise prior) on other prompts is NOT tested: on this toy
# model it is not above the base model's over seeds (README, "Toy world": the LoRA fits the clip but does not
# carry its motion to other prompts), and a test pinned to a lucky seed proves nothing.
PRIOR_GAIN = 0.08
PRIOR_SEEDS = (1000, 1001, 1002)
LOSS_RATIO = 0.6
# - customisation + noise prior against the uncustomised model with the same prior (the official single-video
#   inference), circle, MotionDirector 100 steps (the demo's settings), sample seed 1000: gaps 0.72, 0.72, 0.81
#   over training seeds 0-2 (0.92 / 0.80 / 0.89 against 0.08; the zig-zag: 0.13-0.53) -> CUSTOMISATION_GAIN 0.4.
CUSTOMISATION_GAIN = 0.4
# - motion words from pure noise (test below): moving word minus "standing still", cosine with the data's
#   change 0.25..0.88 and size 0.54..0.60 (the model of 2026-11: size 0.00..0.03) -> 0.1 and 0.25.
MOTION_WORD_COS = 0.1
MOTION_WORD_SIZE = 0.25
EVAL_OBJECTS = [("blue", "circle", "black"), ("yellow", "triangle", "black"), ("green", "circle", "gray")]


@pytest.fixture(scope="module")
def toy():
    from motion_lora.model import open_model

    return open_model("toyworld", dtype="fp32")


def test_toy_model_is_zeroscope_shaped_small_and_loads_by_name(toy):
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextModel

    from motion_lora.model import open_model

    assert isinstance(toy.unet, UNet3DConditionModel) and isinstance(toy.vae, AutoencoderKL)
    assert isinstance(toy.text_encoder, CLIPTextModel) and toy.backbone.name == "unet3d"
    size = sum(f.stat().st_size for f in Path(WEIGHTS).rglob("*.safetensors"))
    assert size < 20 * 2**20
    assert open_model(TOY_NAME, dtype="fp32").source == toy.source


def test_the_noise_prior_carries_a_held_out_motion_into_other_prompts(toy):
    from motion_lora.toyworld.evaluate import generate
    from motion_lora.toyworld.world import prompt_for, render

    clip = render("red", "square", "zigzag", "gray", seed=0)
    base, prior = [], []
    for seed in PRIOR_SEEDS:
        for colour, shape, background in EVAL_OBJECTS:
            prompt = prompt_for(colour, shape, "zigzag", background)
            base.append(metrics.motion_fidelity(clip.frames, generate(toy, prompt, seed=seed)))
            prior.append(metrics.motion_fidelity(
                clip.frames, generate(toy, prompt, seed=seed, noise_prior=0.5, reference=clip.frames)))
    base, prior = sum(base) / len(base), sum(prior) / len(prior)
    assert prior > base + PRIOR_GAIN, (prior, base)


@torch.no_grad()
def _clip_loss(model, clip, adapters, draws: int = 16) -> float:
    """The clip's denoising loss at fixed noise and timesteps, with exactly `adapters` applied."""
    from motion_lora.adapters import applied
    from motion_lora.losses import mse

    objective = model.backbone.objective(model.scheduler_config)
    latents = model.encode_frames(clip.frames, torch.Generator().manual_seed(0)).float()
    text = model.encode_prompt(clip.prompt)
    generator = torch.Generator().manual_seed(123)
    total = 0.0
    with applied(model.unet, model.backbone, adapters):
        for _ in range(draws):
            noise = torch.randn(latents.shape, generator=generator)
            t = objective.sample_timesteps(1, generator)
            pred = model.backbone.predict(model.unet, objective.add_noise(latents, noise, t), t, text)
            total += float(mse(pred, objective.target(latents, noise, t)))
    return total / draws


def test_a_short_customisation_fits_the_held_out_motion_with_the_motion_lora_alone(toy):
    from motion_lora.demo import SETTINGS
    from motion_lora.toyworld.world import render
    from motion_lora.training import TrainConfig, train

    torch.set_num_threads(1)
    clip = render("red", "square", "zigzag", "gray", seed=0).as_clip()
    config = TrainConfig.from_recipe("single-video", steps=100, checkpoint_every=0, seed=0, beta=1.0, **SETTINGS)
    motion = train(toy, [clip], config).temporal
    base, tuned = _clip_loss(toy, clip, []), _clip_loss(toy, clip, [(motion, 1.0)])
    assert tuned < LOSS_RATIO * base, (tuned, base)


def test_a_short_customisation_carries_the_held_out_motion_beyond_what_the_noise_prior_alone_does(toy):
    """The paper's single-video inference: the 100-step motion LoRA sampled from the noise prior puts the circle
    into three other prompts far better than the uncustomised model sampled from the same prior. (The LoRA
    without the prior does not, on this toy model: README, "Why the LoRA alone carries nothing here".)"""
    from motion_lora.demo import SETTINGS
    from motion_lora.toyworld.evaluate import generate
    from motion_lora.toyworld.world import prompt_for, render
    from motion_lora.training import TrainConfig, train

    torch.set_num_threads(1)
    clip = render("red", "square", "circle", "gray", seed=0)
    config = TrainConfig.from_recipe("single-video", steps=100, checkpoint_every=0, seed=0, beta=1.0, **SETTINGS)
    motion = train(toy, [clip.as_clip()], config).temporal
    base, tuned = [], []
    for colour, shape, background in EVAL_OBJECTS:
        prompt = prompt_for(colour, shape, "circle", background)
        base.append(metrics.motion_fidelity(
            clip.frames, generate(toy, prompt, seed=1000, noise_prior=0.5, reference=clip.frames)))
        tuned.append(metrics.motion_fidelity(
            clip.frames, generate(toy, prompt, seed=1000, adapters=[(motion, 1.0)], noise_prior=0.5,
                                  reference=clip.frames)))
    base, tuned = sum(base) / len(base), sum(tuned) / len(tuned)
    assert tuned > base + CUSTOMISATION_GAIN, (tuned, base)


@torch.no_grad()
def test_from_pure_noise_the_shipped_model_stages_a_moving_object_where_its_motion_word_puts_it(toy):
    """At the noisiest timestep the clip is all but hidden and the prompt is what says where the object is: the
    change in the model's clean-clip prediction from "standing still" to a moving word must point the way the
    data's average clip changes (a moving object starts off-centre, `world.start_position`) and be of a
    similar size. The model shipped before 2026-12 changed nothing (size 0.00-0.03). What it does not learn
    is the direction: "moving right" minus "moving left" is 0.01 of the data's change (README, Toy world)."""
    import random

    from motion_lora.toyworld.world import render

    scheduler = toy.backbone.objective(toy.scheduler_config).scheduler
    generator = torch.Generator().manual_seed(0)
    rng = random.Random(1)

    def data_mean(motion):
        return torch.cat([toy.encode_frames(render("red", "square", motion, "gray", seed=rng.randrange(10**6)).frames,
                                            generator).float() for _ in range(32)]).mean(0)

    from motion_lora.toyworld.world import FRAMES, SIZE

    alpha = scheduler.alphas_cumprod[999]
    shape = toy.backbone.latent_shape(toy.unet, toy.vae, FRAMES, SIZE, SIZE)  # one clip: [1, C, F, h, w]
    noisy = torch.randn((8, *shape[1:]), generator=generator)  # 8 draws of the noise, one prompt each
    t = torch.full((8,), 999)

    def predicted_mean(motion):
        text = toy.encode_prompt([f"a red square {MOTIONS[motion]} on a gray background"] * 8)
        eps = toy.backbone.predict(toy.unet, noisy, t, text)
        return ((noisy - (1 - alpha).sqrt() * eps) / alpha.sqrt()).mean(0)

    still_data, still_model = data_mean("still"), predicted_mean("still")
    for motion in ("right", "left", "up", "down"):
        data, model = data_mean(motion) - still_data, predicted_mean(motion) - still_model
        cos = torch.nn.functional.cosine_similarity(data.flatten(), model.flatten(), dim=0)
        size = model.norm() / data.norm()
        assert cos > MOTION_WORD_COS and size > MOTION_WORD_SIZE, (motion, cos, size)
