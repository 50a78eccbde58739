"""The shipped toy model: it loads offline under its name, and a short customisation transfers a held-out motion."""

from pathlib import Path

import pytest
import torch

from motion_lora.toyworld import metrics
from motion_lora.toyworld.model import TOY_NAME, WEIGHTS

pytestmark = pytest.mark.skipif(not (WEIGHTS / "model_index.json").is_file(), reason="toy model weights not shipped")

# Exactly bench/bench_ablation.py's "md-b1" row for seed 0 (one zig-zag clip, 100 steps, rank 16,
# lr 5e-3, beta 1; three prompts with other objects, sample seed 1000, no noise prior: the noise prior
# alone already carries the clip's motion, see README), against the uncustomised model on the same
# prompts and seed. Measured gain in motion fidelity over seeds 0, 1, 2: +0.28, +0.00, +0.08 (mean
# 0.12, sd 0.14): on the shipped, under-trained toy model the effect is NOT robust over seeds, so this
# test pins seed 0 (deterministic on the CPU: +0.28) as a regression check of the whole path on real
# weights; MARGIN leaves room for float differences between machines. A better-pretrained toy model
# should let this become a seed-robust margin (README, "Toy world").
MARGIN = 0.15
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


def test_a_short_customisation_transfers_the_motion(toy):
    from motion_lora.demo import SETTINGS
    from motion_lora.toyworld.evaluate import generate
    from motion_lora.toyworld.world import prompt_for, render
    from motion_lora.training import TrainConfig, train

    torch.set_num_threads(1)
    clip = render("red", "square", "zigzag", "gray", seed=0)
    config = TrainConfig.from_recipe("single-video", steps=100, checkpoint_every=0, seed=0, beta=1.0, **SETTINGS)
    motion = train(toy, [clip.as_clip()], config).temporal
    tuned, base = [], []
    for colour, shape, background in EVAL_OBJECTS:
        prompt = prompt_for(colour, shape, "zigzag", background)
        tuned.append(metrics.motion_fidelity(clip.frames, generate(toy, prompt, seed=1000, adapters=[(motion, 1.0)])))
        base.append(metrics.motion_fidelity(clip.frames, generate(toy, prompt, seed=1000)))
    tuned, base = sum(tuned) / len(tuned), sum(base) / len(base)
    assert tuned > base + MARGIN, (tuned, base)
