"""Training data: clips (frames + prompt) from video files, folders of videos or images, or memory.

Every loader ends in the same two steps: pick frames (`num_frames` from `start`, every
`stride`-th, or a stride from a target fps), then fit them to the training size.

Fitting: by default each frame is scaled to *cover* `width x height` and center-cropped,
so nothing is stretched. With `bucket=True` the clip keeps its own aspect ratio instead,
at (at most) the pixel budget `width * height`: the ideal size `sqrt(budget * aspect) x
sqrt(budget / aspect)` is rounded side by side to the nearest multiple of 64 (at least 64),
and while that exceeds the budget the side that was rounded up the most loses 64. E.g. a
576x320 clip with a 384x384 budget trains at 512x256; a 1920x1080 one too; a square one at
384x384. The small remaining difference in aspect is center-cropped. `width = height = None` keeps
the source size (which must then be a multiple of 8).

Resizing is opencv's on numpy frames (uint8 from files, float32 from memory): `INTER_AREA`
when shrinking (antialiased), `INTER_LINEAR` when enlarging, the same rule for every source.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .video_io import VIDEO_EXTENSIONS, DataError, VideoReader, is_video_file

logger = logging.getLogger(__name__)

__all__ = [
    "Clip",
    "DataError",
    "IMAGE_EXTENSIONS",
    "bucket_size",
    "clip_from_frames",
    "fit_frame",
    "load_clips",
    "load_image",
    "load_image_folder",
    "load_video",
    "load_video_folder",
    "stride_for_fps",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
BUCKET_MULTIPLE = 64  # the latent is 1/8 of the frame and the UNet halves it three times


@dataclass
class Clip:
    """One training example: frames `[F, H, W, 3]` float32 in 0..1 on CPU (F == 1 for an image)."""

    frames: torch.Tensor
    prompt: str
    source: str = ""  # file path, or "memory"
    fps: float | None = None  # frames per second after sampling, when known

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return int(self.frames.shape[2]), int(self.frames.shape[1])


# ----------------------------------------------------------------------------- options


def _check_size(width: int | None, height: int | None, bucket: bool, what: str) -> None:
    if (width is None) != (height is None) or (bucket and width is None):
        raise DataError(f"{what}: give both width and height" + ("" if bucket else " (or neither, to keep the frames' size)")
                        + f", got width={width}, height={height}")
    multiple = BUCKET_MULTIPLE if bucket else 8
    for name, value in (("width", width), ("height", height)):
        if value is None:
            continue
        if int(value) != value or value < multiple or value % multiple:
            hint = " (bucketing needs multiples of 64)" if bucket else " (the VAE downsamples by 8)"
            raise DataError(f"{what}: {name} must be a positive multiple of {multiple}{hint}, got {value}; "
                            f"use e.g. {max(multiple, round(value / multiple) * multiple)}")


def _check_sampling(num_frames: int, start: int, stride: int, fps: float | None, what: str) -> None:
    if int(num_frames) != num_frames or num_frames < 1:
        raise DataError(f"{what}: num_frames must be at least 1, got {num_frames}")
    if int(start) != start or start < 0:
        raise DataError(f"{what}: start must be a frame index >= 0, got {start}")
    if int(stride) != stride or stride < 1:
        raise DataError(f"{what}: stride must be at least 1, got {stride}")
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise DataError(f"{what}: fps must be > 0 (or None to use stride), got {fps}")


def stride_for_fps(source_fps: float, fps: float | None, stride: int) -> int:
    """The stride that brings `source_fps` closest to the target `fps` (at least 1); `stride` when no target."""
    if fps is None:
        return int(stride)
    return max(1, round(source_fps / fps))


def _frame_indices(num_frames: int, start: int, stride: int) -> range:
    return range(start, start + num_frames * stride, stride)


def _too_few_frames(what: str, available: int, num_frames: int, start: int, stride: int) -> DataError:
    needed = start + (num_frames - 1) * stride + 1
    return DataError(
        f"{what} has only {available} frames, but {num_frames} frames from frame {start} at stride {stride} "
        f"need {needed}; lower the number of frames, the stride (or raise the target fps) or the start frame"
    )


# ----------------------------------------------------------------------------- resizing


def bucket_size(width: int, height: int, budget_width: int, budget_height: int) -> tuple[int, int]:
    """The training size for a `width x height` source at the pixel budget `budget_width * budget_height`
    (see the module docstring): multiples of 64, aspect ratio kept as closely as that allows."""
    budget = budget_width * budget_height
    aspect = width / height
    ideal_w, ideal_h = math.sqrt(budget * aspect), math.sqrt(budget / aspect)
    m = BUCKET_MULTIPLE
    w = max(m, int(math.floor(ideal_w / m + 0.5)) * m)
    h = max(m, int(math.floor(ideal_h / m + 0.5)) * m)
    while w * h > budget and (w > m or h > m):
        if (w / ideal_w >= h / ideal_h and w > m) or h == m:
            w -= m
        else:
            h -= m
    return w, h


def _target_size(src_w: int, src_h: int, width: int | None, height: int | None, bucket: bool, what: str) -> tuple[int, int]:
    """The size frames are fitted to; width/height None keep the source size, which must then suit the VAE."""
    if bucket:
        return bucket_size(src_w, src_h, width, height)
    if width is None:
        if src_w % 8 or src_h % 8:
            raise DataError(f"{what}: frames are {src_w}x{src_h}, not multiples of 8; set width and height to resize them")
        return src_w, src_h
    return int(width), int(height)


def fit_frame(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale `frame` ([H, W, 3], uint8 or float32) to cover `width x height`, then center-crop to it."""
    import cv2

    src_h, src_w = frame.shape[:2]
    if (src_w, src_h) == (width, height):
        return frame
    scale = max(width / src_w, height / src_h)
    new_w = max(width, round(src_w * scale))
    new_h = max(height, round(src_h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[top : top + height, left : left + width]


def _to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    """Fitted `[H, W, 3]` frames (uint8 or float32, even mixed) -> a fresh float32 `[F, H, W, 3]` tensor in 0..1."""
    floats = [f.astype(np.float32) / 255.0 if f.dtype == np.uint8 else f for f in frames]
    return torch.from_numpy(np.stack(floats).astype(np.float32, copy=False)).clamp_(0.0, 1.0)


# ----------------------------------------------------------------------------- in-memory frames


def _as_frame_list(frames, what: str) -> list[np.ndarray]:
    """Normalize what a caller hands over into a list of `[H, W, 3]` numpy frames (uint8 or float32).

    Accepts a tensor/array `[F, H, W, C]` or `[H, W, C]` (C = 3, or 1/4: grey or RGBA), floats in 0..1
    (ComfyUI's IMAGE) or uint8, or a list of such single frames. Inference-mode tensors are copied out."""
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise DataError(f"{what}: got an empty list of frames; pass at least one image")
        out: list[np.ndarray] = []
        for item in frames:
            out.extend(_as_frame_list(item, what))
        return out
    if isinstance(frames, torch.Tensor):  # also inference-mode tensors: the clip gets its own copy in the end
        frames = frames.detach().to("cpu")
        array = (frames.float() if frames.is_floating_point() else frames).numpy()  # numpy has no bfloat16
    else:
        array = np.asarray(frames)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
        raise DataError(f"{what}: expected frames shaped [F, H, W, 3] (or one image [H, W, 3]), got shape "
                        f"{tuple(array.shape)}; channels must be last")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        array = array[..., :3]
    if array.dtype == np.uint8:
        pass
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
        low, high = float(array.min()), float(array.max())
        if low < -0.01 or high > 1.01:
            raise DataError(f"{what}: float frames must be in 0..1 (ComfyUI's IMAGE), got values {low:.3g}..{high:.3g}; "
                            "divide 0..255 data by 255, or map -1..1 data with (x + 1) / 2")
    else:
        raise DataError(f"{what}: unsupported frame dtype {array.dtype}; pass float32 in 0..1 or uint8")
    return list(array)


def clip_from_frames(
    frames: torch.Tensor,
    *,
    prompt: str = "",
    num_frames: int = 16,
    start: int = 0,
    stride: int = 1,
    width: int | None = 384,
    height: int | None = 384,
    bucket: bool = False,
    source: str = "memory",
    fps: float | None = None,
) -> Clip:
    """A clip from frames already in memory (ComfyUI's IMAGE batch, a tensor, array or list of images).

    `fps` is the rate of the given frames (when known); the clip's fps is `fps / stride`. A single image
    (one frame) gives a 1-frame image clip whatever `num_frames` is. `width`/`height` None keep the
    frames' own size (then all frames must share it)."""
    what = "the frame batch" if source in ("memory", "frames") else f"the frames of {source}"
    _check_sampling(num_frames, start, stride, None, what)
    _check_size(width, height, bucket, what)
    frame_list = _as_frame_list(frames, what)
    if len(frame_list) == 1 and start == 0:
        indices = range(1)
    else:
        indices = _frame_indices(num_frames, start, stride)
        if indices[-1] >= len(frame_list):
            raise _too_few_frames(what, len(frame_list), num_frames, start, stride)
    picked = [frame_list[i] for i in indices]
    sizes = {f.shape[:2] for f in picked}
    if len(sizes) > 1 and width is None:
        raise DataError(f"{what}: frames have different sizes {sorted((w, h) for h, w in sizes)} (W, H) and no "
                        "width/height was given to resize them to; set width and height")
    src_h, src_w = picked[0].shape[:2]
    target = _target_size(src_w, src_h, width, height, bucket, what)
    fitted = [fit_frame(f, *target) for f in picked]
    clip_fps = None if fps is None else float(fps) / stride
    return Clip(frames=_to_tensor(fitted), prompt=prompt, source=source, fps=clip_fps)


# ----------------------------------------------------------------------------- files


def load_video(
    path,
    *,
    prompt: str = "",
    num_frames: int = 16,
    start: int = 0,
    stride: int = 1,
    fps: float | None = None,
    width: int | None = 384,
    height: int | None = 384,
    bucket: bool = False,
) -> Clip:
    """A clip from a video file. A target `fps` overrides `stride` (stride = round(source fps / fps), at
    least 1). Only frames up to the last picked one are decoded; each is fitted as it is read."""
    path = Path(path)
    what = f"video {path}"
    _check_sampling(num_frames, start, stride, fps, what)
    _check_size(width, height, bucket, what)
    with VideoReader(path) as reader:
        source_fps = reader.fps
        stride = stride_for_fps(source_fps, fps, stride)
        indices = _frame_indices(num_frames, start, stride)
        fitted: list[np.ndarray] = []
        target = None
        last_seen = -1
        for index, frame in reader.frames(indices):
            last_seen = index
            if target is None:
                target = _target_size(frame.shape[1], frame.shape[0], width, height, bucket, what)
            fitted.append(fit_frame(frame, *target))
        if len(fitted) < num_frames:
            if last_seen < 0 and start == 0:
                raise reader.unreadable_error("no frame could be decoded")
            available = _count_frames(path)
            raise _too_few_frames(what, available, num_frames, start, stride)
    return Clip(frames=_to_tensor(fitted), prompt=prompt, source=str(path), fps=source_fps / stride)


def _count_frames(path: Path) -> int:
    """The real frame count (containers can misreport it); only used for the error message."""
    with VideoReader(path) as again:
        return sum(1 for _ in again.frames())


def load_image(path, *, prompt: str = "", width: int = 384, height: int = 384, bucket: bool = False) -> Clip:
    """A 1-frame clip from an image file (EXIF rotation applied; alpha dropped)."""
    from PIL import Image, ImageOps

    path = Path(path)
    what = f"image {path}"
    _check_size(width, height, bucket, what)
    if not path.is_file():
        raise DataError(f"image not found: {path}; check the path")
    try:
        with Image.open(path) as image:
            array = np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.uint8)
    except Exception as e:  # Pillow raises several error types for bad files
        raise DataError(f"cannot read image {path} ({e}); the file is corrupt or not an image, replace or remove it") from e
    target = _target_size(array.shape[1], array.shape[0], width, height, bucket, what)
    return Clip(frames=_to_tensor([fit_frame(array, *target)]), prompt=prompt, source=str(path), fps=None)


def _caption(path: Path, prompt: str) -> str:
    """The caption of a file: its same-named `.txt` (first non-empty content), else the shared prompt."""
    caption_file = path.with_suffix(".txt")
    if caption_file.is_file():
        text = caption_file.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            return text
    return prompt


def _folder_files(folder: Path, extensions: Sequence[str]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith("."))


def _accepted() -> str:
    return f"videos ({' '.join(VIDEO_EXTENSIONS)}) or images ({' '.join(IMAGE_EXTENSIONS)})"


def _report_skipped(folder: Path, used: Sequence[str]) -> None:
    """Say which files of `folder` are not read (neither the kind in use nor a .txt caption), once per call."""
    skipped = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                     and p.suffix.lower() not in (*used, ".txt"))
    if skipped:
        kind = "videos" if used is VIDEO_EXTENSIONS else "images"
        logger.warning("%s: skipped %d file(s) that are not %s (%s): %s", folder, len(skipped), kind,
                       " ".join(used), ", ".join(skipped))


