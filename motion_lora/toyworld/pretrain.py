"""Pretrain the toy model on the world's seen motions: first the VAE, then the UNet and text encoder.

One seeded command (`python -m motion_lora toyworld pretrain`) makes the shipped weights: every
draw comes from the seed, so the same torch build and thread count should give them again (not
checked bit for bit: the shipped run took 51 min on both threads of a 2-core CPU). Clips are rendered on the
fly, so the model never sees the same clip twice and never sees a held-out motion. The UNet is trained as
ZeroScope was: epsilon prediction under ZeroScope's own noise schedule, with the loss weighting of
`_snr_weight` and 10 % empty prompts so classifier-free guidance works; the saved UNet is an exponential
moving average of the trained one, which samples much better after a short run.
"""

from __future__ import annotations

import copy
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .model import WEIGHTS, build_toy_model
from .world import SEEN, random_clip


@dataclass
class PretrainConfig:
    vae_steps: int = 2000
    vae_batch: int = 32  # frames
    vae_lr: float = 2e-3
    vae_object_weight: float = 10.0
    unet_steps: int = 3500
    batch: int = 16  # clips
    lr: float = 2e-3
    empty_prompt_prob: float = 0.1
    ema: float = 0.998
    min_snr_gamma: float = 5.0  # Min-SNR loss weighting (Hang et al. 2023); 0 turns it off
    high_noise_floor: float = 1.0  # the clean-clip loss weight never falls below this (0: plain Min-SNR)
    seed: int = 0
    save_every: int = 200


def _log(path: Path | None, text: str) -> None:
    print(text, flush=True)
    if path is not None:
        with path.open("a") as f:
            f.write(text + "\n")


def _object_weight(x: torch.Tensor, weight: float) -> torch.Tensor:
    """`[B, 1, H, W]`: `weight` on the object's pixels and a 1-pixel ring around them, 1 elsewhere.

    The object covers about 8 % of a frame, so a plain reconstruction loss is mostly background,
    and a VAE trained on it blurs the shapes apart (the tracker then reads a circle as a square)."""
    background = x[:, :, :1, :1]  # every clip's corner pixel is background
    obj = ((x - background).abs().amax(dim=1, keepdim=True) > 0.05).float()
    ring = F.max_pool2d(obj, 3, stride=1, padding=1)
    return 1 + (weight - 1) * ring


def train_vae(model, config: PretrainConfig, rng: random.Random, log: Path | None) -> None:
    """Object-weighted reconstruction (L1 + MSE) with a tiny KL term on single frames; then normalise the latents."""
    vae = model.vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.vae_lr, total_steps=max(1, config.vae_steps), pct_start=0.1)
    start = time.time()
    for step in range(1, config.vae_steps + 1):
        x = torch.stack([random_clip(rng).frames[rng.randrange(8)] for _ in range(config.vae_batch)])
        x = x.permute(0, 3, 1, 2) * 2 - 1
        dist = vae.encode(x).latent_dist
        recon = vae.decode(dist.sample()).sample
        w = _object_weight(x, config.vae_object_weight)
        loss = ((recon - x).abs() * w).mean() + ((recon - x) ** 2 * w).mean() + 1e-6 * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == config.vae_steps:
            _log(log, f"vae step {step}/{config.vae_steps} loss {loss.item():.4f} ({time.time() - start:.0f} s)")
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        x = torch.stack([random_clip(rng).frames[0] for _ in range(512)]).permute(0, 3, 1, 2) * 2 - 1
        mean = vae.encode(x).latent_dist.mean
        normalise_latents(vae, mean.mean(dim=(0, 2, 3)), mean.std(dim=(0, 2, 3)))
    _log(log, "vae latents normalised per channel (folded into quant_conv and post_quant_conv)")


@torch.no_grad()
def normalise_latents(vae, mu: torch.Tensor, std: torch.Tensor) -> None:
    """Make the VAE's latents zero-mean, unit-variance per channel, exactly, by changing its 1x1 convolutions.

    ZeroScope's backbone only scales latents (`scaling_factor`); a mean far from 0 would bias every
    denoising step. With z = std * z' + mu, the encoder's `quant_conv` now outputs z' (its log-variance
    shifted by -2 log std) and the decoder's `post_quant_conv` takes z', so decode(encode(x)) is unchanged."""
    c = mu.numel()
    q, pq = vae.quant_conv, vae.post_quant_conv
    q.weight[:c] /= std.view(-1, 1, 1, 1)
    q.bias[:c] = (q.bias[:c] - mu) / std
    q.bias[c:] -= 2 * std.log()
    pq.bias += (pq.weight[:, :, 0, 0] * mu).sum(dim=1)
    pq.weight *= std.view(1, -1, 1, 1)
    vae.register_to_config(scaling_factor=1.0)


