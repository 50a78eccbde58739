"""Exact scores for clips of the toy world: tracking, motion fidelity, prompt fidelity, leakage, consistency.

The world has one flat-coloured object on a flat background, so tracking is exact: the
background is the border's median colour, the object is every pixel far from it, its
colour is the nearest palette colour and its shape the template that overlaps it best.

- **motion fidelity** compares frame-to-frame displacement trajectories (as trajectory-based
  motion-fidelity scores do), so it ignores where the object starts:
  `2 sum(d_ref . d_gen) / (sum |d_ref|^2 + sum |d_gen|^2)`, which is 1 only for the same
  displacements, 0 for a still clip against a moving one and -1 for the reversed motion.
- **prompt fidelity**: the share of colour, shape and background that are as the prompt asks.
- **leakage**: of the attributes where the prompt asks for something other than the training
  clip had, the share that came out as the training clip's (the appearance leaking in).
- **temporal consistency**: the share of frames showing the same object (found, same colour
  and shape as the clip's majority) at a steady size (area within 30 % of its median).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from .world import BACKGROUNDS, COLOURS, MOTIONS, SEEN, SHAPES, SIZE, shape_mask

OBJECT_DISTANCE = 0.25  # RGB distance from the background that counts as object
MIN_AREA = 8  # pixels; fewer means no object in that frame
STILL_PIXELS = 3.0
AREA_TOLERANCE = 0.3  # a frame whose object area is this far from the median counts as flicker (pixel
# aliasing alone moves it by up to about 15 %)  # net displacement below this is "standing still"


@dataclass
class Track:
    """What a clip shows, frame by frame."""

    centres: torch.Tensor  # [F, 2] (x, y); a frame without an object repeats the previous centre
    found: list[bool]
    colours: list[str | None]
    shapes: list[str | None]
    areas: list[int]
    background: str
    colour: str | None = field(init=False)  # majority over frames with an object
    shape: str | None = field(init=False)

    def __post_init__(self):
        self.colour = _majority(self.colours)
        self.shape = _majority(self.shapes)

    @property
    def displacements(self) -> torch.Tensor:
        return self.centres[1:] - self.centres[:-1]

    @property
    def motion(self) -> str:
        """The seen motion this clip is closest to: still, or the dominant direction of its net displacement."""
        net = self.centres[-1] - self.centres[0]
        if float(net.norm()) < STILL_PIXELS:
            return "still"
        if abs(float(net[0])) >= abs(float(net[1])):
            return "right" if net[0] > 0 else "left"
        return "down" if net[1] > 0 else "up"


def _majority(values) -> str | None:
    values = [v for v in values if v is not None]
    return Counter(values).most_common(1)[0][0] if values else None


def _nearest(rgb: torch.Tensor, palette: dict) -> str:
    names = list(palette)
    distances = (torch.tensor([palette[n] for n in names]) - rgb).norm(dim=1)
    return names[int(distances.argmin())]


@lru_cache(maxsize=None)
def _template(shape: str, size: int) -> tuple[torch.Tensor, float, float]:
    """The shape's mask centred in a frame, and its centroid's offset from the drawing centre."""
    mask = shape_mask(shape, size / 2, size / 2, size)
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return mask, float(xs.float().mean() + 0.5 - size / 2), float(ys.float().mean() + 0.5 - size / 2)


def _shape_of(mask: torch.Tensor, cx: float, cy: float) -> str:
    """The shape whose template, placed on the mask's centroid, overlaps the mask best (IoU)."""
    size = mask.shape[0]
    best, best_iou = SHAPES[0], -1.0
    for shape in SHAPES:
        _, ox, oy = _template(shape, size)
        template = shape_mask(shape, cx - ox, cy - oy, size)
        iou = float((template & mask).sum()) / max(1.0, float((template | mask).sum()))
        if iou > best_iou:
            best, best_iou = shape, iou
    return best


def track(frames: torch.Tensor) -> Track:
    """Track the object in `[F, H, W, 3]` frames in 0..1 (any size; the world renders SIZE x SIZE)."""
    frames = torch.as_tensor(frames).float()
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3], got {tuple(frames.shape)}")
    if frames.shape[1] != frames.shape[2]:
        raise ValueError(f"toy world clips are square, got {frames.shape[2]}x{frames.shape[1]}")
    if frames.max() > 1.5:  # uint8 frames
        frames = frames / 255.0
    border = torch.cat([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], dim=1).reshape(-1, 3)
    bg_rgb = border.median(dim=0).values
    background = _nearest(bg_rgb, BACKGROUNDS)
    centres, found, colours, shapes, areas = [], [], [], [], []
    last = torch.tensor([frames.shape[2] / 2, frames.shape[1] / 2])
    grid = torch.arange(frames.shape[1], dtype=torch.float32) + 0.5
    for frame in frames:
        mask = (frame - bg_rgb).norm(dim=-1) > OBJECT_DISTANCE
        area = int(mask.sum())
        areas.append(area)
        if area < MIN_AREA:
            centres.append(last)
            found.append(False)
            colours.append(None)
            shapes.append(None)
            continue
        ys, xs = torch.nonzero(mask, as_tuple=True)
        last = torch.stack([grid[xs].mean(), grid[ys].mean()])
        centres.append(last)
        found.append(True)
        colours.append(_nearest(frame[mask].median(dim=0).values, COLOURS))
        shapes.append(_shape_of(mask, float(last[0]), float(last[1])))
    return Track(torch.stack(centres), found, colours, shapes, areas, background)


