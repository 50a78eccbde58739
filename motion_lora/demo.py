"""The README's main job: learn a motion the model has never seen from one clip, apply it to another prompt.

It runs on the pretrained toy model (`motion_lora.toyworld`): the clip is a red square
moving in a zig-zag on a gray background, a motion absent from the model's pretraining.
MotionDirector's dual-path training learns it in well under two minutes on a CPU; the
motion LoRA then drives "a blue circle ... on a black background". The demo writes the
side by side (reference | the model without the LoRA | with it) and prints the exact
toy-world metrics for both samples, so the motion transfer is measured, not just shown.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

REFERENCE = dict(colour="red", shape="square", motion="zigzag", background="gray", seed=0)
PROMPT = "a blue circle moving in a zig-zag on a black background"
STEPS = 150
SETTINGS = dict(rank=16, spatial_lr=2e-3, temporal_lr=2e-3, gradient_checkpointing=False)
SAMPLE_SEED = 1


def run_demo(output: str | Path = "outputs/demo", clip: str | Path | None = None, steps: int = STEPS,
             prompt: str = PROMPT, seed: int = SAMPLE_SEED) -> dict:
    """Train on `clip` (default: the rendered zig-zag clip), sample `prompt`; returns paths and metrics."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the toy model's ops are too small to split: one thread is faster
    try:
        return _run(Path(output), clip, steps, prompt, seed)
    finally:
        torch.set_num_threads(threads)


def _run(output: Path, clip, steps: int, prompt: str, seed: int) -> dict:
    from .data import load_video
    from .lora_file import save_adapter
    from .toyworld import metrics
    from .toyworld.evaluate import generate, side_by_side
    from .toyworld.model import load_toy_model
    from .toyworld.world import FRAMES, SIZE, render
    from .training import TrainConfig, train
    from .video_io import write_video

    output.mkdir(parents=True, exist_ok=True)
    start = time.time()
    if clip is None:
        toy = render(**REFERENCE)
        data = toy.as_clip()
        write_video(toy.frames, output / "reference.mp4", fps=8)
    else:
        data = load_video(clip, prompt="an object moving", num_frames=FRAMES, width=SIZE, height=SIZE)
    print(f"motion clip: {data.source} ({data.prompt!r})")
    model = load_toy_model()
    config = TrainConfig.from_recipe("single-video", steps=steps, checkpoint_every=steps, seed=0, **SETTINGS)
    result = train(model, [data], config, run_dir=_fresh(output / "run"))
    print(f"trained {result.step} steps in {time.time() - start:.0f} s")
    motion_path = save_adapter(result.temporal, output / "motion.safetensors", overwrite=True)
    base = generate(model, prompt, seed=seed)
    tuned = generate(model, prompt, seed=seed, adapters=[(result.temporal, 1.0)])
    scores = {"without LoRA": metrics.score(data.frames, base, prompt, data.prompt),
              "with motion LoRA": metrics.score(data.frames, tuned, prompt, data.prompt)}
    print(f"prompt: {prompt!r}")
    for name, s in scores.items():
        print(f"  {name:17s} " + "  ".join(f"{k} {_fmt(v)}" for k, v in s.items()))
    both = side_by_side(data.frames, base, tuned)
    video = write_video(tuned, output / "sample.mp4", fps=8)
    sbs = write_video(both, output / "side_by_side.mp4", fps=4)
    gif = write_video(both, output / "side_by_side.gif", fps=4)
    (output / "metrics.json").write_text(json.dumps(scores, indent=2))
    print(f"motion LoRA: {motion_path}\nvideo: {video}\nside by side (reference | without | with): {sbs}, {gif}\n"
          f"total {time.time() - start:.0f} s")
    return {"motion": motion_path, "video": video, "side_by_side": sbs, "gif": gif, "run_dir": result.run_dir,
            "metrics": scores}


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _fresh(folder: Path) -> Path:
    """`folder`, or `folder_2`, `folder_3`, ... : a demo run never overwrites an earlier one."""
    candidate, n = folder, 1
    while candidate.exists():
        n += 1
        candidate = folder.with_name(f"{folder.name}_{n}")
    return candidate
