"""`python -m motion_lora toyworld pretrain | eval | render` and `python -m motion_lora metrics`."""

from __future__ import annotations

import json
from pathlib import Path


def add_parsers(sub, cmd_toyworld, cmd_metrics) -> None:
    from .world import BACKGROUNDS, COLOURS, MOTIONS, SHAPES

    w = sub.add_parser("toyworld", help="the toy world: pretrain its model, measure it, render clips")
    w_sub = w.add_subparsers(dest="toy_command", required=True)
    p = w_sub.add_parser("pretrain", help="pretrain the toy model from scratch (51 min on a 2-core CPU)")
    p.add_argument("--output", help="diffusers folder to write (default: the shipped motion_lora/toyworld/model)")
    p.add_argument("--vae-steps", type=int)
    p.add_argument("--unet-steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--high-noise-floor", type=float, help="least clean-clip loss weight (default 1; 0: plain Min-SNR)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, every core)")
    p.add_argument("--log", help="append progress lines to this file too")
    e = w_sub.add_parser("eval", help="share of seen colour x shape x motion prompts the model renders correctly")
    e.add_argument("--model", default="toyworld", help="'toyworld' (shipped) or a diffusers folder")
    e.add_argument("--seeds", type=int, default=1)
    r = w_sub.add_parser("render", help="write one ground-truth clip")
    r.add_argument("--colour", choices=list(COLOURS), default="red")
    r.add_argument("--shape", choices=list(SHAPES), default="circle")
    r.add_argument("--motion", choices=list(MOTIONS), default="zigzag")
    r.add_argument("--background", choices=list(BACKGROUNDS), default="gray")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--output", required=True, help=".mp4 or .gif")
    w.set_defaults(func=cmd_toyworld)

    m = sub.add_parser("metrics", help="score a generated toy-world clip against a reference clip")
    m.add_argument("reference", help="the reference (training) clip, a video file")
    m.add_argument("generated", help="the generated clip, a video file")
    m.add_argument("--prompt", required=True, help="the prompt the generated clip was made from")
    m.add_argument("--training-prompt", help="the reference clip's prompt (for appearance leakage)")
    m.set_defaults(func=cmd_metrics)


def run(args) -> int:
    if args.toy_command == "pretrain":
        from dataclasses import replace

        from .model import WEIGHTS
        from .pretrain import PretrainConfig, pretrain

        config = PretrainConfig()
        overrides = {k: getattr(args, k) for k in ("vae_steps", "unet_steps", "seed", "high_noise_floor") if getattr(args, k) is not None}
        pretrain(args.output or WEIGHTS, replace(config, **overrides), log=args.log, threads=args.threads)
        return 0
    if args.toy_command == "eval":
        from ..model import open_model
        from .evaluate import prompt_following

        import torch

        torch.set_num_threads(1)
        model = open_model(args.model, dtype="fp32")
        result = prompt_following(model, seeds=range(args.seeds),
                                  progress=lambda n, prompt, t: print(f"{n:3d} {prompt}: {t.colour} {t.shape} "
                                                                      f"{t.motion} on {t.background}"))
        print(json.dumps(result, indent=2))
        return 0
    from ..video_io import write_video
    from .world import render

    clip = render(args.colour, args.shape, args.motion, args.background, seed=args.seed)
    print(f"{clip.prompt}: wrote {write_video(clip.frames, args.output, fps=8)}")
    return 0


def _read(path: str):
    import torch

    from ..video_io import read_video

    frames, _fps = read_video(path)
    return torch.from_numpy(frames).float() / 255.0


def metrics(args) -> int:
    from . import metrics as toy_metrics

    for path in (args.reference, args.generated):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} does not exist: give two video files (reference, then generated)")
    scores = toy_metrics.score(_read(args.reference), _read(args.generated), args.prompt, args.training_prompt)
    print(json.dumps(scores, indent=2))
    return 0
