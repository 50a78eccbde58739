"""Wan nodes: train MotionDirector LoRAs on the Wan files a ComfyUI user already has, for ComfyUI's core Wan nodes.

- Wan Load Model reads `models/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors` (14B, fp8 too) and
  `models/vae/wan_2.1_vae.safetensors` with `motion_lora.wan_files`; it has no text encoder of its own.
- Wan Train takes the clips' caption as CONDITIONING from ComfyUI's own CLIP Loader (type wan, umt5_xxl) +
  CLIP Text Encode, so the pack never parses a text-encoder file, and writes both LoRAs in ComfyUI's key
  layout into `models/loras/motion_director/`. Its `*_lora_name` outputs connect to core
  `LoraLoaderModelOnly`'s lora_name, so one workflow trains and then samples with UNETLoader ->
  LoraLoaderModelOnly -> KSampler.

Applying and sampling Wan LoRAs is left to ComfyUI's core nodes: `LoraLoaderModelOnly` already reads our files
and those of musubi-tuner, diffusion-pipe and ai-toolkit, and KSampler runs Wan with ComfyUI's own memory
management, which our Sample node (it encodes text itself) cannot do for a model without a text encoder.
"""

from __future__ import annotations

import gc
from dataclasses import replace
from pathlib import Path

from . import comfy, lora_folder
from .common import CATEGORY, CLIPS, LORA, MODEL, SEED_MAX

PLACEMENTS = ["b", "a", "c"]  # = motion_lora.backbones.wan.PLACEMENTS, default first (no torch import here)
DTYPES = ["auto", "bf16", "fp16", "fp32"]
PRECISIONS = ["auto", "no", "bf16", "fp16"]
RECIPES = ["single-video", "multi-video", "images"]  # = motion_lora.training.RECIPES
CHECKPOINTING = ["on", "on + CPU offload", "off"]
SUBFOLDER = "motion_director"  # inside models/loras: our Wan LoRAs, apart from the user's other LoRAs


class ComboName(str):
    """The output type of a file name that feeds a combo (core LoraLoaderModelOnly's lora_name).

    ComfyUI checks a link by comparing the output's type with the input's; a combo input's type is its list of
    options (or "COMBO"), which no fixed string equals. This type equals exactly those, and nothing else."""

    def __eq__(self, other):
        return isinstance(other, list) or str.__eq__(self, other)

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = str.__hash__


LORA_NAME = ComboName("COMBO")


def conditioning_embedding(conditioning):
    """ComfyUI's CONDITIONING (`[[tensor [1, tokens, 4096], {...}], ...]`) -> the first entry's `[tokens, 4096]`."""
    try:
        tensor = conditioning[0][0]
        if tensor.dim() != 3 or tensor.shape[0] != 1:
            raise ValueError
    except (IndexError, TypeError, ValueError, AttributeError):
        raise ValueError("conditioning is not one prompt's CLIP Text Encode output: connect CLIP Text Encode "
                         "(with CLIP Loader type wan) holding the clips' caption") from None
    return tensor[0].detach().float().cpu()


def unique_lora_path(stem: str) -> tuple[str, Path]:
    """(name as LoraLoaderModelOnly lists it, full path) for a new file `motion_director/<stem>.safetensors`
    in ComfyUI's loras folder, `_2`, `_3`, ... added when taken: a file is never replaced, so core
    LoraLoaderModelOnly (which keeps the last file it read by path) never applies a stale copy."""
    root = comfy.comfy_loras_dir()
    n, name = 1, f"{SUBFOLDER}/{stem}.safetensors"
    while (root / name).exists():
        n += 1
        name = f"{SUBFOLDER}/{stem}_{n}.safetensors"
    return name, root / name


