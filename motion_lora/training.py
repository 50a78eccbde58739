"""MotionDirector's dual-path training: a spatial LoRA learns appearance, a temporal LoRA learns motion.

Each step (METHOD.md, "One training step"): noise one cached clip at a random timestep;
the *spatial path* denoises one frame of it with only the spatial LoRA on; the
*temporal path* denoises the whole clip with the temporal LoRA on and the spatial LoRA
on too (except on the 20 % "masked" steps), scored with the plain loss plus the
appearance-debiased loss. Each loss updates only its own path, both forwards see the
same weights, then both optimizers step. `_loop` reads as those named steps.

What differs between model families stays in the backbone: the diffusion objective
(`backbone.objective`: how latents are noised at which timesteps, what the model
predicts) and the spatial path's one-frame input (a frame of the step's noisy clip, or
the frame encoded as an image and noised afresh; `spatial_reuses_clip_noise`).
A step whose loss or weights stop being finite ends the run (`TrainingDiverged`)
before anything of it is saved.

`train()` runs on one device, or data-parallel when torch.distributed is initialised
(torchrun / accelerate launch): every rank draws its own noise, gradients are averaged
before each optimizer step, and only rank 0 writes files or calls callbacks.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch
import torch.distributed as dist

from . import adapters, block_swap, run_folder
from .adapters import SPATIAL, TEMPORAL, LoraAdapter
from .losses import mse, temporal_loss

if TYPE_CHECKING:
    from .backbones.base import Objective
    from .data import Clip
    from .model import VideoModel

MIXED_PRECISION = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16, "auto": None}
CHECKPOINT_POLICIES = ("all", "attention")
DROPOUT_PLACEMENTS = ("rank", "output")  # up(dropout(down(x))) (ours, cheaper) | dropout(up(down(x))) (official)

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
    dropout_placement: str = "rank"  # "rank": up(dropout(down(x))), ours; "output": dropout(up(down(x))), official
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
    offload_activations: bool = False  # with checkpointing: keep the units' inputs in CPU memory (Wan 14B in 24 GB)
    blocks_to_swap: int = 0  # with checkpointing: the last N checkpointed blocks' frozen weights wait in CPU memory
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
        if self.steps < 1:  # 0 steps would save untrained (zero) LoRAs
            raise ValueError(f"steps must be at least 1, got {self.steps!r}")
        if self.dropout_placement not in DROPOUT_PLACEMENTS:
            raise ValueError(f"dropout_placement must be one of {list(DROPOUT_PLACEMENTS)} ('rank': "
                             f"up(dropout(down(x))), 'output': the official dropout(up(down(x)))), "
                             f"got {self.dropout_placement!r}")
        for name in ("rank", "spatial_rank", "temporal_rank"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        for name in ("spatial_lr", "temporal_lr", "weight_decay"):  # AdamW's own error would not name the setting
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.offload_activations and self.checkpoint_policy is None:
            raise ValueError("offload_activations keeps the checkpointed units' inputs on the CPU: it needs "
                             "gradient_checkpointing on")
        if self.blocks_to_swap < 0:
            raise ValueError(f"blocks_to_swap must be 0 or more, got {self.blocks_to_swap}")
        if self.blocks_to_swap and self.checkpoint_policy is None:
            raise ValueError("blocks_to_swap loads a block's weights each time it runs, which gradient checkpointing "
                             "makes safe: it needs gradient_checkpointing on")
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


class TrainingDiverged(RuntimeError):
    """The loss or an adapter weight became NaN or infinite; nothing non-finite was written.

    `.step` is the step at which it was seen, `.checkpoint` the last finite checkpoint on disk (or None).
    """

    def __init__(self, message: str, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


@dataclass
class _Example:
    """One clip as the loop needs it, computed once: latents, text embedding and its frames as images."""

    latents: torch.Tensor  # one clip in the backbone's layout, float32, on the device
    text: torch.Tensor  # model dtype, on the device
    frames: int  # latent frames (the debiased loss's anchor is one of them)
    images: torch.Tensor | None = None  # every frame as a one-frame clip [F, C, 1, h, w] (the spatial path's input)
    flipped: torch.Tensor | None = None  # the same, horizontally flipped


@dataclass
class _Run:
    """Everything the loop reads, built once by `_start`; `step`, `history` and the checkpoints move on."""

    model: "VideoModel"
    config: TrainConfig
    clips: list
    appearance: list
    run_dir: Path | None
    rank: int
    world: int
    fork_devices: list
    examples: list[_Example]
    spatial_examples: list[_Example]  # the appearance clips, or the training clips themselves
    spatial_names: list[str]
    params: dict[str, list[torch.Tensor]]
    optimizers: dict[str, torch.optim.Optimizer]
    scaler: torch.amp.GradScaler
    generator: torch.Generator  # every random choice of the loop: clip, noise, timestep, mask, frame, anchor, flip
    objective: "Objective"
    step: int = 0
    history: list[dict] = field(default_factory=list)
    last_checkpoint: Path | None = None  # the newest checkpoint on disk (finite by construction)
    saved_at: int | None = None  # the step `last_checkpoint` was written at by this run
    lora_layers: list = field(default_factory=list)  # (path, peft layer) of every adapter, walked once

    @property
    def unet(self):
        return self.model.unet

    @property
    def backbone(self):
        return self.model.backbone

    @property
    def separate_appearance(self) -> bool:
        return bool(self.appearance)

    def train_only(self, name: str) -> None:
        """Only adapter `name` collects gradients (from the cached lists: no walk of the UNet per step)."""
        for other, tensors in self.params.items():
            for p in tensors:
                p.requires_grad_(other == name)

    def autocast(self):
        dtype = MIXED_PRECISION[self.config.mixed_precision]
        return torch.autocast(self.model.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


@dataclass
class _Draw:
    """What one step draws before any forward pass (official `finetune_unet`, in its order)."""

    k: int  # which training clip
    example: _Example
    t: torch.Tensor
    noisy: torch.Tensor
    target: torch.Tensor
    masked: bool  # the spatial path is skipped and the spatial LoRA is off in the temporal pass
    spatial_name: str | None  # the spatial LoRA of this clip (None when no spatial LoRA is trained)


# --- the run ------------------------------------------------------------------------------------


def train(model: "VideoModel", clips: Sequence["Clip"], config: TrainConfig, run_dir=None,
          callbacks: TrainCallbacks | None = None, resume: bool = False,
          appearance: Sequence["Clip"] | None = None) -> TrainResult:
    """Train MotionDirector's LoRAs on `clips`; returns plain adapters and leaves `model` as it was.

    `appearance` (images or clips) makes the spatial path learn from them instead of from
    the motion clips: one run then yields a motion LoRA and an appearance LoRA. That LoRA
    does not stand in for the clips' look, so it stays off in the temporal pass.
    With `run_dir`, checkpoints are saved there; `resume=True` continues the last one.
    Raises `TrainingDiverged` when the loss or a weight stops being finite, `TrainingCancelled`
    when `callbacks.should_cancel()` says so, and `RunFolderError` when the run folder cannot be written.
    """
    config.check()
    if resume and run_dir is None:
        raise ValueError("resume=True needs the run folder to resume from: pass run_dir")
    config = replace(config, mixed_precision=resolve_precision(config.mixed_precision, model))
    clips, appearance = list(clips), list(appearance or [])
    _check_clips(clips, appearance, config)
    if config.blocks_to_swap:  # before any file is written: a count the model cannot take
        block_swap.check_count(config.blocks_to_swap,
                               len(model.backbone.checkpoint_units(model.unet, config.checkpoint_policy)))
    callbacks = callbacks or TrainCallbacks()
    rank, world = _distributed_setup(model.device)
    if run_dir is not None:
        run_dir = run_folder.prepare(run_dir, resume)
        _barrier(world)  # every rank checked the folder before rank 0 writes into it
    n_spatial = 0 if not config.train_spatial else (len(clips) if config.spatial_per_clip and not appearance else 1)
    spatial_names = [SPATIAL] if n_spatial == 1 else [f"{SPATIAL}_{k}" for k in range(n_spatial)]
    names = spatial_names + ([TEMPORAL] if config.train_temporal else [])
    clash = set(names) & adapters.adapter_names(model.unet)
    if clash:
        raise ValueError(f"the model already carries adapters named {sorted(clash)}: remove them before training")

    saved = _ModelState(model)
    python_rng = random.getstate()
    fork_devices = [model.device] if model.device.type == "cuda" else []
    injected: list[str] = []
    optimizers: dict[str, torch.optim.Optimizer] = {}
    try:
        with torch.random.fork_rng(devices=fork_devices):  # the caller's global RNG is untouched by the run
            run = _start(model, clips, appearance, config, run_dir, resume, rank, world, fork_devices,
                         spatial_names, injected, optimizers)
            return _loop(run, callbacks)
    finally:
        optimizers.clear()  # a caller holding a TrainingCancelled must not keep the optimizer state alive
        for name in injected:
            adapters.remove(model.unet, name)
        saved.restore(model)
        random.setstate(python_rng)


def _start(model, clips, appearance, config, run_dir, resume, rank, world, fork_devices, spatial_names,
           injected: list[str], optimizers: dict) -> _Run:
    """Cache the inputs, inject the adapters, build the optimizers, seed, and resume: the run before its first step."""
    unet, backbone, device = model.unet, model.backbone, model.device
    # 1. latents, text embeddings and per-frame image latents, once; the VAE and text encoder may then leave the GPU
    torch.manual_seed(config.seed)
    flip = config.train_spatial and config.hflip_prob > 0  # flipped images serve the spatial path only
    examples = _cache(model, clips, config.seed, images=config.train_spatial and not appearance,
                      flip=flip and not appearance)
    spatial_examples = _cache(model, appearance, config.seed, images=True, flip=flip) if appearance else examples
    if device.type == "cuda":
        model.vae.to("cpu")
        model.text_encoder.to("cpu")
        torch.cuda.empty_cache()

    # 2. the adapters (same initial weights on every rank: drawn right after seeding)
    unet.requires_grad_(False)
    kinds = [(name, SPATIAL, config.spatial_rank or config.rank) for name in spatial_names]
    kinds += [(TEMPORAL, TEMPORAL, config.temporal_rank or config.rank)] if config.train_temporal else []
    for name, kind, rank_ in kinds:
        adapters.inject(unet, backbone, name, kind, rank_, dropout=config.dropout,
                        dropout_placement=config.dropout_placement)
        injected.append(name)
    params = {name: adapters.adapter_parameters(unet, [name]) for name in injected}
    optimizers.update({
        name: torch.optim.AdamW(params[name], lr=_lr(config, name), betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=config.weight_decay)
        for name in injected
    })
    scaler = torch.amp.GradScaler(device.type, enabled=config.mixed_precision == "fp16" and device.type == "cuda")
    generator = torch.Generator().manual_seed(config.seed + rank)
    torch.manual_seed(config.seed + rank)  # LoRA dropout and the UNet's own dropout
    random.seed(config.seed + rank)
    run = _Run(model, config, clips, appearance, run_dir, rank, world, fork_devices, examples, spatial_examples,
               spatial_names, params, optimizers, scaler, generator, backbone.objective(model.scheduler_config),
               lora_layers=list(adapters.lora_layers(unet)))

    # 3. resume
    checkpoint = run_folder.latest_checkpoint(run_dir) if (run_dir is not None and resume) else None
    if checkpoint is not None:
        run.step, run.history = _restore(checkpoint, run)
        run.last_checkpoint = checkpoint
    if rank == 0 and run_dir is not None:  # after _restore's check: a resumed run records its new settings
        with run_folder.writing(run_dir, run.last_checkpoint):
            run_dir.mkdir(parents=True, exist_ok=True)
            run_folder.write_json(run_dir / "config.json", _run_settings(config, clips, appearance, world))
    return run


def _loop(run: _Run, callbacks: TrainCallbacks) -> TrainResult:
    """The steps, then the final adapters. Each step: draw, spatial path, temporal path, optimizers, bookkeeping."""
    config, unet = run.config, run.unet
    unet.train()  # official: the whole UNet trains, so the temporal convolutions' dropout is active too
    policy = config.checkpoint_policy
    units = run.backbone.checkpoint_units(unet, policy) if policy else []
    trained = [p for opt in run.optimizers.values() for group in opt.param_groups for p in group["params"]]
    with block_swap.checkpointed(units, offload=config.offload_activations, blocks_to_swap=config.blocks_to_swap,
                                 device=run.model.device, keep=trained):
        while run.step < config.steps:
            if _cancel_requested(callbacks, run.rank, run.world, run.model.device):
                _cancel(run)
            draw = _draw(run)
            losses: dict[str, float] = {}
            if draw.spatial_name is not None and not draw.masked:
                losses.update(_spatial_step(run, draw))
            if config.train_temporal:
                losses.update(_temporal_step(run, draw))
            _optimizer_step(run)
            run.step += 1
            _check_finite(run, losses)
            _bookkeeping(run, losses, callbacks)
    result = _result(run)
    if run.rank == 0 and run.run_dir is not None:
        with run_folder.writing(run.run_dir, run.last_checkpoint):
            run_folder.save_final(run.run_dir, result.temporal, result.spatial)
    return result


# --- one step ----------------------------------------------------------------------------------------


def _draw(run: _Run) -> _Draw:
    """The step's clip, noise, timestep and spatial mask, from the run's generator."""
    g, device = run.generator, run.model.device
    k = int(torch.randint(len(run.examples), (1,), generator=g))
    example = run.examples[k]
    noise = _noise(example.latents.shape, run.config.offset_noise, run.backbone.frame_axis(), g).to(device)
    t = run.objective.sample_timesteps(1, g).to(device)
    noisy = run.objective.add_noise(example.latents, noise, t)
    target = run.objective.target(example.latents, noise, t)
    # official: the mask exists only when the temporal LoRA is trained; the images recipe never skips a step
    masked = run.config.train_temporal and bool(torch.rand(1, generator=g) < run.config.spatial_mask_prob)
    names = run.spatial_names
    spatial_name = (names[k] if len(names) > 1 else names[0]) if names else None
    return _Draw(k, example, t, noisy, target, masked, spatial_name)


def _noise(shape, offset: float, frame_axis: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise plus, with `offset`, offset noise per (batch, channel, frame) as the official `sample_noise`."""
    noise = torch.randn(shape, generator=generator)
    if offset:
        per_frame = [n if axis < 2 or axis == frame_axis else 1 for axis, n in enumerate(shape)]
        noise = noise + offset * torch.randn(per_frame, generator=generator)
    return noise


