"""The loss curve of a training run as an image (Pillow + numpy, no plotting library).

`history` is what the trainer records: one dict per step, e.g. `{"step": 3, "losses":
{"temporal": 0.21, "spatial": 0.18}}` or the same values flat (`{"step": 3, "loss_temporal":
0.21}`). Each loss is drawn raw (faint) and smoothed (an exponential moving average).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]
NOT_LOSSES = {"step", "total", "time", "elapsed", "lrs", "lr", "epoch"}


def loss_series(history: Sequence[dict]) -> dict[str, list[tuple[int, float]]]:
    """`{name: [(step, value), ...]}` for every finite loss value in `history`."""
    series: dict[str, list[tuple[int, float]]] = {}
    for i, entry in enumerate(history):
        step = int(entry.get("step", i + 1))
        losses = entry.get("losses")
        if not isinstance(losses, dict):
            losses = {k: v for k, v in entry.items() if k not in NOT_LOSSES and not k.startswith("lr")}
        for name, value in losses.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                series.setdefault(str(name), []).append((step, float(value)))
    return series


def smooth(values: Sequence[float], weight: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average (TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** (i + 1)))
    return out


def _label(value: float) -> str:
    return f"{value:.3g}"


def step_ticks(first: int, last: int, most: int = 5) -> list[int]:
    """Whole, distinct steps for the axis labels: every step of a short run, else a round stride (1, 2, 5, 10...)."""
    span = max(1, last - first)
    stride = 1
    while span / stride > most - 1:
        for factor in (2, 5 / 2, 2):  # 1, 2, 5, 10, 20, 50, ...
            stride = round(stride * factor)
            if span / stride <= most - 1:
                break
    start = -(-first // stride) * stride
    ticks = set(range(start, last + 1, stride))
    for end in (first, last):  # the run's own first and last step, unless a tick sits right beside it
        if all(abs(end - t) * 2 >= stride for t in ticks):
            ticks.add(end)
    return sorted(ticks)


def render_loss_plot(history: Sequence[dict], width: int = 768, height: int = 384,
                     title: str = "training loss") -> torch.Tensor:
    """The curves as a float image `[1, height, width, 3]` in 0..1 (ComfyUI's IMAGE layout)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    series = loss_series(history)
    left, right, top, bottom = 64, width - 16, 28, height - 36
    draw.text((left, 8), title, fill=(0, 0, 0))
    if not series:
        draw.text((width // 2 - 60, height // 2), "no training steps", fill=(96, 96, 96))
        return _to_tensor(image)

    steps = [s for points in series.values() for s, _ in points]
    values = [v for points in series.values() for _, v in points]
    x0, x1 = min(steps), max(steps)
    y0, y1 = min(values), max(values)
    if x1 == x0:
        x1 = x0 + 1
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad

    def xy(step: float, value: float) -> tuple[float, float]:
        x = left + (step - x0) / (x1 - x0) * (right - left)
        y = bottom - (value - y0) / (y1 - y0) * (bottom - top)
        return x, y

    # axes, a light grid and tick labels
    for k in range(5):
        value = y0 + (y1 - y0) * k / 4
        _, y = xy(x0, value)
        draw.line([(left, y), (right, y)], fill=(230, 230, 230))
        draw.text((4, y - 6), _label(value), fill=(64, 64, 64))
    for step in step_ticks(x0, x1):
        x, _ = xy(step, y0)
        draw.line([(x, top), (x, bottom)], fill=(230, 230, 230))
        draw.text((x - 10, bottom + 6), str(step), fill=(64, 64, 64))
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    draw.text(((left + right) // 2 - 12, height - 16), "step", fill=(0, 0, 0))

    # one faint raw line and one bold smoothed line per loss, and a legend
    for i, (name, points) in enumerate(sorted(series.items())):
        color = COLORS[i % len(COLORS)]
        faint = tuple(int(c + (255 - c) * 0.65) for c in color)
        raw = [xy(s, v) for s, v in points]
        smoothed = [xy(s, v) for (s, _), v in zip(points, smooth([v for _, v in points]))]
        if len(raw) == 1:
            x, y = raw[0]
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        else:
            draw.line(raw, fill=faint, width=1)
            draw.line(smoothed, fill=color, width=2)
        last = points[-1][1]
        legend_y = top + 6 + 14 * i
        draw.line([(right - 170, legend_y + 6), (right - 150, legend_y + 6)], fill=color, width=2)
        draw.text((right - 145, legend_y), f"{name} ({_label(last)})", fill=(0, 0, 0))
    return _to_tensor(image)


def _to_tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)
