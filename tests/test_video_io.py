"""Video files: mp4 and gif round trips, lazy reading, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from motion_lora.video_io import DEFAULT_FPS, DataError, VideoReader, read_video, write_video


def indexed_frames(frames: int = 20, height: int = 64, width: int = 96) -> torch.Tensor:
    """Background red = 12 * frame index (so a read-back frame says which one it is), a moving green square."""
    out = torch.zeros(frames, height, width, 3)
    for f in range(frames):
        out[f, ..., 0] = 12 * f / 255
        x = (width - 16) * f // max(1, frames - 1)
        out[f, 24:40, x : x + 16, 1] = 1.0
    return out


def frame_ids(frames: np.ndarray) -> list[int]:
    """Which indexed frame each read-back frame is, from the red level of its top-left corner."""
    red = frames[:, :8, :8, 0].reshape(len(frames), -1).astype(np.float32)
    return [int(round(float(np.median(r)) / 12)) for r in red]


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_write_then_read_round_trip(tmp_path, suffix):
    frames = indexed_frames()
    path = write_video(frames, tmp_path / "deep" / "folder" / f"clip{suffix}", fps=10.0)
    assert path == tmp_path / "deep" / "folder" / f"clip{suffix}" and path.is_file()
    data, fps = read_video(path)
    assert data.dtype == np.uint8 and data.shape == (20, 64, 96, 3)
    assert fps == pytest.approx(10.0, rel=0.05)
    assert frame_ids(data) == list(range(20))
    # RGB order, not opencv's BGR: the square is green, the background has no green
    assert data[10, 28:36, :, 1].max() > 200 and data[10, :8, :8, 1].max() < 40


def test_uint8_frames_and_odd_sizes(tmp_path):
    frames = (indexed_frames(frames=5, height=33, width=47) * 255).round().to(torch.uint8)
    data, _ = read_video(write_video(frames, tmp_path / "odd.mp4"))
    assert data.shape == (5, 34, 48, 3)  # mp4v needs even sizes: one edge pixel is repeated
    assert frame_ids(data) == list(range(5))


def test_gif_without_duration_reads_at_default_fps(tmp_path):
    path = tmp_path / "plain.gif"
    images = [Image.new("RGB", (32, 16), (12 * i, 0, 0)) for i in range(3)]
    images[0].save(path, save_all=True, append_images=images[1:])
    data, fps = read_video(path)
    assert data.shape == (3, 16, 32, 3) and fps == DEFAULT_FPS


def test_reader_stops_after_the_last_wanted_frame(tmp_path, monkeypatch):
    import cv2

    path = write_video(indexed_frames(), tmp_path / "long.mp4")
    grabs = []
    real = cv2.VideoCapture

    class CountingCapture:
        def __init__(self, *args):
            self._cap = real(*args)

        def grab(self):
            grabs.append(1)
            return self._cap.grab()

        def __getattr__(self, name):
            return getattr(self._cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", CountingCapture)
    with VideoReader(path) as reader:
        assert reader.frame_count == 20 and (reader.width, reader.height) == (96, 64)
        got = list(reader.frames([6, 0, 3]))
    assert [i for i, _ in got] == [0, 3, 6]
    assert frame_ids(np.stack([f for _, f in got])) == [0, 3, 6]
    assert len(grabs) == 7


def test_missing_garbage_and_empty_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not found.*nothere.mp4"):
        read_video(tmp_path / "nothere.mp4")
    garbage = tmp_path / "x.mp4"
    garbage.write_bytes(b"definitely not a video" * 50)
    with pytest.raises(DataError, match=r"cannot read video .*x\.mp4.*re-encode"):
        read_video(garbage)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.mp4"):
        read_video(empty)
    bad_gif = tmp_path / "bad.gif"
    bad_gif.write_bytes(b"GIF89a nonsense")
    with pytest.raises(DataError, match="bad.gif"):
        read_video(bad_gif)


def test_write_refuses_bad_input(tmp_path):
    with pytest.raises(DataError, match="unsupported extension"):
        write_video(indexed_frames(2), tmp_path / "clip.webp")
    with pytest.raises(DataError, match=r"\[F, H, W, 3\]"):
        write_video(torch.zeros(2, 3, 16, 16), tmp_path / "clip.mp4")
    with pytest.raises(DataError, match="fps"):
        write_video(indexed_frames(2), tmp_path / "clip.mp4", fps=0)
