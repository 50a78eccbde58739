"""A Wan-architecture toy model of the toy world, pretrained on a CPU: where the Wan LoRA placements are measured.

The classes Wan 2.1 uses for the parts the placements touch (`WanTransformer3DModel`, `UMT5EncoderModel` and a
Unigram tokenizer as UMT5's), sized so that pretraining takes minutes on one CPU thread:
- clips have 9 frames of 32x32 (1 + 4n, as Wan's VAE encodes them);
- the VAE is by default `PixelVAE`, a lossless 4x4 space-to-depth (9 frames -> 9 latent frames of 8x8x48,
  normalised per channel with stats measured on the world, `pixel_stats`, as Wan's VAE config carries them):
  a CPU-sized `AutoencoderKLWan` (`learnt_vae=True`, `VAE_CONFIG`: 4x in space, none in time, causal as Wan's)
  collapsed in this budget to a decoder that outputs the background whatever the latents, and a Wan VAE with
  4x temporal compression would also have to learn to pack four frames of motion into one latent frame;
- the transformer has 2 blocks of width 256 (4 heads of 64, wider than a 2x2 patch of 48-channel latents),
  2x2 patches: 16 tokens a frame, 144 a clip;
- the text encoder is one small UMT5 layer with random, fixed weights over a word-level vocabulary (every
  world word is one token); the transformer's text projection and cross-attention learn to read it, and
  prompts are encoded once and cached during pretraining.

`build_toy_wan` gives the untrained model, `load_toy_wan` a pretrained one; `pretrain_toy_wan` trains (with
`learnt_vae`, the VAE first) the transformer with the backbone's own flow-matching objective (`Wan.objective`: velocity target;
sigmas uniform, not the fine-tuning shift, see `_pretraining_timesteps`) on the seen motions, 10 % empty prompts for classifier-free guidance, and saves
the exponential moving average. `python -m motion_lora.toyworld.wan_toy --output DIR` runs it and then measures
the prompt following (`--eval-only` measures only).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from ..backbones import Wan
from ..backbones.wan import MAX_TEXT_TOKENS
from ..model import VideoModel
from .evaluate import GUIDANCE, SAMPLE_STEPS
from .evaluate import prompt_following as _prompt_following
from .pretrain import _log
from .world import BACKGROUNDS, COLOURS, MOTIONS, SEEN, SHAPES, SIZE, ToyClip, render

TOY_WAN_NAME = "toyworld-wan (Wan-architecture toy model, 32x32, 9 frames)"
FRAMES = 9  # 1 + 4n, as Wan's VAE requires

TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=4,  # width 256: wider than a token's 2x2x48 = 192 latent values, or the transformer
    attention_head_dim=64,  # cannot carry the noise through and its samples stay noise (width 128 did that)
    in_channels=8,
    out_channels=8,
    text_dim=32,
    freq_dim=64,
    ffn_dim=512,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=64,
)
VAE_CONFIG = dict(
    base_dim=16,
    z_dim=8,
    dim_mult=[1, 2, 2],  # two downsampling stages: 4x in space
    num_res_blocks=1,
    attn_scales=[],
    temperal_downsample=[False, False],  # no temporal compression (see the module docstring)
    scale_factor_temporal=1,
    scale_factor_spatial=4,
    latents_mean=[0.0] * 8,  # pretraining sets both from the encoded world, as Wan's VAE config carries them
    latents_std=[1.0] * 8,
)
TEXT_CONFIG = dict(
    d_model=32,
    d_kv=16,
    d_ff=64,
    num_layers=1,
    num_heads=2,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    feed_forward_proj="gated-gelu",
    dropout_rate=0.0,
)


class PixelVAE(torch.nn.Module):
    """A lossless stand-in for `AutoencoderKLWan`: 4x4 space-to-depth (32x32x3 -> 8x8x48), nothing to learn.

    It answers the calls the Wan backbone makes of a Wan VAE (`encode(...).latent_dist.mode()`,
    `decode(z).sample`, `config.z_dim / latents_mean / latents_std / scale_factor_*`). A learnt
    `AutoencoderKLWan` (`learnt_vae=True`) is the faithful choice, but a CPU-sized one collapsed to a constant
    decoder in this budget (see the README), and the placement question is about the transformer.
    """

    def __init__(self, factor: int = 4, latents_mean=None, latents_std=None):
        super().__init__()
        z = 3 * factor * factor
        self.factor = factor
        self.config = SimpleNamespace(z_dim=z, scale_factor_spatial=factor, scale_factor_temporal=1,
                                      latents_mean=list(latents_mean or [0.0] * z),
                                      latents_std=list(latents_std or [1.0] * z))
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def device(self):
        return self._anchor.device

    @property
    def dtype(self):
        return self._anchor.dtype

    def register_to_config(self, **values):
        for k, v in values.items():
            setattr(self.config, k, v)

    def encode(self, pixels: torch.Tensor):
        b, c, f, h, w = pixels.shape
        x = pixels.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        z = F.pixel_unshuffle(x, self.factor)
        z = z.reshape(b, f, *z.shape[1:]).permute(0, 2, 1, 3, 4)
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: z, sample=lambda generator=None: z))

    def decode(self, z: torch.Tensor):
        b, c, f, h, w = z.shape
        x = F.pixel_shuffle(z.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w), self.factor)
        x = x.reshape(b, f, *x.shape[1:]).permute(0, 2, 1, 3, 4)
        return SimpleNamespace(sample=x.clamp(-1, 1))


def world_words() -> list[str]:
    """Every whitespace-separated word the world's prompts use ("zig-zag" stays one word)."""
    words = {"a", "on", "background"}
    for phrase in [*COLOURS, *SHAPES, *BACKGROUNDS, *MOTIONS.values()]:
        words.update(phrase.split())
    return sorted(words)


