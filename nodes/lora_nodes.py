"""Load LoRA, Load Official Checkpoint, Save LoRA: adapter files in models/motion_director."""

from __future__ import annotations

from . import lora_folder
from .common import CATEGORY, LORA, MODEL, file_stamp

OFFICIAL_KINDS = {"motion (temporal)": "temporal", "appearance (spatial)": "spatial"}


class _LoraLoader:
    """What both loaders share: one MD_LORA output, and a rerun when the chosen file or folder changes."""

    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (LORA,)
    RETURN_NAMES = ("lora",)

    @staticmethod
    def _stamp(name: str) -> str:
        try:
            path = lora_folder.find(name)
        except ValueError:
            return ""  # the load itself reports the bad name
        return file_stamp([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()))


class LoadLora(_LoraLoader):
    DESCRIPTION = ("Loads a motion or appearance LoRA saved by this pack (training runs and Save LoRA) from "
                   "models/motion_director.")
    OUTPUT_TOOLTIPS = ("The adapter: connect a motion LoRA to Apply Motion, an appearance LoRA to Apply Appearance.",)

    @classmethod
    def INPUT_TYPES(cls):
        names = lora_folder.list_adapters() or ["(no LoRA in models/motion_director yet)"]
        return {"required": {"lora_name": (names, {
            "tooltip": "A .safetensors adapter under models/motion_director: first the finished LoRAs "
                       "(<run>/motion.safetensors, Save LoRA's files), then every run's checkpoints "
                       "(<run>/checkpoint-N/...). The list is re-read every time the page asks for it."})}}

    @classmethod
    def IS_CHANGED(cls, lora_name):
        return cls._stamp(lora_name)

    def load(self, lora_name: str):
        from ..motion_lora.lora_file import load_adapter

        return (load_adapter(lora_folder.find(lora_name)),)


class LoadOfficialLora(_LoraLoader):
    DESCRIPTION = ("Imports a checkpoint of the official MotionDirector code (a checkpoint-N folder or a .pt file "
                   "placed under models/motion_director) as a LoRA of this pack.")
    OUTPUT_TOOLTIPS = ("The imported adapter, like one from Load LoRA.",)

    @classmethod
    def INPUT_TYPES(cls):
        names = lora_folder.list_official() or ["(no official checkpoint in models/motion_director yet)"]
        return {"required": {
            "model": (MODEL, {"tooltip": "The base model the checkpoint was trained on: official files hold "
                                          "unnamed tensors, matched to this model's layers."}),
            "checkpoint": (names, {"tooltip": "An official checkpoint-N folder (with spatial/ and temporal/) "
                                              "or a single *_unet.pt file."}),
            "kind": (list(OFFICIAL_KINDS), {"default": "motion (temporal)",
                                            "tooltip": "Which of the checkpoint's two LoRAs to import."}),
            "clip": ("INT", {"default": 0, "min": 0, "max": 999, "tooltip": "For an appearance LoRA trained on "
                             "several clips (one spatial LoRA per clip): which clip's LoRA, from 0."}),
        }}

    @classmethod
    def IS_CHANGED(cls, checkpoint, **_):
        return cls._stamp(checkpoint)

    def load(self, model, checkpoint: str, kind: str = "motion (temporal)", clip: int = 0):
        from ..motion_lora.official_import import import_official

        path = lora_folder.find(checkpoint)
        adapters = import_official(path, model.model, kind=OFFICIAL_KINDS[kind], clip=clip)
        return (adapters[0],)


class SaveLora:
    DESCRIPTION = "Saves a LoRA to models/motion_director/<name>.safetensors, so Load LoRA lists it."
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("The file that was written.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "lora": (LORA, {"tooltip": "The motion or appearance LoRA to save."}),
            "name": ("STRING", {"default": "my_motion", "tooltip": "File name inside models/motion_director; "
                                "sub-folders with '/' are fine, '..' and absolute paths are not."}),
            "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace an existing file of that name. "
                                      "Off: an existing name is an error, nothing is replaced."}),
        }}

    def save(self, lora, name: str, overwrite: bool = False):
        from ..motion_lora.lora_file import save_adapter
        from ..motion_lora.patched_model import MissingLora

        if isinstance(lora, MissingLora):
            raise lora.error()
        path = lora_folder.save_path(name)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists: choose another name, or switch overwrite on to replace it")
        written = save_adapter(lora, path, overwrite=overwrite)
        return {"ui": {"text": [f"saved to {written}"]}, "result": (str(written),)}


NODE_CLASS_MAPPINGS = {
    "MotionDirectorLoadLora": LoadLora,
    "MotionDirectorLoadOfficialLora": LoadOfficialLora,
    "MotionDirectorSaveLora": SaveLora,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MotionDirectorLoadLora": "MotionDirector Load LoRA",
    "MotionDirectorLoadOfficialLora": "MotionDirector Load Official Checkpoint",
    "MotionDirectorSaveLora": "MotionDirector Save LoRA",
}