def _as_track(clip) -> Track:
    return clip if isinstance(clip, Track) else track(clip)


def motion_fidelity(reference, generated) -> float:
    """Similarity of the two clips' displacement trajectories, in [-1, 1] (see the module docstring)."""
    ref, gen = _as_track(reference).displacements, _as_track(generated).displacements
    if len(ref) != len(gen) or len(ref) == 0:
        raise ValueError(f"motion fidelity compares clips of the same length (2 frames or more), got {len(ref) + 1} "
                         f"and {len(gen) + 1} frames. (A GIF of a still clip may hold a single frame: use .mp4.)")
    energy = float((ref * ref).sum() + (gen * gen).sum())
    if energy < 1e-6:  # both still
        return 1.0
    return 2 * float((ref * gen).sum()) / energy


def parse_prompt(prompt: str) -> dict[str, str | None]:
    """The colour, shape, background and motion a prompt names (None for what it leaves out)."""
    words = prompt.lower().replace("-", " ").replace(",", " ").split()
    text = " ".join(words)
    found = {"colour": next((c for c in COLOURS if c in words), None),
             "shape": next((s for s in SHAPES if s in words), None),
             "background": next((b for b in BACKGROUNDS if f"{b} background" in text), None),
             "motion": next((m for m, phrase in MOTIONS.items() if phrase.replace("-", " ") in text), None)}
    return found


def _attributes(track_: Track) -> dict[str, str | None]:
    return {"colour": track_.colour, "shape": track_.shape, "background": track_.background}


def prompt_fidelity(generated, prompt: str) -> dict[str, float]:
    """Per attribute the prompt names, 1.0 if the clip shows it (else 0.0), and their mean under "score"."""
    shown, asked = _attributes(_as_track(generated)), parse_prompt(prompt)
    out = {k: float(shown[k] == v) for k, v in asked.items() if k in shown and v is not None}
    out["score"] = sum(out.values()) / len(out) if out else float("nan")
    return out


def leakage(generated, prompt: str, training: dict[str, str] | str) -> float | None:
    """Share of the attributes asked differently from the training clip that show the training clip's value.

    `training` is the training clip's attributes or its prompt; None when the prompt asks
    for the same look as the training clip (nothing could leak).
    """
    shown, asked = _attributes(_as_track(generated)), parse_prompt(prompt)
    trained = parse_prompt(training) if isinstance(training, str) else training
    differ = [k for k in shown if asked.get(k) is not None and trained.get(k) is not None and asked[k] != trained[k]]
    if not differ:
        return None
    return sum(shown[k] == trained[k] for k in differ) / len(differ)


def temporal_consistency(generated) -> float:
    """1.0 for the same object in every frame at a steady size; lower for flicker, changes or vanishing."""
    t = _as_track(generated)
    same = [f and c == t.colour and s == t.shape for f, c, s in zip(t.found, t.colours, t.shapes)]
    identity = sum(same) / len(same)
    areas = torch.tensor([a for a, f in zip(t.areas, t.found) if f], dtype=torch.float32)
    if len(areas) < 2:
        return 0.0
    steady = float(((areas - areas.median()).abs() <= AREA_TOLERANCE * areas.median()).float().mean())
    return identity * steady


def follows_prompt(generated, prompt: str) -> bool:
    """Colour, shape, background and (a seen) motion all as asked: the base model's prompt-following test."""
    t = _as_track(generated)
    asked = parse_prompt(prompt)
    if prompt_fidelity(t, prompt)["score"] != 1.0:
        return False
    return asked["motion"] not in SEEN or t.motion == asked["motion"]


def score(reference, generated, prompt: str, training_prompt: str | None = None) -> dict[str, float | None]:
    """Every metric for one generated clip against the reference (training) clip."""
    ref, gen = _as_track(reference), _as_track(generated)
    out = {"motion_fidelity": motion_fidelity(ref, gen), "prompt_fidelity": prompt_fidelity(gen, prompt)["score"],
           "temporal_consistency": temporal_consistency(gen)}
    out["leakage"] = leakage(gen, prompt, training_prompt) if training_prompt else None
    return out


__all__ = ["Track", "track", "motion_fidelity", "prompt_fidelity", "leakage", "temporal_consistency",
           "follows_prompt", "score", "parse_prompt", "SIZE"]
