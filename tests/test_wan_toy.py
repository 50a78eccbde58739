"""The Wan-architecture toy model of the toy world, and one step of the placement study (bench_wan_placement)."""

from __future__ import annotations

import json

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


def test_pixel_vae_is_lossless(toy_wan):
    """9 frames -> 9 latent frames of 8x8x48 through the Wan backbone's own encode/decode, exactly back."""
    frames = render("red", "square", "zigzag", "gray", frames=wan_toy.FRAMES).frames
    z = toy_wan.encode_frames(frames)
    assert z.shape == (1, 48, 9, 8, 8)
    assert 0.2 < float(z.std()) < 2.0  # scaled to the order of unit variance
    assert torch.allclose(toy_wan.decode_latents(z), frames, atol=1e-6)
    images = toy_wan.backbone.image_latents(toy_wan.vae, frames)
    assert images.shape == (9, 48, 1, 8, 8)


def test_transformer_is_wide_enough_to_carry_a_patch_of_noise(toy_wan):
    """A token holds patch x channels latent values (2x2x48 = 192); a narrower transformer cannot pass the
    noise through to its velocity output, and its samples stay noise (the width-128 toy did exactly that)."""
    cfg = toy_wan.unet.config
    token_values = cfg.in_channels * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2]
    assert cfg.num_attention_heads * cfg.attention_head_dim >= token_values


def test_pretraining_draws_every_noise_level():
    """Uniform sigmas, not the fine-tuning shift (which almost never draws the last, low-noise steps)."""
    objective = wan_toy.build_toy_wan(seed=0).backbone.objective({})
    t = wan_toy._pretraining_timesteps(objective, 20000, torch.Generator().manual_seed(0))
    low = float((t < 200).float().mean())
    assert 0.18 < low < 0.22 and float(t.min()) >= 0 and float(t.max()) <= 1000
    shifted = objective.sample_timesteps(20000, torch.Generator().manual_seed(0))
    assert float((shifted < 200).float().mean()) < 0.02  # why pretraining does not use it


def test_learnt_vae_option_has_wan_latents():
    """The AutoencoderKLWan option: 4x in space, none in time; the causal VAE encodes the first frame alone."""
    model = wan_toy.build_toy_wan(seed=0, learnt_vae=True)
    frames = render("red", "square", "zigzag", "gray", frames=wan_toy.FRAMES).frames
    z = model.encode_frames(frames)
    assert z.shape == (1, 8, 9, 8, 8)
    images = model.backbone.image_latents(model.vae, frames)
    assert torch.allclose(images[0], z[:, :, :1][0], atol=1e-5)
    assert not torch.allclose(images[3], z[:, :, 3:4][0], atol=1e-3)  # a later latent frame is not an image


def test_pixel_latents_are_normalised_on_the_world():
    """Measured per-channel stats make the world's latents about N(0, 1), the flow noise's scale; the fixed
    PIXEL_STD with a zero mean left them a whole noise std off (mean -0.97: the backgrounds are dark)."""
    import random

    mean, std = wan_toy.pixel_stats(seed=2, clips=128)
    model = wan_toy.build_toy_wan()
    rng = random.Random(5)
    clips = [wan_toy.random_clip(rng).frames for _ in range(96)]
    old = torch.cat([model.encode_frames(c) for c in clips])
    model.vae.register_to_config(latents_mean=mean, latents_std=std)
    new = torch.cat([model.encode_frames(c) for c in clips])
    assert float(old.mean()) < -0.8
    assert abs(float(new.mean())) < 0.3 and 0.85 < float(new.std()) < 1.15


def test_the_command_line_defaults_are_the_configs():
    args = vars(wan_toy.parser().parse_args(["--output", "x"]))
    config = wan_toy.WanPretrainConfig()
    assert all(args[k] == v for k, v in vars(config).items())
    assert vars(wan_toy.parser().parse_args(["--output", "x", "--no-normalise-pixels", "--learnt-vae"])
                )["normalise_pixels"] is False


def test_pretraining_writes_what_load_toy_wan_reads(tmp_path):
    config = wan_toy.WanPretrainConfig(steps=3, stop_after=2, batch=2, pool=2, save_every=1, layers=1)
    folder = wan_toy.pretrain_toy_wan(tmp_path / "toy-wan", config, log=tmp_path / "log.txt")
    model = wan_toy.load_toy_wan(folder, placement="c")
    assert type(model.unet).__name__ == "WanTransformer3DModel" and model.backbone.placement == "c"
    assert model.backbone.text_tokens == config.text_tokens == wan_toy.TEXT_TOKENS < 512
    settings = json.loads((folder / "pretrain.json").read_text())
    del settings["text_tokens"]  # a folder pretrained before the setting existed was padded to Wan's 512
    (folder / "pretrain.json").write_text(json.dumps(settings))
    assert wan_toy.load_toy_wan(folder).backbone.text_tokens == 512
    assert len(model.unet.blocks) == 1
    stats = json.loads((folder / wan_toy.PIXEL_STATS_FILE).read_text())
    assert model.vae.config.latents_mean == stats["latents_mean"] and model.vae.config.latents_std == stats["latents_std"]
    assert abs(stats["latents_mean"][0]) > 0.3  # measured, not the fixed default of 0
    assert "transformer step 2/3" in (tmp_path / "log.txt").read_text()
    assert "step 3/3" not in (tmp_path / "log.txt").read_text()  # stop_after ends the schedule early
    x = torch.randn(1, 48, 9, 8, 8)
    text = model.encode_prompt("a red square moving left on a gray background")
    assert not torch.equal(model.backbone.predict(model.unet, x, torch.tensor([500.0]), text),
                           model.backbone.predict(wan_toy.build_toy_wan().unet, x, torch.tensor([500.0]), text))
    with pytest.raises(FileNotFoundError, match="pretrain one"):
        wan_toy.load_toy_wan(tmp_path / "nothing")


def test_every_world_prompt_fits_the_toys_text_length(toy_wan):
    from motion_lora.toyworld.world import BACKGROUNDS, COLOURS, MOTIONS, SHAPES, prompt_for

    longest = max((prompt_for(c, s, m, b) for c in COLOURS for s in SHAPES for m in MOTIONS for b in BACKGROUNDS),
                  key=lambda p: len(toy_wan.tokenizer(p).input_ids))
    assert len(toy_wan.tokenizer(longest).input_ids) <= wan_toy.TEXT_TOKENS
    text = toy_wan.encode_prompt(longest)
    assert text.shape[1] == wan_toy.TEXT_TOKENS and text[0, -1].abs().max() == 0  # end-of-text included, with room


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
