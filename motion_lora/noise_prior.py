"""MotionDirector's noise prior: start sampling from the inverted training clip instead of pure noise.

`latents_T = sqrt(p) * invert(clip) + sqrt(1 - p) * noise`. The inverted clip
carries the layout of the reference motion into the first denoising steps; `p` sets
how much (official default 0.5 for a motion learnt from one clip, 0 from several).
The inversion is the backbone's (`Backbone.inversion`): DDIM run backwards for an epsilon model
(ZeroScope, as the official code), the flow ODE run backwards for a flow-matching one (Wan).
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


@torch.no_grad()
def flow_invert(model: VideoModel, latents: torch.Tensor, steps: int = 50,
                progress: Callable[[int, int], None] | None = None,
                cancel: Callable[[], bool] | None = None) -> torch.Tensor:
    """Run the flow ODE backwards from clean `latents` (sigma 0) to noise (sigma 1): empty prompt, no guidance.

    The flow-matching twin of `ddim_invert`. A flow model predicts the velocity `dx/dsigma = noise - x_0`, so
    Euler steps up the sampler's own sigma grid (the model's flow shift, as `FlowMatchEulerDiscreteScheduler`
    spaces them, walked in reverse) carry the clip to the noise it would be sampled from. Same arguments,
    same return as `ddim_invert`.
    """
    from .sampling import SamplingCancelled

    if steps < 1:
        raise ValueError(f"inversion_steps must be at least 1, got {steps}")
    scheduler = model.backbone.make_scheduler("euler", model.scheduler_config)
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas.flip(0).float()  # 0, ..., 1
    train_steps = scheduler.config.num_train_timesteps
    unet_dtype = next(model.unet.parameters()).dtype
    text = model.encode_prompt("").to(unet_dtype)
    latents = latents.to(model.device, torch.float32)
    for i in range(steps):
        if cancel is not None and cancel():
            raise SamplingCancelled(f"cancelled during noise-prior inversion at step {i}/{steps}")
        sigma, next_sigma = float(sigmas[i]), float(sigmas[i + 1])
        velocity = model.backbone.predict(model.unet, latents.to(unet_dtype), sigma * train_steps, text).float()
        latents = latents + (next_sigma - sigma) * velocity
        if progress is not None:
            progress(i + 1, steps)
    return latents


INVERSIONS = {"ddim": ddim_invert, "flow": flow_invert}


def invert(model: VideoModel, latents: torch.Tensor, steps: int = 50,
           progress: Callable[[int, int], None] | None = None,
           cancel: Callable[[], bool] | None = None) -> torch.Tensor:
    """The inversion of the model's family (`Backbone.inversion`: "ddim" unless it says otherwise)."""
    return INVERSIONS[getattr(model.backbone, "inversion", "ddim")](model, latents, steps, progress, cancel)


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