def _check_folder(folder) -> Path:
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"folder not found: {folder}; check the path")
    if not folder.is_dir():
        raise DataError(f"{folder} is a file, not a folder; pass the folder that holds the clips")
    return folder


def load_video_folder(folder, *, prompt: str = "", **options) -> list[Clip]:
    """One clip per video in `folder` (sorted by name); captions from same-named `.txt` files, else `prompt`.
    `options` are those of `load_video`."""
    folder = _check_folder(folder)
    videos = _folder_files(folder, VIDEO_EXTENSIONS)
    if not videos:
        raise DataError(f"no videos in {folder}; put video files there ({' '.join(VIDEO_EXTENSIONS)}), "
                        "or pass a folder of images for appearance training")
    _report_skipped(folder, VIDEO_EXTENSIONS)
    return [load_video(p, prompt=_caption(p, prompt), **options) for p in videos]


def load_image_folder(folder, *, prompt: str = "", width: int = 384, height: int = 384, bucket: bool = False) -> list[Clip]:
    """One 1-frame clip per image in `folder` (jpg/jpeg/png/webp/bmp, sorted by name), for appearance
    training; captions from same-named `.txt` files, else `prompt`."""
    folder = _check_folder(folder)
    images = _folder_files(folder, IMAGE_EXTENSIONS)
    if not images:
        raise DataError(f"no images in {folder}; put image files there ({' '.join(IMAGE_EXTENSIONS)})")
    _report_skipped(folder, IMAGE_EXTENSIONS)
    return [load_image(p, prompt=_caption(p, prompt), width=width, height=height, bucket=bucket) for p in images]


