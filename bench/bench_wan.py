"""Wan: peak memory and seconds per MotionDirector training step, and sampling time against WanPipeline.

Random weights at real size (the configs shipped in motion_lora/wan_configs): speed and memory do not depend
on the weights' values. The clip is cached (latents and UMT5 embeddings of the right shapes), as the trainer
caches them, so a step is the transformer's work only: the spatial path on one frame encoded as an image, the
temporal path on the whole clip (appearance-debiased loss), both optimizers.

Training configurations (each in its own process, so each peak is its own):
  diffusers+peft       a straightforward loop: peft adapters added with diffusers' `add_adapter`, bf16 autocast,
                       no gradient checkpointing
  diffusers+peft+ckpt  the same with diffusers' own `enable_gradient_checkpointing()`
  ours                 the library's step: `adapters.inject` (rank-space dropout), the backbone's objective and
                       checkpoint units (every block), bf16 autocast; with --fp8 the base linears stay fp8
  ours+offload         + the checkpointed blocks' inputs kept in CPU memory until their recomputation
                       (`TrainConfig(offload_activations=True)`, `grad_checkpoint.enable(offload=True)`): the
                       candidate for 14B in 24 GB
  ours+offload+swap    + the last --blocks-to-swap blocks' frozen weights in CPU memory, one block on the GPU at
                       a time while it runs (`TrainConfig(blocks_to_swap=N)`, `motion_lora.block_swap`)

    python bench/bench_wan.py --tiny                                   # CPU check: tiny Wan, 32x32, 5 frames
    python bench/bench_wan.py --model wan2.1_t2v_1.3B --device cuda    # 832x480, 49 frames, bf16 (GPU)
    python bench/bench_wan.py --model wan2.1_t2v_14B --device cuda --fp8 --config ours ours+offload ours+offload+swap
    python bench/bench_wan.py --tiny --what sampling --threads 1       # our sampler vs WanPipeline, same seed

Not measured yet on a GPU (no GPU in the sessions that wrote this).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

CONFIGS = ("diffusers+peft", "diffusers+peft+ckpt", "ours", "ours+offload", "ours+offload+swap")


def build_transformer(args):
    """The tiny Wan's transformer, or a real-size one with random weights made on the device (--fp8: fp8 linears)."""
    if args.tiny:
        from motion_lora.tiny_wan import build_tiny_wan

        return build_tiny_wan(seed=0).unet.to(args.device)
    from diffusers import WanTransformer3DModel

    from motion_lora.wan_files import FP8, Fp8Linear, _rebuild_buffers, architectures

    config = architectures()["architectures"][args.model]["transformer"]
    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(config)
    keep_fp32 = tuple(model._keep_in_fp32_modules)
    g = torch.Generator(args.device).manual_seed(0)
    modules = dict(model.named_modules())
    for name, p in list(model.named_parameters()):
        module_name, _, leaf = name.rpartition(".")
        module = modules[module_name]
        in_fp32 = any(part in keep_fp32 for part in name.split("."))
        dtype = torch.float32 if in_fp32 else torch.bfloat16
        value = torch.randn(p.shape, generator=g, device=args.device, dtype=dtype) * 0.02
        fp8 = args.fp8 and name.startswith("blocks.") and leaf == "weight" and isinstance(module, torch.nn.Linear)
        if fp8:
            value = value.to(FP8[0])
            module.__class__ = Fp8Linear
        setattr(module, leaf, torch.nn.Parameter(value, requires_grad=False))
    _rebuild_buffers(model)
    return model.to(args.device).eval()