class WanLoadModel:
    DESCRIPTION = ("Loads Wan 2.1 / 2.2 text-to-video for training from ComfyUI's own files: the diffusion model "
                   "(models/diffusion_models, fp16 / bf16 / fp8) and the VAE (models/vae). Text comes in as "
                   "CONDITIONING at Wan Train.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The Wan model for MotionDirector Wan Train.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "diffusion_model": (comfy.model_file_names("diffusion_models") or ["(none in models/diffusion_models)"], {
                "tooltip": "A Wan text-to-video diffusion model, e.g. wan2.1_t2v_1.3B_fp16.safetensors (the "
                           "file UNETLoader loads; 14B and fp8 files too). Wan 2.2 A14B: its high_noise file, which lays "
                           "out the motion (trained on the high-noise timesteps only)."}),
            "vae": (comfy.model_file_names("vae") or ["(none in models/vae)"], {
                "tooltip": "The Wan VAE, e.g. wan_2.1_vae.safetensors."}),
            "placement": (PLACEMENTS, {"default": "b", "tooltip": "Where the LoRAs sit. b: motion on "
                          "self-attention, appearance on self-attention + feed-forward; a: both on both; c: as b "
                          "with motion on q/k only."}),
            "dtype": (DTYPES, {"default": "auto", "tooltip": "Compute precision. auto: bf16 on a GPU, fp32 on the "
                               "CPU. fp8 files stay fp8 in memory either way."}),
        }}

    def load(self, diffusion_model: str, vae: str, placement: str = "b", dtype: str = "auto"):
        import torch

        from ..motion_lora.patched_model import PatchedModel
        from ..motion_lora.wan_files import load_wan_files

        device = comfy.torch_device()
        if dtype == "auto":
            dtype = "fp32" if torch.device(device).type == "cpu" else "bf16"
        with torch.inference_mode(False):  # weights made under inference mode could never train
            model = load_wan_files(comfy.model_file_path("diffusion_models", diffusion_model),
                                   comfy.model_file_path("vae", vae), dtype=dtype, device=device,
                                   placement=placement)
        return (PatchedModel(model),)


