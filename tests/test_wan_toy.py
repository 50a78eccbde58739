"""The Wan-architecture toy model of the toy world, and one step of the placement study (bench_wan_placement)."""

from __future__ import annotations

import pytest
import torch

from motion_lora.toyworld import wan_toy
from motion_lora.toyworld.world import render


@pytest.fixture(scope="module")
def toy_wan():
    return wan_toy.build_toy_wan(seed=0)


def test_every_world_word_is_one_token(toy_wan):
    prompt = "a red circle moving in a zig-zag on a gray background"
    assert toy_wan.tokenizer.tokenize(prompt) == ["▁" + w for w in prompt.split()]
    assert "<unk>" not in toy_wan.tokenizer.convert_ids_to_tokens(toy_wan.tokenizer(prompt).input_ids)


def test_clip_and_image_latents(toy_wan):
    """9 frames -> 9 latent frames of 8x8 (4x in space, none in time); each frame alone is an image latent."""
    frames = render("red", "square", "zigzag", "gray", frames=wan_toy.FRAMES).frames
    z = toy_wan.encode_frames(frames)
    assert z.shape == (1, 8, 9, 8, 8)
    images = toy_wan.backbone.image_latents(toy_wan.vae, frames)
    assert images.shape == (9, 8, 1, 8, 8)
    assert torch.allclose(images[0], z[:, :, :1][0], atol=1e-5)  # the causal VAE encodes the first frame alone
    assert not torch.allclose(images[3], z[:, :, 3:4][0], atol=1e-3)  # a later latent frame is not an image
    assert toy_wan.decode_latents(z).shape == (9, 32, 32, 3)


def test_pretraining_writes_a_wan_folder(tmp_path):
    from motion_lora.model import load_model

    config = wan_toy.WanPretrainConfig(vae_steps=1, vae_batch=1, steps=2, batch=2, pool=2, save_every=1)
    folder = wan_toy.pretrain_toy_wan(tmp_path / "toy-wan", config, log=tmp_path / "log.txt")
    model = load_model(folder, dtype="fp32")
    assert type(model.unet).__name__ == "WanTransformer3DModel" and model.backbone.name == "wan"
    assert model.vae.config.latents_std != [1.0] * 8  # set from the encoded world
    assert "transformer step 2/2" in (tmp_path / "log.txt").read_text()


@pytest.mark.parametrize("placement", ["a", "b", "c"])
def test_one_step_of_each_placement(toy_wan, placement):
    """The study's training call puts each path's LoRA where the placement says, through train()."""
    from bench.bench_wan_placement import train_placement

    clip = render("red", "square", "zigzag", "gray", frames=wan_toy.FRAMES).as_clip()
    result = train_placement(toy_wan, clip, placement, steps=1, rank=2, lr=1e-3, seed=0)
    temporal = {t.split(".", 2)[2] for t in result.temporal.targets}
    spatial = {t.split(".", 2)[2] for t in result.spatial[0].targets}
    attn = {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0"}
    ffn = {"ffn.net.0.proj", "ffn.net.2"}
    assert spatial == attn | ffn
    assert temporal == {"a": attn | ffn, "b": attn, "c": {"attn1.to_q", "attn1.to_k"}}[placement]
    assert result.step == 1