def random_clip(rng: random.Random, motions=tuple(SEEN)) -> ToyClip:
    """A 9-frame clip with every attribute drawn from `rng` (the pretraining distribution for the default motions)."""
    return render(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(motions)),
                  rng.choice(list(BACKGROUNDS)), seed=rng.randrange(2**31), frames=FRAMES)


# Prompts are zero-padded to this many tokens (`Wan.text_tokens`), not Wan's 512. Every world prompt is at most
# 11 tokens, and Wan's cross-attention attends to the padding as well: at 512, a toy pretrained for 1500 steps
# still put 70-97 % of its cross-attention on the padding, so the prompt reached it diluted (its samples had
# the right colour 40 % of the time; padded to 16, 100 %, and pretraining is 1.7x faster:
# bench/wan_toy_text_tokens.json). Real Wan learnt to look past the padding over far longer pretraining.
TEXT_TOKENS = 16

PIXEL_STD = 0.5  # latents of the pixel stand-in are pixels in -1..1: scaled to about unit variance


def build_toy_wan(seed: int = 0, placement: str | None = None, learnt_vae: bool = False,
                  layers: int | None = None, text_tokens: int = TEXT_TOKENS) -> VideoModel:
    """The untrained Wan toy model (fp32, CPU), weights drawn from `seed` (the text encoder stays as drawn).

    `learnt_vae=False` (default) uses the lossless `PixelVAE` (48 latent channels); True an `AutoencoderKLWan`
    of `VAE_CONFIG` to be pretrained (8 latent channels). `layers`: transformer blocks (default: TRANSFORMER_CONFIG's).
    `text_tokens`: the length prompts are padded to (`Wan.text_tokens`; see `TEXT_TOKENS`).
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from ..tiny_wan import SCHEDULER_CONFIG, build_tokenizer

    tokenizer = build_tokenizer(world_words())
    channels = VAE_CONFIG["z_dim"] if learnt_vae else 48
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(**{**TRANSFORMER_CONFIG, "in_channels": channels,
                                               "out_channels": channels,
                                               "num_layers": layers or TRANSFORMER_CONFIG["num_layers"]})
        vae = AutoencoderKLWan(**VAE_CONFIG) if learnt_vae else PixelVAE(4, [0.0] * 48, [PIXEL_STD] * 48)
        config = UMT5Config(vocab_size=len(tokenizer), **TEXT_CONFIG, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
        text_encoder = UMT5EncoderModel(config)
    for part in (transformer, vae, text_encoder):
        part.requires_grad_(False).eval()
    backbone = Wan(text_tokens=text_tokens)
    if placement:
        backbone = backbone.with_placement(placement)
    return VideoModel(transformer, vae, text_encoder, tokenizer, dict(SCHEDULER_CONFIG), backbone, "toyworld-wan")


def load_toy_wan(folder: str | Path, placement: str | None = None) -> VideoModel:
    """A pretrained Wan toy model written by `pretrain_toy_wan` (its transformer and text encoder)."""
    from diffusers import WanTransformer3DModel
    from transformers import UMT5EncoderModel

    folder = Path(folder)
    if not (folder / "transformer").is_dir():
        raise FileNotFoundError(f"no Wan toy model in {folder}: pretrain one with "
                                f"`python -m motion_lora.toyworld.wan_toy --output {folder}`")
    settings = json.loads((folder / "pretrain.json").read_text())
    model = build_toy_wan(settings.get("seed", 0), placement, learnt_vae=settings.get("learnt_vae", False),
                          text_tokens=settings.get("text_tokens", MAX_TEXT_TOKENS))  # older folders: 512
    if settings.get("learnt_vae", False):
        from diffusers import AutoencoderKLWan

        model.vae = AutoencoderKLWan.from_pretrained(folder / "vae").eval().requires_grad_(False)
    elif (folder / PIXEL_STATS_FILE).is_file():  # older folders: the fixed PIXEL_STD
        model.vae.register_to_config(**json.loads((folder / PIXEL_STATS_FILE).read_text()))
    model.unet = WanTransformer3DModel.from_pretrained(folder / "transformer").eval().requires_grad_(False)
    model.text_encoder = UMT5EncoderModel.from_pretrained(folder / "text_encoder").eval().requires_grad_(False)
    return model


def generate(model: VideoModel, prompt: str, seed: int = 0, adapters=None, steps: int = SAMPLE_STEPS,
             guidance: float = GUIDANCE, noise_prior: float = 0.0, reference: torch.Tensor | None = None
             ) -> torch.Tensor:
    """One 9-frame clip `[9, 32, 32, 3]` from `prompt`, with the pack's sampler (Wan: UniPC, as WanPipeline);
    `noise_prior` > 0 starts from the flow-inverted `reference` frames mixed with the seed's noise."""
    from ..sampling import sample

    return sample(model, prompt, width=SIZE, height=SIZE, frames=FRAMES, steps=steps, guidance=guidance, seed=seed,
                  adapters=list(adapters or []), noise_prior=noise_prior, reference=reference,
                  inversion_steps=steps)