_IMAGE_OPTIONS = ("width", "height", "bucket")


def load_clips(path, *, prompt: str = "", **options) -> list[Clip]:
    """Clips from a video file, an image file, a folder of videos, or a folder of images (in that order of
    preference: a folder with videos is a video folder; its images are then ignored). Frame-sampling
    options do not apply to images and are ignored for them."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"not found: {path}; pass an existing video file, image file or folder")
    image_options = {k: v for k, v in options.items() if k in _IMAGE_OPTIONS}
    if path.is_file():
        if is_video_file(path):
            return [load_video(path, prompt=_caption(path, prompt), **options)]
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return [load_image(path, prompt=_caption(path, prompt), **image_options)]
        raise DataError(f"{path} is neither a video ({', '.join(VIDEO_EXTENSIONS)}) nor an image "
                        f"({', '.join(IMAGE_EXTENSIONS)}); convert it or pass a folder")
    if _folder_files(path, VIDEO_EXTENSIONS):
        return load_video_folder(path, prompt=prompt, **options)
    if _folder_files(path, IMAGE_EXTENSIONS):
        return load_image_folder(path, prompt=prompt, **image_options)
    found = sorted(p.name for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    raise DataError(f"{path} holds no {_accepted()}"
                    + (f" (it holds {', '.join(found[:8])}{', ...' if len(found) > 8 else ''})" if found else
                       " (it is empty)")
                    + "; add videos (for motion) or images (for appearance), or pass the right folder")
