"""The Wan files a ComfyUI user already has, loaded without anything else downloaded.

- `models/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors` (or 14B, Wan 2.2 experts, fp8 included): original
  Wan keys. The architecture is read off the weights as ComfyUI does (`comfy/model_detection.py`: width from
  `head.modulation`, blocks counted, heads of 128) and named against the configs that ship with the pack
  (`wan_configs/architectures.json`). fp8 weights stay fp8 in memory and are upcast per layer when used
  (`Fp8Linear`); the "scaled" fp8 files' per-layer scales are applied.
- `models/vae/wan_2.1_vae.safetensors` (or the Wan 2.2 VAE): diffusers' single-file converter maps its keys.
- Text: the pack does not parse text-encoder files. The UMT5 conditioning comes from ComfyUI's own CLIP Loader
  and Text Encode nodes (they already read `umt5_xxl_fp16` / `fp8_e4m3fn_scaled`), and the library takes those
  embeddings (`TextEmbeddings`). A diffusers Wan folder brings its own UMT5 instead (`model.load_model`).
"""

from __future__ import annotations

import json
from functools import lru_cache
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .backbones.wan import TextEmbeddings, Wan, to_diffusers_name, to_original_name
from .model import DTYPES, ModelLoadError, VideoModel
from .tiny_wan import SCHEDULER_CONFIG

ARCHITECTURES_FILE = Path(__file__).parent / "wan_configs" / "architectures.json"
FP8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))
logger = logging.getLogger(__name__)
_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")  # ComfyUI's old and new names for an fp8 layer's scale
_IGNORED_SUFFIXES = (".scale_input", ".input_scale", "scaled_fp8", ".comfy_quant")  # markers, not weights


@lru_cache(maxsize=1)
def architectures() -> dict:
    """The configs that ship with the pack: {"architectures": {name: ...}, "vaes": {name: diffusers config}}."""
    return json.loads(ARCHITECTURES_FILE.read_text())


