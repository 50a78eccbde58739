"""The pack's sample inputs (`examples/`) copied into ComfyUI's input folder, so the shipped workflows run as-is.

Core Load Video and Load Image list only files directly in ComfyUI's `input/` folder, so the
samples are copied there when ComfyUI loads the pack: only names that are missing, never over a
user's file, a few hundred KB once. Without ComfyUI (tests, scripts) nothing is copied.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from . import comfy

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
SKIP = {"SOURCE.md"}


def example_files() -> list[Path]:
    """Every sample file, relative to `examples/`."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(p.relative_to(EXAMPLES_DIR) for p in EXAMPLES_DIR.rglob("*") if p.is_file() and p.name not in SKIP)


def copy_examples(target: Path | None = None) -> list[Path]:
    """Copy missing samples into `target` (ComfyUI's input folder); returns what was copied. Never raises:
    a read-only input folder only means the user picks their own files."""
    if target is None:
        if not comfy.has_comfy():
            return []
        target = comfy.input_dir()
    copied = []
    for name in example_files():
        dest = target / name
        if dest.exists():
            continue
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(EXAMPLES_DIR / name, dest)
            copied.append(dest)
        except OSError as e:
            logging.warning("[MotionDirector] could not copy the sample %s into %s (%s); the example workflows "
                            "need it there, or pick your own file in them.", name, target, e)
    if copied:
        logging.info("[MotionDirector] copied %d sample input(s) for the example workflows into %s",
                     len(copied), target)
    return copied
