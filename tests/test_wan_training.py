"""MotionDirector's dual-path training on the tiny Wan through `motion_lora.training.train`."""

from __future__ import annotations

import pytest
import torch

from conftest import synthetic_clip
from motion_lora import adapters as ad
from motion_lora.data import Clip
from motion_lora.lora_file import load_adapter, save_adapter
from motion_lora.tiny_wan import build_tiny_wan

def _clip(frames=5, size=32):
    return Clip(frames=synthetic_clip(frames=frames, height=size, width=size), prompt="a red square moves right",
                source="synthetic")


def test_two_steps_train_both_paths_and_leave_the_model_as_it_was(tmp_path):
    from motion_lora.training import TrainConfig, train

    model = build_tiny_wan(seed=0)
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    config = TrainConfig(steps=2, rank=2, spatial_mask_prob=0.0, checkpoint_every=0, dropout=0.0)
    result = train(model, [_clip()], config)
    assert result.step == 2 and len(result.history) == 2
    assert all({"loss_spatial", "loss_temporal"} <= set(h) for h in result.history)
    assert all(torch.isfinite(torch.tensor(v)) for h in result.history for k, v in h.items() if k != "step")
    # both paths learned (the up weights left zero), on the layers of the backbone's placement
    assert any(v.abs().sum() > 0 for k, v in result.temporal.tensors.items() if ".lora_B." in k)
    assert any(v.abs().sum() > 0 for k, v in result.spatial[0].tensors.items() if ".lora_B." in k)
    assert set(result.temporal.targets) == set(model.backbone.temporal_targets(model.unet))
    assert set(result.spatial[0].targets) == set(model.backbone.spatial_targets(model.unet))
    assert ad.adapter_names(model.unet) == set()
    assert all(torch.equal(v, before[k]) for k, v in model.unet.state_dict().items())
    # the trained motion LoRA saves in ComfyUI's layout and reads back
    path = save_adapter(result.temporal, tmp_path / "motion.safetensors")
    assert torch.equal(load_adapter(path).tensors[result.temporal.targets[0] + ".lora_B.weight"],
                       result.temporal.tensors[result.temporal.targets[0] + ".lora_B.weight"])


def test_spatial_path_trains_on_a_frame_encoded_as_an_image(monkeypatch):
    """The spatial forward sees one latent frame that is an image encoding, never a slice of the clip's latents."""
    from motion_lora.training import TrainConfig, train

    model = build_tiny_wan(seed=0)
    seen = []
    predict = model.backbone.predict

    def spy(unet, latents, t, text):
        seen.append(latents.shape)
        return predict(unet, latents, t, text)

    monkeypatch.setattr(model.backbone, "predict", spy)
    train(model, [_clip()], TrainConfig(steps=1, rank=2, spatial_mask_prob=0.0, checkpoint_every=0))
    assert (1, 16, 1, 4, 4) in seen and (1, 16, 2, 4, 4) in seen