def train_unet(model, config: PretrainConfig, rng: random.Random, log: Path | None, output: Path) -> None:
    """Denoising on whole seen clips, UNet and text encoder together; the EMA of both is what gets saved."""
    unet, text_encoder, vae, backbone = model.unet, model.text_encoder, model.vae, model.backbone
    objective = backbone.objective(model.scheduler_config)  # ZeroScope's DDPM noising and epsilon target
    for part in (unet, text_encoder):
        part.train().requires_grad_(True)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    for part in (ema_unet, ema_text):
        part.requires_grad_(False)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=max(1, config.unet_steps), pct_start=0.05)
    generator = torch.Generator().manual_seed(config.seed)
    start, running = time.time(), None
    for step in range(1, config.unet_steps + 1):
        clips = [random_clip(rng, tuple(SEEN)) for _ in range(config.batch)]
        prompts = ["" if rng.random() < config.empty_prompt_prob else c.prompt for c in clips]
        with torch.no_grad():
            latents = torch.cat([backbone.frames_to_latents(vae, c.frames, generator) for c in clips])
        ids = model.tokenizer(prompts, padding="max_length", max_length=model.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids
        text = text_encoder(ids)[0]
        noise = torch.randn(latents.shape, generator=generator)
        t = objective.sample_timesteps(latents.shape[0], generator)
        pred = backbone.predict(unet, objective.add_noise(latents, noise, t), t, text)
        per_clip = F.mse_loss(pred, objective.target(latents, noise, t), reduction="none").mean(
            dim=tuple(range(1, pred.dim())))
        weight = _snr_weight(objective.scheduler, t, config.min_snr_gamma, config.high_noise_floor)
        loss = (per_clip * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(config.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, live in ((ema_unet, unet), (ema_text, text_encoder)):
                for e, p in zip(ema.parameters(), live.parameters()):
                    e.lerp_(p, 1 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 25 == 0 or step == config.unet_steps:
            elapsed = time.time() - start
            _log(log, f"unet step {step}/{config.unet_steps} loss {running:.4f} ({elapsed:.0f} s, "
                      f"{elapsed / step:.2f} s/step)")
        if step % config.save_every == 0 or step == config.unet_steps:
            _save(model, ema_unet, ema_text, output, config, step)
    for part in (unet, text_encoder):
        part.eval().requires_grad_(False)


def _snr_weight(scheduler, t: torch.Tensor, gamma: float, floor: float = 0.0) -> torch.Tensor:
    """Per-clip weight on the epsilon loss: clamp(SNR, floor, gamma) / SNR, a weight of clamp(SNR, floor, gamma)
    on the error of the predicted clean clip.

    `gamma` is Min-SNR (Hang et al. 2023): the nearly clean timesteps, whose loss is mostly fine detail, stop
    dominating. `floor` is the truncated-SNR weighting of Salimans & Ho (2022), max(SNR, 1): plain epsilon loss
    weighs the clean-clip error of the noisiest timesteps by SNR, about 0.005 at t = 999, and those are the
    only timesteps at which the prompt's motion word tells the model something the noisy clip does not. The
    model pretrained without it (and with collapsed word embeddings, on the unstaged world) ignored the motion
    word entirely: its loss was the same to four digits with the right and a wrong one. The floor's own share
    of the fix is not measured apart from the other two."""
    alpha = scheduler.alphas_cumprod[t]
    snr = alpha / (1 - alpha)
    weight = snr.clamp(max=gamma) if gamma > 0 else snr
    return weight.clamp(min=floor) / snr


def _save(model, ema_unet, ema_text, output: Path, config: PretrainConfig, step: int) -> None:
    from ..model import VideoModel

    saved = VideoModel(ema_unet, model.vae, ema_text, model.tokenizer, model.scheduler_config, model.backbone,
                       "toyworld")
    saved.save(output)
    (output / "pretrain.json").write_text(json.dumps({**asdict(config), "step": step}, indent=2))


def pretrain(output: str | Path = WEIGHTS, config: PretrainConfig | None = None, log: str | Path | None = None,
             threads: int | None = None) -> Path:
    """Train the toy model from scratch and write it as a diffusers folder at `output`."""
    config = config or PretrainConfig()
    output, log = Path(output), (Path(log) if log else None)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    model = build_toy_model(seed=config.seed)
    _log(log, f"pretraining the toy model into {output}: {config}")
    train_vae(model, config, rng, log)
    train_unet(model, config, rng, log, output)
    return output