class WanTrain:
    DESCRIPTION = ("Trains MotionDirector's motion and appearance LoRAs on Wan from clips and their caption "
                   "(CONDITIONING from CLIP Text Encode), and saves both in ComfyUI's LoRA layout into "
                   "models/loras/motion_director/: connect motion_lora_name to LoraLoaderModelOnly.")
    CATEGORY = CATEGORY
    FUNCTION = "train"
    RETURN_TYPES = (LORA_NAME, LORA_NAME, LORA, LORA, "IMAGE")
    RETURN_NAMES = ("motion_lora_name", "appearance_lora_name", "motion_lora", "appearance_lora", "loss_curve")
    OUTPUT_TOOLTIPS = (
        "The motion LoRA's file in models/loras: connect to LoraLoaderModelOnly's lora_name.",
        "The appearance LoRA's file in models/loras (empty when that path was not trained).",
        "The motion LoRA, for Save LoRA.",
        "The appearance LoRA, for Save LoRA.",
        "The losses of every step as an image.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        lr = {"default": 5e-4, "min": 1e-6, "max": 1e-1, "step": 1e-5, "round": 1e-6}
        return {"required": {
            "model": (MODEL, {"tooltip": "From MotionDirector Wan Load Model."}),
            "clips": (CLIPS, {"tooltip": "The motion's clip(s), from a clips node; Wan takes 1 + 4n frames "
                              "(17, 33, 49, 81) at sides that are multiples of 16."}),
            "conditioning": ("CONDITIONING", {"tooltip": "The clips' caption through CLIP Text Encode, with CLIP "
                             "Loader type wan (umt5_xxl). Used for every clip."}),
            "lora_name": ("STRING", {"default": "wan_motion", "tooltip": "Saved as models/loras/motion_director/"
                          "<name>_motion.safetensors and _appearance.safetensors (never over an existing file); "
                          "the run (checkpoints, history) goes to models/motion_director/<name>."}),
            "recipe": (RECIPES, {"default": "single-video", "tooltip": "single-video: one clip; multi-video: "
                       "several clips of one motion; images: appearance only."}),
            "steps": ("INT", {"default": 300, "min": 1, "max": 100000, "tooltip": "Training steps."}),
            "rank": ("INT", {"default": 32, "min": 1, "max": 512, "tooltip": "LoRA rank of both paths."}),
            "spatial_lr": ("FLOAT", {**lr, "tooltip": "Learning rate of the appearance LoRA."}),
            "temporal_lr": ("FLOAT", {**lr, "tooltip": "Learning rate of the motion LoRA."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": False,
                             "tooltip": "Seed of the whole run: the same inputs and seed train the same LoRAs."}),
            "mixed_precision": (PRECISIONS, {"default": "auto", "tooltip": "auto: bf16 on a GPU, none on the CPU."}),
            "gradient_checkpointing": (CHECKPOINTING, {"default": "on", "tooltip": "Recompute each block in the "
                                       "backward pass: far less GPU memory, about a third slower. 'on + CPU "
                                       "offload' also keeps each block's input in CPU memory until then: the "
                                       "setting for 14B on a 24 GB GPU (needs that much free RAM)."}),
        }, "optional": {
            "blocks_to_swap": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip": "Blocks whose frozen weights "
                               "wait in CPU memory, loaded onto the GPU one at a time while they run (as "
                               "musubi-tuner's blocks_to_swap): 0 off; more blocks, less GPU memory and slower "
                               "steps. At most the model's blocks minus one (1.3B: 30, 14B: 40). Needs gradient "
                               "checkpointing on."}),
        }}

    def train(self, model, clips, conditioning, lora_name: str = "wan_motion", recipe: str = "single-video",
              steps: int = 300, rank: int = 32, spatial_lr: float = 5e-4, temporal_lr: float = 5e-4, seed: int = 0,
              mixed_precision: str = "auto", gradient_checkpointing: str = "on", blocks_to_swap: int = 0):
        import torch

        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        from ..motion_lora.backbones.wan import TextEmbeddings
        from ..motion_lora.lora_file import save_adapter
        from ..motion_lora.loss_plot import render_loss_plot
        from ..motion_lora.patched_model import MissingLora
        from ..motion_lora.training import TrainCallbacks, TrainConfig, TrainingCancelled, train

        text = getattr(model.model, "text_encoder", None)
        if not isinstance(text, TextEmbeddings):
            raise ValueError("Wan Train needs a model from MotionDirector Wan Load Model (its text comes from "
                             "CONDITIONING); for a diffusers Wan folder with its own text encoder use "
                             "MotionDirector Train")
        if model.adapters:
            raise ValueError("Wan Train got a model with LoRAs applied: connect Wan Load Model straight to it")
        if not clips:
            raise ValueError("clips is empty: connect a clips node with at least one clip")
        embedding = conditioning_embedding(conditioning)
        for clip in clips:
            text.add(prompt_clean(clip.prompt), embedding)
        config = TrainConfig.from_recipe(recipe, steps=steps, rank=rank, spatial_lr=spatial_lr,
                                         temporal_lr=temporal_lr, seed=seed, mixed_precision=mixed_precision,
                                         gradient_checkpointing=gradient_checkpointing != "off",
                                         offload_activations=gradient_checkpointing == "on + CPU offload",
                                         blocks_to_swap=blocks_to_swap)
        run_dir = lora_folder.new_run_dir(lora_name)
        progress = comfy.Progress(config.steps)
        callbacks = TrainCallbacks(on_step=lambda info: progress.update(info.step, info.total),
                                   should_cancel=comfy.interrupted)
        comfy.free_comfy_memory()
        try:
            with torch.inference_mode(False), torch.enable_grad():  # ComfyUI runs nodes under inference mode
                result = train(model.model, [replace(c, frames=c.frames.clone()) for c in clips], config,
                               run_dir=run_dir, callbacks=callbacks)
        except TrainingCancelled:
            comfy.clear_interrupt()
            raise
        finally:
            gc.collect()
            comfy.empty_cache()

        stem = run_dir.name
        motion = result.temporal or MissingLora("temporal", "this run did not train the motion path "
                                                "(the images recipe)")
        look = result.spatial[0] if result.spatial else MissingLora("spatial", "this run did not train the "
                                                                    "appearance path")
        names = []
        for adapter, role in ((motion, "motion"), (look, "appearance")):
            if isinstance(adapter, MissingLora):
                names.append("")
                continue
            name, path = unique_lora_path(f"{stem}_{role}")
            save_adapter(adapter, path)
            names.append(name)
        return (names[0], names[1], motion, look, render_loss_plot(result.history))


NODE_CLASS_MAPPINGS = {"MotionDirectorWanLoadModel": WanLoadModel, "MotionDirectorWanTrain": WanTrain}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MotionDirectorWanLoadModel": "MotionDirector Wan Load Model",
    "MotionDirectorWanTrain": "MotionDirector Wan Train",
}
