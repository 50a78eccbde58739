"""How fast is our sampling loop next to diffusers' TextToVideoSDPipeline at equal settings?

Both run on the same model, scheduler, steps, frames, size and guidance, in the same
process, in interleaved repetitions (alternating which goes first); the printed ratio is
median(ours) / median(pipeline), so below 1.0 means our loop is faster. It is printed for
wall time and for this process's CPU time: on a CPU shared with other jobs, run with
`--threads 1` and read the CPU-time ratio (threads waiting for a busy core distort both).

    python bench/bench_sampler.py                                  # tiny model, CPU
    python bench/bench_sampler.py --unet-config /work/shared/bench/zeroscope_bench_unet.json \
        --frames 16 --size 256                                     # ZeroScope layout, random weights
    python bench/bench_sampler.py --unet-config /work/shared/bench/zeroscope_unet.json --device cuda --dtype fp16 \
        --size 384
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from motion_lora.model import DTYPES, VideoModel  # noqa: E402
from motion_lora.sampling import SCHEDULERS, make_scheduler, sample  # noqa: E402
from motion_lora.tiny import TEXT_CONFIG, build_tiny_model  # noqa: E402


def build_model(unet_config: str | None, device: str, dtype: torch.dtype) -> VideoModel:
    """The tiny model, or a UNet with random weights from `unet_config` paired with the tiny VAE and a
    tiny text encoder as wide as the UNet's cross-attention (the UNet dominates the cost)."""
    model = build_tiny_model(seed=0)
    if unet_config:
        from diffusers import UNet3DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        config = {k: v for k, v in json.loads(Path(unet_config).read_text()).items() if not k.startswith("_")}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model.unet = UNet3DConditionModel.from_config(config).requires_grad_(False).eval()
            width = model.unet.config.cross_attention_dim
            text = dict(TEXT_CONFIG, hidden_size=width, projection_dim=width)
            tok = model.tokenizer
            model.text_encoder = CLIPTextModel(CLIPTextConfig(
                vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, **text)).requires_grad_(False).eval()
    for part in (model.unet, model.vae, model.text_encoder):
        part.to(device=device)
        if dtype != torch.float32:
            part.to(dtype=dtype)
    model.dtype = dtype
    return model


def pipeline_for(model: VideoModel, scheduler: str):
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_synth import (
        TextToVideoSDPipeline,
    )

    pipe = TextToVideoSDPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                 unet=model.unet, scheduler=make_scheduler(scheduler, model.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): on a shared CPU the second is the steadier one."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet-config", help="UNet3DConditionModel config JSON (random weights); default: tiny model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--scheduler", default="ddim", choices=list(SCHEDULERS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="width and height in pixels")
    parser.add_argument("--guidance", type=float, default=12.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--decode-chunk", type=int, default=0,
                        help="frames per VAE decode call in our loop (0: all at once, as the pipeline does)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build_model(args.unet_config, args.device, DTYPES[args.dtype])
    pipe = pipeline_for(model, args.scheduler)
    prompt, negative = "a car driving on a road", ""
    size = dict(width=args.size, height=args.size)

    def ours():
        sample(model, prompt, negative, frames=args.frames, steps=args.steps, guidance=args.guidance,
               seed=0, scheduler=args.scheduler, decode_chunk=args.decode_chunk or args.frames, **size)

    def theirs():
        pipe(prompt, negative_prompt=negative, num_frames=args.frames, num_inference_steps=args.steps,
             guidance_scale=args.guidance, generator=torch.Generator().manual_seed(0), output_type="pt", **size)

    timed(ours), timed(theirs)  # warm-up: allocator, kernels, lazy imports
    times: dict[str, list[tuple[float, float]]] = {"ours": [], "pipeline": []}
    for r in range(args.repeats):
        order = [("ours", ours), ("pipeline", theirs)]
        for name, fn in order if r % 2 == 0 else reversed(order):
            times[name].append(timed(fn))

    params = sum(p.numel() for p in model.unet.parameters()) / 1e6
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{torch.get_num_threads()}"
    print(f"UNet {params:.1f}M params on {device}, {args.dtype}, {args.scheduler}, {args.steps} steps, "
          f"{args.frames} frames {args.size}x{args.size}, guidance {args.guidance}, {args.repeats} repeats")
    stats = {}
    for name, ts in times.items():
        walls, cpus = [t[0] for t in ts], [t[1] for t in ts]
        stats[name] = (statistics.median(walls), statistics.median(cpus), min(walls))
        print(f"  {name:9s} median wall {stats[name][0]:.3f} s, CPU {stats[name][1]:.3f} s, fastest {min(walls):.3f} s "
              f"(wall: {', '.join(f'{w:.3f}' for w in walls)})")
    a, b = stats["ours"], stats["pipeline"]
    print(f"ratio ours / pipeline = {a[0] / b[0]:.3f} (median wall time), {a[1] / b[1]:.3f} "
          f"(median process CPU time), {a[2] / b[2]:.3f} (fastest run)")


if __name__ == "__main__":
    main()