def _spatial_step(run: _Run, draw: _Draw) -> dict[str, float]:
    """One frame, this clip's spatial LoRA alone; its loss reaches only the spatial LoRA."""
    x, target, text = _spatial_input(run, draw)
    adapters.set_strengths(run.unet, {draw.spatial_name: 1.0}, run.lora_layers)
    run.train_only(draw.spatial_name)
    with run.autocast():
        pred = run.backbone.predict(run.unet, x.to(run.model.dtype), draw.t, text)
    loss = mse(pred, target)
    run.scaler.scale(loss).backward()
    return {"loss_spatial": loss.item()}


def _spatial_input(run: _Run, draw: _Draw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(1-frame noisy latents, target, text) for the spatial path.

    Frame `i` of the step's noisy clip and target where the backbone allows it; otherwise (a flipped
    frame, a separate appearance image, or a backbone whose latent frames are not images) frame `i`
    as an image, noised afresh at the step's timestep.
    """
    g, config = run.generator, run.config
    k = int(torch.randint(len(run.spatial_examples), (1,), generator=g)) if run.separate_appearance else draw.k
    example = run.spatial_examples[k]
    i = int(torch.randint(example.images.shape[0], (1,), generator=g))
    flip = config.hflip_prob > 0 and bool(torch.rand(1, generator=g) < config.hflip_prob)
    if not flip and not run.separate_appearance and run.backbone.spatial_reuses_clip_noise:
        select = run.backbone.select_frames
        return select(draw.noisy, i), select(draw.target, i), example.text
    clean = (example.flipped if flip else example.images)[i : i + 1]
    noise = _noise(clean.shape, config.offset_noise, run.backbone.frame_axis(), g).to(clean.device)
    return run.objective.add_noise(clean, noise, draw.t), run.objective.target(clean, noise, draw.t), example.text


def _temporal_step(run: _Run, draw: _Draw) -> dict[str, float]:
    """The whole clip, temporal LoRA on, scored with the plain and the appearance-debiased loss.

    The spatial LoRA (unless masked) is on but frozen for this loss: it stands in for the clip's
    appearance. A LoRA learning separate appearance images would put a foreign look into the clip's
    prediction instead, so it stays off here.
    """
    anchor = int(torch.randint(draw.example.frames, (1,), generator=run.generator))
    on = {TEMPORAL: 1.0}
    if draw.spatial_name is not None and not draw.masked and not run.separate_appearance:
        on[draw.spatial_name] = 1.0
    adapters.set_strengths(run.unet, on, run.lora_layers)
    run.train_only(TEMPORAL)
    with run.autocast():
        pred = run.backbone.predict(run.unet, draw.noisy.to(run.model.dtype), draw.t, draw.example.text)
    loss, loss_org, loss_ad = temporal_loss(pred, draw.target, anchor, run.config.beta, run.backbone.frame_axis())
    run.scaler.scale(loss).backward()
    return {"loss_temporal": loss.item(), "loss_temporal_org": loss_org.item(), "loss_temporal_ad": loss_ad.item()}


def _optimizer_step(run: _Run) -> None:
    """Both optimizers step after both backward passes, so both forwards saw the same weights."""
    stepped = [_sync_and_step(run.optimizers[n], run.params[n], run.scaler, run.world, run.model.device)
               for n in run.optimizers]
    if any(stepped):
        run.scaler.update()


def _check_finite(run: _Run, losses: dict[str, float]) -> None:
    """Stop at the first non-finite loss or adapter weight, before anything of this step is saved."""
    bad = [f"the {name.split('_')[1]} loss" for name, value in losses.items() if not math.isfinite(value)]
    bad += [f"the {name} LoRA's weights" for name, tensors in run.params.items() if not _finite(tensors)]
    bad = list(dict.fromkeys(bad))  # loss_temporal, _org and _ad are one "temporal loss"
    diverged = bool(bad)
    if run.world > 1:  # every rank stops together
        flag = torch.tensor([float(diverged)], device=run.model.device)
        dist.all_reduce(flag)
        diverged = bool(flag.item())
    if not diverged:
        return
    hit = [lr for lr, path in (("spatial_lr", "spatial"), ("temporal_lr", "temporal")) if any(path in b for b in bad)]
    lrs = [f"{lr} = {getattr(run.config, lr):g}" for lr in hit or ("spatial_lr", "temporal_lr")]
    kept = (f"The last finite checkpoint, {run.last_checkpoint}, is kept (it may already be far off)."
            if run.last_checkpoint is not None else "No checkpoint had been written.")
    raise TrainingDiverged(f"training diverged at step {run.step}: {', '.join(bad) or 'another process'} became "
                           f"NaN or infinite. Lower the learning rate ({', '.join(lrs)}) and train again. {kept} "
                           "Nothing non-finite was saved.", run.step, run.last_checkpoint)


def _finite(tensors: list[torch.Tensor]) -> bool:
    """All values finite, with one device sync for the whole list."""
    if not tensors:
        return True
    norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6: one fused kernel
    peak = norm(tensors, float("inf")) if norm else torch.stack([t.detach().abs().amax() for t in tensors]).amax()
    return bool(torch.isfinite(peak))


def _bookkeeping(run: _Run, losses: dict[str, float], callbacks: TrainCallbacks) -> None:
    """History, progress callback, checkpoint, preview."""
    config, step = run.config, run.step
    run.history.append({"step": step, **losses})
    if run.rank == 0 and callbacks.on_step is not None:
        callbacks.on_step(StepInfo(step, config.steps, losses, _lrs(run)))
    if (config.checkpoint_every > 0 and step % config.checkpoint_every == 0) or step == config.steps:
        _save(run)
    if (config.validation_every and step % config.validation_every == 0 and config.validation_prompt
            and run.rank == 0 and callbacks.on_preview is not None):
        callbacks.on_preview(step, _preview(run.model, config, run.clips, run.spatial_names, run.fork_devices))


def _cancel(run: _Run) -> None:
    """Save the state of this moment (unless this step was just saved) and raise TrainingCancelled."""
    saved_to = run.last_checkpoint if run.saved_at == run.step else _save(run)
    result = _result(run, cancelled=True)
    where = saved_to if saved_to is not None else "nowhere (no run folder)"
    raise TrainingCancelled(f"cancelled at step {run.step}, saved to {where}", result, saved_to)


def _lr(config: TrainConfig, name: str) -> float:
    return config.temporal_lr if name == TEMPORAL else config.spatial_lr


def _lrs(run: _Run) -> dict[str, float]:
    out = {SPATIAL: run.config.spatial_lr} if run.spatial_names else {}
    out.update({TEMPORAL: run.config.temporal_lr} if run.config.train_temporal else {})
    return out


# --- pieces of the loop ----------------------------------------------------------------------------


@torch.no_grad()
def _cache(model: "VideoModel", clips: list, seed: int, images: bool, flip: bool) -> list[_Example]:
    """Latents, text embeddings and (for the spatial path) every frame as an image, plain and flipped."""
    backbone, vae, device = model.backbone, model.vae, model.device
    generator = torch.Generator(device=vae.device).manual_seed(seed)
    texts: dict[str, torch.Tensor] = {}
    out = []
    for clip in clips:
        if clip.prompt not in texts:
            texts[clip.prompt] = model.encode_prompt(clip.prompt)
        latents = model.encode_frames(clip.frames, generator)
        example = _Example(latents.float().to(device), texts[clip.prompt], latents.shape[backbone.frame_axis()])
        if images or flip:
            example.images = backbone.image_latents(vae, clip.frames, latents, generator).float().to(device)
        if flip:
            mirrored = clip.frames.flip(2)  # [F, H, W, 3]: along W
            flipped_clip = model.encode_frames(mirrored, generator)
            example.flipped = backbone.image_latents(vae, mirrored, flipped_clip, generator).float().to(device)
        out.append(example)
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
    if getattr(model.backbone, "placement", None):  # where the LoRAs sit (Wan): read back by adapters.check_fits
        settings["placement"] = model.backbone.placement
    out = {}
    if TEMPORAL in adapters.adapter_names(unet):
        out[TEMPORAL] = _adapter(unet, TEMPORAL, TEMPORAL, model, settings)
    for k, name in enumerate(spatial_names):
        own = dict(settings)
        if len(spatial_names) > 1:
            own.update(clip_index=k, clip_source=getattr(clips[k], "source", ""))
        out[name] = _adapter(unet, name, SPATIAL, model, own)
    return out


def _result(run: _Run, cancelled: bool = False) -> TrainResult:
    found = _adapters_now(run.unet, run.spatial_names, run.model, run.config, run.clips, run.appearance)
    return TrainResult(found.get(TEMPORAL), [found[n] for n in run.spatial_names], list(run.history), run.run_dir,
                       run.step, cancelled)


def _run_settings(config: TrainConfig, clips: list, appearance: list, world: int | None = None) -> dict:
    settings = asdict(config)
    settings["clips"] = [getattr(c, "source", "") for c in clips]
    settings["prompts"] = [c.prompt for c in clips]
    if appearance:
        settings["appearance"] = [getattr(c, "source", "") for c in appearance]
    if world is not None:
        settings["world_size"] = world
    return settings


def _training_state(run: _Run) -> dict:
    rng = {"generator": run.generator.get_state(), "torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    rngs = [rng]
    if run.world > 1:  # every rank's RNG, so each continues its own stream
        rngs = [None] * run.world
        dist.all_gather_object(rngs, rng)
    return {
        "step": run.step,
        "optimizers": {name: opt.state_dict() for name, opt in run.optimizers.items()},
        "scaler": run.scaler.state_dict(),
        "rng": rngs,
        "world_size": run.world,
    }


def _save(run: _Run) -> Path | None:
    """Checkpoint the current step (rank 0, with a run folder); returns its folder."""
    state = _training_state(run)  # every rank takes part (the RNG states are gathered)
    if run.run_dir is None or run.rank != 0:
        return None
    found = _adapters_now(run.unet, run.spatial_names, run.model, run.config, run.clips, run.appearance)
    with run_folder.writing(run.run_dir, run.last_checkpoint):
        path = run_folder.save_checkpoint(run.run_dir, run.step, found, state)
        run_folder.write_json(run.run_dir / "history.json", run.history)
    run.last_checkpoint, run.saved_at = path, run.step
    return path


def _restore(checkpoint: Path, run: _Run) -> tuple[int, list[dict]]:
    """Load adapters, optimizer, scaler and RNG states; returns (step, history up to that step).

    The learning rates and weight decay are this run's settings, not the checkpoint's: resuming
    with a lower learning rate (after a divergence) really lowers it.
    """
    run_dir, config, rank, world = run.run_dir, run.config, run.rank, run.world
    previous = run_folder.read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else {}
    changed = [k for k in _RESUME_KEYS if k in previous and previous[k] != getattr(config, k)]
    if changed:
        raise run_folder.RunFolderError(
            f"cannot resume {run_dir}: {' and '.join(changed)} {'differs' if len(changed) == 1 else 'differ'} from "
            f"the run being resumed ({'; '.join(f'{k} {previous[k]!r} there, {getattr(config, k)!r} now' for k in changed)}). "
            "Use the same settings, or start a new run folder."
        )
    found, state = run_folder.load_checkpoint(checkpoint)
    if set(found) != set(run.optimizers):
        raise run_folder.RunFolderError(
            f"cannot resume from {checkpoint}: it holds adapters {sorted(found)} but this run trains "
            f"{sorted(run.optimizers)}. Use the same clips and settings, or start a new run folder."
        )
    for name, adapter in found.items():
        adapters.set_tensors(run.unet, name, adapter.tensors)
    for name, opt in run.optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
        for group in opt.param_groups:
            group.update(lr=_lr(config, name), weight_decay=config.weight_decay)
    run.scaler.load_state_dict(state["scaler"])
    rngs = state["rng"]
    rng = rngs[rank] if len(rngs) == world else None
    if rng is not None:  # same world size: continue each rank's own stream exactly
        run.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    else:  # another number of processes: fresh streams derived from the step
        run.generator.manual_seed(config.seed + rank + 1_000_003 * state["step"])
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