def prompt_following(model: VideoModel, seeds=(0,), progress=None) -> dict:
    """`evaluate.prompt_following` for the Wan toy model: the same score, on its own 9-frame clips."""
    return _prompt_following(model, seeds, progress, generate=generate)


@dataclass
class WanPretrainConfig:
    vae_steps: int = 250
    vae_batch: int = 3  # clips of 9 frames
    vae_lr: float = 2e-3
    decoder_steps: int = 300  # the decoder refined on the frozen encoder, object pixels weighted (see refine_decoder)
    object_weight: float = 10.0
    steps: int = 1500  # 12 min on one CPU thread beside another job (README)
    batch: int = 16  # clips
    lr: float = 2e-3
    empty_prompt_prob: float = 0.1
    ema: float = 0.998
    learnt_vae: bool = False  # True: pretrain an AutoencoderKLWan first (VAE_CONFIG); False: the lossless PixelVAE
    normalise_pixels: bool = True  # PixelVAE: latents_mean / latents_std measured on the world (see pixel_stats)
    layers: int = 2  # transformer blocks
    text_tokens: int = TEXT_TOKENS  # prompts padded to this length (Wan's own: 512)
    pool: int = 4096  # distinct rendered clips whose latents are cached (fresh clips would cost the VAE each step)
    stop_after: int = 0  # stop (and save) after this many transformer steps of the `steps`-long schedule; 0: run it all
    seed: int = 0
    save_every: int = 500


def _pixels(clips) -> torch.Tensor:
    return torch.stack([c.frames for c in clips]).permute(0, 4, 1, 2, 3) * 2 - 1  # [B, 3, F, H, W]


def train_vae(model: VideoModel, config: WanPretrainConfig, rng: random.Random, log: Path | None) -> None:
    """Reconstruction (L1 + MSE, tiny KL) of whole seen clips; then the latents' per-channel mean and std."""
    vae = model.vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.vae_lr, total_steps=max(1, config.vae_steps), pct_start=0.1)
    start = time.time()
    for step in range(1, config.vae_steps + 1):
        x = _pixels([random_clip(rng, tuple(SEEN)) for _ in range(config.vae_batch)])
        dist = vae.encode(x).latent_dist
        recon = vae.decode(dist.sample()).sample
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + 1e-6 * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0 or step == config.vae_steps:
            _log(log, f"vae step {step}/{config.vae_steps} loss {loss.item():.4f} ({time.time() - start:.0f} s)")
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        z = torch.cat([vae.encode(_pixels([random_clip(rng) for _ in range(8)])).latent_dist.mode()
                       for _ in range(8)])
    mean, std = _channel_stats(z)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    _log(log, f"vae latents_std {vae.config.latents_std}")


