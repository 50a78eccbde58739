"""Everything the nodes need from ComfyUI, in one place, imported lazily with fallbacks.

With ComfyUI present: its model folders, progress bar, Cancel flag and memory manager.
Without it (tests, scripts): models under `$MOTION_DIRECTOR_MODELS` or `./models`, no
progress bar, a Cancel flag that is never set, and nothing to unload.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

LORA_FOLDER = "motion_director"  # models/motion_director: our adapters and training runs
MODELS_ENV = "MOTION_DIRECTOR_MODELS"


class Interrupted(Exception):
    """Raised for a Cancel when ComfyUI (and its own exception class) is absent."""


def _comfy(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _folder_paths():
    return _comfy("folder_paths")


def has_comfy() -> bool:
    """True inside ComfyUI (its folder_paths module is importable)."""
    return _folder_paths() is not None


def _model_management():
    return _comfy("comfy.model_management")


# --- model folders ------------------------------------------------------------------------
def models_dir() -> Path:
    fp = _folder_paths()
    if fp is not None:
        return Path(fp.models_dir)
    return Path(os.environ.get(MODELS_ENV) or "models").resolve()


def register_lora_folder() -> None:
    """Tell ComfyUI about models/motion_director (not created until something is saved)."""
    fp = _folder_paths()
    if fp is not None:
        fp.add_model_folder_path(LORA_FOLDER, str(models_dir() / LORA_FOLDER))


def _folders(name: str) -> list[Path]:
    fp = _folder_paths()
    if fp is not None:
        try:
            return [Path(p) for p in fp.get_folder_paths(name)]
        except KeyError:
            pass
    return [models_dir() / name]


def diffusers_folders() -> list[Path]:
    """Where diffusers-format models live (ComfyUI's `models/diffusers` and extra paths)."""
    return _folders("diffusers")


def lora_folders() -> list[Path]:
    """Every folder registered for our adapters; the first is where new files go."""
    return _folders(LORA_FOLDER)


# --- device and memory --------------------------------------------------------------------
def torch_device():
    import torch

    mm = _model_management()
    if mm is not None:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def free_comfy_memory() -> None:
    """Unload ComfyUI's own models before a training run needs the memory."""
    mm = _model_management()
    if mm is not None:
        mm.unload_all_models()
        mm.soft_empty_cache()


def release_memory() -> None:
    """Give a finished run's memory back: collect its garbage, empty the GPU cache and return freed heap
    pages to the system (glibc keeps them otherwise, so the server would look 0.3 GB bigger after a run)."""
    import gc

    gc.collect()
    empty_cache()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc (macOS, Windows, musl): nothing to trim


def empty_cache() -> None:
    mm = _model_management()
    if mm is not None:
        mm.soft_empty_cache()
    else:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# --- Cancel -------------------------------------------------------------------------------
def interrupted() -> bool:
    """True once the user pressed Cancel in ComfyUI."""
    mm = _model_management()
    return bool(mm is not None and mm.processing_interrupted())


def clear_interrupt() -> None:
    mm = _model_management()
    if mm is not None:
        mm.interrupt_current_processing(False)


def raise_interrupted() -> None:
    """Stop the prompt the way ComfyUI's own nodes do when Cancel was pressed."""
    mm = _model_management()
    clear_interrupt()
    if mm is not None:
        raise mm.InterruptProcessingException()
    raise Interrupted("cancelled")


# --- progress -----------------------------------------------------------------------------
class Progress:
    """A ComfyUI progress bar (no-op without ComfyUI); `update` may carry a preview frame."""

    def __init__(self, total: int):
        utils = _comfy("comfy.utils")
        self.bar = utils.ProgressBar(total) if utils is not None else None
        self.total = total

    def update(self, step: int, total: int | None = None, preview_frames=None) -> None:
        self.total = total or self.total
        if self.bar is None:
            return
        preview = ("JPEG", to_pil(preview_frames), 512) if preview_frames is not None else None
        mm = _model_management()
        try:
            self.bar.update_absolute(step, self.total, preview)
        except Exception as e:
            if mm is None or not isinstance(e, mm.InterruptProcessingException):
                raise
            # ComfyUI's progress hook reports Cancel by raising (and clearing the flag). Set it again
            # so the loop that owns this bar stops at its own safe point: training saves a checkpoint.
            mm.interrupt_current_processing(True)


def to_pil(frames):
    """The middle frame of `[F, H, W, 3]` (or one `[H, W, 3]`) floats in 0..1 as a PIL image."""
    import numpy as np
    from PIL import Image

    frame = frames[frames.shape[0] // 2] if frames.dim() == 4 else frames
    array = (frame.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)


def input_dir() -> Path:
    """ComfyUI's input folder (where uploads go), or the working folder without ComfyUI."""
    fp = _folder_paths()
    if fp is not None:
        return Path(fp.get_input_directory())
    return Path.cwd()


# --- ComfyUI's own model folders (Wan: diffusion_models, vae, loras) ---------------------------
def model_file_names(folder: str, suffixes: tuple[str, ...] = (".safetensors", ".sft", ".pt", ".bin")) -> list[str]:
    """The files ComfyUI lists for one of its model folders ("diffusion_models", "vae", "loras"), as its own
    loader nodes show them; without ComfyUI, the files under `models/<folder>`."""
    fp = _folder_paths()
    if fp is not None:
        return list(fp.get_filename_list(folder))
    root = models_dir() / folder
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix in suffixes)


def model_file_path(folder: str, name: str) -> Path:
    """The full path of a file ComfyUI lists in `folder`; a clear error when it is not there."""
    fp = _folder_paths()
    path = fp.get_full_path(folder, name) if fp is not None else None
    if path is None and fp is None and name and not Path(name).is_absolute() and ".." not in Path(name).parts:
        candidate = models_dir() / folder / name
        path = str(candidate) if candidate.is_file() else None
    if path is None:
        raise FileNotFoundError(f"{name!r} is not in ComfyUI's models/{folder} folder: put the file there and "
                                "refresh the page (press R), then pick it from the list")
    return Path(path)


def comfy_loras_dir() -> Path:
    """The first folder ComfyUI reads LoRAs from (models/loras): where files for core LoraLoaderModelOnly go."""
    fp = _folder_paths()
    if fp is not None:
        return Path(fp.get_folder_paths("loras")[0])
    return models_dir() / "loras"
