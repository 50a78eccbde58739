"""Gradient checkpointing for UNets that do not support it themselves (diffusers' UNet3DConditionModel).

Each unit the backbone names (resnets, temporal convolutions, transformers) gets an
instance-level `forward` that runs the original one under `torch.utils.checkpoint`: its
activations are dropped after the forward pass and recomputed in backward. The module
tree, state-dict names and peft layer paths stay exactly as they were, and removing the
override restores the class's own forward. RNG state is preserved, so dropout inside a
unit recomputes the same mask and gradients equal those without checkpointing.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_MARK = "_motion_lora_checkpointed"


def enable(modules: Iterable[nn.Module]) -> None:
    """Checkpoint the forward of every module given (idempotent)."""
    for module in modules:
        if getattr(module, _MARK, False):
            continue
        original = module.forward  # the bound class method

        @functools.wraps(original)
        def forward(*args, _original=original, **kwargs):
            if torch.is_grad_enabled():  # under no_grad (sampling) there is nothing to save
                return checkpoint(_original, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)
            return _original(*args, **kwargs)

        module.forward = forward
        setattr(module, _MARK, True)


def disable(modules: Iterable[nn.Module]) -> None:
    """Give every module its class's own forward back."""
    for module in modules:
        if getattr(module, _MARK, False):
            del module.forward
            delattr(module, _MARK)


@contextlib.contextmanager
def checkpointed(modules: Iterable[nn.Module], enabled: bool = True) -> Iterator[None]:
    """Gradient checkpointing on `modules` inside the block (a no-op when not `enabled`).

    Modules that were already checkpointed before the block stay so after it.
    """
    modules = [m for m in modules if not getattr(m, _MARK, False)] if enabled else []
    enable(modules)
    try:
        yield
    finally:
        disable(modules)
