"""MotionDirector's losses and ZeroScope's diffusion objective against hand computation on small tensors."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from motion_lora.backbones import ZeroScope
from motion_lora.losses import debias, mse, temporal_loss
from motion_lora.tiny import SCHEDULER_CONFIG


def by_hand_mse(a: torch.Tensor, b: torch.Tensor) -> float:
    values = [(x - y) ** 2 for x, y in zip(a.flatten().tolist(), b.flatten().tolist())]
    return sum(values) / len(values)


def test_temporal_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(1, 2, 3, 2, 2, generator=g)  # [batch, channels, frames, h, w]
    target = torch.randn(1, 2, 3, 2, 2, generator=g)
    beta, anchor = 0.7, 1
    alpha = math.sqrt(beta**2 + 1)
    phi_pred = torch.stack([alpha * pred[:, :, f] - beta * pred[:, :, anchor] for f in range(3)], dim=2)
    phi_target = torch.stack([alpha * target[:, :, f] - beta * target[:, :, anchor] for f in range(3)], dim=2)
    total, org, ad = temporal_loss(pred, target, anchor, beta, frame_axis=2)
    assert org.item() == pytest.approx(by_hand_mse(pred, target), rel=1e-6)
    assert ad.item() == pytest.approx(by_hand_mse(phi_pred, phi_target), rel=1e-6)
    assert total.item() == pytest.approx(org.item() + ad.item(), rel=1e-6)
    # the anchor frame itself keeps (alpha - beta) of its error; other frames keep their difference to it
    torch.testing.assert_close(debias(pred, anchor, beta, 2)[:, :, anchor], (alpha - beta) * pred[:, :, anchor])


def test_default_beta_is_one_and_frame_axis_is_respected():
    pred = torch.zeros(1, 1, 2, 1, 1)
    target = torch.tensor([1.0, 3.0]).view(1, 1, 2, 1, 1)
    _, org, ad = temporal_loss(pred, target, anchor=0)
    s = math.sqrt(2)
    assert org.item() == pytest.approx((1 + 9) / 2)
    assert ad.item() == pytest.approx(((s - 1) ** 2 + (3 * s - 1) ** 2) / 2, rel=1e-6)
    moved = target.movedim(2, 0)  # frames first: the same loss when told the axis
    assert temporal_loss(pred.movedim(2, 0), moved, 0, 1.0, frame_axis=0)[2].item() == pytest.approx(ad.item())


def test_beta_zero_makes_the_debiased_loss_the_plain_loss():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(1, 4, 5, 3, 3, generator=g), torch.randn(1, 4, 5, 3, 3, generator=g)
    total, org, ad = temporal_loss(pred, target, anchor=3, beta=0.0)
    assert ad.item() == pytest.approx(org.item(), rel=1e-6)
    assert total.item() == pytest.approx(2 * org.item(), rel=1e-6)


def test_mse_is_float32_even_for_half_inputs():
    a = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    b = torch.tensor([0.0, 0.0], dtype=torch.bfloat16)
    loss = mse(a, b)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(2.5)


def test_zeroscope_objective_noises_as_ddpm_with_epsilon_or_v_target():
    g = torch.Generator().manual_seed(2)
    latents, noise = torch.randn(1, 4, 2, 3, 3, generator=g), torch.randn(1, 4, 2, 3, 3, generator=g)
    t = torch.tensor([420])
    abar = DDPMScheduler.from_config(SCHEDULER_CONFIG).alphas_cumprod[420].item()
    eps = ZeroScope().objective(SCHEDULER_CONFIG)
    assert eps.num_train_timesteps == 1000
    torch.testing.assert_close(eps.add_noise(latents, noise, t), math.sqrt(abar) * latents + math.sqrt(1 - abar) * noise)
    assert eps.target(latents, noise, t) is noise
    v = ZeroScope().objective({**SCHEDULER_CONFIG, "prediction_type": "v_prediction"})
    by_hand = math.sqrt(abar) * noise - math.sqrt(1 - abar) * latents
    torch.testing.assert_close(v.target(latents, noise, t), by_hand, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="prediction_type"):
        ZeroScope().objective({**SCHEDULER_CONFIG, "prediction_type": "sample"})


def test_zeroscope_timesteps_cover_the_whole_training_range():
    objective = ZeroScope().objective({**SCHEDULER_CONFIG, "num_train_timesteps": 1000})
    t = objective.sample_timesteps(20000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and int(t.min()) == 0 and int(t.max()) == 999
    per_tenth = torch.bincount(t // 100, minlength=10)
    assert len(per_tenth) == 10 and bool((per_tenth > 1700).all()), per_tenth  # uniform: 2000 +- 45 each


def test_zeroscope_image_latents_are_the_clip_latents_per_frame():
    latents = torch.randn(1, 4, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    images = ZeroScope().image_latents(None, torch.zeros(3, 16, 16, 3), latents)
    assert images.shape == (3, 4, 1, 2, 2)
    for i in range(3):
        assert torch.equal(images[i : i + 1], latents[:, :, i : i + 1])
