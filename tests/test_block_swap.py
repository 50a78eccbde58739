"""Block swapping (`motion_lora.block_swap`): a swapped block's frozen weights are where it runs whenever it runs.

On a CPU-only machine a swap moves nothing, so these tests make "away" visible: a swapped-out weight holds NaN
(its real values wait in the CPU copy). A block that ran while away would poison the loss and every gradient.
"""

from __future__ import annotations

import pytest
import torch

from motion_lora import adapters as ad
from motion_lora import block_swap, grad_checkpoint
from motion_lora.data import clip_from_frames
from motion_lora.tiny_wan import build_tiny_wan
from motion_lora.training import TrainConfig, train
from conftest import synthetic_clip


class Poisoned(block_swap.BlockSwap):
    """Away means NaN, and it records how many swapped blocks are ever loaded at once."""

    most_loaded = 0

    def _away(self, home):
        return torch.full_like(home, float("nan"))

    def load(self, block):
        super().load(block)
        loaded = sum(not torch.isnan(next(p for p in b.parameters() if not p.requires_grad)).any()
                     for b in self.swapped)
        Poisoned.most_loaded = max(Poisoned.most_loaded, int(loaded))


def _clip(frames: int = 5, size: int = 32):
    return clip_from_frames(synthetic_clip(frames=frames, height=size, width=size), prompt="a car turns",
                            num_frames=frames, width=size, height=size)


def _three_block_wan():
    import dataclasses

    from diffusers import WanTransformer3DModel

    from motion_lora.tiny_wan import TRANSFORMER_CONFIG

    torch.manual_seed(0)
    unet = WanTransformer3DModel(**{**TRANSFORMER_CONFIG, "num_layers": 3}).eval().requires_grad_(False)
    return dataclasses.replace(build_tiny_wan(seed=0), unet=unet)


@pytest.fixture()
def wan_with_lora():
    model = _three_block_wan()
    ad.inject(model.unet, model.backbone, "t", ad.TEMPORAL, rank=2)
    g = torch.Generator().manual_seed(0)
    ad.set_tensors(model.unet, "t", {k: torch.randn(v.shape, generator=g) * 0.1
                                     for k, v in ad.get_tensors(model.unet, "t").items()})
    ad.set_strengths(model.unet, {"t": 1.0})
    ad.set_trainable(model.unet, ["t"], True)
    return model


def _loss_and_grads(model, swap=None):
    unet, backbone = model.unet, model.backbone
    x = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    text = torch.randn(1, 16, 4096, generator=torch.Generator().manual_seed(2))
    units = backbone.checkpoint_units(unet)
    for p in unet.parameters():
        p.grad = None
    with grad_checkpoint.checkpointed(units, on_run=swap.load if swap else None):
        loss = backbone.predict(unet, x, torch.tensor([700.0]), text).pow(2).mean()
        loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in unet.named_parameters() if p.requires_grad}


def test_a_swapped_block_is_loaded_whenever_it_runs_and_gradients_are_unchanged(wan_with_lora):
    blocks = list(wan_with_lora.unet.blocks)
    want_loss, want = _loss_and_grads(wan_with_lora)
    swap = Poisoned(blocks, 2, "cpu")
    Poisoned.most_loaded = 0
    swap.start()
    assert torch.isnan(blocks[-1].attn1.to_q.base_layer.weight).all()  # away between runs
    assert not torch.isnan(blocks[0].attn1.to_q.base_layer.weight).any()  # the first block stays
    got_loss, got = _loss_and_grads(wan_with_lora, swap)
    # forward: block 1, then 2 (1 goes away); backward: 2 is recomputed where it is, then 1 comes back
    assert swap.loads == 3
    swap.stop()
    assert torch.equal(got_loss, want_loss) and got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert Poisoned.most_loaded == 1
    assert not torch.isnan(blocks[-1].attn1.to_q.base_layer.weight).any()  # all back after stop


