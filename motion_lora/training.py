"""MotionDirector's dual-path training: a spatial LoRA learns appearance, a temporal LoRA learns motion.

Each step (METHOD.md, "One training step"): noise one cached clip at a random timestep;
the *spatial path* denoises one frame of it with only the spatial LoRA on; the
*temporal path* denoises the whole clip with the temporal LoRA on and the spatial LoRA
on too (except on the 20 % "masked" steps), scored with the plain loss plus the
appearance-debiased loss. Each loss updates only its own path, both forwards see the
same weights, then both optimizers step.

`train()` runs on one device, or data-parallel when torch.distributed is initialised
(torchrun / accelerate launch): every rank draws its own noise, gradients are averaged
before each optimizer step, and only rank 0 writes files or calls callbacks.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch
import torch.distributed as dist

from . import adapters, grad_checkpoint, run_folder
from .adapters import SPATIAL, TEMPORAL, LoraAdapter
from .losses import diffusion_target, mse, temporal_loss

if TYPE_CHECKING:
    from .data import Clip
    from .model import VideoModel

MIXED_PRECISION = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16, "auto": None}
CHECKPOINT_POLICIES = ("all", "attention")

# The official configs (METHOD.md, "Official recipes"), as overrides of TrainConfig's defaults.
RECIPES: dict[str, dict] = {
    "single-video": dict(steps=150, checkpoint_every=50, weight_decay=1e-2, spatial_per_clip=False, hflip_prob=0.0),
    "multi-video": dict(steps=400, checkpoint_every=100, weight_decay=1e-4, spatial_per_clip=True, hflip_prob=0.0),
    "images": dict(steps=300, checkpoint_every=100, weight_decay=1e-2, train_temporal=False, spatial_per_clip=False,
                   hflip_prob=0.5),
}
# Settings a resumed run must share with the run it continues (the adapters' shapes and roles).
_RESUME_KEYS = ("rank", "spatial_rank", "temporal_rank", "train_spatial", "train_temporal", "spatial_per_clip")


@dataclass
class TrainConfig:
    """Every setting of a run; the defaults are the official single-video ones."""

    steps: int = 150
    spatial_lr: float = 5e-4
    temporal_lr: float = 5e-4
    rank: int = 32
    spatial_rank: int | None = None  # None: `rank`
    temporal_rank: int | None = None
    dropout: float = 0.1  # LoRA dropout during training
    beta: float = 1.0  # strength of the appearance-debiased loss's anchor subtraction
    spatial_mask_prob: float = 0.2  # chance a step skips the spatial path and runs the temporal one without it
    hflip_prob: float = 0.0  # chance the spatial path sees a horizontally flipped frame
    train_spatial: bool = True
    train_temporal: bool = True
    spatial_per_clip: bool = False  # one spatial LoRA per clip (official multi-video) instead of one shared
    weight_decay: float = 1e-2
    checkpoint_every: int = 50  # 0: only at the end (and when cancelled)
    seed: int = 0
    gradient_checkpointing: bool | str = True  # True/"all": least memory; "attention": faster, more memory; False
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16" | "auto": autocast dtype; base weights keep their dtype
    offset_noise: float = 0.0
    validation_prompt: str = ""
    validation_every: int = 0  # 0: no previews
    validation_steps: int = 20

    @classmethod
    def from_recipe(cls, recipe: str, **overrides) -> "TrainConfig":
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
        return cls(**{**RECIPES[recipe], **overrides})

    @property
    def checkpoint_policy(self) -> str | None:
        """The backbone's checkpointing policy ("all", "attention"), or None for off."""
        value = self.gradient_checkpointing
        if isinstance(value, str) and value.lower() in ("off", "none", "false", "no"):
            return None
        if value is True:
            return "all"
        return value or None

    def check(self) -> None:
        """Raise ValueError naming the first setting out of range."""
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {list(MIXED_PRECISION)}, got {self.mixed_precision!r}")
        if self.steps < 0:
            raise ValueError(f"steps must be 0 or more, got {self.steps}")
        for name in ("rank", "spatial_rank", "temporal_rank"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        for name in ("spatial_lr", "temporal_lr", "weight_decay"):  # AdamW's own error would not name the setting
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.validation_every and self.validation_steps < 1:  # else the first preview fails mid-run
            raise ValueError(f"validation_steps must be at least 1 when previews are on, got {self.validation_steps}")
        for name in ("dropout", "spatial_mask_prob", "hflip_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.checkpoint_policy not in (None, *CHECKPOINT_POLICIES):
            raise ValueError(f"gradient_checkpointing must be True, False or one of {list(CHECKPOINT_POLICIES)}, "
                             f"got {self.gradient_checkpointing!r}")
        if not (self.train_spatial or self.train_temporal):
            raise ValueError("nothing to train: turn on train_spatial, train_temporal or both")


def resolve_precision(choice: str, model: "VideoModel") -> str:
    """"auto" -> no autocast on the CPU; on a GPU bf16 for a bf16 model, else fp16 (as the official recipes)."""
    if choice != "auto":
        return choice
    if model.device.type == "cpu":
        return "no"
    return "bf16" if model.dtype == torch.bfloat16 else "fp16"


@dataclass
class StepInfo:
    step: int
    total: int
    losses: dict[str, float]
    lrs: dict[str, float]


@dataclass
class TrainCallbacks:
    on_step: Callable[[StepInfo], None] | None = None
    on_preview: Callable[[int, torch.Tensor], None] | None = None  # step, frames [F, H, W, 3]
    should_cancel: Callable[[], bool] | None = None


@dataclass
class TrainResult:
    temporal: LoraAdapter | None
    spatial: list[LoraAdapter]
    history: list[dict]
    run_dir: Path | None
    step: int
    cancelled: bool = False


class TrainingCancelled(Exception):
    """Raised when `should_cancel()` says so; the state of that moment is in `.result` and on disk."""

    def __init__(self, message: str, result: TrainResult, checkpoint: Path | None):
        super().__init__(message)
        self.result = result
        self.checkpoint = checkpoint


@dataclass
class _Example:
    """One clip as the loop needs it: cached latents (and flipped latents) and text embedding."""

    latents: torch.Tensor  # float32, on the device
    text: torch.Tensor  # model dtype, on the device
    flipped: torch.Tensor | None = None
    frames: int = field(init=False)

    def __post_init__(self):
        self.frames = self.latents.shape[2]


# --- the run ------------------------------------------------------------------------------------


def train(model: "VideoModel", clips: Sequence["Clip"], config: TrainConfig, run_dir=None,
          callbacks: TrainCallbacks | None = None, resume: bool = False,
          appearance: Sequence["Clip"] | None = None) -> TrainResult:
    """Train MotionDirector's LoRAs on `clips`; returns plain adapters and leaves `model` as it was.

    `appearance` (images or clips) makes the spatial path learn from them instead of from
    the motion clips: one run then yields a motion LoRA and an appearance LoRA. That LoRA
    does not stand in for the clips' look, so it stays off in the temporal pass.
    With `run_dir`, checkpoints are saved there; `resume=True` continues the last one.
    """
    config.check()
    if resume and run_dir is None:
        raise ValueError("resume=True needs the run folder to resume from: pass run_dir")
    config = replace(config, mixed_precision=resolve_precision(config.mixed_precision, model))
    clips, appearance = list(clips), list(appearance or [])
    _check_clips(clips, appearance, config)
    callbacks = callbacks or TrainCallbacks()
    rank, world = _distributed_setup(model.device)
    if run_dir is not None:
        run_dir = run_folder.prepare(run_dir, resume)
        _barrier(world)  # every rank checked the folder before rank 0 writes into it
    unet, backbone, device = model.unet, model.backbone, model.device
    n_spatial = 0 if not config.train_spatial else (len(clips) if config.spatial_per_clip and not appearance else 1)
    spatial_names = [SPATIAL] if n_spatial == 1 else [f"{SPATIAL}_{k}" for k in range(n_spatial)]
    names = spatial_names + ([TEMPORAL] if config.train_temporal else [])
    clash = set(names) & adapters.adapter_names(unet)
    if clash:
        raise ValueError(f"the model already carries adapters named {sorted(clash)}: remove them before training")

    saved = _ModelState(model)
    python_rng = random.getstate()
    fork_devices = [device] if device.type == "cuda" else []
    injected: list[str] = []
    optimizers: dict[str, torch.optim.Optimizer] = {}
    try:
        with torch.random.fork_rng(devices=fork_devices):  # the caller's global RNG is untouched by the run
            # 1. cache latents and text embeddings once; the VAE and text encoder may then leave the GPU
            torch.manual_seed(config.seed)
            flip = config.train_spatial and config.hflip_prob > 0  # flipped latents serve the spatial path only
            examples = _cache(model, clips, config.seed, flip=flip and not appearance)
            spatial_examples = _cache(model, appearance, config.seed, flip=flip) if appearance else examples
            if device.type == "cuda":
                model.vae.to("cpu")
                model.text_encoder.to("cpu")
                torch.cuda.empty_cache()

            # 2. the adapters (same initial weights on every rank: drawn right after seeding)
            unet.requires_grad_(False)
            for name in spatial_names:
                adapters.inject(unet, backbone, name, SPATIAL, config.spatial_rank or config.rank,
                                dropout=config.dropout)
                injected.append(name)
            if config.train_temporal:
                adapters.inject(unet, backbone, TEMPORAL, TEMPORAL, config.temporal_rank or config.rank,
                                dropout=config.dropout)
                injected.append(TEMPORAL)
            params = {name: adapters.adapter_parameters(unet, [name]) for name in injected}

            def train_only(name: str) -> None:
                """Only adapter `name` collects gradients (from the cached lists: no walk of the UNet per step)."""
                for other, tensors in params.items():
                    for p in tensors:
                        p.requires_grad_(other == name)

            optimizers.update({
                name: torch.optim.AdamW(params[name], lr=config.temporal_lr if name == TEMPORAL else config.spatial_lr,
                                        betas=(0.9, 0.999), eps=1e-8, weight_decay=config.weight_decay)
                for name in injected
            })
            scaler = torch.amp.GradScaler(device.type, enabled=config.mixed_precision == "fp16" and device.type == "cuda")
            generator = torch.Generator().manual_seed(config.seed + rank)  # noise, timesteps, frames, anchors, masks
            torch.manual_seed(config.seed + rank)  # LoRA dropout and the UNet's own dropout
            random.seed(config.seed + rank)

            # 3. resume
            step, history = 0, []
            checkpoint = run_folder.latest_checkpoint(run_dir) if (run_dir is not None and resume) else None
            if checkpoint is not None:
                step, history = _restore(checkpoint, run_dir, unet, optimizers, scaler, generator, config, rank, world)
            if rank == 0 and run_dir is not None:  # after _restore's check: a resumed run records its new settings
                run_dir.mkdir(parents=True, exist_ok=True)
                run_folder.write_json(run_dir / "config.json", _run_settings(config, clips, appearance, world))

            # 4. the loop
            from diffusers import DDPMScheduler

            scheduler = DDPMScheduler.from_config(model.scheduler_config)
            num_timesteps = scheduler.config.num_train_timesteps
            frame_axis = backbone.frame_axis()
            amp_dtype = MIXED_PRECISION[config.mixed_precision]
            autocast = lambda: torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)
            lrs = {SPATIAL: config.spatial_lr} if spatial_names else {}
            lrs.update({TEMPORAL: config.temporal_lr} if config.train_temporal else {})
            unet.train()  # official: the whole UNet trains, so the temporal convolutions' dropout is active too

            last_saved: dict[int, Path | None] = {}  # {step: checkpoint} of this run's latest save

            def state_now() -> dict:
                return _training_state(step, optimizers, scaler, generator, rank, world)

            policy = config.checkpoint_policy
            units = backbone.checkpoint_units(unet, policy) if policy else []
            with grad_checkpoint.checkpointed(units):
                while step < config.steps:
                    if _cancel_requested(callbacks, rank, world, device):
                        saved_to = last_saved.get(step)  # cancelled right after a checkpoint: not written twice
                        if saved_to is None:
                            saved_to = _save(run_dir, step, unet, spatial_names, model, config, clips, appearance,
                                             history, state_now(), rank)
                        result = _result(unet, spatial_names, model, config, clips, appearance, history, run_dir,
                                         step, cancelled=True)
                        where = saved_to if saved_to is not None else "nowhere (no run folder)"
                        raise TrainingCancelled(f"cancelled at step {step}, saved to {where}", result, saved_to)

                    k = int(torch.randint(len(clips), (1,), generator=generator))
                    clip = examples[k]
                    noise = torch.randn(clip.latents.shape, generator=generator).to(device)
                    if config.offset_noise:
                        shape = clip.latents.shape[:2] + (1,) * (clip.latents.dim() - 2)
                        noise = noise + config.offset_noise * torch.randn(shape, generator=generator).to(device)
                    t = torch.randint(num_timesteps, (1,), generator=generator).to(device)
                    noisy = scheduler.add_noise(clip.latents, noise, t)
                    target = diffusion_target(scheduler, clip.latents, noise, t)
                    masked = bool(torch.rand(1, generator=generator) < config.spatial_mask_prob)
                    spatial_name = spatial_names[k if len(spatial_names) > 1 else 0] if spatial_names else None
                    losses: dict[str, float] = {}

                    # spatial path: one frame, spatial LoRA only; its loss reaches only the spatial LoRA
                    if spatial_name is not None and not masked:
                        x, x_target, text = _spatial_input(spatial_examples, k, noisy, target, t, scheduler, config,
                                                           generator, backbone, device, bool(appearance))
                        adapters.set_strengths(unet, {spatial_name: 1.0})
                        train_only(spatial_name)
                        with autocast():
                            pred = backbone.predict(unet, x.to(model.dtype), t, text)
                        loss_spatial = mse(pred, x_target)
                        scaler.scale(loss_spatial).backward()
                        losses["loss_spatial"] = loss_spatial.item()

                    # temporal path: whole clip, temporal LoRA + (unless masked) the frozen-for-this-loss spatial
                    # LoRA, which stands in for the clip's appearance. A LoRA learning separate appearance images
                    # would put a foreign look into the clip's prediction instead, so it stays off here.
                    if config.train_temporal:
                        anchor = int(torch.randint(clip.frames, (1,), generator=generator))
                        on = {TEMPORAL: 1.0}
                        if spatial_name is not None and not masked and not appearance:
                            on[spatial_name] = 1.0
                        adapters.set_strengths(unet, on)
                        train_only(TEMPORAL)
                        with autocast():
                            pred = backbone.predict(unet, noisy.to(model.dtype), t, clip.text)
                        loss, loss_org, loss_ad = temporal_loss(pred, target, anchor, config.beta, frame_axis)
                        scaler.scale(loss).backward()
                        losses.update(loss_temporal=loss.item(), loss_temporal_org=loss_org.item(),
                                      loss_temporal_ad=loss_ad.item())

                    # both optimizers step after both backward passes: both forwards saw the same weights
                    stepped = [_sync_and_step(optimizers[n], params[n], scaler, world, device) for n in injected]
                    if any(stepped):
                        scaler.update()
                    step += 1

                    history.append({"step": step, **losses})
                    if rank == 0 and callbacks.on_step is not None:
                        callbacks.on_step(StepInfo(step, config.steps, losses, dict(lrs)))
                    periodic = config.checkpoint_every > 0 and step % config.checkpoint_every == 0
                    if periodic or step == config.steps:
                        last_saved = {step: _save(run_dir, step, unet, spatial_names, model, config, clips,
                                                  appearance, history, state_now(), rank)}
                    if (config.validation_every and step % config.validation_every == 0 and config.validation_prompt
                            and rank == 0 and callbacks.on_preview is not None):
                        callbacks.on_preview(step, _preview(model, config, clips, spatial_names, fork_devices))

            result = _result(unet, spatial_names, model, config, clips, appearance, history, run_dir, step)
            if rank == 0 and run_dir is not None:
                run_folder.save_final(run_dir, result.temporal, result.spatial)
            return result
    finally:
        optimizers.clear()  # a caller holding a TrainingCancelled must not keep the optimizer state alive
        for name in injected:
            adapters.remove(unet, name)
        saved.restore(model)
        random.setstate(python_rng)


# --- pieces of the loop ----------------------------------------------------------------------------


def _spatial_input(examples: list[_Example], k: int, noisy, target, t, scheduler, config, generator, backbone, device,
                   separate: bool):
    """(1-frame noisy latents, target, text) for the spatial path.

    A frame of the step's noisy clip, or (flipped frame, or a frame of a separate appearance
    image/clip) a clean frame noised afresh at the same timestep.
    """
    if separate:
        k = int(torch.randint(len(examples), (1,), generator=generator))
    example = examples[k]
    i = int(torch.randint(example.frames, (1,), generator=generator))
    flip = config.hflip_prob > 0 and bool(torch.rand(1, generator=generator) < config.hflip_prob)
    if not flip and not separate:
        return backbone.select_frames(noisy, i), backbone.select_frames(target, i), example.text
    clean = backbone.select_frames(example.flipped if flip else example.latents, i)
    noise = torch.randn(clean.shape, generator=generator).to(device)
    return scheduler.add_noise(clean, noise, t), diffusion_target(scheduler, clean, noise, t), example.text


@torch.no_grad()
def _cache(model: "VideoModel", clips: list, seed: int, flip: bool) -> list[_Example]:
    """Latents (and, with `flip`, horizontally flipped latents) and text embeddings, computed once."""
    generator = torch.Generator(device=model.vae.device).manual_seed(seed)
    texts: dict[str, torch.Tensor] = {}
    out = []
    for clip in clips:
        if clip.prompt not in texts:
            texts[clip.prompt] = model.encode_prompt(clip.prompt)
        latents = model.encode_frames(clip.frames, generator).float().to(model.device)
        flipped = None
        if flip:
            flipped = model.encode_frames(clip.frames.flip(2), generator).float().to(model.device)  # [F, H, W, 3]: W
        out.append(_Example(latents, texts[clip.prompt], flipped))
    return out


def _sync_and_step(optimizer, params: list[torch.Tensor], scaler, world: int, device) -> bool:
    """Average this path's gradients over ranks (those that computed any), then step; False if none did."""
    has_grad = any(p.grad is not None for p in params)
    if world > 1:
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().float() for p in params]
                         + [torch.tensor([float(has_grad)], device=device)])
        dist.all_reduce(flat)
        count = int(flat[-1].item())
        if count == 0:
            return False
        offset = 0
        for p in params:
            p.grad = (flat[offset : offset + p.numel()] / count).view_as(p).to(p.dtype)
            offset += p.numel()
    elif not has_grad:
        return False
    scaler.step(optimizer)
    optimizer.zero_grad(set_to_none=True)
    return True


