"""Text-to-video sampling: our own short denoising loop over any diffusers scheduler.

The loop is diffusers' `TextToVideoSDPipeline` loop (same noise, same batched
classifier-free guidance, same scheduler calls, so the same seed gives the same video),
without the pipeline object: it runs on a `VideoModel`, applies exactly the adapters
asked for, can start from MotionDirector's noise prior, reports progress and can be
cancelled between steps.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Callable, Sequence

import torch

from .adapters import LoraAdapter, applied, at_strengths
from .model import VideoModel
from .noise_prior import invert, mix_noise_prior

# name -> (diffusers scheduler class, overrides of the model's scheduler_config).
# Classes are named, not imported, so listing the choices (a node's dropdown) stays cheap.
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}
DEFAULT_SCHEDULER = "ddim"

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


class SamplingCancelled(Exception):
    """Raised between steps when the `cancel()` callback returns True."""


class SamplingError(ValueError):
    """Bad sampling input; the message names the input and the fix."""


def make_scheduler(name: str, scheduler_config: dict, backbone=None):
    """A fresh diffusers scheduler `name` built from the model's own scheduler config.

    A backbone with its own `make_scheduler` (a flow-matching family such as Wan) names its own choices."""
    if backbone is not None and hasattr(backbone, "make_scheduler"):
        try:
            return backbone.make_scheduler(name, scheduler_config)
        except ValueError as e:
            raise SamplingError(str(e)) from e
    if name not in SCHEDULERS:
        raise SamplingError(f"unknown scheduler {name!r}: choose one of {', '.join(SCHEDULERS)}")
    import diffusers

    class_name, overrides = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(scheduler_config, **overrides)


def _check_inputs(model: VideoModel, width: int, height: int, frames: int, steps: int,
                  noise_prior: float, reference) -> tuple[int, ...]:
    if frames < 1:
        raise SamplingError(f"frames must be at least 1, got {frames}")
    if steps < 1:
        raise SamplingError(f"steps must be at least 1, got {steps}")
    if width < 1 or height < 1:
        raise SamplingError(f"width and height must be positive, got {width}x{height}")
    if not 0.0 <= noise_prior <= 1.0:
        raise SamplingError(f"noise_prior must be between 0 and 1, got {noise_prior}")
    if noise_prior > 0 and reference is None:
        raise SamplingError(f"noise_prior {noise_prior} needs a reference clip (the training video or its "
                            "latents) to invert; pass reference=..., or set noise_prior to 0")
    try:
        return model.backbone.latent_shape(model.unet, model.vae, frames, height, width)
    except ValueError as e:
        raise SamplingError(f"width={width}, height={height} do not fit the VAE: {e}. "
                            "Round both to a multiple of 8 (e.g. 384x384 or 576x320).") from e


def _reference_latents(model: VideoModel, reference: torch.Tensor, shape: tuple[int, ...],
                       generator: torch.Generator) -> torch.Tensor:
    """Frames `[F, H, W, 3]` are encoded with the VAE; anything else must already be latents in the model's layout."""
    if reference.ndim == 4 and reference.shape[-1] == 3:
        return model.encode_frames(reference.float(), generator).float()
    if reference.ndim != len(shape):
        raise SamplingError(f"reference must be frames [F, H, W, 3] or latents with {len(shape)} dimensions like "
                            f"{tuple(shape)}, got shape {tuple(reference.shape)}")
    return reference.float()


def _step_kwargs(scheduler, generator: torch.Generator) -> dict:
    """The ancestral schedulers draw fresh noise in `step`: give them our generator (as the pipeline does)."""
    return {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}


def _start_noise(model: VideoModel, shape: tuple[int, ...], generator: torch.Generator, noise_prior: float,
                 reference, inversion_steps: int, invert_with_adapters: bool, progress: Progress | None,
                 cancel: Cancel | None) -> torch.Tensor:
    """Unit-variance starting noise on the CPU: the seed's noise, mixed with the inverted reference when p > 0."""
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)  # on the CPU: same seed, same video anywhere
    if noise_prior == 0:
        return noise
    clean = _reference_latents(model, reference, shape, generator)
    # official: the inversion noise is the base model's (computed with the cached latents, before any LoRA)
    with contextlib.nullcontext() if invert_with_adapters else at_strengths(model.unet, {}):
        inverted = invert(model, clean, inversion_steps, progress=progress, cancel=cancel)
    return mix_noise_prior(inverted.cpu(), noise, noise_prior, model.backbone.frame_axis())


