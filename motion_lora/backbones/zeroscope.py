"""ZeroScope v2 / ModelScope T2V: diffusers' `UNet3DConditionModel` with a CLIP text encoder.

The one place that knows this family's layout: latents are `[batch, 4, frames, H/8, W/8]`,
spatial transformers are `Transformer2DModel` (`*.attentions.N`), temporal ones are
`TransformerTemporalModel` (`transformer_in`, `*.temp_attentions.N`), and the target
rules for the two LoRA paths follow the official MotionDirector `_find_modules_v2`.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from .base import FramesOnAxis2, linear_fingerprint

SPATIAL_PARENT = "Transformer2DModel"
TEMPORAL_PARENT = "TransformerTemporalModel"
SPATIAL_KEYS = ("attn1", "ff")  # not attn2: cross-attention keeps following the prompt
TEMPORAL_KEYS = ("attn1", "attn2", "ff")
TEMPORAL_CONV = "TemporalConvLayer"  # diffusers' temporal convolution (`*.temp_convs.N`)


def _linears(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Linear layers under `module` in registration order, seeing through peft wrappers.

    After LoRA injection a target linear is a peft layer holding `base_layer` and
    `lora_A`/`lora_B` linears of its own; those inner linears are not targets.
    """
    skip: list[str] = []
    for name, child in module.named_modules():
        if any(name.startswith(prefix) for prefix in skip):
            continue
        if hasattr(child, "base_layer") and hasattr(child, "lora_A"):
            skip.append(name + ".")
            yield name, child
        elif isinstance(child, nn.Linear):
            yield name, child


def _targets(unet: nn.Module, parent_class: str, keys: Sequence[str]) -> list[str]:
    found = []
    for parent_name, parent in unet.named_modules():
        if type(parent).__name__ != parent_class:
            continue
        for name, _ in _linears(parent):
            if any(key in name.split(".") for key in keys):
                found.append(f"{parent_name}.{name}")
    return found


def _skip_temporal_transformer(hidden_states, *args, return_dict: bool = True, **kwargs):
    """`TransformerTemporalModel` without its work: the input unchanged, returned the way it returns it."""
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModelOutput

    return TransformerTemporalModelOutput(sample=hidden_states) if return_dict else (hidden_states,)


def _skip_temporal_conv(hidden_states, *args, **kwargs):
    """`TemporalConvLayer` without its work: it maps `[batch*frames, C, h, w]` to the same shape."""
    return hidden_states


@contextlib.contextmanager
def temporal_layers_skipped(unet: nn.Module) -> Iterator[None]:
    """Inside the block, `transformer_in`, every temporal convolution and every temporal transformer pass
    their input through unchanged: the official patched UNet's `num_frames == 1` path (`use_temporal`).

    diffusers' `UNet3DConditionModel` runs those layers on a single frame too, which gives another function
    than the one MotionDirector trains the spatial LoRA against. Only each module's `forward` is swapped (an
    instance attribute, restored on exit, so a gradient-checkpointing wrapper or any other override already
    there comes back): the module tree, peft layers, hooks and weights are untouched. The spatial layers run
    as usual, with autocast and backprop. A skipped module does no work, so nothing of it is saved for
    backward and nothing is recomputed there (no checkpoint unit contains a temporal module).
    """
    swapped: list[tuple[nn.Module, object]] = []
    try:
        for module in unet.modules():
            kind = type(module).__name__
            if kind in (TEMPORAL_PARENT, TEMPORAL_CONV):
                swapped.append((module, module.__dict__.get("forward")))
                module.forward = _skip_temporal_transformer if kind == TEMPORAL_PARENT else _skip_temporal_conv
        yield
    finally:
        for module, previous in swapped:
            if previous is None:
                del module.forward
            else:
                module.forward = previous


PREDICTION_TYPES = ("epsilon", "v_prediction")


class DDPMObjective:
    """DDPM training as ZeroScope was trained: `t ~ U{0..T-1}`, `scheduler.add_noise`, an epsilon or v target.

    Built from the model's own scheduler config (whatever sampler class it names, the noising
    schedule is the same), so the betas, `T` and the prediction type are the model's.
    """

    def __init__(self, scheduler_config: dict):
        from diffusers import DDPMScheduler

        self.scheduler = DDPMScheduler.from_config(scheduler_config)
        self.prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r} in the scheduler config: "
                             f"use one of {', '.join(PREDICTION_TYPES)}")
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)

    def sample_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(self.num_train_timesteps, (n,), generator=generator)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(latents, noise, t)

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return noise
        return self.scheduler.get_velocity(latents, noise, t)


