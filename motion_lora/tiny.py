"""A tiny ZeroScope-shaped model built in code: for tests, the demo, and trying the pack without weights.

Same architecture as the real thing (UNet3DConditionModel with cross-attention and
temporal transformers, AutoencoderKL (16x downsampling, for speed), CLIPTextModel, a CLIP BPE
tokenizer), a few hundred thousand parameters each, random weights from a fixed seed.
Nothing is downloaded: the tokenizer's vocabulary is generated here too.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from .backbones import ZeroScope
from .model import DTYPES, VideoModel

TINY_NAME = "tiny (built-in test model, no weights)"

# Sized so that the shipped workflows' own settings (384x384, 16 frames, 30 sampling steps) run on a CPU in
# seconds per step: attention only below full latent resolution, and a 16x VAE (ZeroScope's is 8x; the
# backbone reads the factor from the config) so a 384 px frame is a 24x24 latent.
UNET_CONFIG = dict(
    block_out_channels=(16, 32, 64),
    down_block_types=("DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D"),
    up_block_types=("CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"),
    layers_per_block=1,
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=4,
    sample_size=8,
)
VAE_CONFIG = dict(
    block_out_channels=(8, 8, 16, 16, 16),  # five levels: 16x downsampling
    down_block_types=("DownEncoderBlock2D",) * 5,
    up_block_types=("UpDecoderBlock2D",) * 5,
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=64,
    scaling_factor=0.18215,
)
TEXT_CONFIG = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    projection_dim=32,
)
# ZeroScope v2's scheduler_config.json
SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def _bytes_to_unicode() -> list[str]:
    """CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def build_tokenizer():
    """A real CLIP BPE tokenizer with a byte-level vocabulary and a few merges, written to a temp folder."""
    from transformers import CLIPTokenizer

    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges = []
    for a, b in [("t", "h"), ("th", "e</w>"), ("a", "n"), ("i", "n"), ("o", "n</w>"), ("c", "a"), ("ca", "r</w>")]:
        merges.append(f"{a} {b}")
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        tokenizer = CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"))
    tokenizer.model_max_length = 77
    return tokenizer


def build_parts(unet_config: dict, vae_config: dict, text_config: dict, tokenizer, seed: int):
    """A UNet3D, a KL VAE and a CLIP text encoder for `tokenizer`, weights drawn from `seed` (the caller's global
    RNG untouched): the ZeroScope-family parts of every model this pack builds in code."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet3DConditionModel(**unet_config)
        vae = AutoencoderKL(**vae_config)
        text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), **text_config,
                                                    bos_token_id=tokenizer.bos_token_id,
                                                    eos_token_id=tokenizer.eos_token_id,
                                                    pad_token_id=tokenizer.pad_token_id))
    return unet, vae, text_encoder


def build_tiny_model(seed: int = 0, dtype: str | torch.dtype = "fp32", device: str | torch.device = "cpu") -> VideoModel:
    """The tiny model with weights drawn from `seed`: the same seed gives the same model."""
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    tokenizer = build_tokenizer()
    unet, vae, text_encoder = build_parts(UNET_CONFIG, VAE_CONFIG, TEXT_CONFIG, tokenizer, seed)
    for part in (unet, vae, text_encoder):
        part.requires_grad_(False).eval().to(device)
        if dtype != torch.float32:
            part.to(dtype=dtype)
    return VideoModel(unet, vae, text_encoder, tokenizer, dict(SCHEDULER_CONFIG), ZeroScope(), "tiny", dtype)


def save_tiny_model(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny model as a diffusers folder (readable by `load_model` and by diffusers itself)."""
    return build_tiny_model(seed).save(folder)
