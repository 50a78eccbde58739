"""Names shared by every node of the pack: the socket types, the menu category, input specs, file stamps."""

from __future__ import annotations

from pathlib import Path

CATEGORY = "MotionDirector"

MODEL = "MD_MODEL"  # motion_lora.patched_model.PatchedModel
CLIPS = "MD_CLIPS"  # list[motion_lora.data.Clip]
LORA = "MD_LORA"  # motion_lora.adapters.LoraAdapter (or a MissingLora from a path that was not trained)

SIZE = {"min": 64, "max": 2048, "step": 8}  # pixels; the VAE needs multiples of 8
STRENGTH = ("FLOAT", {"default": 1.0, "min": -2.0, "max": 2.0, "step": 0.05})
SEED_MAX = 0xFFFFFFFFFFFFFFFF


def with_tooltip(spec: tuple, tooltip: str) -> tuple:
    """An input spec with its tooltip added (specs are shared, never edited in place)."""
    kind, options = (spec[0], dict(spec[1])) if len(spec) > 1 else (spec[0], {})
    options["tooltip"] = tooltip
    return (kind, options)


def file_stamp(paths: list[Path]) -> str:
    """Path, time and size of each existing file: a loader's IS_CHANGED, so ComfyUI reruns it when a file it
    reads is added, replaced or removed, and keeps its cached output otherwise."""
    stamps = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        stamps.append(f"{path}:{stat.st_mtime_ns}:{stat.st_size}")
    return ";".join(stamps)
