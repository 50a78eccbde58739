"""Load Model: a diffusers text-to-video folder (or the built-in tiny model) as an MD_MODEL."""

from __future__ import annotations

import logging
from pathlib import Path

from . import comfy
from .common import CATEGORY, MODEL

_logged: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        logging.warning(message)


TINY_NAME = "tiny (built-in test model, no weights)"  # = motion_lora.tiny.TINY_NAME, without importing torch here
TOY_NAME = "toyworld (pretrained toy model, 32x32, 8 frames)"  # = motion_lora.toyworld.model.TOY_NAME
BUILT_IN = (TOY_NAME, TINY_NAME)
DTYPES = ["auto", "fp16", "bf16", "fp32"]


# Where each supported model comes from: the folder name the workflows use -> its Hugging Face repository.
KNOWN_MODELS = {
    "zeroscope_v2_576w": "cerspense/zeroscope_v2_576w",
    "text-to-video-ms-1.7b": "ali-vilab/text-to-video-ms-1.7b",
}


def _candidates():
    """Every folder under models/diffusers, one level of sub-folders too, as (name, path)."""
    for root in comfy.diffusers_folders():
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if not folder.is_dir():
                continue
            if (folder / "model_index.json").is_file():
                yield folder.name, folder
            else:
                for sub in sorted(folder.iterdir()):
                    if sub.is_dir() and (sub / "model_index.json").is_file():
                        yield f"{folder.name}/{sub.name}", sub


def _why_not_offered(folder: Path) -> str:
    """Why a diffusers folder is not in the list (it is not a text-to-video model this pack can train)."""
    from ..motion_lora.model import ModelLoadError, read_model_index

    try:
        index = read_model_index(folder)
    except ModelLoadError:
        return "its model_index.json cannot be read"
    pipeline = index.get("_class_name", "an unknown pipeline")
    denoiser = (index.get("unet") or index.get("transformer") or [None, "no denoiser"])[1]
    if denoiser in ("UNet2DConditionModel", "SD3Transformer2DModel", "FluxTransformer2DModel"):
        return f"an image model ({pipeline}, {denoiser}); MotionDirector needs a text-to-video model"
    return f"{pipeline} ({denoiser}) is not a text-to-video model this pack supports"


def scan_models() -> tuple[list[str], dict[str, str]]:
    """(the supported video models' names, {other diffusers folder: why it is not offered})."""
    from ..motion_lora.model import is_video_model_folder

    names, skipped = set(), {}
    for name, folder in _candidates():
        if is_video_model_folder(folder):
            names.add(name)
        else:
            skipped[name] = _why_not_offered(folder)
    return sorted(names), skipped


def video_model_names() -> list[str]:
    """Folders under models/diffusers (one level of sub-folders too) that hold a supported video model."""
    return scan_models()[0]


def _where() -> str:
    return ", ".join(str(r) for r in comfy.diffusers_folders())


def not_installed_message(name: str) -> str:
    """What the user reads when `name` is not in models/diffusers: which folder to create, with which model."""
    names, skipped = scan_models()
    root = comfy.diffusers_folders()[0]
    wanted = KNOWN_MODELS.get(name.split("/")[-1])
    what = f"the diffusers folder of {wanted} (Hugging Face, the whole repository with model_index.json)" \
        if wanted else "a diffusers text-to-video folder (with model_index.json)"
    models = ", ".join(f"{folder} ({repo})" for folder, repo in KNOWN_MODELS.items())
    message = (f"model {name!r} is not installed. Put {what} in {root / name}, then refresh ComfyUI (press R) "
               f"and pick it here. Supported models and their folders: {models}. "
               f"Or pick {TINY_NAME!r} to try the workflow without weights.")
    if names:
        message += f" Installed: {', '.join(names)}."
    if skipped:
        message += " Not offered from " + _where() + ": " + "; ".join(f"{n}: {why}" for n, why in skipped.items()) + "."
    return message


def find_model_folder(name: str) -> Path:
    for root in comfy.diffusers_folders():
        if (root / name / "model_index.json").is_file():
            return root / name
    from ..motion_lora.model import ModelLoadError

    raise ModelLoadError(not_installed_message(name))


def _model_tooltip(skipped: dict[str, str]) -> str:
    tip = (f"A text-to-video model folder under {_where()} (e.g. zeroscope_v2_576w, from "
           f"{KNOWN_MODELS['zeroscope_v2_576w']}), or a built-in model: the toy-world model (pretrained on moving "
           "shapes, 32x32, for trying motion LoRAs in seconds) or the tiny one (random weights, for trying the "
           "graph). Refresh (R) after copying a model there.")
    if skipped:
        tip += " Not offered: " + "; ".join(f"{n} ({why})" for n, why in skipped.items()) + "."
    return tip


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
        names, skipped = scan_models()
        for name, why in skipped.items():
            _log_once(f"[MotionDirector] Load Model does not offer models/diffusers/{name}: {why}.")
        return {
            "required": {
                "model_name": (names + list(BUILT_IN), {"tooltip": _model_tooltip(skipped)}),
                "dtype": (DTYPES, {"default": "auto",
                                   "tooltip": "Weight precision. auto: fp16 on a GPU, fp32 on the CPU."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        """Replaces ComfyUI's "Value not in list" for a model that is not installed with where to put it."""
        if model_name in BUILT_IN or model_name in video_model_names():
            return True
        return not_installed_message(model_name)

    def load(self, model_name: str, dtype: str = "auto"):
        import torch

        from ..motion_lora.patched_model import PatchedModel

        device = comfy.torch_device()
        if dtype == "auto":
            dtype = "fp32" if torch.device(device).type == "cpu" else "fp16"
        # ComfyUI runs nodes under inference mode; weights created there could never take part
        # in a training step's backward pass, so the model is built outside it.
        from ..motion_lora.model import open_model

        with torch.inference_mode(False):
            spec = model_name if model_name in BUILT_IN else find_model_folder(model_name)
            model = open_model(spec, dtype=dtype, device=device)
        return (PatchedModel(model),)


NODE_CLASS_MAPPINGS = {"MotionDirectorLoadModel": LoadModel}
NODE_DISPLAY_NAME_MAPPINGS = {"MotionDirectorLoadModel": "MotionDirector Load Model"}