def _preview(model: "VideoModel", config: TrainConfig, clips: list, spatial_names: list[str], fork_devices) -> torch.Tensor:
    """Sample the validation prompt with the motion LoRA alone (the appearance LoRA alone when there is no motion one)."""
    from .sampling import sample  # written beside this module; imported only when previews are asked for

    unet = model.unet
    before = adapters.current_strengths(unet)
    devices = (model.vae.device, model.text_encoder.device)
    frames, height, width = clips[0].frames.shape[:3]
    has_temporal = TEMPORAL in before
    adapters.set_strengths(unet, {TEMPORAL: 1.0} if has_temporal else {spatial_names[0]: 1.0})
    unet.eval()
    model.vae.to(model.device)
    model.text_encoder.to(model.device)
    try:
        with torch.random.fork_rng(devices=fork_devices), torch.no_grad():  # previews never change the run
            return sample(model, config.validation_prompt, width=width, height=height, frames=frames if has_temporal else 1,
                          steps=config.validation_steps, seed=config.seed, adapters=None)
    finally:
        model.vae.to(devices[0])
        model.text_encoder.to(devices[1])
        unet.train()
        adapters.set_strengths(unet, before)


def _cancel_requested(callbacks: TrainCallbacks, rank: int, world: int, device) -> bool:
    wanted = rank == 0 and callbacks.should_cancel is not None and bool(callbacks.should_cancel())
    if world > 1:  # rank 0 decides for everyone
        flag = torch.tensor([float(wanted)], device=device)
        dist.all_reduce(flag)
        wanted = bool(flag.item())
    return wanted