class ZeroScope(FramesOnAxis2):
    """Backbone facts for `UNet3DConditionModel` models (ZeroScope v2, ModelScope T2V)."""

    name = "unet3d"
    unet_class = "UNet3DConditionModel"
    spatial_reuses_clip_noise = True  # a latent frame is one video frame: the spatial path takes frame i of the clip
    inversion = "ddim"  # the noise prior runs DDIM backwards (noise_prior.ddim_invert), as the official code

    def matches(self, unet: nn.Module) -> bool:
        return type(unet).__name__ == self.unet_class

    def spatial_targets(self, unet: nn.Module) -> list[str]:
        return _targets(unet, SPATIAL_PARENT, SPATIAL_KEYS)

    def temporal_targets(self, unet: nn.Module) -> list[str]:
        return _targets(unet, TEMPORAL_PARENT, TEMPORAL_KEYS)

    def fingerprint(self, unet: nn.Module) -> str:
        return linear_fingerprint(self.name, unet, self.spatial_targets(unet) + self.temporal_targets(unet))

    def checkpoint_units(self, unet: nn.Module, policy: str = "all") -> list[nn.Module]:
        """Modules to recompute in backward.

        "all": every resnet, temporal convolution and transformer, the least memory
        (ZeroScope 384x384x16 trains in about 5.5 GB); "attention": only the spatial and
        temporal transformers, whose activations are most of the memory, so less is
        recomputed (faster) for a few GB more. No unit may contain a temporal module: a 1-frame `predict`
        skips those only while it runs, and a unit recomputed in backward would run them again.
        """
        groups = {"all": ("resnets", "temp_convs", "attentions", "temp_attentions"),
                  "attention": ("attentions", "temp_attentions")}
        if policy not in groups:
            raise ValueError(f"gradient checkpointing policy must be one of {list(groups)}, got {policy!r}")
        units: list[nn.Module] = [unet.transformer_in]
        for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
            for group in groups[policy]:
                units.extend(getattr(block, group, None) or [])
        return units

    # --- text -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, tokenizer, text_encoder, prompts: Sequence[str]) -> torch.Tensor:
        ids = tokenizer(
            list(prompts),
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return text_encoder(ids.to(text_encoder.device))[0]

    # --- latents ----------------------------------------------------------------------------
    def vae_scale(self, vae) -> int:
        return 2 ** (len(vae.config.block_out_channels) - 1)

    def latent_shape(self, unet, vae, frames: int, height: int, width: int) -> tuple[int, ...]:
        s = self.vae_scale(vae)
        if height % s or width % s:
            raise ValueError(f"width and height must be multiples of {s}, got {width}x{height}")
        return (1, unet.config.in_channels, frames, height // s, width // s)

    @torch.no_grad()
    def frames_to_latents(self, vae, frames: torch.Tensor, generator=None, chunk: int = 8) -> torch.Tensor:
        pixels = frames.permute(0, 3, 1, 2).to(vae.device, vae.dtype) * 2 - 1  # [F, 3, H, W] in -1..1
        parts = [
            vae.encode(pixels[i : i + chunk]).latent_dist.sample(generator)
            for i in range(0, pixels.shape[0], chunk)
        ]
        latents = torch.cat(parts) * vae.config.scaling_factor  # [F, 4, h, w]
        return latents.permute(1, 0, 2, 3).unsqueeze(0)

    @torch.no_grad()
    def latents_to_frames(self, vae, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        flat = latents[0].permute(1, 0, 2, 3) / vae.config.scaling_factor  # [F, 4, h, w]
        flat = flat.to(vae.device, vae.dtype)
        parts = [vae.decode(flat[i : i + chunk]).sample.float() for i in range(0, flat.shape[0], chunk)]
        pixels = torch.cat(parts)  # [F, 3, H, W] in -1..1
        return (pixels / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu()

    def image_latents(self, vae, frames: torch.Tensor, clip_latents: torch.Tensor, generator=None) -> torch.Tensor:
        """The clip's own latents split per frame, `[F, C, 1, h, w]`: the VAE encodes each frame alone anyway."""
        return clip_latents[0].transpose(0, 1).unsqueeze(2)

    # --- objective --------------------------------------------------------------------------
    def objective(self, scheduler_config: dict) -> DDPMObjective:
        return DDPMObjective(scheduler_config)

    # --- denoiser ---------------------------------------------------------------------------
    def predict(self, unet, latents: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The UNet's output; a one-frame input runs as an image, without the temporal layers (see
        `temporal_layers_skipped`), as every one-frame pass of MotionDirector does (spatial path, images)."""
        if latents.shape[self.frame_dim] != 1:
            return unet(latents, t, encoder_hidden_states=text, return_dict=False)[0]
        with temporal_layers_skipped(unet):
            return unet(latents, t, encoder_hidden_states=text, return_dict=False)[0]
