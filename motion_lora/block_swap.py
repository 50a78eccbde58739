"""Block swapping: the frozen weights of some transformer blocks stay in CPU memory and come to the GPU only while
their block runs, as musubi-tuner's `--blocks_to_swap` does. The lever for Wan 14B on cards under 24 GB.

It rides on gradient checkpointing (`checkpointed` here wires the two): every run of a
checkpointed block, the forward pass and its recomputation in backward alike, first calls `load(block)`, which
copies that block's frozen weights to the GPU and sends the previously loaded swapped block's back (to its
pinned CPU copy; nothing is copied back, frozen weights do not change). This order is safe because
checkpointing keeps nothing of a block from its forward pass, and in backward a block is recomputed only once
the gradient of its output is complete, that is once the block after it has finished its backward. Without
checkpointing the forward pass's saved tensors would still need the weights, so the trainer refuses that.

Trainable tensors (the LoRAs) never move, so the optimizer's state stays where it is. One swapped block is on
the GPU at a time: the peak holds the unswapped blocks, one swapped block and the step's activations. Each
swapped block crosses the bus twice per forward and backward (the forward pass, the recomputation), and a
MotionDirector step runs two (the spatial path, the temporal path); on a CPU-only machine it is a no-op.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn

from . import grad_checkpoint


def check_count(count: int, blocks: int) -> None:
    """A ValueError naming the fix unless `count` of `blocks` blocks can be swapped (one stays on the GPU)."""
    if count < 0:
        raise ValueError(f"blocks_to_swap must be 0 or more, got {count}")
    if count >= blocks:
        raise ValueError(f"blocks_to_swap {count} is too many: this model has {blocks} blocks and at least one "
                         f"stays on the GPU; use at most {blocks - 1}")


class BlockSwap:
    """Keeps the frozen tensors of `blocks[-count:]` in CPU memory, loading one block's onto `device` at a time.

    `keep`: parameters that never move whatever their `requires_grad` says at the moment, the optimizers' (the
    trainer freezes the spatial LoRA for the temporal path's backward, and an optimizer's tensors must stay put).
    """

    def __init__(self, blocks: Sequence[nn.Module], count: int, device: torch.device | str,
                 keep: Iterable[torch.Tensor] = ()):
        blocks = list(blocks)
        check_count(count, len(blocks))
        self.device = torch.device(device)
        self.swapped = blocks[len(blocks) - count:] if count else []
        self._index = {id(b): i for i, b in enumerate(self.swapped)}
        self._home: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in self.swapped]
        self._keep = {id(t) for t in keep}
        self.resident: nn.Module | None = None
        self.loads = 0  # how many times a block's weights were copied in (for tests and logs)

    def _frozen(self, block: nn.Module) -> list[torch.Tensor]:
        tensors = [p for p in block.parameters() if not p.requires_grad and id(p) not in self._keep]
        return tensors + [b for b in block.buffers() if b is not None]

    def _pinned(self, tensor: torch.Tensor) -> torch.Tensor:
        home = tensor.detach().to("cpu", copy=True)
        return home.pin_memory() if self.device.type == "cuda" else home

    def _away(self, home: torch.Tensor) -> torch.Tensor:
        """What a swapped-out tensor holds while away: its CPU copy (a test may put a poison there instead)."""
        return home

    def start(self) -> None:
        """Move every swapped block's frozen tensors to their CPU copies (called once, before the first step)."""
        for i, block in enumerate(self.swapped):
            self._home[i] = [(t, self._pinned(t)) for t in self._frozen(block)]
            for t, home in self._home[i]:
                t.data = self._away(home)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def load(self, block: nn.Module) -> None:
        """Before `block` runs: its frozen weights onto the device, the last loaded swapped block's away."""
        i = self._index.get(id(block))
        if i is None or self.resident is block:
            return
        self._evict()
        for t, home in self._home[i]:
            t.data = home.to(self.device, non_blocking=True)
        self.resident = block
        self.loads += 1

    def _evict(self) -> None:
        if self.resident is None:
            return
        for t, home in self._home[self._index[id(self.resident)]]:
            t.data = self._away(home)
        self.resident = None

    def stop(self) -> None:
        """Every swapped block back on the device, as before `start`."""
        self._evict()
        for entries in self._home:
            for t, home in entries:
                t.data = home.to(self.device)
        self._home = [[] for _ in self.swapped]


@contextlib.contextmanager
def checkpointed(units: Sequence[nn.Module], *, offload: bool = False, blocks_to_swap: int = 0,
                 device: torch.device | str = "cpu", keep: Iterable[torch.Tensor] = ()) -> Iterator[BlockSwap | None]:
    """Gradient checkpointing on `units` (`grad_checkpoint.checkpointed`), the last `blocks_to_swap` of them
    swapped: the training step's memory settings in one place (the trainer's and the benchmark's)."""
    with swapping(units, blocks_to_swap, device, keep) as swap, \
            grad_checkpoint.checkpointed(units, offload=offload, on_run=swap.load if swap is not None else None):
        yield swap


@contextlib.contextmanager
def swapping(blocks: Sequence[nn.Module], count: int, device: torch.device | str,
             keep: Iterable[torch.Tensor] = ()) -> Iterator[BlockSwap | None]:
    """A started `BlockSwap` inside the block (None when `count` is 0), stopped however the block ends."""
    if not count:
        yield None
        return
    swap = BlockSwap(blocks, count, device, keep)
    swap.start()
    try:
        yield swap
    finally:
        swap.stop()
