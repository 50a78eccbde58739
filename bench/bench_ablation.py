"""The paper's ablation, measured in the toy world: what a LoRA learns from a clip, motion or look?

For each held-out motion (never seen in the toy model's pretraining) it trains on one clip
of a red square on gray (and, with --multi, on three clips of different objects), then
samples prompts asking for *other* objects and backgrounds, and scores every sample with
the exact toy-world metrics against the training clip: motion fidelity (same displacements),
prompt fidelity (the asked colour, shape, background) and leakage (the training clip's look
showing up instead). All configurations train the same number of steps, rank and learning rate:

  base          the pretrained model, no LoRA (what the motion words alone give)
  plain         one LoRA on every attention and feed-forward linear (spatial and temporal transformers),
                plain diffusion loss on whole clips: the straightforward way (a loop written below)
  temporal      temporal LoRA alone (train_spatial=False), plain loss (beta=0)
  dual-b0       dual-path without the appearance-debiased loss (beta=0: phi is the identity, so the
                temporal loss is 2 x loss_org, which AdamW's update ignores up to eps: the plain loss)
  md-b0.5/1/2   full MotionDirector: dual-path + debiased loss at beta 0.5, 1, 2
  md-b1-output  md-b1 with LoRA dropout where the official code puts it, on the LoRA's output
                (`dropout_placement="output"`; ours, the default, masks its rank values)
  ...+prior     the same LoRA sampled from the noise prior (p=0.5, DDIM-inverted training clip)

With --applications: *mixing* (motion LoRA of clip A + appearance LoRA trained on images of B,
prompting B's look) and *animating* (appearance LoRA from one image of B + the motion LoRA).

    python bench/bench_ablation.py                      # reduced grid: zigzag, one clip, 3 seeds
    python bench/bench_ablation.py --full               # every held-out motion, one and three clips, applications
    python bench/bench_ablation.py --motions circle bounce --seeds 0 1 2 3 --steps 200 --multi
    python bench/bench_ablation.py --motions bounce --clips 3 --applications   # three clips only, and the applications
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

from motion_lora import adapters  # noqa: E402
from motion_lora.toyworld import metrics  # noqa: E402
from motion_lora.toyworld.evaluate import generate  # noqa: E402
from motion_lora.toyworld.world import HELD_OUT, prompt_for, render  # noqa: E402

TRAIN_OBJECTS = [("red", "square", "gray"), ("green", "triangle", "black"), ("yellow", "circle", "gray")]
EVAL_OBJECTS = [("blue", "circle", "black"), ("yellow", "triangle", "black"), ("green", "circle", "gray")]
CONFIGS = ["base", "plain", "temporal", "dual-b0", "md-b0.5", "md-b1", "md-b2", "md-b1-output"]
PRIOR_CONFIGS = ["base", "plain", "md-b1", "md-b1-output"]  # base+prior: what the noise prior alone carries
NOISE_PRIOR = 0.5
APPEARANCE = ("yellow", "triangle", "black")  # B, for mixing and animating


def plain_targets(unet) -> list[str]:
    """Every linear in every attention and feed-forward block, spatial and temporal (attn1, attn2, ff)."""
    out = []
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and ("attentions." in name or "transformer_in" in name) \
                and any(k in name for k in ("attn1", "attn2", "ff")):
            out.append(name)
    return out


def train_plain(model, clips, steps: int, rank: int, lr: float, seed: int, dropout: float = 0.1) -> str:
    """The straightforward loop: one LoRA, whole clips, plain loss; returns the adapter's name (left in the UNet)."""
    from motion_lora.losses import mse

    unet, backbone = model.unet, model.backbone
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        cache = [(model.encode_frames(c.frames, generator).float(), model.encode_prompt(c.prompt)) for c in clips]
    adapters.inject(unet, backbone, "plain", adapters.TEMPORAL, rank, dropout=dropout, targets=plain_targets(unet))
    adapters.set_strengths(unet, {"plain": 1.0})
    params = adapters.adapter_parameters(unet, ["plain"])
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    objective = backbone.objective(model.scheduler_config)
    unet.train()
    for _ in range(steps):
        latents, text = cache[int(torch.randint(len(cache), (1,), generator=generator))]
        noise = torch.randn(latents.shape, generator=generator)
        t = objective.sample_timesteps(1, generator)
        pred = backbone.predict(unet, objective.add_noise(latents, noise, t), t, text)
        loss = mse(pred, objective.target(latents, noise, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    unet.eval()
    for p in params:
        p.requires_grad_(False)
    return "plain"


def train_md(model, clips, config_name: str, steps: int, rank: int, lr: float, seed: int, appearance=None,
             images: bool = False):
    from motion_lora.training import TrainConfig, train

    placement = "output" if config_name.endswith("-output") else "rank"
    config_name = config_name.removesuffix("-output")
    beta = {"temporal": 0.0, "dual-b0": 0.0}.get(config_name)
    if beta is None and config_name.startswith("md-b"):
        beta = float(config_name[4:])
    recipe = "images" if images else ("multi-video" if len(clips) > 1 else "single-video")
    overrides = dict(steps=steps, checkpoint_every=0, rank=rank, spatial_lr=lr, temporal_lr=lr, seed=seed,
                     gradient_checkpointing=False, dropout_placement=placement)
    if not images:
        overrides.update(beta=beta, train_spatial=config_name != "temporal")
    return train(model, clips, TrainConfig.from_recipe(recipe, **overrides), appearance=appearance)


def evaluate(model, reference, training_prompt: str, motion: str, sample_seed: int, adapter_list=None,
             noise_prior: float = 0.0, objects=EVAL_OBJECTS) -> list[dict]:
    rows = []
    for colour, shape, background in objects:
        prompt = prompt_for(colour, shape, motion, background)
        frames = generate(model, prompt, seed=sample_seed, adapters=adapter_list, noise_prior=noise_prior,
                          reference=reference if noise_prior else None)
        rows.append(metrics.score(reference, frames, prompt, training_prompt))
    return rows


def run_motion(model, motion: str, seeds, steps: int, rank: int, lr: float, configs, multi: bool, log) -> dict:
    objects = TRAIN_OBJECTS if multi else TRAIN_OBJECTS[:1]
    toy = [render(c, s, motion, b, seed=k) for k, (c, s, b) in enumerate(objects)]
    clips = [t.as_clip() for t in toy]
    reference, training_prompt = toy[0].frames, toy[0].prompt
    results: dict[str, list[dict]] = {}
    for seed in seeds:
        for name in configs:
            start = time.time()
            sample_seed = 1000 + seed
            variants = {name: 0.0}
            if name in PRIOR_CONFIGS:
                variants[f"{name}+prior"] = NOISE_PRIOR
            if name == "base":
                for label, p in variants.items():
                    results.setdefault(label, []).append(_mean(evaluate(model, reference, training_prompt, motion,
                                                                        sample_seed, None, p)))
            elif name == "plain":
                train_plain(model, clips, steps, rank, lr, seed)
                try:
                    for label, p in variants.items():
                        results.setdefault(label, []).append(_mean(evaluate(
                            model, reference, training_prompt, motion, sample_seed, None, p)))  # adapter on in the UNet
                finally:
                    adapters.remove(model.unet, "plain")
            else:
                result = train_md(model, clips, name, steps, rank, lr, seed)
                for label, p in variants.items():
                    results.setdefault(label, []).append(_mean(evaluate(
                        model, reference, training_prompt, motion, sample_seed, [(result.temporal, 1.0)], p)))
            log(f"{motion} {'3 clips' if multi else '1 clip'} seed {seed} {name}: "
                + ", ".join(f"{k} {_fmt(v)}" for k, v in results[name][-1].items()) + f" ({time.time() - start:.0f} s)")
    return {label: _summary(rows) for label, rows in results.items()}


def run_applications(model, motion: str, seeds, steps: int, rank: int, lr: float, log) -> dict:
    """Mixing (A's motion + B's look from images of B) and animating (one image of B + A's motion)."""
    from motion_lora.data import Clip

    a = render(*TRAIN_OBJECTS[0][:2], motion, TRAIN_OBJECTS[0][2], seed=0)
    colour, shape, background = APPEARANCE
    look = f"a {colour} {shape} on a {background} background"
    images = [Clip(render(colour, shape, "still", background, seed=k).frames[:1], look, "memory") for k in range(4)]
    prompt = prompt_for(colour, shape, motion, background)
    out: dict[str, list[dict]] = {}
    for seed in seeds:
        motion_lora = train_md(model, [a.as_clip()], "md-b1", steps, rank, lr, seed).temporal
        for label, pictures in (("mixing (4 images of B)", images), ("animating (1 image of B)", images[:1])):
            look_lora = train_md(model, pictures, "images", steps, rank, lr, seed, images=True).spatial[0]
            frames = generate(model, prompt, seed=1000 + seed, adapters=[(motion_lora, 1.0), (look_lora, 1.0)])
            score = metrics.score(a.frames, frames, prompt, a.prompt)
            out.setdefault(label, []).append(score)
            log(f"{motion} seed {seed} {label}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in score.items()))
        frames = generate(model, prompt, seed=1000 + seed, adapters=[(motion_lora, 1.0)])
        out.setdefault("motion LoRA alone, B's prompt", []).append(metrics.score(a.frames, frames, prompt, a.prompt))
    return {label: _summary(rows) for label, rows in out.items()}


def _mean(rows: list[dict]) -> dict:
    keys = rows[0].keys()
    return {k: (statistics.fmean([r[k] for r in rows if r[k] is not None])
                if any(r[k] is not None for r in rows) else None) for k in keys}


def _summary(rows: list[dict]) -> dict:
    """Mean over seeds, and the spread (standard deviation over seeds) of each metric."""
    out = {}
    for k in rows[0]:
        values = [r[k] for r in rows if r[k] is not None]
        out[k] = statistics.fmean(values) if values else None
        out[k + "_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def markdown(results: dict) -> str:
    lines = ["| motion | clips | configuration | motion fidelity | prompt fidelity | leakage | temporal consistency |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for key, table in results.items():
        if key.startswith("_"):
            continue
        motion, clips = key.split("/")
        for label, s in table.items():
            cell = lambda m: "-" if s.get(m) is None else f"{s[m]:.2f} ± {s[m + '_sd']:.2f}"
            lines.append(f"| {motion} | {clips} | {label} | {cell('motion_fidelity')} | {cell('prompt_fidelity')} | "
                         f"{cell('leakage')} | {cell('temporal_consistency')} |")
    return "\n".join(lines)


def compact(results: dict) -> str:
    """One table per clip count, a row per configuration: each motion's motion fidelity (mean ± sd over seeds),
    then prompt fidelity and leakage averaged over the motions (the README's form of `markdown`)."""
    motions = list(dict.fromkeys(k.split("/")[0] for k in results if not k.startswith("_")))
    out = []
    for clips in ("1", "3", "apps"):
        tables = {m: results[f"{m}/{clips}"] for m in motions if f"{m}/{clips}" in results}
        if not tables:
            continue
        labels = list(dict.fromkeys(label for t in tables.values() for label in t))
        title = {"1": "one clip", "3": "three clips", "apps": "applications"}[clips]
        out += [f"| {title} | " + " | ".join(f"{m}: motion fidelity" for m in tables)
                + " | prompt fidelity | leakage |", "| --- " * (len(tables) + 3) + "|"]
        for label in labels:
            cells, pf, lk = [], [], []
            for t in tables.values():
                s = t.get(label)
                cells.append("-" if s is None else f"{s['motion_fidelity']:.2f} ± {s['motion_fidelity_sd']:.2f}")
                if s is not None:
                    pf.append(s["prompt_fidelity"])
                    lk.append(s["leakage"])
            mean = lambda v: f"{statistics.fmean(v):.2f}" if v else "-"
            out.append(f"| {label} | " + " | ".join(cells) + f" | {mean(pf)} | {mean(lk)} |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--motions", nargs="+", default=["zigzag"], choices=list(HELD_OUT))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=100, help="training steps, the same for every configuration")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS)
    p.add_argument("--multi", action="store_true", help="also train on three clips of different objects (--clips 1 3)")
    p.add_argument("--clips", nargs="+", type=int, default=[1], choices=[1, 3],
                   help="train on one clip, on three clips of different objects, or both")
    p.add_argument("--applications", action="store_true", help="also measure mixing and animating")
    p.add_argument("--full", action="store_true", help="every held-out motion, --multi and --applications")
    p.add_argument("--model", default="toyworld")
    p.add_argument("--out", default="outputs/bench_ablation.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tables", nargs="+", metavar="JSON", help="only print the tables of these result files")
    args = p.parse_args(argv)
    if args.tables:
        merged = {}
        for f in args.tables:
            merged.update({k: v for k, v in json.loads(Path(f).read_text()).items() if not k.startswith("_")})
        print(compact(merged))
        print(markdown(merged))
        return 0
    if args.full:
        args.motions, args.multi, args.applications = list(HELD_OUT), True, True
    if args.multi:
        args.clips = [1, 3]
    torch.set_num_threads(args.threads)
    from motion_lora.model import open_model

    model = open_model(args.model, dtype="fp32")
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    results: dict = {"_settings": {k: v for k, v in vars(args).items() if k != "full"}}

    def log(text: str) -> None:
        print(text, flush=True)

    for motion in args.motions:
        for multi in (n == 3 for n in args.clips):
            results[f"{motion}/{'3' if multi else '1'}"] = run_motion(model, motion, args.seeds, args.steps, args.rank,
                                                                      args.lr, args.configs, multi, log)
            out_path.write_text(json.dumps(results, indent=2))
        if args.applications:
            results[f"{motion}/apps"] = run_applications(model, motion, args.seeds, args.steps, args.rank, args.lr, log)
            out_path.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