def _channel_stats(z: torch.Tensor, min_std: float = 0.0) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of latents `[B, C, F, h, w]`, as the lists a Wan VAE config carries."""
    mean, std = z.mean(dim=(0, 2, 3, 4)), z.std(dim=(0, 2, 3, 4)).clamp(min=min_std)
    return [round(float(v), 5) for v in mean], [round(float(v), 5) for v in std]


@torch.no_grad()
def pixel_stats(seed: int, clips: int = 256) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the PixelVAE's raw latents over `clips` seen clips (its own RNG).

    Wan's VAE config carries `latents_mean` / `latents_std` so that latents are about N(0, 1), the scale of the
    flow's noise. The fixed `PIXEL_STD` with a zero mean left the toy's latents at mean -0.97 (both backgrounds
    are dark: gray and black), std 0.99, over many clips; measured per channel they are about N(0, 1)."""
    rng = random.Random(seed)
    z = PixelVAE(4).encode(_pixels([random_clip(rng) for _ in range(clips)])).latent_dist.mode()
    return _channel_stats(z, min_std=1e-3)


PIXEL_STATS_FILE = "pixel_vae.json"


def refine_decoder(model: VideoModel, config: WanPretrainConfig, log: Path | None) -> None:
    """Train the decoder alone, on the frozen encoder's latents, with the object's pixels weighted up.

    The object covers under a tenth of a frame, so a short joint run learns the backgrounds first and
    decodes the object faintly; weighting its pixels fixes that without touching the encoder, so the
    latents the transformer learns from (and their mean and std) stay exactly as they were. Its own RNG
    keeps the rest of pretraining bit-identical with or without this stage.
    """
    rng = random.Random(config.seed + 1)
    vae = model.vae
    decoder = [vae.post_quant_conv, vae.decoder]
    for part in decoder:
        part.train().requires_grad_(True)
    params = [p for part in decoder for p in part.parameters()]
    opt = torch.optim.AdamW(params, lr=config.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.vae_lr, total_steps=max(1, config.decoder_steps),
                                                pct_start=0.1)
    start = time.time()
    for step in range(1, config.decoder_steps + 1):
        clips = [random_clip(rng, tuple(SEEN)) for _ in range(config.vae_batch)]
        x = _pixels(clips)
        background = torch.stack([torch.tensor(BACKGROUNDS[c.background]) for c in clips]).view(-1, 3, 1, 1, 1) * 2 - 1
        weight = 1 + (config.object_weight - 1) * ((x - background).abs().amax(dim=1, keepdim=True) > 1e-3).float()
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        recon = vae.decode(z).sample
        loss = (weight * ((recon - x).abs() + (recon - x) ** 2)).mean() / weight.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 25 == 0 or step == config.decoder_steps:
            _log(log, f"decoder step {step}/{config.decoder_steps} loss {loss.item():.4f} "
                      f"({time.time() - start:.0f} s)")
    vae.eval().requires_grad_(False)


@torch.no_grad()
def _latent_pool(model: VideoModel, config: WanPretrainConfig, rng: random.Random) -> tuple[torch.Tensor, list[str]]:
    clips = [random_clip(rng, tuple(SEEN)) for _ in range(config.pool)]
    latents = torch.cat([model.encode_frames(c.frames) for c in clips])
    return latents, [c.prompt for c in clips]