def _first_frame(model: VideoModel, image: torch.Tensor, shape: tuple[int, ...], width: int, height: int):
    """The backbone's first-frame image condition, the image fitted (scaled, centre-cropped) to the clip's size."""
    if not hasattr(model.backbone, "first_frame"):
        raise SamplingError(f"{model.backbone.name} models do not take an image: image-to-video needs Wan 2.2 "
                            "TI2V-5B; to animate an image with this model, train an appearance LoRA on it")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise SamplingError(f"image must be one RGB frame [H, W, 3] in 0..1, got shape {tuple(image.shape)}")
    if tuple(image.shape[:2]) != (height, width):
        from .data import fit_frame

        image = torch.from_numpy(fit_frame(image.float().cpu().numpy(), width, height).copy())
    try:
        return model.backbone.first_frame(model.unet, model.vae, image.float(), shape)
    except ValueError as e:
        raise SamplingError(str(e)) from e


@torch.no_grad()
def sample_latents(model: VideoModel, prompt: str, negative_prompt: str = "", *, width: int = 384,
                   height: int = 384, frames: int = 16, steps: int = 30, guidance: float = 12.0, seed: int = 0,
                   scheduler: str | None = None,
                   adapters: Sequence[tuple[LoraAdapter, float]] | None = None, noise_prior: float = 0.0,
                   reference: torch.Tensor | None = None, inversion_steps: int = 50,
                   invert_with_adapters: bool = False, guidance_low_noise: float | None = None,
                   image: torch.Tensor | None = None,
                   progress: Progress | None = None, cancel: Cancel | None = None) -> torch.Tensor:
    """Denoised fp32 latents of one clip in the backbone's layout, on the model's device (see `sample`)."""
    shape = _check_inputs(model, width, height, frames, steps, noise_prior, reference)
    first = None if image is None else _first_frame(model, image, shape, width, height)
    if scheduler is None:
        scheduler = getattr(model.backbone, "default_scheduler", DEFAULT_SCHEDULER)
    scheduler = make_scheduler(scheduler, model.scheduler_config, model.backbone)
    use_cfg = guidance > 1.0
    inversion = inversion_steps if noise_prior > 0 else 0
    total = inversion + steps
    report = None if progress is None else (lambda i, _n: progress(i, total))
    unet_dtype = next(model.unet.parameters()).dtype
    with contextlib.nullcontext() if adapters is None else applied(model.unet, model.backbone, adapters):
        # [uncond, cond] in one batch, as TextToVideoSDPipeline concatenates them
        text = model.encode_prompt([negative_prompt, prompt] if use_cfg else [prompt]).to(unet_dtype)
        generator = torch.Generator("cpu").manual_seed(int(seed))
        noise = _start_noise(model, shape, generator, noise_prior, reference, inversion_steps, invert_with_adapters,
                             report, cancel)
        scheduler.set_timesteps(steps, device=model.device)
        latents = noise.to(model.device) * getattr(scheduler, "init_noise_sigma", 1.0)  # flow schedulers: none
        step_kwargs = _step_kwargs(scheduler, generator)
        for i, t in enumerate(scheduler.timesteps):
            if cancel is not None and cancel():
                raise SamplingCancelled(f"sampling cancelled at step {i}/{steps}")
            x = scheduler.scale_model_input(latents, t) if hasattr(scheduler, "scale_model_input") else latents
            x = x.to(unet_dtype)  # flow-matching schedulers have no input scaling
            x = torch.cat([x, x]) if use_cfg else x
            timestep = t
            if first is not None:  # the image as the first latent frame, at timestep 0 there
                x, timestep = first.blend(x), first.timesteps(t, x.shape[0]).to(model.device)
            denoiser, scale = _expert(model, t, guidance, guidance_low_noise)
            pred = model.backbone.predict(denoiser, x, timestep, text).float()
            if use_cfg:
                pred_uncond, pred_cond = pred.chunk(2)
                pred = pred_uncond + scale * (pred_cond - pred_uncond)
            latents = scheduler.step(pred, t, latents, **step_kwargs).prev_sample  # scheduler math in fp32
            if report is not None:
                report(inversion + i + 1, total)
    return latents if first is None else first.blend(latents)


