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


class Objective(Protocol):
    """The diffusion objective a family was trained with: how a clean latent is noised and what the model predicts.

    ZeroScope: DDPM noising with an epsilon (or v) target at integer timesteps; Wan: flow matching,
    `x_t = (1 - s) x_0 + s * noise` at a shifted sigma `s`, velocity target `noise - x_0`. The trainer only
    calls these methods, so it never knows which one it runs.
    """

    num_train_timesteps: int

    def sample_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """`n` training timesteps on the CPU, in the units `Backbone.predict` takes (drawn from `generator` only)."""

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Noisy latents at timesteps `t` (one per batch item)."""

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser should output for these noisy latents (epsilon, v, or the flow velocity)."""


class Backbone(Protocol):
    """Facts about one model family. Implementations are stateless.

    The spatial path's one-frame input is a backbone fact too. With `spatial_reuses_clip_noise` True
    (ZeroScope: a latent frame is one video frame) the spatial path takes frame `i` of the step's noisy
    clip and target; otherwise (Wan: a later latent frame summarises 4 video frames) it takes frame `i`
    encoded on its own as an image (`image_latents`), noised afresh at the step's timestep.
    """

    name: str  # short id written into adapter files, e.g. "unet3d"
    inversion: str  # how the noise prior inverts a clip (`noise_prior.INVERSIONS`): "ddim" or "flow"

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

    spatial_reuses_clip_noise: bool

    def objective(self, scheduler_config: dict) -> Objective:
        """The training objective of a model with this scheduler config."""

    def image_latents(self, vae, frames: torch.Tensor, clip_latents: torch.Tensor,
                      generator: torch.Generator | None) -> torch.Tensor:
        """Every frame of `frames` `[F, H, W, 3]` as a one-frame clip: `[F, C, 1, h, w]` in this layout.

        May reuse `clip_latents` (the clip's own latents) where a latent frame is an image frame."""

    # `predict` on a one-frame input runs the model as an image model (ZeroScope: temporal layers skipped).


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


class FramesOnAxis2:
    """Latents laid out `[batch, channels, frames, h, w]`, as both ZeroScope's UNet3D and Wan's DiT take them:
    the frame-axis facts of `Backbone`, written once."""

    frame_dim = 2

    def select_frames(self, latents: torch.Tensor, index: int | slice) -> torch.Tensor:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return latents[:, :, index]

    def frame_axis(self) -> int:
        return self.frame_dim