# --- adapters, checkpoints, results ------------------------------------------------------------------


def _adapter(unet, name: str, kind: str, model, training: dict) -> LoraAdapter:
    """Adapter `name` as plain data; alpha = rank, as every adapter this trainer makes (official LoRA math)."""
    tensors = adapters.get_tensors(unet, name)
    rank = next(v.shape[0] for k, v in tensors.items() if k.endswith(".lora_A.weight"))
    return LoraAdapter(kind, rank, float(rank), tensors, model.fingerprint, training)


def _adapters_now(unet, spatial_names, model, config, clips, appearance) -> dict[str, LoraAdapter]:
    settings = _run_settings(config, clips, appearance)
    out = {}
    if TEMPORAL in adapters.adapter_names(unet):
        out[TEMPORAL] = _adapter(unet, TEMPORAL, TEMPORAL, model, settings)
    for k, name in enumerate(spatial_names):
        own = dict(settings)
        if len(spatial_names) > 1:
            own.update(clip_index=k, clip_source=getattr(clips[k], "source", ""))
        out[name] = _adapter(unet, name, SPATIAL, model, own)
    return out


def _result(unet, spatial_names, model, config, clips, appearance, history, run_dir, step, cancelled=False):
    found = _adapters_now(unet, spatial_names, model, config, clips, appearance)
    return TrainResult(found.get(TEMPORAL), [found[n] for n in spatial_names], list(history), run_dir, step, cancelled)


