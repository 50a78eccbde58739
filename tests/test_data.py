"""Training data: which frames are picked, how they are fitted, captions, image folders, memory, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from motion_lora.data import (
    Clip,
    DataError,
    bucket_size,
    clip_from_frames,
    load_clips,
    load_image_folder,
    load_video,
    load_video_folder,
)
from motion_lora.video_io import write_video
from tests.test_video_io import indexed_frames


def picked(clip: Clip) -> list[int]:
    """Which source frames a clip holds (red background = 12 * index; the top-left corner survives crops)."""
    red = clip.frames[:, :4, :4, 0].reshape(clip.num_frames, -1).median(dim=1).values
    return [int(round(float(r) * 255 / 12)) for r in red]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """20 frames of 96x64 at 24 fps."""
    return write_video(indexed_frames(), tmp_path_factory.mktemp("videos") / "square.mp4", fps=24.0)


# ----------------------------------------------------------------------------- frame selection


@pytest.mark.parametrize(
    "options, expected, fps",
    [
        (dict(num_frames=4), [0, 1, 2, 3], 24.0),
        (dict(num_frames=4, start=2, stride=3), [2, 5, 8, 11], 8.0),
        (dict(num_frames=5, start=15), [15, 16, 17, 18, 19], 24.0),
        (dict(num_frames=4, fps=8.0), [0, 3, 6, 9], 8.0),  # stride = round(24 / 8) = 3
        (dict(num_frames=4, fps=10.0, stride=5), [0, 2, 4, 6], 12.0),  # round(2.4) = 2; fps overrides stride
        (dict(num_frames=3, fps=60.0), [0, 1, 2], 24.0),  # never below stride 1
    ],
)
def test_frame_selection(video, options, expected, fps):
    clip = load_video(video, prompt="a square", width=64, height=64, **options)
    assert picked(clip) == expected
    assert clip.fps == pytest.approx(fps)
    assert clip.prompt == "a square" and clip.source == str(video)
    assert clip.frames.dtype == torch.float32 and clip.frames.shape == (len(expected), 64, 64, 3)
    assert 0.0 <= float(clip.frames.min()) and float(clip.frames.max()) <= 1.0


def test_too_few_frames_says_how_many_there_are(video):
    with pytest.raises(DataError, match=r"square\.mp4 has only 20 frames.*16 frames from frame 0 at stride 2 need 31.*lower"):
        load_video(video, num_frames=16, stride=2)
    with pytest.raises(DataError, match="only 20 frames"):
        load_video(video, num_frames=4, start=18)


# ----------------------------------------------------------------------------- fitting


def square_frame(width: int, height: int, side: int = 20) -> torch.Tensor:
    """A white square of `side` pixels centred on black: `[1, H, W, 3]`."""
    frame = torch.zeros(1, height, width, 3)
    top, left = (height - side) // 2, (width - side) // 2
    frame[:, top : top + side, left : left + side] = 1.0
    return frame


def square_extent(frames: torch.Tensor) -> tuple[int, int]:
    """(width, height) of the bright region of the first frame."""
    mask = frames[0, ..., 0] > 0.5
    return int(mask.any(dim=0).sum()), int(mask.any(dim=1).sum())


def test_resize_covers_and_center_crops_without_distortion():
    clip = clip_from_frames(square_frame(200, 100), width=64, height=128)
    assert clip.size == (64, 128)
    w, h = square_extent(clip.frames)
    assert w == h == pytest.approx(26, abs=1)  # scaled by 128/100, centred, still square
    mask = clip.frames[0, ..., 0] > 0.5
    cols = mask.any(dim=0).nonzero().flatten()
    assert abs((int(cols[0]) + int(cols[-1])) / 2 - 31.5) <= 1


def test_video_is_cropped_not_stretched(video):
    clip = load_video(video, num_frames=1, start=10, width=64, height=64)
    # 96x64 -> 64x64 keeps the height and cuts 16 columns each side: frame 10's square (16 px at x=42) stays 16x16
    green = clip.frames[0, ..., 1] > 0.5
    assert int(green.any(dim=1).sum()) == pytest.approx(16, abs=1)
    assert int(green.any(dim=0).sum()) == pytest.approx(16, abs=1)
    assert int(green.any(dim=0).nonzero()[0]) == pytest.approx(42 - 16, abs=1)


@pytest.mark.parametrize(
    "source, budget, expected",
    [
        ((576, 320), (384, 384), (512, 256)),
        ((320, 576), (384, 384), (256, 512)),
        ((1920, 1080), (384, 384), (512, 256)),
        ((500, 500), (384, 384), (384, 384)),
        ((640, 480), (512, 320), (448, 320)),
        ((4000, 100), (384, 384), (2304, 64)),
    ],
)
def test_bucket_sizes(source, budget, expected):
    assert bucket_size(*source, *budget) == expected


def test_buckets_are_multiples_of_64_within_budget():
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = (int(v) for v in rng.integers(16, 4000, size=2))
        bw, bh = (64 * int(v) for v in rng.integers(1, 12, size=2))
        bucket_w, bucket_h = bucket_size(w, h, bw, bh)
        assert bucket_w % 64 == 0 and bucket_h % 64 == 0 and bucket_w >= 64 and bucket_h >= 64
        assert bucket_w * bucket_h <= max(bw * bh, 64 * max(bucket_w, bucket_h))


def test_bucketing_keeps_the_aspect(video):
    clip = load_video(video, num_frames=2, width=128, height=128, bucket=True)
    assert clip.size == bucket_size(96, 64, 128, 128)
    wide = clip_from_frames(square_frame(576, 320), width=384, height=384, bucket=True)
    assert wide.size == (512, 256)
    w, h = square_extent(wide.frames)
    assert abs(w - h) <= 2  # the square stays a square


# ----------------------------------------------------------------------------- folders


def test_video_folder_captions(tmp_path):
    frames = indexed_frames(frames=6, height=64, width=64)
    for name in ("b", "a", "c"):
        write_video(frames, tmp_path / f"{name}.mp4")
    (tmp_path / "a.txt").write_text("  a dog running \n")
    (tmp_path / "c.txt").write_text("")
    (tmp_path / "notes.md").write_text("ignored")
    clips = load_video_folder(tmp_path, prompt="shared", num_frames=3, stride=2, width=64, height=64)
    assert [c.source.rsplit("/", 1)[-1] for c in clips] == ["a.mp4", "b.mp4", "c.mp4"]
    assert [c.prompt for c in clips] == ["a dog running", "shared", "shared"]
    assert all(picked(c) == [0, 2, 4] for c in clips)
    assert len(load_clips(tmp_path, num_frames=2, width=64, height=64)) == 3


def write_images(folder, sizes_and_formats):
    folder.mkdir(parents=True, exist_ok=True)
    for i, ((w, h), ext) in enumerate(sizes_and_formats):
        Image.new("RGB", (w, h), (12 * i, 100, 200)).save(folder / f"img{i}.{ext}")


def test_image_folder(tmp_path):
    write_images(tmp_path, [((100, 80), "png"), ((64, 200), "jpg"), ((300, 300), "webp"), ((90, 90), "bmp")])
    (tmp_path / "img1.txt").write_text("a red cup")
    clips = load_image_folder(tmp_path, prompt="photo", width=64, height=64)
    assert len(clips) == 4 and all(c.frames.shape == (1, 64, 64, 3) for c in clips)
    assert [c.prompt for c in clips] == ["photo", "a red cup", "photo", "photo"]
    assert picked(clips[0]) == [0] and picked(clips[3]) == [3]
    assert all(c.fps is None for c in clips)
    bucketed = load_image_folder(tmp_path, width=128, height=128, bucket=True)
    assert bucketed[1].size == bucket_size(64, 200, 128, 128)


def test_load_clips_picks_the_loader(tmp_path, video):
    assert [c.num_frames for c in load_clips(video, num_frames=3, width=64, height=64)] == [3]
    write_images(tmp_path / "images", [((80, 80), "png"), ((80, 80), "jpeg")])
    clips = load_clips(tmp_path / "images", prompt="p", num_frames=16, stride=2, fps=8, width=64, height=64)
    assert [c.frames.shape for c in clips] == [(1, 64, 64, 3)] * 2
    single = load_clips(tmp_path / "images" / "img0.png", width=64, height=64)
    assert single[0].num_frames == 1


# ----------------------------------------------------------------------------- in memory


def test_frames_in_memory():
    frames = indexed_frames(frames=10, height=64, width=96)
    clip = clip_from_frames(frames, prompt="p", num_frames=3, start=1, stride=4, width=64, height=64, fps=24.0)
    assert picked(clip) == [1, 5, 9] and clip.source == "memory" and clip.fps == 6.0
    as_uint8 = clip_from_frames((frames * 255).round().to(torch.uint8), num_frames=3, start=1, stride=4, width=64, height=64)
    assert torch.allclose(as_uint8.frames, clip.frames, atol=1 / 255)
    same_size = clip_from_frames(frames, num_frames=10, width=96, height=64)
    assert torch.equal(same_size.frames, frames) and same_size.frames.data_ptr() != frames.data_ptr()


def test_single_images_in_memory():
    image = square_frame(80, 48)[0]
    clip = clip_from_frames(image, num_frames=16, width=64, height=64)  # one image: a 1-frame clip
    assert clip.frames.shape == (1, 64, 64, 3)
    grey = clip_from_frames(torch.rand(2, 32, 32, 1), num_frames=2, width=32, height=32)
    assert grey.frames.shape == (2, 32, 32, 3)
    kept = clip_from_frames(torch.rand(1, 40, 24, 3), width=None, height=None)
    assert kept.size == (24, 40)
    mixed = clip_from_frames([torch.rand(40, 24, 3), torch.full((64, 64, 3), 255, dtype=torch.uint8)], num_frames=2,
                             width=32, height=32)
    assert mixed.frames.shape == (2, 32, 32, 3) and torch.equal(mixed.frames[1], torch.ones(32, 32, 3))
    half = clip_from_frames(torch.full((2, 32, 32, 3), 0.5, dtype=torch.bfloat16), num_frames=2, width=32, height=32)
    assert half.frames.dtype == torch.float32 and torch.allclose(half.frames, torch.full_like(half.frames, 0.5))


def test_inference_mode_tensors_are_copied_out():
    with torch.inference_mode():
        frames = torch.rand(4, 32, 32, 3)
    for width in (32, 64):  # without and with a resize
        clip = clip_from_frames(frames, num_frames=4, width=width, height=width)
        assert not clip.frames.is_inference()
        weight = torch.ones((), requires_grad=True)
        (clip.frames * weight).sum().backward()  # usable in training
        assert weight.grad is not None


# ----------------------------------------------------------------------------- errors


def test_bad_paths(tmp_path):
    with pytest.raises(DataError, match="not found.*missing.mp4"):
        load_video(tmp_path / "missing.mp4")
    with pytest.raises(DataError, match="not found.*nowhere"):
        load_clips(tmp_path / "nowhere")
    garbage = tmp_path / "x.mp4"
    garbage.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(DataError, match=r"cannot read video .*x\.mp4"):
        load_video(garbage)
    (tmp_path / "notes.txt").write_text("just text")
    with pytest.raises(DataError, match="neither a video.*nor an image"):
        load_clips(tmp_path / "notes.txt")


def test_empty_folders(tmp_path):
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "caption.txt").write_text("no media here")
    with pytest.raises(DataError, match="no images in .*text"):
        load_image_folder(tmp_path / "text")
    with pytest.raises(DataError, match=r"no videos in .*text; put video files there \(\.mp4 \.mov"):
        load_video_folder(tmp_path / "text")
    with pytest.raises(DataError, match=r"holds no videos \(\.mp4 .*\) or images \(\.jpg .*\) \(it holds caption\.txt\)"):
        load_clips(tmp_path / "text")


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(width=100), "width must be a positive multiple of 8.*got 100"),
        (dict(height=0), "height must be a positive multiple of 8"),
        (dict(width=96, bucket=True), "multiple of 64.*got 96"),
        (dict(width=None), "give both width and height"),
        (dict(num_frames=0), "num_frames must be at least 1"),
        (dict(stride=0), "stride must be at least 1"),
        (dict(start=-1), "start must be"),
        (dict(fps=0.0), "fps must be > 0"),
    ],
)
def test_bad_options(video, options, message):
    with pytest.raises(DataError, match=message):
        load_video(video, **options)


def test_bad_frames_in_memory():
    with pytest.raises(DataError, match="different sizes.*set width and height"):
        clip_from_frames([torch.rand(40, 24, 3), torch.rand(64, 64, 3)], num_frames=2, width=None, height=None)
    with pytest.raises(DataError, match="only 3 frames"):
        clip_from_frames(torch.rand(3, 32, 32, 3), num_frames=4, width=32, height=32)
    with pytest.raises(DataError, match=r"channels must be last"):
        clip_from_frames(torch.rand(4, 3, 32, 32), num_frames=4)
    with pytest.raises(DataError, match="0..1.*divide"):
        clip_from_frames(torch.rand(2, 32, 32, 3) * 255, num_frames=2, width=32, height=32)
    with pytest.raises(DataError, match="not multiples of 8"):
        clip_from_frames(torch.rand(2, 30, 30, 3), num_frames=2, width=None, height=None)


def test_unsupported_files_in_a_folder_are_reported(tmp_path, caplog):
    from PIL import Image

    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "a.png")
    Image.new("RGB", (32, 32)).save(folder / "b.tiff")
    (folder / "a.txt").write_text("a caption")  # captions are expected, never reported
    with caplog.at_level("WARNING"):
        clips = load_clips(folder, width=32, height=32)
    assert len(clips) == 1 and clips[0].prompt == "a caption"
    assert "skipped 1 file(s) that are not images" in caplog.text and "b.tiff" in caplog.text
    assert "a.txt" not in caplog.text


def test_too_few_frames_in_memory_reads_plainly():
    with pytest.raises(DataError, match=r"^the frame batch has only 2 frames, but 4 frames"):
        clip_from_frames(torch.rand(2, 32, 32, 3), num_frames=4, width=32, height=32, source="frames")
