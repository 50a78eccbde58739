"""Sampling the toy model and scoring it: the base model's prompt following, and side-by-side videos.

The sampler is the pack's own (`motion_lora.sampling.sample`), with the settings the toy
model was tuned for, so what is measured here is what the nodes and the CLI produce.
"""

from __future__ import annotations

from typing import Sequence

import torch

from . import metrics
from .world import BACKGROUNDS, COLOURS, FRAMES, SEEN, SHAPES, SIZE, prompt_for

SAMPLE_STEPS = 20
GUIDANCE = 7.5


def generate(model, prompt: str, seed: int = 0, adapters=None, steps: int = SAMPLE_STEPS, guidance: float = GUIDANCE,
             noise_prior: float = 0.0, reference: torch.Tensor | None = None) -> torch.Tensor:
    """One clip `[F, 32, 32, 3]` of the toy world from `prompt`.

    `adapters`: a list of (LoraAdapter, strength) to apply, or None to use the UNet as it is
    (with whatever adapters a caller has switched on in it).
    """
    from ..sampling import sample

    return sample(model, prompt, width=SIZE, height=SIZE, frames=FRAMES, steps=steps, guidance=guidance, seed=seed,
                  adapters=None if adapters is None else list(adapters), noise_prior=noise_prior, reference=reference,
                  inversion_steps=steps)


def seen_prompts() -> list[tuple[str, str, str, str]]:
    """Every seen colour x shape x motion, each on one background (alternating): (colour, shape, motion, background)."""
    backgrounds = list(BACKGROUNDS)
    out = []
    for i, (colour, shape, motion) in enumerate((c, s, m) for c in COLOURS for s in SHAPES for m in SEEN):
        out.append((colour, shape, motion, backgrounds[i % len(backgrounds)]))
    return out


def prompt_following(model, seeds: Sequence[int] = (0,), progress=None, generate=generate) -> dict:
    """Share of seen prompts rendered fully correctly (colour, shape, background and motion), and per attribute.

    `generate(model, prompt, seed=...)` makes the clips: this module's for the ZeroScope toy model, another
    family's own (the Wan toy model samples 9-frame clips) for that family."""
    counts = {"all": 0, "colour": 0, "shape": 0, "background": 0, "motion": 0, "consistency": 0.0}
    total = 0
    for colour, shape, motion, background in seen_prompts():
        prompt = prompt_for(colour, shape, motion, background)
        for seed in seeds:
            t = metrics.track(generate(model, prompt, seed=seed))
            counts["colour"] += t.colour == colour
            counts["shape"] += t.shape == shape
            counts["background"] += t.background == background
            counts["motion"] += t.motion == motion
            counts["all"] += metrics.follows_prompt(t, prompt)
            counts["consistency"] += metrics.temporal_consistency(t)
            total += 1
            if progress is not None:
                progress(total, prompt, t)
    return {k: v / total for k, v in counts.items()} | {"samples": total}


def side_by_side(*clips: torch.Tensor, scale: int = 4, gap: int = 2) -> torch.Tensor:
    """Clips `[F, H, W, 3]` next to each other, enlarged `scale` times (nearest), with a white gap."""
    frames = min(c.shape[0] for c in clips)
    big = [c[:frames].repeat_interleave(scale, 1).repeat_interleave(scale, 2) for c in clips]
    spacer = torch.ones(frames, big[0].shape[1], gap, 3)
    parts = []
    for k, b in enumerate(big):
        parts += [spacer, b] if k else [b]
    return torch.cat(parts, dim=2)