def _run_settings(config: TrainConfig, clips: list, appearance: list, world: int | None = None) -> dict:
    settings = asdict(config)
    settings["clips"] = [getattr(c, "source", "") for c in clips]
    settings["prompts"] = [c.prompt for c in clips]
    if appearance:
        settings["appearance"] = [getattr(c, "source", "") for c in appearance]
    if world is not None:
        settings["world_size"] = world
    return settings


def _training_state(step, optimizers, scaler, generator, rank, world) -> dict:
    rng = {"generator": generator.get_state(), "torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    rngs = [rng]
    if world > 1:  # every rank's RNG, so each continues its own stream
        rngs = [None] * world
        dist.all_gather_object(rngs, rng)
    return {
        "step": step,
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "scaler": scaler.state_dict(),
        "rng": rngs,
        "world_size": world,
    }


def _save(run_dir, step, unet, spatial_names, model, config, clips, appearance, history, state, rank) -> Path | None:
    if run_dir is None or rank != 0:
        return None
    found = _adapters_now(unet, spatial_names, model, config, clips, appearance)
    path = run_folder.save_checkpoint(run_dir, step, found, state)
    run_folder.write_json(run_dir / "history.json", history)
    return path


def _restore(checkpoint: Path, run_dir: Path, unet, optimizers, scaler, generator, config, rank, world):
    """Load adapters, optimizer, scaler and RNG states; returns (step, history up to that step)."""
    previous = run_folder.read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else {}
    changed = [k for k in _RESUME_KEYS if k in previous and previous[k] != getattr(config, k)]
    if changed:
        raise run_folder.RunFolderError(
            f"cannot resume {run_dir}: {', '.join(changed)} differ from the run being resumed "
            f"({', '.join(f'{k}={previous[k]!r}' for k in changed)}). Use the same settings, or start a new run folder."
        )
    found, state = run_folder.load_checkpoint(checkpoint)
    if set(found) != set(optimizers):
        raise run_folder.RunFolderError(
            f"cannot resume from {checkpoint}: it holds adapters {sorted(found)} but this run trains "
            f"{sorted(optimizers)}. Use the same clips and settings, or start a new run folder."
        )
    for name, adapter in found.items():
        adapters.set_tensors(unet, name, adapter.tensors)
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    scaler.load_state_dict(state["scaler"])
    rngs = state["rng"]
    rng = rngs[rank] if len(rngs) == world else None
    if rng is not None:  # same world size: continue each rank's own stream exactly
        generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    else:  # another number of processes: fresh streams derived from the step
        generator.manual_seed(config.seed + rank + 1_000_003 * state["step"])
        torch.manual_seed(config.seed + rank + 1_000_003 * state["step"])
    history_file = run_dir / "history.json"
    history = run_folder.read_json(history_file) if history_file.is_file() else []
    return int(state["step"]), [h for h in history if h.get("step", 0) <= state["step"]]


# --- inputs, model state, processes -------------------------------------------------------------------


def _check_clips(clips: list, appearance: list, config: TrainConfig) -> None:
    if not clips:
        raise ValueError("no training clips: give at least one video clip (or image) to learn from")
    for group, items in (("clip", clips), ("appearance clip", appearance)):
        for n, clip in enumerate(items):
            frames = getattr(clip, "frames", None)
            if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.shape[-1] != 3:
                shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
                raise ValueError(f"{group} {n} ({getattr(clip, 'source', '')}) has frames {shape}: expected a "
                                 "[frames, height, width, 3] tensor; load clips with motion_lora.data")
    if config.train_temporal and all(c.frames.shape[0] < 2 for c in clips):
        raise ValueError("every clip is a single image, so there is no motion to learn: use the 'images' recipe "
                         "(train_temporal=False), or give video clips")
    stills = [n for n, c in enumerate(clips) if c.frames.shape[0] < 2]
    if config.train_temporal and stills:
        raise ValueError(f"clip {stills[0]} ({getattr(clips[stills[0]], 'source', '')}) is a single image among video "
                         "clips: the motion path needs frames. Pass images as appearance clips instead.")
    if appearance and not config.train_spatial:
        raise ValueError("appearance images were given but train_spatial is off: turn it on to learn their appearance")


class _ModelState:
    """What training changes on the model (mode, requires_grad, part devices, adapter strengths), to put back."""

    def __init__(self, model: "VideoModel"):
        self.training = model.unet.training
        self.requires_grad = [p.requires_grad for p in model.unet.parameters()]
        self.devices = (model.vae.device, model.text_encoder.device)
        self.strengths = adapters.current_strengths(model.unet)

    def restore(self, model: "VideoModel") -> None:
        for p, flag in zip(model.unet.parameters(), self.requires_grad):
            p.requires_grad_(flag)
        model.unet.train(self.training)
        model.vae.to(self.devices[0])
        model.text_encoder.to(self.devices[1])
        adapters.set_strengths(model.unet, self.strengths)


def _distributed_setup(device: torch.device) -> tuple[int, int]:
    """(rank, world size); starts the process group when a launcher set WORLD_SIZE > 1 but nobody initialised it."""
    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()
