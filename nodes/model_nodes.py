"""Load Model: a diffusers text-to-video folder (or the built-in tiny model) as an MD_MODEL."""

from __future__ import annotations

from pathlib import Path

from . import comfy
from .common import CATEGORY, MODEL

TINY_NAME = "tiny (built-in test model, no weights)"  # = motion_lora.tiny.TINY_NAME, without importing torch here
TOY_NAME = "toyworld (pretrained toy model, 32x32, 8 frames)"  # = motion_lora.toyworld.model.TOY_NAME
BUILT_IN = (TOY_NAME, TINY_NAME)
DTYPES = ["auto", "fp16", "bf16", "fp32"]


def video_model_names() -> list[str]:
    """Folders under models/diffusers (one level of sub-folders too) that hold a supported video model."""
    from motion_lora.model import is_video_model_folder

    names = set()
    for root in comfy.diffusers_folders():
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if is_video_model_folder(folder):
                names.add(folder.name)
            elif folder.is_dir():
                subs = sorted(folder.iterdir())
                names.update(f"{folder.name}/{sub.name}" for sub in subs if is_video_model_folder(sub))
    return sorted(names)


def find_model_folder(name: str) -> Path:
    for root in comfy.diffusers_folders():
        if (root / name / "model_index.json").is_file():
            return root / name
    from motion_lora.model import ModelLoadError

    roots = ", ".join(str(r) for r in comfy.diffusers_folders())
    raise ModelLoadError(f"model {name!r} not found in {roots}: put the diffusers folder there "
                         "(for example zeroscope_v2_576w) and refresh the page.")


class LoadModel:
    DESCRIPTION = ("Loads a diffusers text-to-video model (ZeroScope v2, ModelScope T2V) from models/diffusers, "
                   "or the built-in tiny model for trying the pack without weights.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded model, ready for Train, Apply Motion / Appearance and Sample.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": (video_model_names() + list(BUILT_IN), {
                    "tooltip": "A folder under models/diffusers holding model_index.json with a UNet3D "
                               "(e.g. zeroscope_v2_576w); or a built-in model: the toy-world model (pretrained on "
                               "moving shapes, 32x32, for trying motion LoRAs in seconds) or the tiny one (random "
                               "weights, for tests)."}),
                "dtype": (DTYPES, {"default": "auto",
                                   "tooltip": "Weight precision. auto: fp16 on a GPU, fp32 on the CPU."}),
            }
        }

    def load(self, model_name: str, dtype: str = "auto"):
        import torch

        from motion_lora.patched_model import PatchedModel

        device = comfy.torch_device()
        if dtype == "auto":
            dtype = "fp32" if torch.device(device).type == "cpu" else "fp16"
        # ComfyUI runs nodes under inference mode; weights created there could never take part
        # in a training step's backward pass, so the model is built outside it.
        from motion_lora.model import open_model

        with torch.inference_mode(False):
            spec = model_name if model_name in BUILT_IN else find_model_folder(model_name)
            model = open_model(spec, dtype=dtype, device=device)
        return (PatchedModel(model),)


NODE_CLASS_MAPPINGS = {"MotionDirectorLoadModel": LoadModel}
NODE_DISPLAY_NAME_MAPPINGS = {"MotionDirectorLoadModel": "MotionDirector Load Model"}