def test_the_lora_weights_never_move(wan_with_lora):
    """Trainable tensors stay, and so do those in `keep` while frozen (the trainer freezes the spatial LoRA for
    the temporal path's backward: moving an optimizer's tensor would break its step)."""
    blocks = list(wan_with_lora.unet.blocks)
    lora = blocks[-1].attn1.to_q.lora_A["t"].weight
    before = lora.data_ptr()
    with block_swap.swapping(blocks, 1, "cpu") as swap:
        assert lora.data_ptr() == before and swap.swapped == blocks[-1:]
    ad.set_trainable(wan_with_lora.unet, ["t"], False)
    swap = Poisoned(blocks, 1, "cpu", keep=ad.adapter_parameters(wan_with_lora.unet, ["t"]))
    swap.start()
    assert lora.data_ptr() == before and not torch.isnan(lora).any()
    assert torch.isnan(blocks[-1].attn1.to_q.base_layer.weight).all()
    swap.stop()


def test_block_counts_and_checkpointing_are_checked(wan_with_lora):
    blocks = list(wan_with_lora.unet.blocks)
    with pytest.raises(ValueError, match="blocks_to_swap 3 is too many: this model has 3 blocks"):
        block_swap.BlockSwap(blocks, len(blocks), "cpu")
    with pytest.raises(ValueError, match="needs gradient_checkpointing on"):
        TrainConfig(blocks_to_swap=1, gradient_checkpointing=False).check()
    with pytest.raises(ValueError, match="0 or more"):
        TrainConfig(blocks_to_swap=-1).check()
    with block_swap.swapping(blocks, 0, "cpu") as swap:
        assert swap is None


def test_training_with_swapped_blocks_trains_the_same_loras(monkeypatch):
    """Through train(): with the swapped block poisoned while away, the LoRAs equal those of a run without."""
    clip = _clip()
    settings = dict(steps=2, checkpoint_every=0, rank=2, seed=0, spatial_lr=1e-3, temporal_lr=1e-3)
    plain = train(_three_block_wan(), [clip], TrainConfig.from_recipe("single-video", **settings))
    monkeypatch.setattr(block_swap, "BlockSwap", Poisoned)
    model = _three_block_wan()
    swapped = train(model, [clip], TrainConfig.from_recipe("single-video", blocks_to_swap=2, **settings))
    for a, b in ((plain.temporal, swapped.temporal), (plain.spatial[0], swapped.spatial[0])):
        assert a.tensors.keys() == b.tensors.keys()
        assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert not any(torch.isnan(p).any() for p in model.unet.parameters())  # every block back after training


def test_too_many_blocks_is_refused_before_anything_is_written(tmp_path):
    clip = _clip()
    config = TrainConfig.from_recipe("single-video", steps=1, blocks_to_swap=3)
    with pytest.raises(ValueError, match="blocks_to_swap 3 is too many: this model has 3 blocks.*at most 2"):
        train(_three_block_wan(), [clip], config, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_swapping_works_on_any_backbones_checkpoint_units(monkeypatch):
    """The units are the backbone's checkpoint units: on the UNet3D (ZeroScope) too, whose spatial path skips
    its temporal layers, swapping all but one trains the same LoRAs."""
    from motion_lora.tiny import build_tiny_model

    clip = _clip(frames=4, size=64)
    settings = dict(steps=2, checkpoint_every=0, rank=2, seed=0)
    plain = train(build_tiny_model(seed=0), [clip], TrainConfig.from_recipe("single-video", **settings))
    model = build_tiny_model(seed=0)
    units = len(model.backbone.checkpoint_units(model.unet, "all"))
    monkeypatch.setattr(block_swap, "BlockSwap", Poisoned)
    swapped = train(model, [clip], TrainConfig.from_recipe("single-video", blocks_to_swap=units - 1, **settings))
    for a, b in ((plain.temporal, swapped.temporal), (plain.spatial[0], swapped.spatial[0])):
        assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