def shapes(args, transformer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Clip latents [1, C, 1 + (F-1)/4, H/8, W/8] and text [1, 512, 4096]."""
    c = transformer.config.in_channels
    scale = 16 if c == 48 else 8
    clip = (1, c, 1 + (args.frames - 1) // 4, args.height // scale, args.width // scale)
    return clip, (1, 512, transformer.config.text_dim)


def train_steps(name: str, args) -> dict:
    from motion_lora import adapters as ad
    from motion_lora import block_swap
    from motion_lora.backbones import Wan
    from motion_lora.losses import mse, temporal_loss

    device = torch.device(args.device)
    transformer = build_transformer(args)
    backbone = Wan(placement=args.placement)
    objective = backbone.objective({"num_train_timesteps": 1000})
    clip_shape, text_shape = shapes(args, transformer)
    g = torch.Generator().manual_seed(0)
    clip = torch.randn(clip_shape, generator=g).to(device)
    image = torch.randn(clip_shape[:2] + (1,) + clip_shape[3:], generator=g).to(device)
    text = torch.randn(text_shape, generator=g).to(device, torch.bfloat16)
    spatial_targets, temporal_targets = backbone.spatial_targets(transformer), backbone.temporal_targets(transformer)

    if name.startswith("diffusers+peft"):
        from peft import LoraConfig

        for adapter, targets in (("spatial", spatial_targets), ("temporal", temporal_targets)):
            transformer.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=targets,
                                               init_lora_weights="gaussian", lora_dropout=0.1), adapter_name=adapter)
        if name.endswith("+ckpt"):
            transformer.enable_gradient_checkpointing()
        params = {a: [p for n, p in transformer.named_parameters() if f".{a}." in n and "lora_" in n]
                  for a in ("spatial", "temporal")}

        def activate(on: list[str], train: str):
            transformer.set_adapters(on)
            for a, ps in params.items():
                for p in ps:
                    p.requires_grad_(a == train)
    else:
        ad.inject(transformer, backbone, "spatial", ad.SPATIAL, args.rank, dropout=0.1)
        ad.inject(transformer, backbone, "temporal", ad.TEMPORAL, args.rank, dropout=0.1)
        params = {a: ad.adapter_parameters(transformer, [a]) for a in ("spatial", "temporal")}

        def activate(on: list[str], train: str):
            ad.set_strengths(transformer, {a: 1.0 for a in on})
            for a, ps in params.items():
                for p in ps:
                    p.requires_grad_(a == train)

    optimizers = {a: torch.optim.AdamW(ps, lr=1e-4) for a, ps in params.items()}
    units = backbone.checkpoint_units(transformer) if name.startswith("ours") else []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    transformer.train()
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    args.blocks_to_swap = args.blocks_to_swap or len(transformer.blocks) // 2
    swapped = args.blocks_to_swap if name == "ours+offload+swap" else 0
    trained = [p for ps in params.values() for p in ps]
    with block_swap.checkpointed(units, offload=name.startswith("ours+offload"), blocks_to_swap=swapped,
                                 device=device, keep=trained):
        for step in range(args.steps):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            t = objective.sample_timesteps(1, g).to(device)
            noise = torch.randn(clip_shape, generator=g).to(device)
            noisy, target = objective.add_noise(clip, noise, t), objective.target(clip, noise, t)
            # spatial path: one frame as an image, fresh noise, spatial LoRA only
            image_noise = torch.randn(image.shape, generator=g).to(device)
            activate(["spatial"], "spatial")
            with autocast:
                pred = backbone.predict(transformer, objective.add_noise(image, image_noise, t).to(torch.bfloat16),
                                        t, text)
            mse(pred, objective.target(image, image_noise, t)).backward()
            # temporal path: whole clip, both LoRAs on, only the temporal one learns
            activate(["spatial", "temporal"], "temporal")
            with autocast:
                pred = backbone.predict(transformer, noisy.to(torch.bfloat16), t, text)
            temporal_loss(pred, target, int(torch.randint(clip_shape[2], (1,), generator=g)), 1.0, 2)[0].backward()
            for opt in optimizers.values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    out = {"config": name, "s_per_step": sorted(times[1:] or times)[len(times[1:] or times) // 2]}
    if swapped:
        out["blocks_swapped"] = swapped
    if device.type == "cuda":
        out["peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        import resource

        out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def sampling(args) -> dict:
    """Our sampler and diffusers' WanPipeline on the same tiny Wan, same seed: time and largest difference."""
    from diffusers import WanPipeline

    from motion_lora.sampling import make_scheduler, sample_latents
    from motion_lora.tiny_wan import build_tiny_wan

    model = build_tiny_wan(seed=0)
    kw = dict(width=args.width, height=args.height, frames=args.frames)
    results = {}
    for scheduler in ("unipc", "euler"):
        pipe = WanPipeline(tokenizer=model.tokenizer, text_encoder=model.text_encoder, vae=model.vae,
                           transformer=model.unet,
                           scheduler=make_scheduler(scheduler, model.scheduler_config, model.backbone))
        pipe.set_progress_bar_config(disable=True)
        best = {"ours": float("inf"), "pipeline": float("inf")}
        for _ in range(args.repeats):
            start = time.perf_counter()
            want = pipe("a red car", negative_prompt="static", height=args.height, width=args.width,
                        num_frames=args.frames, num_inference_steps=args.sample_steps, guidance_scale=5.0,
                        generator=torch.Generator().manual_seed(0), output_type="latent").frames
            best["pipeline"] = min(best["pipeline"], time.perf_counter() - start)
            start = time.perf_counter()
            got = sample_latents(model, "a red car", "static", steps=args.sample_steps, guidance=5.0, seed=0,
                                 scheduler=scheduler, **kw)
            best["ours"] = min(best["ours"], time.perf_counter() - start)
        results[scheduler] = {**best, "max_diff": float((got - want).abs().max())}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", default="train", choices=["train", "sampling"])
    parser.add_argument("--tiny", action="store_true", help="the tiny Wan on the CPU (checks that the bench runs)")
    parser.add_argument("--model", default="wan2.1_t2v_1.3B",
                        help="a name in motion_lora/wan_configs/architectures.json")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--fp8", action="store_true", help="base linears in float8_e4m3fn (14B on 24 GB)")
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--steps", type=int, default=3, help="training steps per configuration (the first is warm-up)")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--placement", default="b", choices=["a", "b", "c"])
    parser.add_argument("--blocks-to-swap", type=int, default=0,
                        help="ours+offload+swap: blocks whose weights wait in CPU memory (default: half the blocks)")
    parser.add_argument("--config", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--sample-steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tiny:
        args.width, args.height, args.frames = min(args.width, 32), min(args.height, 32), min(args.frames, 5)
    if args.what == "sampling":
        print(json.dumps(sampling(args), indent=2))
        return
    if args.worker:
        print(json.dumps(train_steps(args.worker, args)))
        return
    rows = []
    for name in args.config:
        cmd = [sys.executable, __file__, "--worker", name] + [a for a in sys.argv[1:] if a != "--config"
                                                               and a not in CONFIGS]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            rows.append({"config": name, "error": (run.stderr.strip().splitlines() or ["?"])[-1]})
        else:
            rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    size = f"{args.width}x{args.height}x{args.frames}"
    print(f"\n{'tiny Wan' if args.tiny else args.model} {size}, rank {args.rank}, placement {args.placement}"
          f"{', fp8 base' if args.fp8 else ''} on {args.device}")
    for row in rows:
        mem = row.get("peak_gb", row.get("peak_rss_gb"))
        print(f"  {row['config']:22s} " + (row["error"] if "error" in row else
                                           f"{row['s_per_step']:.3f} s/step  peak {mem:.2f} GB"))


if __name__ == "__main__":
    main()
