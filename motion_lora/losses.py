"""What MotionDirector minimises: the plain loss and the appearance-debiased temporal loss.

The diffusion target itself (epsilon, v, flow velocity) is the backbone's `Objective`.

The debiased loss compares clips after subtracting a scaled anchor frame from every frame
(`phi(x) = alpha * x - beta * x[j]`, `alpha = sqrt(beta^2 + 1)`), which removes what all
frames share (appearance) and leaves what changes between them (motion) for the
temporal LoRA to learn.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error in float32 (a half-precision prediction would lose small differences)."""
    return F.mse_loss(pred.float(), target.float())


def debias(x: torch.Tensor, anchor: int, beta: float, frame_axis: int) -> torch.Tensor:
    """`phi(x) = alpha * x - beta * x[anchor]` along the frame axis, `alpha = sqrt(beta^2 + 1)`."""
    alpha = math.sqrt(beta**2 + 1)
    return alpha * x - beta * x.narrow(frame_axis, anchor, 1)


def temporal_loss(pred: torch.Tensor, target: torch.Tensor, anchor: int, beta: float = 1.0,
                  frame_axis: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss_temporal, loss_org, loss_ad): the plain loss plus the appearance-debiased one."""
    pred, target = pred.float(), target.float()
    loss_org = F.mse_loss(pred, target)
    loss_ad = F.mse_loss(debias(pred, anchor, beta, frame_axis), debias(target, anchor, beta, frame_axis))
    return loss_org + loss_ad, loss_org, loss_ad