class Fp8Linear(nn.Linear):
    """A frozen linear whose weight stays in fp8; each call upcasts it to the input's dtype (times its scale).

    peft wraps it like any `nn.Linear`, so LoRA layers on top train in the compute dtype while the base weight
    costs one byte per parameter."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype)
        scale = getattr(self, "weight_scale", None)
        if scale is not None:
            weight = weight * scale.to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight, bias)


# --- the diffusion model --------------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, with a checkpoint's `model.diffusion_model.` prefix removed."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise ModelLoadError(f"{path} is not a readable .safetensors file ({e}); re-download it") from e
    prefix = "model.diffusion_model."
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def transformer_config_from_weights(state: dict[str, torch.Tensor]) -> dict:
    """A `WanTransformer3DModel` config read off original-layout weights, by ComfyUI's rules.

    Shapes come from the weights; what ComfyUI fixes (heads of 128, patch 1x2x2, qk and cross-attention
    norms, eps, frequency width) is fixed here too, so a file ComfyUI runs is a file we run the same way."""
    if "head.modulation" not in state:
        raise ModelLoadError("not a Wan diffusion model: it has no head.modulation weight (for a diffusers "
                             "folder use models/diffusers, for other models another loader)")
    if "img_emb.proj.0.weight" in state or any(k.startswith("vace_") for k in state):
        raise ModelLoadError("this is a Wan image-to-video / VACE model; this version trains text-to-video Wan "
                             "(T2V 1.3B / 14B, Wan 2.2 TI2V-5B / T2V A14B)")
    dim = state["head.modulation"].shape[-1]
    if dim % 128:
        raise ModelLoadError(f"Wan width {dim} is not a multiple of the 128-wide heads")
    layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    in_channels = state["patch_embedding.weight"].shape[1]
    return dict(patch_size=[1, 2, 2], attention_head_dim=128, num_attention_heads=dim // 128,
                in_channels=in_channels, out_channels=state["head.head.weight"].shape[0] // 4,
                text_dim=state["text_embedding.0.weight"].shape[1], freq_dim=256,
                ffn_dim=state["blocks.0.ffn.0.weight"].shape[0], num_layers=layers, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)


def architecture_name(config: dict) -> str | None:
    """The shipped architecture this transformer config is (e.g. "wan2.1_t2v_1.3B"), or None (a custom size)."""
    keys = ("num_attention_heads", "num_layers", "ffn_dim", "in_channels", "out_channels")
    for name, arch in architectures()["architectures"].items():
        if all(arch["transformer"][k] == config[k] for k in keys):
            return name
    return None


def load_wan_transformer(path: str | Path, dtype: str | torch.dtype = "bf16", keep_fp8: bool = True,
                         device: str | torch.device = "cpu"):
    """A ComfyUI / original-layout Wan diffusion model file -> diffusers' `WanTransformer3DModel`.

    `dtype` is the compute dtype. fp8 linear weights stay fp8 with `keep_fp8` (about half the memory of bf16;
    14B fits a 24 GB card), else they are upcast to `dtype`. Norms, modulation and time embeddings stay in
    fp32, as diffusers keeps them."""
    from diffusers import WanTransformer3DModel

    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    state = read_state_dict(path)
    config = transformer_config_from_weights(state)
    scales, weights = {}, {}
    for key, value in state.items():
        if key.endswith(_IGNORED_SUFFIXES) or key == "scaled_fp8":
            continue
        scale_suffix = next((s for s in _SCALE_SUFFIXES if key.endswith(s)), None)
        try:
            if scale_suffix:
                scales[to_diffusers_name(key[: -len(scale_suffix)])] = value.float()
            else:
                weights[to_diffusers_name(key)] = value
        except ValueError as e:
            raise ModelLoadError(f"{path}: {e}; is this a Wan 2.1 / 2.2 text-to-video model file?") from e

    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(config)
    keep_fp32 = tuple(model._keep_in_fp32_modules or ())
    fp8_linears = set()
    for key, value in weights.items():
        module = key.rsplit(".", 1)[0]
        in_fp32 = any(part in keep_fp32 for part in key.split("."))
        if value.dtype in FP8 and keep_fp8 and key.endswith(".weight") and not in_fp32:
            fp8_linears.add(module)
            continue
        if value.dtype in FP8 and module in scales:
            value = value.float() * scales[module].view(-1, *([1] * (value.dim() - 1)))
        weights[key] = value.to(torch.float32 if in_fp32 else dtype)
    missing = set(model.state_dict()) - set(weights)
    unexpected = set(weights) - set(model.state_dict())
    if missing or unexpected:
        raise ModelLoadError(f"{path} does not fit the Wan architecture read off it: {len(missing)} weights "
                             f"missing (e.g. {sorted(missing)[:2]}), {len(unexpected)} unexpected "
                             f"(e.g. {sorted(unexpected)[:2]})")
    model.load_state_dict(weights, strict=True, assign=True)
    _rebuild_buffers(model)
    modules = dict(model.named_modules())
    for name in fp8_linears:
        layer = modules[name]
        layer.__class__ = Fp8Linear  # same parameters, fp8-aware forward
        if name in scales:
            layer.register_buffer("weight_scale", scales[name], persistent=False)
    model.requires_grad_(False).eval().to(device)
    return model


def _rebuild_buffers(model) -> None:
    """Non-persistent buffers (the rotary tables) are not in the file: compute them on the CPU."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    c = model.config
    model.rope = WanRotaryPosEmbed(c.attention_head_dim, tuple(c.patch_size), c.rope_max_seq_len)


