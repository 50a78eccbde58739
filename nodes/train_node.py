"""Train: motion clips (+ optional appearance images) -> a motion LoRA, an appearance LoRA, a loss curve.

A recipe sets MotionDirector's official settings; every widget left at -1 / "recipe"
keeps the recipe's value, any other value overrides it. The run is saved under
models/motion_director/<run name> (never over an existing run) and its LoRAs show up in
Load LoRA at once. Cancel stops within one step, saves a checkpoint first and ends the prompt
the way ComfyUI's own Cancel does; `resume` continues that run (or a finished one, with more
steps) from its last checkpoint instead of starting `<run name>_2`.

There is deliberately no IS_CHANGED: ComfyUI's cache keys on the inputs, so re-queueing
an unchanged graph reuses the trained LoRAs and changing any input trains again.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from . import comfy, lora_folder
from .common import CATEGORY, CLIPS, LORA, MODEL, SEED_MAX

RECIPE = "recipe"  # a combo value: keep the recipe's setting
SWITCH = [RECIPE, "on", "off"]
PRECISIONS = ["auto", "no", "fp16", "bf16"]
CHECKPOINTING = ["all", "attention", "off"]  # TrainConfig.gradient_checkpointing; "off" is False


def _recipe_names() -> list[str]:
    from ..motion_lora.training import RECIPES

    return list(RECIPES)


def _keep(tooltip: str) -> str:
    return f"{tooltip} -1: the recipe's value."


def overrides(**widgets) -> dict:
    """The widgets that override the recipe, as TrainConfig fields."""
    out = {}
    for name, value in widgets.items():
        if value is None or value == RECIPE or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                                 and value == -1):
            continue
        out[name] = {"on": True, "off": False}.get(value, value) if isinstance(value, str) else value
    return out


def _fresh(clips):
    """Copies of the clips whose frames are normal tensors (ComfyUI hands over inference tensors)."""
    return [replace(clip, frames=clip.frames.clone()) for clip in clips]


class Train:
    DESCRIPTION = ("Trains MotionDirector's two LoRAs: motion (temporal) from the motion clips, appearance "
                   "(spatial) from their frames or from the optional appearance images. Saves the run to "
                   "models/motion_director/<run name>.")
    CATEGORY = CATEGORY
    FUNCTION = "train"
    RETURN_TYPES = (LORA, LORA, "IMAGE", "STRING")
    RETURN_NAMES = ("motion_lora", "appearance_lora", "loss_curve", "run_folder")
    OUTPUT_TOOLTIPS = (
        "The motion LoRA (temporal path): connect to Apply Motion.",
        "The appearance LoRA (spatial path; the first clip's with one LoRA per clip): connect to Apply Appearance.",
        "The losses of every step as an image.",
        "The folder the run was saved to (adapters, checkpoints, history).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        lr = {"default": -1.0, "min": -1.0, "max": 1.0, "step": 0.00001, "round": 0.00001}
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The base model, straight from Load Model."}),
                "clips": (CLIPS, {"tooltip": "The motion's training clips (from a clips node)."}),
                "recipe": (_recipe_names(), {"default": "single-video", "tooltip": "MotionDirector's official "
                           "settings: single-video (one clip, 150 steps), multi-video (several clips, one "
                           "appearance LoRA per clip), images (appearance only, from still images)."}),
                "run_name": ("STRING", {"default": "my_motion", "tooltip": "Saved under models/motion_director/"
                             "<run name>; an existing run is never overwritten (_2, _3, ... is added)."}),
                "steps": ("INT", {"default": -1, "min": -1, "max": 100000, "tooltip": _keep("Training steps.")}),
                "spatial_lr": ("FLOAT", {**lr, "tooltip": _keep("Learning rate of the appearance LoRA.")}),
                "temporal_lr": ("FLOAT", {**lr, "tooltip": _keep("Learning rate of the motion LoRA.")}),
                "rank": ("INT", {"default": -1, "min": -1, "max": 512, "tooltip": _keep("LoRA rank (32 as "
                         "MotionDirector).")}),
                "beta": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 10.0, "step": 0.05, "tooltip": _keep(
                         "Weight of the appearance-debiased temporal loss (0 off, 1 as MotionDirector).")}),
                "train_spatial": (SWITCH, {"default": RECIPE, "tooltip": "Train the appearance LoRA (recipe: "
                                  "the recipe's choice)."}),
                "train_temporal": (SWITCH, {"default": RECIPE, "tooltip": "Train the motion LoRA (recipe: off "
                                   "for the images recipe, on otherwise)."}),
                "spatial_per_clip": (SWITCH, {"default": RECIPE, "tooltip": "One appearance LoRA per clip "
                                     "(recipe: on for multi-video), so the motion LoRA learns less appearance."}),
                "checkpoint_every": ("INT", {"default": -1, "min": -1, "max": 100000, "tooltip": _keep(
                                     "Save a resumable checkpoint every N steps, and at the end (0: only at the end).")}),
                "validation_prompt": ("STRING", {"default": "", "multiline": True, "tooltip": "A prompt sampled "
                                      "during training as the progress bar's live preview (empty: none)."}),
                "validation_every": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "Sample the "
                                     "validation prompt every N steps (0: never)."}),
                "validation_steps": ("INT", {"default": 20, "min": 1, "max": 500, "tooltip": "Denoising steps of "
                                     "each validation sample."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": False,
                                 "tooltip": "Seed of the whole run: the same inputs and seed train the same LoRAs."}),
                "mixed_precision": (PRECISIONS, {"default": "auto", "tooltip": "auto: fp16 (bf16 for a bf16 "
                                    "model) on a GPU, none on the CPU."}),
                "gradient_checkpointing": (CHECKPOINTING, {"default": "all", "tooltip": "Recompute activations "
                                           "instead of storing them: less GPU memory, slower steps. all: least "
                                           "memory (ZeroScope 384x384x16 in about 5.5 GB); attention: about 20% "
                                           "faster, about 12 GB; off: fastest, about 26 GB."}),
                "resume": ("BOOLEAN", {"default": False, "tooltip": "On: continue the run saved as "
                           "models/motion_director/<run name> from its last checkpoint (after a Cancel, or a "
                           "finished run with more steps), with the same settings. Off: a new run (an existing "
                           "name gets _2, _3, ...)."}),
            },
            "optional": {
                "appearance": (CLIPS, {"tooltip": "Images or clips for the appearance LoRA instead of the motion "
                               "clips' frames: one run then learns this look and the clips' motion."}),
            },
        }

    def train(self, model, clips, recipe: str = "single-video", run_name: str = "my_motion", steps: int = -1,
              spatial_lr: float = -1.0, temporal_lr: float = -1.0, rank: int = -1, beta: float = -1.0,
              train_spatial: str = RECIPE, train_temporal: str = RECIPE, spatial_per_clip: str = RECIPE,
              checkpoint_every: int = -1, validation_prompt: str = "", validation_every: int = 0,
              validation_steps: int = 20, seed: int = 0, mixed_precision: str = "auto",
              gradient_checkpointing: str = "all", resume: bool = False, appearance=None):
        import torch

        from ..motion_lora.loss_plot import render_loss_plot
        from ..motion_lora.patched_model import MissingLora
        from ..motion_lora.training import TrainCallbacks, TrainConfig, TrainingCancelled, train

        if model.adapters:
            raise ValueError("Train got a model with LoRAs applied: connect Load Model's output straight to Train "
                             "(apply LoRAs after training, for sampling)")
        if not clips:
            raise ValueError("clips is empty: connect a clips node with at least one clip")
        config = TrainConfig.from_recipe(recipe, **overrides(
            steps=steps, spatial_lr=spatial_lr, temporal_lr=temporal_lr, rank=rank, beta=beta,
            train_spatial=train_spatial, train_temporal=train_temporal, spatial_per_clip=spatial_per_clip,
            checkpoint_every=checkpoint_every, validation_every=validation_every))
        config = replace(config, seed=seed, validation_prompt=validation_prompt.strip(),
                         validation_steps=validation_steps, mixed_precision=mixed_precision,
                         gradient_checkpointing=False if gradient_checkpointing == "off" else gradient_checkpointing)
        run_dir = lora_folder.existing_run_dir(run_name) if resume else lora_folder.new_run_dir(run_name)

        progress = comfy.Progress(config.steps)
        callbacks = TrainCallbacks(
            on_step=lambda info: progress.update(info.step, info.total),
            on_preview=lambda step, frames: progress.update(step, None, frames),
            should_cancel=comfy.interrupted,
        )
        comfy.free_comfy_memory()
        try:
            # ComfyUI runs nodes under inference mode; training needs autograd back.
            with torch.inference_mode(False), torch.enable_grad():
                result = train(model.model, _fresh(clips), config, run_dir=run_dir, callbacks=callbacks,
                               resume=resume, appearance=_fresh(appearance) if appearance else None)
        except TrainingCancelled as e:
            # Cancel is not a failure: log where the checkpoint went, then end the prompt as ComfyUI's Cancel does.
            logging.warning("[MotionDirector] %s To continue it, queue again with resume on and run_name %r.",
                            e, lora_folder.run_name_of(run_dir))
            del e
            comfy.release_memory()
            comfy.raise_interrupted()
        finally:
            comfy.release_memory()

        run_dir = result.run_dir or run_dir
        motion = result.temporal or MissingLora("temporal", f"the run in {run_dir} did not train the motion path "
                                                "(train_temporal off, or the images recipe)")
        look = result.spatial[0] if result.spatial else MissingLora(
            "spatial", f"the run in {run_dir} did not train the appearance path (train_spatial off)")
        saved = ", ".join(p.name for p in sorted(Path(run_dir).glob("*.safetensors")))
        text = f"run saved in {run_dir} (step {result.step}): {saved or 'no adapter'}"
        return {"ui": {"text": [text]},
                "result": (motion, look, render_loss_plot(result.history), str(run_dir))}


NODE_CLASS_MAPPINGS = {"MotionDirectorTrain": Train}
NODE_DISPLAY_NAME_MAPPINGS = {"MotionDirectorTrain": "MotionDirector Train"}
