"""The README's main job: learn a motion from one clip with the built-in tiny model, then apply it.

It runs the whole method end to end on a CPU in about a minute: read a clip, train the
dual-path LoRAs, save the motion LoRA, sample a new video with it, write it to disk.
The tiny model has random weights, so the video shows noise shaped by the learnt
motion rather than a car: the point is the pipeline, not the picture.
"""

from __future__ import annotations

from pathlib import Path

import torch

SAMPLE_CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "car_turn" / "car-turn.mp4"
SIZE, FRAMES = 64, 8


def synthetic_clip(frames: int = FRAMES, size: int = SIZE) -> torch.Tensor:
    """A red square crossing a blue-green gradient from left to right: `[F, H, W, 3]` in 0..1."""
    ramp = torch.linspace(0.1, 0.9, size)
    video = torch.stack([ramp.view(1, -1).expand(size, size) * 0.3, ramp.view(-1, 1).expand(size, size),
                         torch.full((size, size), 0.6)], dim=-1).expand(frames, size, size, 3).clone()
    side = size // 4
    for f in range(frames):
        x = (size - side) * f // max(1, frames - 1)
        video[f, size // 3 : size // 3 + side, x : x + side] = torch.tensor([0.9, 0.1, 0.1])
    return video


def run_demo(output: str | Path = "outputs/demo", clip: str | Path | None = None, steps: int = 30) -> dict:
    """Train on `clip` (default: the shared car-turn sample if present, else a generated clip); returns the paths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's ops are too small to split: one thread is many times faster
    try:
        return _run(Path(output), clip, steps)
    finally:
        torch.set_num_threads(threads)


def _run(output: Path, clip, steps: int) -> dict:
    from .data import load_video
    from .lora_file import save_adapter
    from .sampling import sample
    from .tiny import build_tiny_model
    from .training import TrainConfig, train
    from .video_io import write_video

    output.mkdir(parents=True, exist_ok=True)
    if clip is None:
        if SAMPLE_CLIP.is_file():
            clip = SAMPLE_CLIP
        else:
            clip = write_video(synthetic_clip(), output / "input_clip.mp4", fps=8)
    print(f"motion clip: {clip}")
    data = load_video(clip, prompt="A car is running on the road.", num_frames=FRAMES, stride=2 if clip == SAMPLE_CLIP else 1,
                      width=SIZE, height=SIZE)
    model = build_tiny_model(seed=0)
    config = TrainConfig.from_recipe("single-video", steps=steps, checkpoint_every=steps, rank=8, seed=0,
                                     spatial_lr=1e-3, temporal_lr=1e-3)
    run_dir = _fresh(output / "run")
    result = train(model, [data], config, run_dir=run_dir)
    losses = [h["loss_temporal"] for h in result.history if h.get("loss_temporal") is not None]
    window = max(1, len(losses) // 5)
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    print(f"trained {result.step} steps; temporal loss (mean of {window} steps) {first:.4f} -> {last:.4f}")
    motion_path = save_adapter(result.temporal, output / "motion.safetensors", overwrite=True)
    frames = sample(model, "A tiger is running on the road.", width=SIZE, height=SIZE, frames=FRAMES, steps=10,
                    guidance=6.0, seed=1, adapters=[(result.temporal, 1.0)])
    video = write_video(frames, output / "sample.mp4", fps=8)
    print(f"motion LoRA: {motion_path}\nvideo: {video}")
    return {"motion": motion_path, "video": video, "run_dir": result.run_dir}


def _fresh(folder: Path) -> Path:
    """`folder`, or `folder_2`, `folder_3`, ... : a demo run never overwrites an earlier one."""
    candidate, n = folder, 1
    while candidate.exists():
        n += 1
        candidate = folder.with_name(f"{folder.name}_{n}")
    return candidate
