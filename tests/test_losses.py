"""The diffusion target and MotionDirector's losses against hand computation on small tensors."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from motion_lora.losses import debias, diffusion_target, mse, temporal_loss
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


def test_epsilon_and_v_prediction_targets():
    g = torch.Generator().manual_seed(2)
    latents, noise = torch.randn(1, 4, 2, 3, 3, generator=g), torch.randn(1, 4, 2, 3, 3, generator=g)
    t = torch.tensor([420])
    eps = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    assert diffusion_target(eps, latents, noise, t) is noise
    v_sched = DDPMScheduler.from_config({**SCHEDULER_CONFIG, "prediction_type": "v_prediction"})
    abar = v_sched.alphas_cumprod[420].item()
    by_hand = math.sqrt(abar) * noise - math.sqrt(1 - abar) * latents
    torch.testing.assert_close(diffusion_target(v_sched, latents, noise, t), by_hand, rtol=1e-5, atol=1e-6)
    sample_sched = DDPMScheduler.from_config({**SCHEDULER_CONFIG, "prediction_type": "sample"})
    with pytest.raises(ValueError, match="prediction_type"):
        diffusion_target(sample_sched, latents, noise, t)