def _expert(model: VideoModel, t, guidance: float, guidance_low_noise: float | None):
    """The denoiser and guidance scale for timestep `t`: Wan 2.2 A14B's low-noise expert below its boundary
    (WanPipeline's rule, `t >= boundary_ratio * num_train_timesteps` is high noise), else the model's own."""
    if model.low_noise_unet is None:
        return model.unet, guidance
    boundary = model.boundary_ratio * model.scheduler_config.get("num_train_timesteps", 1000)
    if float(t) >= boundary:
        return model.unet, guidance
    return model.low_noise_unet, guidance if guidance_low_noise is None else guidance_low_noise


def sample(model: VideoModel, prompt: str, negative_prompt: str = "", *, width: int = 384, height: int = 384,
           frames: int = 16, steps: int = 30, guidance: float = 12.0, seed: int = 0,
           scheduler: str | None = None, adapters: Sequence[tuple[LoraAdapter, float]] | None = None,
           noise_prior: float = 0.0, reference: torch.Tensor | None = None, inversion_steps: int = 50,
           invert_with_adapters: bool = False, guidance_low_noise: float | None = None, decode_chunk: int = 8,
           image: torch.Tensor | None = None,
           progress: Progress | None = None, cancel: Cancel | None = None) -> torch.Tensor:
    """Generate a clip: float frames `[F, H, W, 3]` in 0..1 on the CPU.

    - `adapters`: None uses the UNet as it is (a trainer's preview sets strengths itself);
      a list of `(LoraAdapter, strength)` runs with exactly those and leaves the UNet unchanged.
    - `scheduler`: a name of `SCHEDULERS`, or of the backbone's own choices (Wan: "unipc", "euler");
      None is the backbone's default (ZeroScope: "ddim", Wan: "unipc" as WanPipeline).
    - `guidance` <= 1 runs the conditional branch only (one UNet call per step).
    - `noise_prior` p in [0, 1] starts from `sqrt(p) * invert(reference) + sqrt(1-p) * noise` (the backbone's
      inversion: DDIM for ZeroScope, the flow ODE for Wan);
      `reference` is frames `[F, H, W, 3]` or latents, resized to the requested size if needed.
    - `invert_with_adapters`: False (default, as the official flow, whose inversion noise is computed
      with the base model when the latents are cached) inverts with every adapter off; True inverts
      with the adapters in use for sampling (those of `adapters`, or the UNet's own when None).
    - Wan 2.2 A14B (`model.low_noise_unet`): steps at or above the boundary run `model.unet`, the high-noise
      expert, with the adapters; steps below run the low-noise expert as it is, at `guidance_low_noise`
      (None: `guidance`), as WanPipeline's `guidance_scale_2`.
    - `image` (`[H, W, 3]` in 0..1, fitted to the clip's size): image-to-video, for a backbone that takes one
      (Wan 2.2 TI2V-5B: the image is the first frame, as WanImageToVideoPipeline with `expand_timesteps`).
    - `progress(step, total)` after every step (inversion steps included in `total` when inverting);
      `cancel()` is polled before every step and raises `SamplingCancelled` when it returns True.
    """
    latents = sample_latents(model, prompt, negative_prompt, width=width, height=height, frames=frames,
                             steps=steps, guidance=guidance, seed=seed, scheduler=scheduler, adapters=adapters,
                             noise_prior=noise_prior, reference=reference, inversion_steps=inversion_steps,
                             invert_with_adapters=invert_with_adapters, guidance_low_noise=guidance_low_noise,
                             image=image, progress=progress, cancel=cancel)
    return model.decode_latents(latents, decode_chunk)
