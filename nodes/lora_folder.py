"""Names in models/motion_director: listing adapters and official checkpoints, safe paths for new files.

Names are relative to a registered folder and always use `/`, so workflows stay portable.
A name never leaves its folder: `..` parts and absolute paths are refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import comfy

ADAPTER_SUFFIX = ".safetensors"
OFFICIAL_SUFFIXES = (".pt", ".pth")
CHECKPOINT_PREFIX = "checkpoint-"  # = motion_lora.run_folder's checkpoint folders
STATE_FILE = "training_state.pt"  # = motion_lora.run_folder.STATE_FILE (not imported: it pulls in torch)


class LoraNameError(ValueError):
    """A LoRA or run name that is not allowed or not found; the message says which and why."""


def _walk(root: Path):
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".tmp"))
        yield Path(folder), dirs, sorted(files)


def _name(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def is_official_checkpoint(folder: Path) -> bool:
    """An official MotionDirector `checkpoint-N/` holds `spatial/lora/` or `temporal/lora/`."""
    return (folder / "temporal" / "lora").is_dir() or (folder / "spatial" / "lora").is_dir()


def is_checkpoint_name(name: str) -> bool:
    """A file inside a run's `checkpoint-N/` folder (an intermediate state, not a finished LoRA)."""
    return any(part.startswith(CHECKPOINT_PREFIX) for part in name.split("/")[:-1])


def list_adapters() -> list[str]:
    """Every `.safetensors` under the registered folders: finished LoRAs first, then the runs' checkpoints."""
    names = set()
    for root in comfy.lora_folders():
        for folder, _, files in _walk(root):
            names.update(_name(root, folder / f) for f in files if f.endswith(ADAPTER_SUFFIX))
    return sorted(names, key=lambda n: (is_checkpoint_name(n), n))


def list_official() -> list[str]:
    """Official checkpoint folders, and `.pt` files outside them (never our own training state)."""
    names = set()
    for root in comfy.lora_folders():
        for folder, dirs, files in _walk(root):
            if is_official_checkpoint(folder):
                names.add(_name(root, folder))
                dirs[:] = []  # its .pt files are reached through the folder
                continue
            names.update(_name(root, folder / f) for f in files if f.endswith(OFFICIAL_SUFFIXES) and f != STATE_FILE)
    return sorted(names)


def check_name(name: str, what: str = "name") -> str:
    """`name` as a clean relative path inside the folder, or a LoraNameError."""
    clean = name.strip().replace("\\", "/")
    if not clean:
        raise LoraNameError(f"the {what} is empty: type a name such as 'my_motion'")
    parts = clean.split("/")
    if clean.startswith("/") or Path(clean).is_absolute() or Path(name.strip()).is_absolute() or ":" in parts[0]:
        raise LoraNameError(f"the {what} {name!r} is an absolute path: give a name inside models/motion_director, "
                            "e.g. 'my_motion' or 'dance/v1'")
    if any(p in ("..", ".") for p in parts) or any(not p for p in parts):
        raise LoraNameError(f"the {what} {name!r} may not contain '..', '.' or empty parts: "
                            "give a plain name such as 'my_motion' or 'dance/v1'")
    return "/".join(parts)


def find(name: str) -> Path:
    """The file or folder called `name` in one of the registered folders."""
    name = check_name(name, "LoRA name")
    for root in comfy.lora_folders():
        if (root / name).exists():
            return root / name
    roots = ", ".join(str(r) for r in comfy.lora_folders())
    raise LoraNameError(f"LoRA {name!r} not found in {roots}: pick one from the list (refresh the page after "
                        "copying files there)")


def save_path(name: str) -> Path:
    """Where a LoRA saved as `name` goes (the first registered folder, `.safetensors` added)."""
    name = check_name(name, "LoRA name")
    if not name.endswith(ADAPTER_SUFFIX):
        name += ADAPTER_SUFFIX
    return comfy.lora_folders()[0] / name


def existing_run_dir(run_name: str) -> Path:
    """The saved run `run_name` to resume, or a LoraNameError naming what exists."""
    run_name = check_name(run_name, "run name")
    for root in comfy.lora_folders():
        if (root / run_name / "config.json").is_file():
            return root / run_name
    root = comfy.lora_folders()[0]
    runs = sorted(p.parent.name for p in root.glob("*/config.json")) if root.is_dir() else []
    raise LoraNameError(f"resume is on but there is no run {run_name!r} in {root} to continue"
                        + (f" (runs there: {', '.join(runs)})" if runs else "")
                        + ": set run_name to a saved run, or switch resume off to start a new one")


def run_name_of(run_dir: Path) -> str:
    """The run name that `existing_run_dir` turns back into `run_dir`."""
    for root in comfy.lora_folders():
        try:
            return Path(run_dir).relative_to(root).as_posix()
        except ValueError:
            continue
    return Path(run_dir).name


def new_run_dir(run_name: str) -> Path:
    """A fresh folder for a training run: `<run>`, or `<run>_2`, `<run>_3`, ... if taken. Not created here."""
    run_name = check_name(run_name, "run name")
    root = comfy.lora_folders()[0]
    candidate, n = root / run_name, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{run_name}_{n}"
    return candidate
