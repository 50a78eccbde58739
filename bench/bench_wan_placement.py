"""Where the two LoRA paths sit on a Wan transformer, measured in the toy world (issue 11, METHOD.md).

A DiT block mixes frames only in its 3-D self-attention, so the spatial/temporal split of the
paper's UNets has to be chosen. The candidates (`motion_lora.backbones.wan.PLACEMENTS`):

  a   both paths on self-attention q/k/v/o and the feed-forward, as separate adapters
  b   temporal on self-attention only; spatial on self-attention and feed-forward
  c   as b, temporal on self-attention q/k only (motion as the attention pattern)

For each held-out motion (never seen in pretraining) it trains MotionDirector (dual path, debiased
loss, `motion_lora.training.train`, the single-video recipe) on one 9-frame clip of a red square on
gray with the Wan toy model (`motion_lora.toyworld.wan_toy`), the same steps, rank and learning rates for
every placement, then samples the motion LoRA alone for prompts asking other objects on other
backgrounds and scores each sample against the training clip: motion fidelity (same displacements),
prompt fidelity and leakage (the training clip's colour, shape or background showing up).
"base" is the pretrained model without a LoRA; with `--noise-prior P`, every row is also sampled from the
noise prior ("+prior": the training clip inverted along the flow ODE, mixed in at P, MotionDirector's
single-video inference), so "base+prior" is what the prior alone carries. Every cell is the mean over
seeds ± the standard deviation over seeds (each seed: its own training run and its own sampling noise).

    python bench/bench_wan_placement.py                        # pretrains the toy model first if missing
    python bench/bench_wan_placement.py --motions zigzag circle speedup --seeds 0 1 2 3 --steps 150
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from motion_lora.backbones.wan import PLACEMENTS  # noqa: E402
from motion_lora.toyworld import metrics  # noqa: E402
from motion_lora.toyworld.wan_toy import FRAMES, generate  # noqa: E402
from motion_lora.toyworld.world import HELD_OUT, prompt_for, render  # noqa: E402

TRAIN_OBJECT = ("red", "square", "gray")
# every attribute differs from the training clip's in each prompt (as in bench_ablation's evaluation objects)
EVAL_OBJECTS = [("blue", "circle", "black"), ("yellow", "triangle", "black"), ("green", "circle", "black")]
METRICS = ("motion_fidelity", "prompt_fidelity", "leakage", "temporal_consistency")
DEFAULT_MODEL = Path("outputs/toyworld-wan")


def train_placement(model, clip, placement: str, steps: int, rank: int, lr: float, seed: int):
    """MotionDirector on one clip with the Wan backbone at `placement`; returns the TrainResult."""
    from motion_lora.training import TrainConfig, train

    model.backbone = model.backbone.with_placement(placement)
    config = TrainConfig.from_recipe("single-video", steps=steps, checkpoint_every=0, rank=rank, spatial_lr=lr,
                                     temporal_lr=lr, seed=seed, gradient_checkpointing=False)
    return train(model, [clip], config)


def evaluate(model, reference, training_prompt: str, motion: str, sample_seed: int, adapter_list,
             noise_prior: float = 0.0) -> dict:
    rows = []
    for colour, shape, background in EVAL_OBJECTS:
        prompt = prompt_for(colour, shape, motion, background)
        frames = generate(model, prompt, seed=sample_seed, adapters=adapter_list, noise_prior=noise_prior,
                          reference=reference if noise_prior else None)
        rows.append(metrics.score(reference, frames, prompt, training_prompt))
    return {k: statistics.fmean([r[k] for r in rows if r[k] is not None]) for k in METRICS}


def run_motion(model, motion: str, seeds, steps: int, rank: int, lr: float, placements, log,
               noise_prior: float = 0.0) -> dict:
    toy = render(*TRAIN_OBJECT[:2], motion, TRAIN_OBJECT[2], seed=0, frames=FRAMES)
    results: dict[str, list[dict]] = {}
    for seed in seeds:
        sample_seed = 1000 + seed
        for name in ["base", *placements]:
            start = time.time()
            adapter_list = None
            if name != "base":
                adapter_list = [(train_placement(model, toy.as_clip(), name, steps, rank, lr, seed).temporal, 1.0)]
            variants = {name: 0.0}
            if noise_prior:
                variants[f"{name}+prior"] = noise_prior
            for label, p in variants.items():
                row = evaluate(model, toy.frames, toy.prompt, motion, sample_seed, adapter_list, p)
                results.setdefault(label, []).append(row)
                log(f"{motion} seed {seed} {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items())
                    + f" ({time.time() - start:.0f} s)")
    return {name: summary(rows) for name, rows in results.items()}


def summary(rows: list[dict]) -> dict:
    """Mean over seeds and the standard deviation over seeds of each metric."""
    out = {}
    for k in rows[0]:
        values = [r[k] for r in rows]
        out[k] = statistics.fmean(values)
        out[k + "_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["seeds"] = len(rows)
    return out


def overall(results: dict) -> dict:
    """Per placement, the mean over motions of the per-seed means (and the mean of the per-motion spreads)."""
    out: dict[str, dict] = {}
    tables = [t for k, t in results.items() if not k.startswith("_")]
    for name in tables[0] if tables else []:
        out[name] = {k: statistics.fmean([t[name][k] for t in tables]) for k in tables[0][name] if k != "seeds"}
    return out


def markdown(results: dict) -> str:
    lines = ["| motion | placement | motion fidelity | prompt fidelity | leakage | temporal consistency |",
             "| --- | --- | --- | --- | --- | --- |"]

    def cells(s):
        return " | ".join(f"{s[m]:.2f} ± {s[m + '_sd']:.2f}" for m in METRICS)

    for key, table in results.items():
        if key.startswith("_"):
            continue
        for name, s in table.items():
            lines.append(f"| {key} | {name} | {cells(s)} |")
    for name, s in overall(results).items():
        lines.append(f"| **all motions** | {name} | {cells(s)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--motions", nargs="+", default=["zigzag", "circle"], choices=list(HELD_OUT))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=100, help="training steps, the same for every placement")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--placements", nargs="+", default=list(PLACEMENTS), choices=list(PLACEMENTS))
    p.add_argument("--model", default=str(DEFAULT_MODEL),
                   help="the pretrained Wan toy model's folder (pretrained there first when missing)")
    p.add_argument("--out", default="outputs/bench_wan_placement.json")
    p.add_argument("--noise-prior", type=float, default=0.0,
                   help="also sample every LoRA (and the base model) from the flow-inverted clip mixed in at this p")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from motion_lora.toyworld.wan_toy import load_toy_wan, pretrain_toy_wan

    folder = Path(args.model)
    if not (folder / "pretrain.json").is_file():
        print(f"no Wan toy model at {folder}: pretraining it (about 15 min on one busy CPU thread)", flush=True)
        pretrain_toy_wan(folder, threads=args.threads)
    model = load_toy_wan(folder)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    results: dict = {"_settings": vars(args)}

    def log(text: str) -> None:
        print(text, flush=True)

    for motion in args.motions:
        results[motion] = run_motion(model, motion, args.seeds, args.steps, args.rank, args.lr, args.placements, log,
                                     args.noise_prior)
        results["_overall"] = overall(results)
        out_path.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
