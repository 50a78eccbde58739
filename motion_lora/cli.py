"""Command line: `python -m motion_lora train | sample | demo | import-official | info | toyworld | metrics`.

Everything the ComfyUI nodes do is reachable from here, so a script or a server
without ComfyUI can train and apply motion LoRAs too.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import fields
from pathlib import Path

TRAIN_DATA_OPTIONS = ("num_frames", "start", "stride", "fps", "width", "height", "bucket")


def _load_model(spec: str, dtype: str, device: str):
    import os

    from .model import open_model

    if device == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun / accelerate launch: one GPU per process
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    return open_model(spec, dtype=dtype, device=device)


def _read_config(path: str | None) -> dict:
    if not path:
        return {}
    text = Path(path).read_text()
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            config = yaml.safe_load(text) or {}
        else:
            config = json.loads(text)
    except Exception as e:  # yaml.YAMLError or json.JSONDecodeError: report the file, not a traceback
        raise ValueError(f"--config {path} is not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'}: "
                         f"{e}") from e
    if not isinstance(config, dict):
        raise ValueError(f"--config {path} must hold a mapping of option: value, got a {type(config).__name__}")
    return config


class _Progress:
    """A tqdm bar when tqdm is installed (it comes with huggingface_hub), plain lines otherwise."""

    def __init__(self, total: int, desc: str):
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True)
        except ImportError:
            self.bar = None
        self.desc, self.total = desc, total

    def update(self, step: int, text: str = "", total: int | None = None):
        """`total`: the run's own count when it differs from the one given at the start (sampling with the
        noise prior reports its inversion steps too)."""
        if total is not None and total != self.total:
            self.total = total
            if self.bar is not None:
                self.bar.total = total
        if self.bar is not None:
            self.bar.n = step
            if text:
                self.bar.set_postfix_str(text, refresh=False)
            self.bar.refresh()
        elif step == self.total or step % 10 == 0:
            print(f"{self.desc}: {step}/{self.total} {text}", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# --- train -----------------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from . import run_folder
    from .data import load_clips
    from .training import TrainCallbacks, TrainConfig, TrainingCancelled, TrainingDiverged, train

    cfg = _read_config(args.config)
    cli = {k: v for k, v in vars(args).items() if v is not None}
    merged = {**cfg, **cli}
    for key in ("model", "data", "output"):
        if not merged.get(key):
            raise SystemExit(f"train: --{key} is required (or set '{key}' in the config file)")
    # an existing run is refused before reading clips, loading the model or drawing a progress bar
    run_folder.prepare(merged["output"], bool(merged.get("resume")))

    config_names = {f.name for f in fields(TrainConfig)}
    overrides = {k: merged[k] for k in config_names if k in merged}
    config = TrainConfig.from_recipe(merged.get("recipe", "single-video"), **overrides)
    data_opts = {k: merged[k] for k in TRAIN_DATA_OPTIONS if k in merged}
    clips = load_clips(merged["data"], prompt=merged.get("prompt", ""), **data_opts)
    appearance = None
    if merged.get("appearance"):
        image_opts = {k: data_opts[k] for k in ("width", "height", "bucket") if k in data_opts}
        appearance = load_clips(merged["appearance"], prompt=merged.get("appearance_prompt", ""), **image_opts)

    model = _load_model(merged["model"], merged.get("dtype", "fp32"), merged.get("device", "cpu"))
    bar = _Progress(config.steps, "train")

    def on_step(info):
        text = " ".join(f"{k}={v:.4f}" for k, v in info.losses.items())
        bar.update(info.step, text)

    callbacks = TrainCallbacks(on_step=on_step, should_cancel=_StopOnCtrlC.asked)
    try:
        with _StopOnCtrlC():
            result = train(model, clips, config, run_dir=merged["output"], callbacks=callbacks,
                           resume=bool(merged.get("resume")), appearance=appearance)
    except TrainingCancelled as e:
        bar.close()
        print(f"{e}; continue with --resume", file=sys.stderr)
        return 130
    except TrainingDiverged as e:
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        return 1
    bar.close()
    print(f"trained {result.step} steps; run folder: {result.run_dir}")
    return 0


class _StopOnCtrlC:
    """The first Ctrl-C asks the trainer to stop after its step and save a checkpoint; a second one aborts."""

    _asked = False

    @classmethod
    def asked(cls) -> bool:
        return cls._asked

    def __enter__(self):
        type(self)._asked = False
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame):
        if type(self)._asked:
            raise KeyboardInterrupt
        type(self)._asked = True
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)


# --- sample ----------------------------------------------------------------------------------------
def cmd_sample(args) -> int:
    from .lora_file import load_adapter
    from .sampling import sample
    from .video_io import write_video

    if Path(args.output).exists():  # checked before minutes of sampling, and never silently replaced
        raise FileExistsError(f"--output {args.output} already exists; choose another file name")
    model = _load_model(args.model, args.dtype, args.device)
    adapters = []
    if args.motion:
        adapters.append((_expect_kind(load_adapter(args.motion), "temporal", "--motion"), args.motion_strength))
    if args.appearance:
        adapters.append((_expect_kind(load_adapter(args.appearance), "spatial", "--appearance"),
                         args.appearance_strength))
    reference = None
    if args.reference:
        from .data import load_video

        reference = load_video(args.reference, num_frames=args.frames, width=args.width, height=args.height).frames
    image = None
    if args.image:
        from .data import load_image

        image = load_image(args.image, width=args.width, height=args.height).frames[0]
    bar = _Progress(args.steps, "sample")
    frames = sample(model, args.prompt, args.negative_prompt, width=args.width, height=args.height,
                    frames=args.frames, steps=args.steps, guidance=args.guidance, seed=args.seed,
                    scheduler=args.scheduler, adapters=adapters, noise_prior=args.noise_prior,
                    reference=reference, image=image, progress=lambda i, n: bar.update(i, total=n))
    bar.close()
    path = write_video(frames, args.output, fps=args.fps)
    print(f"wrote {path}")
    return 0


def _expect_kind(adapter, kind: str, flag: str):
    if adapter.kind != kind:
        raise SystemExit(f"{flag} expects a {kind} LoRA, but {adapter.label} is {adapter.kind}")
    return adapter


# --- import-official -------------------------------------------------------------------------------
def cmd_import_official(args) -> int:
    from .lora_file import save_adapter
    from .official_import import import_official

    model = _load_model(args.model, "fp32", "cpu")
    adapters = import_official(args.checkpoint, model, kind=args.kind, clip=args.clip)
    paths = [Path(args.output) / f"{adapter.kind}.safetensors" for adapter in adapters]
    taken = [str(p) for p in paths if p.exists()]
    if taken:  # refuse before writing any, so a refusal never leaves half an import behind
        raise FileExistsError(f"{', '.join(taken)} already exist(s); choose another --output folder")
    for adapter, path in zip(adapters, paths):
        print(f"wrote {save_adapter(adapter, path)}")
    return 0


# --- info ------------------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from .lora_file import read_metadata

    meta = read_metadata(args.file)
    print(json.dumps(meta, indent=2, default=str))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.output, clip=args.clip, steps=args.steps)
    return 0


# --- the toy world ---------------------------------------------------------------------------------
def cmd_toyworld(args) -> int:
    from .toyworld import cli as toy_cli

    return toy_cli.run(args)


def cmd_metrics(args) -> int:
    from .toyworld import cli as toy_cli

    return toy_cli.metrics(args)


def build_parser() -> argparse.ArgumentParser:
    from .backbones.wan import SCHEDULERS as WAN_SCHEDULERS
    from .sampling import SCHEDULERS as SAMPLER_NAMES

    from .training import RECIPES

    p = argparse.ArgumentParser(prog="python -m motion_lora", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train motion (temporal) and appearance (spatial) LoRAs")
    t.add_argument("--config", help="YAML or JSON file with any of these options; flags override it")
    t.add_argument("--model", help="diffusers model folder, or 'tiny' for the built-in test model")
    t.add_argument("--data", help="a video file, a folder of videos (captions in same-named .txt), or a folder of images")
    t.add_argument("--prompt", help="caption used for clips without their own .txt")
    t.add_argument("--appearance", help="optional images/clips whose appearance the spatial LoRA learns")
    t.add_argument("--output", help="run folder (must not exist unless --resume)")
    t.add_argument("--recipe", choices=sorted(RECIPES), help="official preset (default single-video)")
    t.add_argument("--resume", action="store_true", default=None, help="continue from the run folder's last checkpoint")
    t.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="base model weights (default fp32)")
    t.add_argument("--device", help="cpu, cuda, cuda:1, ... (default cpu)")
    for name, typ in [("steps", int), ("spatial_lr", float), ("temporal_lr", float), ("rank", int),
                      ("dropout", float), ("beta", float), ("checkpoint_every", int), ("seed", int),
                      ("weight_decay", float), ("hflip_prob", float), ("validation_every", int),
                      ("offset_noise", float)]:
        t.add_argument("--" + name.replace("_", "-"), dest=name, type=typ)
    t.add_argument("--validation-prompt", dest="validation_prompt")
    t.add_argument("--dropout-placement", dest="dropout_placement", choices=["rank", "output"],
                   help="LoRA dropout on the rank values, up(dropout(down(x))) (default, ours), or on the LoRA's "
                        "output, dropout(up(down(x))) (official)")
    t.add_argument("--mixed-precision", dest="mixed_precision", choices=["no", "fp16", "bf16", "auto"],
                   help="autocast dtype (auto: fp16 on a GPU, bf16 for a bf16 model, none on the CPU)")
    t.add_argument("--no-spatial", dest="train_spatial", action="store_false", default=None)
    t.add_argument("--no-temporal", dest="train_temporal", action="store_false", default=None)
    t.add_argument("--spatial-per-clip", dest="spatial_per_clip", action="store_true", default=None)
    t.add_argument("--gradient-checkpointing", dest="gradient_checkpointing", choices=["all", "attention", "off"],
                   help="all (default): least memory; attention: recompute only transformers, faster; off: fastest")
    t.add_argument("--offload-activations", dest="offload_activations", action="store_true", default=None,
                   help="with checkpointing: keep each block's input in CPU memory until its recomputation")
    t.add_argument("--blocks-to-swap", dest="blocks_to_swap", type=int,
                   help="with checkpointing: keep the last N blocks' frozen weights in CPU memory, one on the GPU "
                        "at a time while it runs (Wan 14B on smaller GPUs)")
    t.add_argument("--frames", dest="num_frames", type=int)
    t.add_argument("--start", type=int)
    t.add_argument("--stride", type=int)
    t.add_argument("--fps", type=float, help="sample frames at this rate (overrides --stride)")
    t.add_argument("--width", type=int)
    t.add_argument("--height", type=int)
    t.add_argument("--bucket", action="store_true", default=None, help="keep aspect ratio at the same pixel budget")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="generate a video, optionally with a motion and an appearance LoRA")
    s.add_argument("--model", required=True)
    s.add_argument("--prompt", required=True)
    s.add_argument("--negative-prompt", default="")
    s.add_argument("--motion", help="temporal LoRA .safetensors")
    s.add_argument("--motion-strength", type=float, default=1.0)
    s.add_argument("--appearance", help="spatial LoRA .safetensors")
    s.add_argument("--appearance-strength", type=float, default=1.0)
    s.add_argument("--noise-prior", type=float, default=0.0, help="0..1; needs --reference")
    s.add_argument("--reference", help="clip whose inverted latents seed the noise prior (DDIM for ZeroScope, the flow ODE for Wan)")
    s.add_argument("--image", help="image-to-video: the clip's first frame (Wan 2.2 TI2V-5B only)")
    s.add_argument("--width", type=int, default=384)
    s.add_argument("--height", type=int, default=384)
    s.add_argument("--frames", type=int, default=16)
    s.add_argument("--steps", type=int, default=30)
    s.add_argument("--guidance", type=float, default=12.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scheduler", default=None,
                   help="default: the model's own (ddim for ZeroScope / ModelScope, unipc for Wan); "
                        f"ZeroScope: {', '.join(SAMPLER_NAMES)}; Wan: {', '.join(WAN_SCHEDULERS)}")
    s.add_argument("--fps", type=float, default=8.0)
    s.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    s.add_argument("--device", default="cpu")
    s.add_argument("--output", required=True, help=".mp4 or .gif")
    s.set_defaults(func=cmd_sample)

    d = sub.add_parser("demo", help="learn an unseen motion from one clip with the pretrained toy model, apply it "
                                    "to another prompt, write the side by side and print the metrics")
    d.add_argument("--output", default="outputs/demo")
    d.add_argument("--clip", help="video to learn the motion from (default: a rendered zig-zag clip)")
    d.add_argument("--steps", type=int, default=100)
    d.set_defaults(func=cmd_demo)

    i = sub.add_parser("import-official", help="convert an official MotionDirector checkpoint to our files")
    i.add_argument("checkpoint", help="checkpoint-N folder, spatial/temporal folder, or N_unet.pt file")
    i.add_argument("--model", required=True, help="the base model the checkpoint was trained on")
    i.add_argument("--kind", choices=["spatial", "temporal"])
    i.add_argument("--clip", type=int, default=0, help="which clip's spatial LoRA in a several-clip file")
    i.add_argument("--output", required=True, help="folder for the .safetensors files")
    i.set_defaults(func=cmd_import_official)

    f = sub.add_parser("info", help="print an adapter file's metadata")
    f.add_argument("file")
    f.set_defaults(func=cmd_info)

    from .toyworld import cli as toy_cli

    toy_cli.add_parsers(sub, cmd_toyworld, cmd_metrics)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
