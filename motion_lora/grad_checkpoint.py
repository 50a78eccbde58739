"""Gradient checkpointing for UNets that do not support it themselves (diffusers' UNet3DConditionModel).

Each unit the backbone names (resnets, temporal convolutions, transformers) gets an
instance-level `forward` that runs the original one under `torch.utils.checkpoint`: its
activations are dropped after the forward pass and recomputed in backward. The module
tree, state-dict names and peft layer paths stay exactly as they were, and removing the
override restores the class's own forward. RNG state is preserved, so dropout inside a
unit recomputes the same mask and gradients equal those without checkpointing.

With `offload=True` a unit's tensor inputs are also kept in CPU memory between the forward pass and the
recomputation (a unit's input is all that checkpointing keeps of it, so for a DiT this moves nearly all of
the training step's activations off the GPU: the lever for Wan 14B in 24 GB). The copies are autograd ops,
so gradients are unchanged; on the CPU it is a no-op.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_MARK = "_motion_lora_checkpointed"


def to_cpu(x):
    """A non-CPU tensor's CPU copy (an autograd op), anything else as it is."""
    return x.to("cpu") if isinstance(x, torch.Tensor) and x.device.type != "cpu" else x


def _back_to(original, devices):
    """`original` on inputs moved back to the devices they came from (inside the checkpoint: recomputed too)."""

    def run(*args, **kwargs):
        args = [a.to(d) if d is not None else a for a, d in zip(args, devices)]
        return original(*args, **kwargs)

    return run


def _announced(original, module: nn.Module, on_run):
    """`original`, calling `on_run(module)` first: every run, the recomputation in backward included."""
    if on_run is None:
        return original

    @functools.wraps(original)
    def run(*args, **kwargs):
        on_run(module)
        return original(*args, **kwargs)

    return run


def enable(modules: Iterable[nn.Module], offload: bool = False, on_run=None) -> None:
    """Checkpoint the forward of every module given (idempotent); `offload`: keep their inputs on the CPU;
    `on_run(module)` is called before every run of a module's forward, forward pass and recomputation alike
    (block swapping loads the module's weights there)."""
    for module in modules:
        if getattr(module, _MARK, False):
            continue
        original = _announced(module.forward, module, on_run)  # the bound class method (announced)

        @functools.wraps(original)
        def forward(*args, _original=original, **kwargs):
            if not torch.is_grad_enabled():  # under no_grad (sampling) there is nothing to save
                return _original(*args, **kwargs)
            if offload:
                devices = [a.device if isinstance(a, torch.Tensor) and a.device.type != "cpu" else None for a in args]
                if any(d is not None for d in devices):
                    # the checkpoint keeps only these CPU copies; the device input is freed with its last use
                    return checkpoint(_back_to(_original, devices), *[to_cpu(a) for a in args], use_reentrant=False,
                                      preserve_rng_state=True, **kwargs)
            return checkpoint(_original, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)

        module.forward = forward
        setattr(module, _MARK, True)


def disable(modules: Iterable[nn.Module]) -> None:
    """Give every module its class's own forward back."""
    for module in modules:
        if getattr(module, _MARK, False):
            del module.forward
            delattr(module, _MARK)


@contextlib.contextmanager
def checkpointed(modules: Iterable[nn.Module], enabled: bool = True, offload: bool = False,
                 on_run=None) -> Iterator[None]:
    """Gradient checkpointing on `modules` inside the block (a no-op when not `enabled`); see `enable`.

    Modules that were already checkpointed before the block stay so after it.
    """
    modules = [m for m in modules if not getattr(m, _MARK, False)] if enabled else []
    enable(modules, offload, on_run)
    try:
        yield
    finally:
        disable(modules)
