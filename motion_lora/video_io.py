"""Reading and writing video files: opencv for real video containers, Pillow for GIFs.

Reading is lazy (`VideoReader.frames` stops after the last frame it was asked for) so
sampling 16 frames from the start of a long video never decodes the rest of it.
`DataError` lives here, not in `data`, because both modules raise it and `data` imports
this one; `motion_lora.data` re-exports it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

DEFAULT_FPS = 8.0  # what MotionDirector renders at; used when a container does not say
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif")
OPENCV_WRITE_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".m4v")


class DataError(ValueError):
    """Bad training input (file, folder or frames); the message names the input and the fix."""


def is_video_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


class VideoReader:
    """An open video: `fps`, `frame_count` (as the container reports it; 0 when unknown),
    `width`, `height`, and lazy frame access. Use as a context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"video not found: {self.path}; check the path (it must be an existing file)")
        self._gif = self.path.suffix.lower() == ".gif"
        self._cap = None
        self._image = None
        if self._gif:
            self._open_gif()
        else:
            self._open_opencv()

    def unreadable_error(self, why: str) -> DataError:
        """The error for a file that is there but cannot be decoded."""
        return DataError(
            f"cannot read video {self.path}: {why}. The file is corrupt, empty or in a codec opencv cannot "
            "decode; re-encode it (e.g. `ffmpeg -i in.mov -c:v libx264 -pix_fmt yuv420p out.mp4`) or choose another file"
        )

    def _open_opencv(self) -> None:
        import cv2

        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise self.unreadable_error("opencv could not open it")
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and math.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS
        self.frame_count = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)

    def _open_gif(self) -> None:
        from PIL import Image

        try:
            image = Image.open(self.path)
            image.seek(0)
        except Exception as e:  # Pillow raises several error types for bad files
            raise self.unreadable_error(f"Pillow could not open it ({e})") from e
        self._image = image
        duration_ms = image.info.get("duration") or 0
        self.fps = 1000.0 / duration_ms if duration_ms > 0 else DEFAULT_FPS
        self.frame_count = int(getattr(image, "n_frames", 1))
        self.width, self.height = image.size

    def frames(self, indices: Iterable[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield `(index, frame)` for the wanted frame indices (all when None), RGB uint8 `[H, W, 3]`,
        in increasing order. Decoding stops after the last wanted frame; frames in between are
        skipped without colour conversion. Stops early, without error, when the video ends:
        callers compare what they got with what they asked for."""
        wanted = None if indices is None else sorted(set(int(i) for i in indices))
        if wanted is not None and not wanted:
            return
        last = None if wanted is None else wanted[-1]
        wanted_set = None if wanted is None else set(wanted)
        step = self._gif_frames() if self._gif else self._opencv_frames(wanted_set)
        for index, frame in step:
            if wanted_set is None or index in wanted_set:
                yield index, frame
            if last is not None and index >= last:
                return

    def _opencv_frames(self, wanted: set[int] | None) -> Iterator[tuple[int, np.ndarray | None]]:
        import cv2

        index = 0
        while True:
            if not self._cap.grab():
                return
            frame = None
            if wanted is None or index in wanted:
                ok, bgr = self._cap.retrieve()
                if not ok or bgr is None:
                    return
                frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            yield index, frame
            index += 1

    def _gif_frames(self) -> Iterator[tuple[int, np.ndarray]]:
        for index in range(self.frame_count):
            self._image.seek(index)
            yield index, np.asarray(self._image.convert("RGB"), dtype=np.uint8).copy()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self._image is not None:
            self._image.close()
            self._image = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """All frames of a video as RGB uint8 `[F, H, W, 3]`, and its fps (8.0 when the file has none)."""
    with VideoReader(path) as reader:
        frames = [frame for _, frame in reader.frames()]
        fps = reader.fps
    if not frames:
        raise DataError(f"video {Path(path)} has no frames (empty or corrupt); re-encode it or choose another file")
    return np.stack(frames), fps


def to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """`[F, H, W, 3]` floats in 0..1 (or uint8) -> uint8 numpy, rounding rather than truncating."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        if frames.dtype == torch.uint8:
            return frames.numpy()
        return (frames.float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)


def write_video(frames: torch.Tensor, path: str | Path, fps: float = DEFAULT_FPS) -> Path:
    """Write `[F, H, W, 3]` frames (floats 0..1 or uint8) to `.mp4` (opencv, `mp4v`; also .mov/.avi/.mkv/.m4v)
    or `.gif` (Pillow, looping). Creates parent folders; returns the path. mp4v needs even sizes, so an odd
    height or width is padded by one repeated edge pixel."""
    path = Path(path)
    data = to_uint8(frames)
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4 or data.shape[-1] != 3 or data.shape[0] == 0:
        raise DataError(f"write_video({path}): expected frames [F, H, W, 3] with F >= 1, got shape {tuple(data.shape)}")
    if not fps or fps <= 0:
        raise DataError(f"write_video({path}): fps must be > 0, got {fps}")
    suffix = path.suffix.lower()
    if suffix not in OPENCV_WRITE_EXTENSIONS and suffix != ".gif":
        raise DataError(f"write_video({path}): unsupported extension {suffix!r}; use .mp4 or .gif")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        _write_gif(data, path, fps)
    else:
        _write_opencv(data, path, fps)
    return path


def _write_gif(data: np.ndarray, path: Path, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(frame) for frame in data]
    duration = max(10, int(round(1000.0 / fps)))  # GIF stores centiseconds; browsers clamp below 20 ms
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0, optimize=False)


def _write_opencv(data: np.ndarray, path: Path, fps: float) -> None:
    import cv2

    if data.shape[1] % 2 or data.shape[2] % 2:  # mp4v drops an odd last row/column: keep it by repeating it
        data = np.pad(data, ((0, 0), (0, data.shape[1] % 2), (0, data.shape[2] % 2), (0, 0)), mode="edge")
    height, width = data.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise DataError(f"write_video({path}): opencv could not open a {width}x{height} mp4v writer; check the folder is writable")
    try:
        for frame in data:
            writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
