"""Test helper: write a diffusers `AutoencoderKLWan` state dict in the original Wan / ComfyUI VAE layout.

The inverse of diffusers' `convert_wan_vae_to_diffusers` for the Wan 2.1 block layout, so the tests can make
tiny `wan_2.1_vae.safetensors`-style files; checked against the converter itself in the tests.
"""

from __future__ import annotations

import re

_RESNET = {"norm1.gamma": "residual.0.gamma", "conv1.weight": "residual.2.weight", "conv1.bias": "residual.2.bias",
           "norm2.gamma": "residual.3.gamma", "conv2.weight": "residual.6.weight", "conv2.bias": "residual.6.bias",
           "conv_shortcut.weight": "shortcut.weight", "conv_shortcut.bias": "shortcut.bias"}
_FIXED = {"encoder.conv_in": "encoder.conv1", "decoder.conv_in": "decoder.conv1", "quant_conv": "conv1",
          "post_quant_conv": "conv2", "encoder.norm_out": "encoder.head.0", "decoder.norm_out": "decoder.head.0",
          "encoder.conv_out": "encoder.head.2", "decoder.conv_out": "decoder.head.2"}


def vae_key_to_original(key: str) -> str:
    module, _, param = key.rpartition(".")
    if module in _FIXED:
        return f"{_FIXED[module]}.{param}"
    m = re.match(r"^(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)$", key)
    if m:
        return f"{m.group(1)}.middle.{2 * int(m.group(2))}.{_RESNET[m.group(3)]}"
    m = re.match(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(.+)$", key)
    if m:
        return f"{m.group(1)}.middle.1.{m.group(2)}"
    m = re.match(r"^encoder\.down_blocks\.(\d+)\.(.+)$", key)
    if m:
        return f"encoder.downsamples.{m.group(1)}.{_RESNET.get(m.group(2), m.group(2))}"
    m = re.match(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", key)
    if m:
        return f"decoder.upsamples.{4 * int(m.group(1)) + int(m.group(2))}.{_RESNET[m.group(3)]}"
    m = re.match(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)$", key)
    if m:
        return f"decoder.upsamples.{4 * int(m.group(1)) + 3}.{m.group(2)}"
    raise ValueError(f"no original name for VAE key {key!r}")


def vae_to_original(state: dict) -> dict:
    return {vae_key_to_original(k): v for k, v in state.items()}
