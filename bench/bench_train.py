"""Time per training step and peak memory of the MotionDirector trainer, against a straightforward loop.

The model is a ZeroScope-shaped UNet3D with random weights (zeroscope_bench_unet.json, about
62 M parameters; --unet-config zeroscope_unet.json for the full 1.41 B size on a GPU), a
small CLIP text encoder with ZeroScope's 1024-wide embeddings, and the tiny model's VAE
and tokenizer: speed and memory do not depend on the weights' values.

Configurations (each runs in its own process, so peak memory is its own):
  baseline        a straightforward dual-path loop written below: VAE and text encoder every step,
                  peft's full-input LoRA dropout, no checkpointing, fp32 compute
  baseline+cache  the same loop with latents and text embeddings cached
  ours            motion_lora.training.train: cached latents, rank-space dropout
  ours+ckpt       + gradient checkpointing
  ours+amp        + mixed precision (bf16 autocast on CPU, fp16 on CUDA)
  ours+ckpt+amp   both
  official        the official trainer's habits on the straightforward loop: latents cached to disk and re-read
                  every step, text encoder every step, full-input dropout, retain_graph, with the official
                  gradient checkpointing (every resnet and transformer) and fp16/bf16 autocast
  ours+attn-ckpt+amp  ours, checkpointing only the transformers (gradient_checkpointing="attention")

    python bench/bench_train.py                        # CPU, 16 frames, 256x256 pixels (32x32 latents)
    python bench/bench_train.py --device cuda --unet-config bench/zeroscope_unet.json --size 384 --dtype fp16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

CONFIGS = {
    "baseline": dict(reference=True, cache=False, checkpointing=False, amp=False),
    "baseline+cache": dict(reference=True, cache=True, checkpointing=False, amp=False),
    "ours": dict(reference=False, checkpointing=False, amp=False),
    "ours+ckpt": dict(reference=False, checkpointing=True, amp=False),
    "ours+amp": dict(reference=False, checkpointing=False, amp=True),
    "ours+ckpt+amp": dict(reference=False, checkpointing=True, amp=True),
    "official": dict(reference=True, cache=False, checkpointing=True, amp=True, official=True),
    "ours+attn-ckpt+amp": dict(reference=False, checkpointing="attention", amp=True),
}


def build_model(unet_config: Path, dtype: torch.dtype, device: str):
    """The bench UNet (random weights) with a 1024-wide text encoder and the tiny model's VAE and tokenizer."""
    from diffusers import UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from motion_lora.model import VideoModel
    from motion_lora.tiny import build_tiny_model

    tiny = build_tiny_model(seed=0)
    torch.manual_seed(0)
    with torch.device(device):  # random init straight on the device: seconds instead of a minute for 1.4 B
        unet = UNet3DConditionModel.from_config(json.loads(unet_config.read_text()))
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tiny.tokenizer), hidden_size=unet.config.cross_attention_dim,
                                        intermediate_size=1024, num_hidden_layers=2, num_attention_heads=16,
                                        max_position_embeddings=77, projection_dim=unet.config.cross_attention_dim,
                                        bos_token_id=tiny.tokenizer.bos_token_id,
                                        eos_token_id=tiny.tokenizer.eos_token_id,
                                        pad_token_id=tiny.tokenizer.pad_token_id))
    for part in (unet, text, tiny.vae):
        part.requires_grad_(False).eval().to(device=device, dtype=dtype)
    return VideoModel(unet, tiny.vae, text, tiny.tokenizer, tiny.scheduler_config, tiny.backbone, "bench", dtype)


