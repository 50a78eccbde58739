"""MotionDirector's noise prior: start sampling from the inverted training clip instead of pure noise.

`latents_T = sqrt(p) * ddim_invert(clip) + sqrt(1 - p) * noise`. The inverted clip
carries the layout of the reference motion into the first denoising steps; `p` sets
how much (official default 0.5 for a motion learnt from one clip, 0 from several).
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
import torch.nn.functional as F

from .model import VideoModel


@torch.no_grad()
def ddim_invert(model: VideoModel, latents: torch.Tensor, steps: int = 50,
                progress: Callable[[int, int], None] | None = None,
                cancel: Callable[[], bool] | None = None) -> torch.Tensor:
    """Run DDIM backwards from clean `latents` to noise: empty prompt, no guidance (official `ddim_inversion`).

    Uses the UNet as it is now (with whatever adapters are active; the sampler switches them off
    first unless asked not to, as the official flow inverts with the base model). `progress(step, total)`
    is called after each step; `cancel()` returning True stops with `SamplingCancelled`.
    Returns fp32 latents of the same shape, on the model's device.
    """
    from diffusers import DDIMInverseScheduler

    from .sampling import SamplingCancelled  # one cancellation type for the whole sampling run

    if steps < 1:
        raise ValueError(f"inversion_steps must be at least 1, got {steps}")
    accepted = inspect.signature(DDIMInverseScheduler.__init__).parameters  # no warning for DDIM-only keys
    scheduler = DDIMInverseScheduler.from_config({k: v for k, v in model.scheduler_config.items() if k in accepted})
    scheduler.set_timesteps(steps)
    unet_dtype = next(model.unet.parameters()).dtype
    text = model.encode_prompt("").to(unet_dtype)
    latents = latents.to(model.device, torch.float32)
    for i, t in enumerate(scheduler.timesteps):
        if cancel is not None and cancel():
            raise SamplingCancelled(f"cancelled during noise-prior inversion at step {i}/{steps}")
        eps = model.backbone.predict(model.unet, latents.to(unet_dtype), t, text).float()
        latents = scheduler.step(eps, t, latents).prev_sample
        if progress is not None:
            progress(i + 1, steps)
    return latents


def resize_latents(latents: torch.Tensor, shape: tuple[int, ...], frame_axis: int = 2) -> torch.Tensor:
    """Resample latents to `shape` over frames and the two trailing spatial axes (trilinear).

    The official sampler resizes the inverted clip bilinearly when the requested size
    differs from the training size; here the frame count may differ too.
    """
    if tuple(latents.shape) == tuple(shape):
        return latents
    if latents.ndim != len(shape) or latents.ndim != 5:
        raise ValueError(f"cannot resize latents of shape {tuple(latents.shape)} to {tuple(shape)}: "
                         "the reference must be one clip in the model's latent layout")
    moved = latents.movedim(frame_axis, 2).float()  # [B, C, F, h, w]
    target = tuple(shape[i] for i in range(len(shape)) if i != frame_axis)  # shape without the frame axis
    if moved.shape[:2] != target[:2]:
        raise ValueError(f"reference latents {tuple(latents.shape)} do not fit latents {tuple(shape)} "
                         "(batch or channel count differs): use a reference made with the same model")
    size = (shape[frame_axis], shape[-2], shape[-1])
    resized = F.interpolate(moved, size=size, mode="trilinear", align_corners=False)
    return resized.movedim(2, frame_axis).to(latents.dtype)


def mix_noise_prior(inverted: torch.Tensor, noise: torch.Tensor, p: float, frame_axis: int = 2) -> torch.Tensor:
    """`sqrt(p) * inverted + sqrt(1 - p) * noise`, with `inverted` resized to `noise`'s shape first."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"noise_prior must be between 0 and 1, got {p}")
    inverted = resize_latents(inverted.to(noise.device, noise.dtype), tuple(noise.shape), frame_axis)
    return math.sqrt(p) * inverted + math.sqrt(1.0 - p) * noise
