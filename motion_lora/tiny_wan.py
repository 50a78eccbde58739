"""A tiny Wan 2.1-shaped model built in code: for tests and for trying the Wan path without weights.

Same architecture as Wan 2.1 T2V (WanTransformer3DModel, AutoencoderKLWan with the real block layout,
UMT5EncoderModel, a T5-style Unigram tokenizer), random weights from a fixed seed, nothing downloaded.
The transformer's shape is one that ComfyUI can load too (METHOD.md): ComfyUI infers a Wan model from its
weights but fixes the head size at 128 and the text width at 4096, so the tiny model has one head of 128,
and its text encoder outputs 4096 features (from one small layer, so it stays cheap).
"""

from __future__ import annotations

import torch

from .backbones import Wan
from .model import DTYPES, VideoModel

TINY_WAN_NAME = "tiny Wan (built-in test model, no weights)"

TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=1,
    attention_head_dim=128,  # ComfyUI: num_heads = dim // 128
    in_channels=16,
    out_channels=16,
    text_dim=4096,  # ComfyUI keeps WanModel's default text_dim
    freq_dim=256,
    ffn_dim=256,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
VAE_CONFIG = dict(
    base_dim=8,  # Wan 2.1's VAE has 96; the block layout below is the real one (so its file converts)
    z_dim=16,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    attn_scales=[],
    temperal_downsample=[False, True, True],
)
TEXT_CONFIG = dict(
    d_model=4096,
    d_kv=8,
    d_ff=32,
    num_layers=1,
    num_heads=1,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    feed_forward_proj="gated-gelu",
    dropout_rate=0.0,
)
# The scheduler of Wan-AI's diffusers folders (Wan2.1-T2V-1.3B-Diffusers): UniPC in flow-prediction mode.
SCHEDULER_CONFIG = {
    "_class_name": "UniPCMultistepScheduler",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "disable_corrector": [],
    "dynamic_thresholding_ratio": 0.995,
    "final_sigmas_type": "zero",
    "flow_shift": 3.0,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "predict_x0": True,
    "prediction_type": "flow_prediction",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "solver_order": 2,
    "solver_p": None,
    "solver_type": "bh2",
    "steps_offset": 0,
    "thresholding": False,
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "use_beta_sigmas": False,
    "use_exponential_sigmas": False,
    "use_flow_sigmas": True,
    "use_karras_sigmas": False,
}
WORDS = ("the", "a", "car", "red", "blue", "dog", "cat", "runs", "moves", "left", "right", "camera", "pans",
         "zooms", "in", "out", "video", "of", "on", "road", "static", "blurred")


def build_tokenizer(words=WORDS):
    """A SentencePiece-style Unigram tokenizer as UMT5's (<pad>=0, </s>=1, <unk>=2, "▁" word starts, "</s>" at the
    end), with letters and `words` as single pieces; built with the `tokenizers` library, so any transformers
    version loads it."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{w}", -1.0) for w in words]
    letters = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"
    pieces += [(c, -5.0) for c in letters] + [(f"▁{c}", -4.0) for c in letters]
    model = Tokenizer(Unigram(pieces, unk_id=2, byte_fallback=False))
    model.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    model.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    model.post_processor = processors.TemplateProcessing(single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"],
                                                         special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=model, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)


def build_tiny_wan(seed: int = 0, dtype: str | torch.dtype = "fp32", device: str | torch.device = "cpu",
                   backbone: Wan | None = None) -> VideoModel:
    """The tiny Wan with weights drawn from `seed`: the same seed gives the same model."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(**TRANSFORMER_CONFIG)
        vae = AutoencoderKLWan(**VAE_CONFIG)
        config = UMT5Config(vocab_size=len(tokenizer), **TEXT_CONFIG, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
        text_encoder = UMT5EncoderModel(config)
    for part in (transformer, vae, text_encoder):
        part.requires_grad_(False).eval().to(device)
        if dtype != torch.float32:
            part.to(dtype=dtype)
    return VideoModel(transformer, vae, text_encoder, tokenizer, dict(SCHEDULER_CONFIG), backbone or Wan(),
                      "tiny-wan", dtype)


def save_tiny_wan(folder, seed: int = 0):
    """Write the tiny Wan as a diffusers folder (readable by `load_model` and by diffusers' WanPipeline)."""
    return build_tiny_wan(seed).save(folder)
