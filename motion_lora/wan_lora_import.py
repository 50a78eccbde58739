"""Wan LoRA files that other trainers wrote, read into a `LoraAdapter`.

The layouts ComfyUI's core loader accepts for Wan (`comfy/lora.py`, `model_lora_keys_unet`):
- diffusion-pipe / PEFT style: `diffusion_model.blocks.0.self_attn.q.lora_A.weight` / `.lora_B.weight`;
- musubi-tuner / kohya style: `lora_unet_blocks_0_self_attn_q.lora_down.weight` / `.lora_up.weight`, `.alpha`;
and diffusers' own (`transformer.blocks.0.attn1.to_q.lora_A.weight`). Per-layer alphas and ranks are folded
into one adapter exactly: each layer's up weight is scaled by `alpha_i / rank_i`, smaller ranks are padded
with zeros, and the adapter's alpha equals its rank (so its scale is 1).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .adapters import KINDS, TEMPORAL, LoraAdapter
from .backbones.wan import to_diffusers_name

_KOHYA = re.compile(r"^lora_unet_blocks_(\d+)_(self_attn|cross_attn)_(q|k|v|o)$|^lora_unet_blocks_(\d+)_ffn_(0|2)$")


class WanLoraImportError(ValueError):
    """A file that is not a Wan LoRA this reader knows; the message names the file and what is wrong."""


def _module_path(name: str) -> str:
    """A layer name of any supported layout -> the diffusers module path of our adapters."""
    if name.startswith("lora_unet_"):
        m = _KOHYA.match(name)
        if not m:
            raise ValueError(name)
        if m.group(1) is not None:
            return to_diffusers_name(f"blocks.{m.group(1)}.{m.group(2)}.{m.group(3)}")
        return to_diffusers_name(f"blocks.{m.group(4)}.ffn.{m.group(5)}")
    if name.startswith("transformer."):
        return name[len("transformer."):]
    return to_diffusers_name(name.removeprefix("diffusion_model."))


def _pairs(tensors: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor, float | None]]:
    """layer name -> (down, up, alpha or None), whatever the layout's suffixes."""
    out = {}
    for key in tensors:
        for down, up in ((".lora_A.weight", ".lora_B.weight"), (".lora_down.weight", ".lora_up.weight")):
            if key.endswith(down):
                name = key[: -len(down)]
                if name + up not in tensors:
                    raise WanLoraImportError(f"{key} has no matching {name + up}")
                alpha = tensors.get(name + ".alpha")
                out[name] = (tensors[key], tensors[name + up], None if alpha is None else float(alpha))
    return out


def read_wan_lora(path: str | Path, kind: str = TEMPORAL, name: str = "") -> LoraAdapter:
    """A Wan LoRA written by musubi-tuner, diffusion-pipe, ai-toolkit or diffusers, as an adapter of `kind`."""
    from safetensors.torch import load_file

    path = Path(path)
    if kind not in KINDS:
        raise ValueError(f"adapter kind must be one of {KINDS}, got {kind!r}")
    if not path.is_file():
        raise WanLoraImportError(f"LoRA file not found: {path}")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise WanLoraImportError(f"{path} is not a readable .safetensors file ({e})") from e
    pairs = _pairs(tensors)
    if not pairs:
        raise WanLoraImportError(f"{path} holds no LoRA weights (no lora_A/lora_B or lora_down/lora_up keys)")
    used = {k for n in pairs for k in tensors if k.startswith(n + ".")}
    unknown = sorted(set(tensors) - used)
    if unknown:
        raise WanLoraImportError(f"{path} has {len(unknown)} keys this reader does not understand, e.g. "
                                 f"{unknown[:3]} (only plain LoRA on Wan's linears is supported)")
    rank = max(down.shape[0] for down, _, _ in pairs.values())
    out = {}
    for layer, (down, up, alpha) in pairs.items():
        try:
            module = _module_path(layer)
        except ValueError:
            raise WanLoraImportError(f"{path}: {layer!r} is not a Wan transformer layer this pack knows") from None
        r = down.shape[0]
        scale = (alpha if alpha is not None else r) / r  # a file without alphas means scale 1 (ComfyUI's reading)
        a = torch.zeros(rank, down.shape[1])
        b = torch.zeros(up.shape[0], rank)
        a[:r] = down.float()
        b[:, :r] = up.float() * scale
        out[f"{module}.lora_A.weight"] = a
        out[f"{module}.lora_B.weight"] = b
    return LoraAdapter(kind, rank, float(rank), out, "", {"imported_from": str(path)}, name or path.stem)