def save_wan_transformer(transformer, path: str | Path) -> Path:
    """Write a `WanTransformer3DModel` in the original / ComfyUI layout (what `models/diffusion_models` holds)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {to_original_name(k): v.detach().contiguous() for k, v in transformer.state_dict().items()}
    save_file(state, str(path))
    return path


# --- the VAE ------------------------------------------------------------------------------------------------


def load_wan_vae(path: str | Path, dtype: str | torch.dtype = "bf16", device: str | torch.device = "cpu"):
    """A ComfyUI / original-layout Wan VAE file (`wan_2.1_vae.safetensors`, the Wan 2.2 VAE) -> `AutoencoderKLWan`.

    The config is the shipped one for the file's latent width (16: Wan 2.1, 48: Wan 2.2); a smaller VAE of the
    same layout (the tests' tiny one) is sized from its weights."""
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    state = read_state_dict(path)
    if "decoder.middle.0.residual.0.gamma" not in state:
        raise ModelLoadError(f"{path} is not a Wan VAE file (no decoder.middle.0.residual.0.gamma)")
    z_dim = state["conv2.weight"].shape[0]
    config = dict(architectures()["vaes"]["wan2.2_vae" if z_dim == 48 else "wan2.1_vae"])
    config["base_dim"] = state["encoder.conv1.weight"].shape[0]  # the first level is base_dim wide
    decoder_dim = state["decoder.conv1.weight"].shape[0] // config["dim_mult"][-1]  # the decoder starts widest
    config["decoder_base_dim"] = None if decoder_dim == config["base_dim"] else decoder_dim
    converted = convert_wan_vae_to_diffusers(state)
    vae = AutoencoderKLWan(**config)
    try:
        vae.load_state_dict(converted, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(f"{path} does not fit the Wan VAE layout: {e}") from e
    return vae.to(device, dtype).requires_grad_(False).eval()


# --- the bundle ---------------------------------------------------------------------------------------------


def load_wan_files(diffusion_model: str | Path, vae: str | Path, text: TextEmbeddings | None = None,
                   dtype: str | torch.dtype = "bf16", device: str | torch.device = "cpu", keep_fp8: bool = True,
                   backbone: Wan | None = None, low_noise_model: str | Path | None = None,
                   boundary_ratio: float | None = None, placement: str | None = None) -> VideoModel:
    """A `VideoModel` from ComfyUI's Wan files. Text conditioning comes in as `TextEmbeddings` (from ComfyUI's
    text encoder nodes); add prompts to it before training or sampling with them.

    Wan 2.2 A14B: `diffusion_model` is the high-noise expert's file and `low_noise_model` the low-noise one's
    (sampling switches below the boundary, 0.875 for T2V A14B unless `boundary_ratio` says otherwise); the
    model then trains the high-noise expert only, on sigmas at or above the boundary (`Wan(sigma_range=...)`).
    One A14B expert file alone trains on its own range, told by ComfyUI's file name (`..._high_noise_...`,
    `..._low_noise_...`). `backbone` overrides all of this; `placement` is the LoRA placement otherwise."""
    dtype_t = DTYPES[dtype] if isinstance(dtype, str) else dtype
    transformer = load_wan_transformer(diffusion_model, dtype_t, keep_fp8, device)
    name = architecture_name(transformer.config)
    scheduler = dict(SCHEDULER_CONFIG)
    if name is not None:
        scheduler["flow_shift"] = architectures()["architectures"][name]["flow_shift"]
    shipped = architectures()["architectures"].get(name or "", {})
    known, image_to_video = shipped.get("boundary_ratio"), bool(shipped.get("image_to_video", False))
    low_noise = None
    if low_noise_model is not None:
        low_noise = load_wan_transformer(low_noise_model, dtype_t, keep_fp8, device)
        if dict(low_noise.config) != dict(transformer.config):
            raise ModelLoadError(f"{low_noise_model} is not the same architecture as {diffusion_model}: give the "
                                 "low-noise and high-noise experts of one Wan 2.2 A14B model")
        if boundary_ratio is None and known is None:
            raise ModelLoadError(f"{diffusion_model} is not a two-expert Wan (Wan 2.2 A14B): load it without "
                                 "low_noise_model, or pass boundary_ratio")
    boundary = boundary_ratio if boundary_ratio is not None else known
    if backbone is None:
        expert = "high" if low_noise_model is not None else expert_of(diffusion_model) if boundary else None
        sigmas = {"high": (boundary, 1.0), "low": (0.0, boundary)}.get(expert, (0.0, 1.0))
        if expert == "low":
            logger.warning("%s is Wan 2.2's low-noise expert, which refines detail; a motion LoRA belongs on the "
                           "high-noise expert, which lays out the motion", Path(diffusion_model).name)
        backbone = Wan(sigma_range=sigmas, image_to_video=image_to_video)
        if placement is not None:
            backbone = backbone.with_placement(placement)
    text = text if text is not None else TextEmbeddings()
    return VideoModel(transformer, load_wan_vae(vae, dtype_t, device), text.to(device), None, scheduler,
                      backbone, str(diffusion_model), dtype_t, low_noise, boundary if low_noise is not None else None)


def expert_of(path: str | Path) -> str | None:
    """"high" or "low" for a Wan 2.2 expert's file as ComfyUI names them (`wan2.2_t2v_high_noise_14B_...`)."""
    name = Path(path).name.lower()
    return "high" if "high_noise" in name else "low" if "low_noise" in name else None
