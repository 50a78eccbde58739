"""The toy world: flat-coloured shapes moving on flat backgrounds, rendered exactly from a seed.

Every clip comes with its ground truth (the object's centre in every frame, its colour,
shape and background), so a generated clip can be scored exactly (see `metrics`). The
base model is pretrained on the `SEEN` motions only; the `HELD_OUT` motions are new to it
and serve to test what a motion LoRA learns from one clip.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

SIZE = 32  # pixels per side
FRAMES = 8
HALF = 4.5  # half the side of an object's bounding box, in pixels

COLOURS = {"red": (0.9, 0.12, 0.12), "green": (0.1, 0.75, 0.15), "blue": (0.15, 0.3, 0.95), "yellow": (0.95, 0.85, 0.1)}
BACKGROUNDS = {"gray": (0.5, 0.5, 0.5), "black": (0.04, 0.04, 0.04)}
SHAPES = ("square", "circle", "triangle")

# phrase used in prompts, per motion
SEEN = {"left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down",
        "still": "standing still"}
HELD_OUT = {"zigzag": "moving in a zig-zag", "circle": "moving in a circle", "bounce": "bouncing",
            "speedup": "speeding up"}
MOTIONS = {**SEEN, **HELD_OUT}
STEP = 2.0  # pixels per frame of the straight motions
JITTER = 2.0  # pixels a clip's start may lie off the one that centres its path (see `start_position`)


def offsets(motion: str, frames: int = FRAMES) -> torch.Tensor:
    """`[F, 2]` (x, y) offsets from the first frame's centre, in pixels; y grows downwards."""
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}: choose one of {', '.join(MOTIONS)}")
    f = torch.arange(frames, dtype=torch.float32)
    t = f / max(1, frames - 1)
    zero = torch.zeros(frames)
    span = STEP * (frames - 1)
    if motion == "left":
        xy = (-STEP * f, zero)
    elif motion == "right":
        xy = (STEP * f, zero)
    elif motion == "up":
        xy = (zero, -STEP * f)
    elif motion == "down":
        xy = (zero, STEP * f)
    elif motion == "still":
        xy = (zero, zero)
    elif motion == "zigzag":  # rightwards while jumping up and down every frame
        xy = (STEP * f, torch.where(f % 2 == 1, -5.0, 0.0))
    elif motion == "circle":  # most of one turn, clockwise on screen, radius 6
        angle = 2 * math.pi * 0.85 * t
        xy = (6 * torch.sin(angle), -6 * torch.cos(angle) + 6)
    elif motion == "bounce":  # two hops in place
        xy = (zero, -12 * torch.sin(2 * math.pi * t).abs())
    else:  # speedup: rightwards, from rest, accelerating
        xy = (1.3 * span * t * t, zero)
    return torch.stack(xy, dim=1)


def prompt_for(colour: str, shape: str, motion: str, background: str) -> str:
    return f"a {colour} {shape} {MOTIONS[motion]} on a {background} background"


@dataclass
class ToyClip:
    """A rendered clip and its ground truth."""

    frames: torch.Tensor  # [F, H, W, 3] float32 in 0..1
    centres: torch.Tensor  # [F, 2] (x, y) pixel centre of the object per frame
    colour: str
    shape: str
    background: str
    motion: str

    @property
    def prompt(self) -> str:
        return prompt_for(self.colour, self.shape, self.motion, self.background)

    def as_clip(self, prompt: str | None = None):
        """A `motion_lora.data.Clip` for the trainer."""
        from ..data import Clip

        return Clip(self.frames, prompt or self.prompt, source=f"toyworld:{self.colour}/{self.shape}/{self.motion}")


def shape_mask(shape: str, cx: float, cy: float, size: int = SIZE) -> torch.Tensor:
    """`[H, W]` bool: pixel centres inside the shape centred at (cx, cy)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}: choose one of {', '.join(SHAPES)}")
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    dx, dy = grid.view(1, -1) - cx, grid.view(-1, 1) - cy
    if shape == "square":
        return (dx.abs() <= HALF) & (dy.abs() <= HALF)
    if shape == "circle":
        return dx * dx + dy * dy <= (HALF + 0.5) ** 2
    return (dy.abs() <= HALF) & (dx.abs() <= (dy + HALF) / 2 + 0.5)  # triangle pointing up


def start_range(motion: str, frames: int = FRAMES, size: int = SIZE) -> tuple[tuple[float, float], tuple[float, float]]:
    """The ((x_lo, x_hi), (y_lo, y_hi)) first-frame centres that keep the object inside every frame."""
    off = offsets(motion, frames)
    lo, hi = HALF + 0.5, size - HALF - 0.5
    return tuple((lo - float(off[:, k].min()), hi - float(off[:, k].max())) for k in range(2))  # type: ignore


def start_position(motion: str, seed: int = 0, frames: int = FRAMES, size: int = SIZE) -> tuple[float, float]:
    """The first frame's centre: the one that centres the motion's path in the frame, moved by up to `JITTER`.

    Staged, as a camera operator frames a shot, rather than anywhere the path fits: drawn uniformly over
    the whole `start_range`, "moving right" started anywhere in a third of the width and anywhere in
    height, so the average clip for a motion word was a faint smear, and both toy models learnt the
    colours, shapes and backgrounds but nothing of the motion words (at the highest noise their prediction
    did not move, where the data's mean moves 2.5 latent pixels). Staged, the UNet3D toy learns where each
    motion word puts the object, though not yet which way it moves (README, Toy world)."""
    rng = random.Random(seed)
    centred = []
    for lo, hi in start_range(motion, frames, size):
        mid = (lo + hi) / 2
        reach = min(JITTER, max(0.0, (hi - lo) / 2))
        centred.append(rng.uniform(mid - reach, mid + reach))
    return centred[0], centred[1]


def render(colour: str, shape: str, motion: str, background: str, seed: int = 0, frames: int = FRAMES,
           size: int = SIZE, start: tuple[float, float] | None = None) -> ToyClip:
    """The clip, exactly: the same arguments give the same pixels. `seed` picks the start position
    (`start_position`)."""
    for name, value, choices in (("colour", colour, COLOURS), ("background", background, BACKGROUNDS)):
        if value not in choices:
            raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")
    if start is None:
        start = start_position(motion, seed, frames, size)
    centres = offsets(motion, frames) + torch.tensor(start, dtype=torch.float32)
    video = torch.tensor(BACKGROUNDS[background]).expand(frames, size, size, 3).clone()
    rgb = torch.tensor(COLOURS[colour])
    for f in range(frames):
        video[f][shape_mask(shape, float(centres[f, 0]), float(centres[f, 1]), size)] = rgb
    return ToyClip(video, centres, colour, shape, background, motion)


def random_clip(rng: random.Random, motions=tuple(SEEN)) -> ToyClip:
    """A clip with every attribute drawn from `rng` (the pretraining distribution for the default motions)."""
    return render(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(motions)),
                  rng.choice(list(BACKGROUNDS)), seed=rng.randrange(2**31))
