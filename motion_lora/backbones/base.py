"""What the trainer and the sampler need to know about a text-to-video backbone.

Everything that differs between model families (which linears are spatial or
temporal, how latents are laid out, how text is encoded, which modules can be
gradient-checkpointed) sits behind this small interface, so a new family
(AnimateDiff, a video DiT) is one new module beside `zeroscope.py` and no change
to the trainer, the sampler or the adapter code.
"""

from __future__ import annotations

import hashlib
from typing import Protocol, Sequence

import torch
from torch import nn


class Backbone(Protocol):
    """Facts about one model family. Implementations are stateless."""

    name: str  # short id written into adapter files, e.g. "unet3d"

    def matches(self, unet: nn.Module) -> bool:
        """True if `unet` belongs to this family."""

    def spatial_targets(self, unet: nn.Module) -> list[str]:
        """Module paths of the linears that get the spatial (appearance) LoRA, in registration order."""

    def temporal_targets(self, unet: nn.Module) -> list[str]:
        """Module paths of the linears that get the temporal (motion) LoRA, in registration order."""

    def checkpoint_units(self, unet: nn.Module, policy: str = "all") -> list[nn.Module]:
        """Sub-modules whose forward is recomputed in backward (gradient checkpointing).

        `policy` "all" recomputes every heavy unit (least memory); "attention" only the
        transformers (less recomputation, more memory)."""

    def encode_prompt(self, tokenizer, text_encoder, prompts: Sequence[str]) -> torch.Tensor:
        """Text embeddings `[len(prompts), tokens, dim]` as the UNet's cross-attention expects."""

    def frames_to_latents(self, vae, frames: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Pixel frames `[F, H, W, 3]` in 0..1 -> scaled latents `[1, C, F, h, w]` (one clip)."""

    def latents_to_frames(self, vae, latents: torch.Tensor, chunk: int) -> torch.Tensor:
        """Scaled latents `[1, C, F, h, w]` -> float frames `[F, H, W, 3]` in 0..1, decoded `chunk` frames at a time."""

    def predict(self, unet: nn.Module, latents: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """One UNet call on latents in this family's layout; returns the model output in the same layout."""

    def select_frames(self, latents: torch.Tensor, index: int | slice) -> torch.Tensor:
        """Frames `index` of clip latents, keeping the frame axis."""

    def frame_axis(self) -> int:
        """Axis of the frame dimension in this family's latents."""

    def latent_shape(self, unet: nn.Module, vae, frames: int, height: int, width: int) -> tuple[int, ...]:
        """Shape of the latents of one clip of `frames` x `height` x `width` pixels."""


def linear_fingerprint(family: str, unet: nn.Module, targets: Sequence[str]) -> str:
    """A short id of the layer names and shapes an adapter depends on.

    Two models share a fingerprint exactly when an adapter made for one fits the
    other, whatever their weights are.
    """
    modules = dict(unet.named_modules())
    h = hashlib.sha256(family.encode())
    for name in targets:
        layer = modules[name]
        layer = getattr(layer, "base_layer", layer)  # a peft-wrapped linear
        h.update(f"{name}:{layer.in_features}x{layer.out_features};".encode())
    return f"{family}-{h.hexdigest()[:16]}"
