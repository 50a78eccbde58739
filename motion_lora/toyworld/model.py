"""The toy text-to-video model: ZeroScope's architecture family, sized to be pretrained on a CPU.

`UNet3DConditionModel` + `AutoencoderKL` + `CLIPTextModel` + a CLIP BPE tokenizer, exactly
the classes ZeroScope uses, so everything the pack runs on ZeroScope runs on it. What
makes it cheap: 32x32 frames, a VAE with 4x downsampling (8x8 latents), 8 frames, a
UNet of about 1.3 M parameters and a tokenizer whose vocabulary holds the world's words
as single tokens. `build_toy_model` gives the untrained model (pretrain.py trains it);
`load_toy_model` reads the shipped, pretrained weights from `motion_lora/toyworld/model`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from ..backbones import ZeroScope
from ..model import VideoModel
from ..tiny import SCHEDULER_CONFIG, _bytes_to_unicode, build_parts
from .world import BACKGROUNDS, COLOURS, MOTIONS, SHAPES

TOY_NAME = "toyworld (pretrained toy model, 32x32, 8 frames)"
WEIGHTS = Path(__file__).resolve().parent / "model"
MAX_TOKENS = 20
WORD_STD = 1.0  # initial std of the text encoder's word embeddings

UNET_CONFIG = dict(
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    layers_per_block=1,
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=8,
    sample_size=8,
)
VAE_CONFIG = dict(
    block_out_channels=(16, 32, 32),  # three levels: 4x downsampling, 32x32 frames -> 8x8 latents
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=32,
    scaling_factor=1.0,  # pretraining sets it to 1 / std of the latents, as Stable Diffusion's 0.18215
)
TEXT_CONFIG = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=MAX_TOKENS,
    projection_dim=32,
)


def world_words() -> list[str]:
    """Every word of every prompt the world writes (CLIP's tokenizer splits "zig-zag" at the hyphen)."""
    words = {"a", "on", "background", "-"}
    for phrase in [*COLOURS, *SHAPES, *BACKGROUNDS, *MOTIONS.values()]:
        words.update(phrase.replace("-", " ").split())
    return sorted(words)


def build_tokenizer():
    """A CLIP BPE tokenizer whose merges spell each world word as one token; other text falls back to bytes."""
    from transformers import CLIPTokenizer

    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges: list[str] = []
    for word in sorted(world_words(), key=lambda w: (-len(w), w)):  # long words first: no shorter word's merge
        # splits a longer one (checked by the tests)
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:  # left to right: shared prefixes ("gr" in green, gray) give the same merge
            a, b = pieces[0], pieces[1]
            if f"{a} {b}" not in merges:
                merges.append(f"{a} {b}")
                vocab.setdefault(a + b, len(vocab))
            pieces = [a + b] + pieces[2:]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        tokenizer = CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"))
    tokenizer.model_max_length = MAX_TOKENS
    return tokenizer


def build_toy_model(seed: int = 0) -> VideoModel:
    """The untrained toy model (fp32, CPU), weights drawn from `seed`.

    The word embeddings start far apart (std `WORD_STD`), as a pretrained CLIP's are. At CLIP's initial std
    of 0.02 the motion words stayed where they started while the colour words grew: "left" and "right" ended
    0.2 apart in the encoder's output against 2 to 6 for two colours, the UNet could not tell the motions
    apart, and so never sent the words a gradient that would have pushed them apart."""
    tokenizer = build_tokenizer()
    unet, vae, text_encoder = build_parts(UNET_CONFIG, VAE_CONFIG, TEXT_CONFIG, tokenizer, seed)
    with torch.no_grad():  # word vectors of norm ~ sqrt(32), not CLIP's std 0.02 (see the docstring)
        text_encoder.get_input_embeddings().weight.normal_(0.0, WORD_STD, generator=torch.Generator().manual_seed(seed))
    return VideoModel(unet, vae, text_encoder, tokenizer, dict(SCHEDULER_CONFIG), ZeroScope(), "toyworld")


def load_toy_model(dtype: str | torch.dtype = "fp32", device: str | torch.device = "cpu") -> VideoModel:
    """The shipped pretrained toy model (a diffusers folder inside the package), loaded offline."""
    from ..model import ModelLoadError, load_model

    if not (WEIGHTS / "model_index.json").is_file():
        raise ModelLoadError(f"the toy model's weights are missing from {WEIGHTS}: reinstall the pack, or "
                             "pretrain them with `python -m motion_lora toyworld pretrain`.")
    return load_model(WEIGHTS, dtype=dtype, device=device)