def frames(count: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(count, size, size, 3, generator=g)


# --- the straightforward loop to compare with -----------------------------------------------------------


def reference_train(model, clip, steps: int, cache: bool, rank: int, on_step, official: bool = False,
                    checkpointing: bool = False, amp_dtype=None) -> None:
    """Dual-path MotionDirector done the obvious way: re-encode every step, full-input LoRA dropout.

    `official` mimics the official trainer instead: latents encoded once to a file and read
    back every step, the text encoder every step, retain_graph on the first backward.
    """
    import contextlib

    from diffusers import DDPMScheduler
    from torch import nn

    from motion_lora import adapters, grad_checkpoint
    from motion_lora.losses import mse, temporal_loss

    unet, backbone, device = model.unet, model.backbone, model.device
    for name in ("spatial", "temporal"):
        adapters.inject(unet, backbone, name, name, rank)
    for _, layer in adapters.lora_layers(unet):  # peft's own dropout: a mask over every input feature
        for name in layer.lora_dropout:
            layer.lora_dropout[name] = nn.Dropout(0.1)
    spatial, temporal = (adapters.adapter_parameters(unet, [n]) for n in ("spatial", "temporal"))
    opt_s = torch.optim.AdamW(spatial, lr=5e-4, weight_decay=1e-2)
    opt_t = torch.optim.AdamW(temporal, lr=5e-4, weight_decay=1e-2)
    scheduler = DDPMScheduler.from_config(model.scheduler_config)
    unet.train()
    latents = text = None
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    cached_file = None
    if official:  # the official trainer caches latents to disk once and reads them back every step
        cached_file = Path(tempfile.mkdtemp()) / "cached_latents.pt"
        torch.save(model.encode_frames(clip).float().cpu(), cached_file)
    units = backbone.checkpoint_units(unet, "all") if checkpointing else []
    with grad_checkpoint.checkpointed(units):
        for step in range(steps):
            if official:
                latents = torch.load(cached_file, weights_only=True).to(device)
                text = model.encode_prompt("a car driving along a road")
            elif latents is None or not cache:
                latents = model.encode_frames(clip).float()
                text = model.encode_prompt("a car driving along a road")
            noise = torch.randn_like(latents)
            t = torch.randint(1000, (1,), device=device)
            noisy = scheduler.add_noise(latents, noise, t)
            i, j = (int(x) for x in torch.randint(latents.shape[2], (2,)))
            adapters.set_strengths(unet, {"spatial": 1.0})
            adapters.set_trainable(unet, ["temporal"], False)
            adapters.set_trainable(unet, ["spatial"], True)
            with autocast:
                pred = backbone.predict(unet, noisy[:, :, i : i + 1].to(model.dtype), t, text)
            mse(pred, noise[:, :, i : i + 1]).backward(retain_graph=official)
            adapters.set_strengths(unet, {"spatial": 1.0, "temporal": 1.0})
            adapters.set_trainable(unet, ["spatial"], False)
            adapters.set_trainable(unet, ["temporal"], True)
            with autocast:
                pred = backbone.predict(unet, noisy.to(model.dtype), t, text)
            temporal_loss(pred, noise, j)[0].backward()
            opt_s.step()
            opt_t.step()
            opt_s.zero_grad(set_to_none=True)
            opt_t.zero_grad(set_to_none=True)
            on_step()


# --- one configuration, in this process --------------------------------------------------------------------


def run_one(name: str, args) -> dict:
    from motion_lora.data import Clip
    from motion_lora.training import TrainCallbacks, TrainConfig, train

    spec = CONFIGS[name]
    cuda = args.device == "cuda"
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    model = build_model(Path(args.unet_config), dtype, args.device)
    clip = frames(args.frames, args.size)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    stamps = []

    def mark(*_):
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    start = time.perf_counter()
    amp = (args.amp or ("fp16" if cuda else "bf16")) if spec["amp"] else "no"
    if spec["reference"]:
        reference_train(model, clip, args.steps, spec["cache"], args.rank, mark, official=spec.get("official", False),
                        checkpointing=spec["checkpointing"], amp_dtype={"fp16": torch.float16,
                                                                        "bf16": torch.bfloat16}.get(amp))
    else:
        config = TrainConfig(steps=args.steps, rank=args.rank, gradient_checkpointing=spec["checkpointing"],
                             mixed_precision=amp, checkpoint_every=10**9)
        train(model, [Clip(clip, "a car driving along a road", "bench")], config,
              callbacks=TrainCallbacks(on_step=mark))
    per_step = [b - a for a, b in zip(stamps, stamps[1:])]  # the first step is warm-up
    out = {
        "config": name,
        "step_s": sorted(per_step)[len(per_step) // 2] if per_step else stamps[0] - start,
        "first_step_s": stamps[0] - start,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
    }
    if cuda:
        out["peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        import resource

        out["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--unet-config", default=str(HERE / "zeroscope_bench_unet.json"))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="frame width and height in pixels (latents are 1/8)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per configuration (the first is warm-up)")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="base weights' dtype")
    parser.add_argument("--amp", choices=["fp16", "bf16"], help="autocast dtype of the +amp configurations "
                        "(default: fp16 on CUDA, bf16 on CPU)")
    parser.add_argument("--config", nargs="*", default=list(CONFIGS), choices=list(CONFIGS),
                        help="which configurations to run (default: all)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print("RESULT " + json.dumps(run_one(args.worker, args)), flush=True)
        return

    print(f"{args.device}, {Path(args.unet_config).name}, {args.frames} frames of {args.size}x{args.size} px, "
          f"rank {args.rank}, weights {args.dtype}, {args.steps} steps per configuration")
    print(f"{'configuration':<20}{'s/step':>9}{'peak GB':>9}")
    results = {}
    for name in args.config:
        cmd = [sys.executable, __file__, "--worker", name] + [a for a in sys.argv[1:] if a != "--config"
                                                              and a not in CONFIGS]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            print(f"{name:<20} failed:\n{proc.stderr[-2000:]}")
            continue
        results[name] = r = json.loads(line[len("RESULT "):])
        print(f"{name:<20}{r['step_s']:>9.2f}{r['peak_gb']:>9.2f}", flush=True)
    for base_name in ("baseline", "official"):
        base = results.get(base_name)
        if base:
            print(f"\nagainst {base_name}: {'configuration':<20}{'speed-up':>10}{'memory':>9}")
            for name, r in results.items():
                print(f"{'':<{10 + len(base_name)}}{name:<20}{base['step_s'] / r['step_s']:>9.2f}x"
                      f"{r['peak_gb'] / base['peak_gb']:>8.2f}x")


if __name__ == "__main__":
    main()