def train_transformer(model: VideoModel, config: WanPretrainConfig, rng: random.Random, log: Path | None,
                      output: Path) -> None:
    """Flow matching with the backbone's objective on cached seen clips; the EMA transformer is what gets saved."""
    start = time.time()
    latents, prompts = _latent_pool(model, config, rng)
    texts = {p: model.encode_prompt(p)[0] for p in set(prompts) | {""}}
    _log(log, f"cached {len(prompts)} clips' latents {tuple(latents.shape[1:])} and {len(texts)} prompts "
              f"({time.time() - start:.0f} s)")
    transformer = model.unet.train().requires_grad_(True)
    ema = copy.deepcopy(transformer).eval().requires_grad_(False)
    params = list(transformer.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=max(1, config.steps), pct_start=0.05)
    objective = model.backbone.objective(model.scheduler_config)
    generator = torch.Generator().manual_seed(config.seed)
    start, running = time.time(), None
    for step in range(1, config.steps + 1):
        idx = torch.randint(len(prompts), (config.batch,), generator=generator)
        x0 = latents[idx]
        text = torch.stack([texts["" if rng.random() < config.empty_prompt_prob else prompts[i]] for i in idx])
        noise = torch.randn(x0.shape, generator=generator)
        t = _pretraining_timesteps(objective, config.batch, generator)
        pred = model.backbone.predict(transformer, objective.add_noise(x0, noise, t), t, text)
        loss = F.mse_loss(pred, objective.target(x0, noise, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(config.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), transformer.parameters()):
                e.lerp_(p, 1 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0 or step in (config.steps, config.stop_after):
            elapsed = time.time() - start
            _log(log, f"transformer step {step}/{config.steps} loss {running:.4f} ({elapsed:.0f} s, "
                      f"{elapsed / step:.3f} s/step)")
        if step % config.save_every == 0 or step == config.steps or step == config.stop_after:
            _save(model, ema, output, config, step)
        if step == config.stop_after:
            break
    transformer.eval().requires_grad_(False)


def _pretraining_timesteps(objective, n: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform sigmas in [0, 1], in the transformer's units.

    The backbone's shifted sampling (shift 3) is a fine-tuning recipe for a model that already denoises at
    every noise level: it draws a sigma below 0.2 less than once in a hundred, so a model pretrained on it
    never learns the last steps and its samples keep their noise. Pretraining from scratch covers all."""
    return torch.rand(n, generator=generator) * objective.num_train_timesteps


def _save(model: VideoModel, ema, output: Path, config: WanPretrainConfig, step: int) -> None:
    output.mkdir(parents=True, exist_ok=True)
    ema.save_pretrained(output / "transformer", safe_serialization=True)
    model.text_encoder.save_pretrained(output / "text_encoder", safe_serialization=True)
    if config.learnt_vae:
        model.vae.save_pretrained(output / "vae", safe_serialization=True)
    (output / "pretrain.json").write_text(json.dumps({**asdict(config), "step": step}, indent=2))


def pretrain_toy_wan(output: str | Path, config: WanPretrainConfig | None = None, log: str | Path | None = None,
                     threads: int | None = None) -> Path:
    """Train the Wan toy model from scratch and write it as a diffusers folder (read by `load_model`)."""
    config = config or WanPretrainConfig()
    output, log = Path(output), (Path(log) if log else None)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    model = build_toy_wan(seed=config.seed, learnt_vae=config.learnt_vae, layers=config.layers,
                          text_tokens=config.text_tokens)
    _log(log, f"pretraining the Wan toy model into {output}: {config}")
    if config.learnt_vae:
        train_vae(model, config, rng, log)
        refine_decoder(model, config, log)
    elif config.normalise_pixels:
        mean, std = pixel_stats(config.seed + 2)
        model.vae.register_to_config(latents_mean=mean, latents_std=std)
        output.mkdir(parents=True, exist_ok=True)
        (output / PIXEL_STATS_FILE).write_text(json.dumps({"latents_mean": mean, "latents_std": std}))
        _log(log, f"pixel latents normalised per channel: std {min(std):.3f}..{max(std):.3f}")
    train_transformer(model, config, rng, log, output)
    return output


def parser() -> argparse.ArgumentParser:
    """The command line: one option per `WanPretrainConfig` field, whose default is the config's."""
    p = argparse.ArgumentParser(description="pretrain the Wan-architecture toy model of the toy world")
    p.add_argument("--output", required=True, help="diffusers folder to write")
    for name, value in asdict(WanPretrainConfig()).items():
        if isinstance(value, bool):  # --learnt-vae / --no-normalise-pixels: each flag's default is the config's
            p.add_argument("--" + name.replace("_", "-"), action=argparse.BooleanOptionalAction, default=value)
        else:
            p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1: on a shared 2-core box more is slower)")
    p.add_argument("--log", help="append progress lines to this file too")
    p.add_argument("--eval-only", action="store_true", help="only measure the prompt following of --output")
    return p


def main(argv=None) -> int:
    args = vars(parser().parse_args(argv))
    output, threads, log, eval_only = args.pop("output"), args.pop("threads"), args.pop("log"), args.pop("eval_only")
    if not eval_only:
        pretrain_toy_wan(output, WanPretrainConfig(**args), log=log, threads=threads)
    torch.set_num_threads(threads)
    result = prompt_following(load_toy_wan(output))
    _log(Path(log) if log else None, "prompt following (seen prompts, 1 seed): " + json.dumps(result))
    (Path(output) / "prompt_following.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
