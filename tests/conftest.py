"""Shared fixtures: the built-in tiny model (in memory and as a diffusers folder) and synthetic clips."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(1)  # the tiny model is faster on one thread than on two busy ones


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny model saved as a diffusers folder (what a user would have under models/diffusers)."""
    from motion_lora.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny_t2v")


@pytest.fixture()
def tiny_model():
    """A fresh tiny model (fp32, CPU); tests may inject adapters into it freely."""
    from motion_lora.tiny import build_tiny_model

    return build_tiny_model(seed=0)


def synthetic_clip(frames: int = 8, height: int = 64, width: int = 64, seed: int = 0) -> torch.Tensor:
    """A square moving left to right over a gradient: `[F, H, W, 3]` floats in 0..1."""
    g = torch.Generator().manual_seed(seed)
    base = torch.linspace(0, 1, width).view(1, 1, width, 1).expand(frames, height, width, 3).clone()
    base *= torch.rand(3, generator=g)
    size = max(4, height // 4)
    for f in range(frames):
        x = int((width - size) * f / max(1, frames - 1))
        base[f, height // 3 : height // 3 + size, x : x + size] = torch.tensor([1.0, 0.2, 0.1])
    return base


@pytest.fixture()
def clip_frames() -> torch.Tensor:
    return synthetic_clip()
