"""Wan 2.1 / 2.2: diffusers' `WanTransformer3DModel`, `AutoencoderKLWan` and a UMT5 text encoder.

The one place that knows this family's layout (METHOD.md, "MotionDirector on a video DiT"):
- latents are `[batch, C, 1 + (F-1)/4, H/s, W/s]` (C=16, s=8 for Wan 2.1; C=48, s=16 for Wan 2.2 TI2V-5B),
  normalised with the VAE's `latents_mean` / `latents_std` as `WanPipeline` does;
- the objective is flow matching: `x_t = (1 - s) x_0 + s * noise`, target `noise - x_0`, the transformer
  takes `s * 1000` as its timestep;
- every block runs full 3-D self-attention over all frames (`attn1`), cross-attention to the text (`attn2`)
  and a feed-forward (`ffn`), so space and time share layers: where each LoRA path sits is a setting
  (`placement`), see `PLACEMENTS`;
- one video frame encoded on its own is an image (the causal VAE encodes the first frame alone), which is
  what the spatial path trains on.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn

from .base import FramesOnAxis2, linear_fingerprint

ATTN = ("to_q", "to_k", "to_v", "to_out.0")  # diffusers names of a WanAttention's linears
FFN = ("ffn.net.0.proj", "ffn.net.2")
# Candidate placements of the two LoRA paths (METHOD.md). Names are relative to a transformer block.
PLACEMENTS: dict[str, dict[str, tuple[str, ...]]] = {
    # (a) both paths on self-attention and feed-forward, as separate adapters
    "a": {"spatial": tuple(f"attn1.{n}" for n in ATTN) + FFN, "temporal": tuple(f"attn1.{n}" for n in ATTN) + FFN},
    # (b) temporal on self-attention only (frames meet only there), spatial on self-attention and feed-forward
    "b": {"spatial": tuple(f"attn1.{n}" for n in ATTN) + FFN, "temporal": tuple(f"attn1.{n}" for n in ATTN)},
    # (c) as (b), temporal on q/k only: motion as the attention pattern
    "c": {"spatial": tuple(f"attn1.{n}" for n in ATTN) + FFN, "temporal": ("attn1.to_q", "attn1.to_k")},
}
# PROVISIONAL: "b". The toy-world comparison (bench/bench_wan_placement.py, README) found no winner yet: on the
# toy Wan no placement learns a held-out motion, alone or on top of the noise prior, and leakage is alike
# (4 motions x 6 seeds, bench/wan_placement_toy_text16_prior.json); the toy does not use its motion words.
DEFAULT_PLACEMENT = "b"

MAX_TEXT_TOKENS = 512  # WanPipeline's max_sequence_length
TRAIN_SHIFT = 3.0  # musubi-tuner's Wan recipe: --timestep_sampling shift --discrete_flow_shift 3.0

# Wan's schedulers for sampling: name -> (diffusers class, overrides computed from the model's config).
SCHEDULERS = ("unipc", "euler")
DEFAULT_SCHEDULER = "unipc"  # WanPipeline's default: UniPC in flow-prediction mode


class FlowMatchObjective:
    """Wan's training objective: rectified flow with a shifted sigma and a velocity target.

    Sigmas are drawn as musubi-tuner's `--timestep_sampling shift` does: `u = sigmoid(N(0, 1))`, then
    `s = shift * u / (1 + (shift - 1) * u)`; a `sigma_range` (e.g. (0.875, 1.0) for Wan 2.2 A14B's
    high-noise expert) keeps the shape of that distribution and rejects draws outside it. Timesteps are in the
    transformer's units, `s * num_train_timesteps`.
    """

    def __init__(self, shift: float = TRAIN_SHIFT, num_train_timesteps: int = 1000,
                 sigma_range: tuple[float, float] = (0.0, 1.0)):
        low, high = sigma_range
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"sigma_range must satisfy 0 <= low < high <= 1, got {sigma_range}")
        if shift <= 0:
            raise ValueError(f"the flow shift must be positive, got {shift}")
        self.shift = float(shift)
        self.num_train_timesteps = int(num_train_timesteps)
        self.sigma_range = (float(low), float(high))

    def sigmas(self, n: int, generator: torch.Generator) -> torch.Tensor:
        low, high = self.sigma_range
        out = torch.empty(0)
        while out.numel() < n:  # rejection keeps the shifted distribution's shape inside the range
            u = torch.randn(max(n, 16), generator=generator).sigmoid()
            s = self.shift * u / (1 + (self.shift - 1) * u)
            out = torch.cat([out, s[(s >= low) & (s <= high)]])
        return out[:n]

    def sample_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.sigmas(n, generator) * self.num_train_timesteps

    def _sigma(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        s = t.to(like.device, torch.float32).reshape(-1) / self.num_train_timesteps
        return s.view(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = self._sigma(t, latents)
        return ((1 - s) * latents.float() + s * noise.float()).to(latents.dtype)

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return noise - latents


class TextEmbeddings:
    """Text conditioning computed elsewhere (ComfyUI's CLIP Loader + Text Encode): prompt -> `[tokens, 4096]`.

    Stands in for the text encoder when the pack does not parse a text-encoder file itself. ComfyUI's Wan
    conditioning is already what WanPipeline makes (at least 512 tokens, padding zeroed: its UMT5 tokenizer
    pads to 512 and its encoder zeroes masked positions), so it is added as it is; rows are cut or
    zero-padded to 512.
    """

    def __init__(self, embeddings: dict[str, torch.Tensor] | None = None):
        self.embeddings = dict(embeddings or {})
        self.device = torch.device("cpu")

    def add(self, prompt: str, embedding: torch.Tensor) -> None:
        if embedding.dim() == 3:
            embedding = embedding[0]
        self.embeddings[prompt] = embedding.detach()

    def to(self, device=None, dtype=None, **_):
        if device is not None:
            self.device = torch.device(device)
        return self

    def requires_grad_(self, *_):
        return self

    def eval(self):
        return self

    def __call__(self, prompts: Sequence[str], max_length: int) -> torch.Tensor:
        missing = [p for p in prompts if p not in self.embeddings]
        if missing:
            raise ValueError(f"no text embedding for prompt {missing[0]!r}: this Wan model takes its text from "
                             "ComfyUI's text encoder; encode that prompt (CLIP Text Encode) and pass it in")
        rows = []
        for p in prompts:
            e = self.embeddings[p].float()[:max_length]
            rows.append(torch.cat([e, e.new_zeros(max_length - e.shape[0], e.shape[1])]))
        return torch.stack(rows).to(self.device)


class FirstFrameImage:
    """An image held as the first latent frame while sampling: Wan 2.2 TI2V-5B's image-to-video.

    As `WanImageToVideoPipeline` with `expand_timesteps`: before every step the image's latent frame replaces
    the first latent frame, the transformer is told timestep 0 on that frame's tokens (TI2V-5B was trained to
    read a clean first frame so, and the rest at the step's t), and the finished latents keep it.
    """

    def __init__(self, latent: torch.Tensor, shape: Sequence[int], patch_size: Sequence[int]):
        self.latent = latent  # [1, C, 1, h, w]
        self.mask = torch.ones(1, 1, *shape[2:], device=latent.device)  # 0 on the image's frame, 1 elsewhere
        self.mask[:, :, 0] = 0
        self.patch_size = tuple(patch_size)

    def blend(self, latents: torch.Tensor) -> torch.Tensor:
        mask = self.mask.to(latents.device, latents.dtype)
        return (1 - mask) * self.latent.to(latents.device, latents.dtype) + mask * latents

    def timesteps(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """`[batch, tokens]`: 0 on the first frame's tokens, `t` on the others (one value per patch)."""
        pt, ph, pw = self.patch_size
        t = torch.as_tensor(t, dtype=torch.float32, device=self.mask.device)
        per_token = (self.mask[0, 0, ::pt, ::ph, ::pw] * t).flatten()
        return per_token.unsqueeze(0).expand(batch, -1)


def _block_index(path: str) -> int:
    return int(path.split(".")[1])


class Wan(FramesOnAxis2):
    """Backbone facts for `WanTransformer3DModel` models (Wan 2.1 T2V 1.3B / 14B, Wan 2.2 TI2V-5B / A14B).

    `placement` chooses where the two LoRA paths sit (`PLACEMENTS`; the default is provisional until the
    toy-world measurement). `shift` and `sigma_range` set the training timesteps (`FlowMatchObjective`).
    `text_tokens` is the length prompts are zero-padded to: 512 for every real Wan (its pretraining padded so,
    and its cross-attention attends to the padding too); the toy-world Wan is pretrained with a short one.
    `image_to_video` is True for a model that takes an image as its first latent frame (Wan 2.2 TI2V-5B, whose
    diffusers folder says `expand_timesteps`; `first_frame`).
    """

    name = "wan"
    unet_class = "WanTransformer3DModel"
    denoiser_folder = "transformer"  # model_index.json names the denoiser "transformer", not "unet"
    spatial_reuses_clip_noise = False  # a later latent frame summarises 4 video frames: not an image
    inversion = "flow"  # the noise prior runs the flow ODE backwards (noise_prior.flow_invert), not DDIM
    schedulers = SCHEDULERS
    default_scheduler = DEFAULT_SCHEDULER
    # VideoModel part -> (subfolder of a diffusers folder, library, class), as WanPipeline's model_index.json
    components = {
        "unet": ("transformer", "diffusers", "WanTransformer3DModel"),
        "vae": ("vae", "diffusers", "AutoencoderKLWan"),
        "text_encoder": ("text_encoder", "transformers", "UMT5EncoderModel"),
        "tokenizer": ("tokenizer", "transformers", "AutoTokenizer"),
    }
    pipeline_class = "WanPipeline"

    def __init__(self, placement: str = DEFAULT_PLACEMENT, shift: float = TRAIN_SHIFT,
                 sigma_range: tuple[float, float] = (0.0, 1.0), text_tokens: int = MAX_TEXT_TOKENS,
                 image_to_video: bool = False):
        if placement not in PLACEMENTS:
            raise ValueError(f"Wan LoRA placement must be one of {list(PLACEMENTS)}, got {placement!r}")
        if text_tokens < 1:
            raise ValueError(f"text_tokens must be at least 1, got {text_tokens}")
        self.placement = placement
        self.shift = shift
        self.sigma_range = tuple(sigma_range)
        self.text_tokens = int(text_tokens)
        self.image_to_video = bool(image_to_video)

    def __repr__(self) -> str:
        extra = "" if self.text_tokens == MAX_TEXT_TOKENS else f", text_tokens={self.text_tokens}"
        extra += ", image_to_video=True" if self.image_to_video else ""
        return f"Wan(placement={self.placement!r}, shift={self.shift}, sigma_range={self.sigma_range}{extra})"

    def with_placement(self, placement: str) -> "Wan":
        """This backbone with the LoRAs at `placement`, every other setting kept."""
        return Wan(placement, self.shift, self.sigma_range, self.text_tokens, self.image_to_video)

    def for_model_index(self, index: dict) -> "Wan":
        """This backbone as a diffusers folder's `model_index.json` describes the model: Wan 2.2 A14B (a
        `transformer_2` and its `boundary_ratio`) trains the high-noise expert on its own sigmas, as
        `load_wan_files` does for ComfyUI's files; TI2V-5B (`expand_timesteps`) takes an image."""
        sigma_range = self.sigma_range
        if index.get("transformer_2") and index.get("transformer_2")[0] and index.get("boundary_ratio") is not None:
            sigma_range = (float(index["boundary_ratio"]), 1.0)
        return Wan(self.placement, self.shift, sigma_range, self.text_tokens,
                   bool(index.get("expand_timesteps", False)))

    def model_index_settings(self) -> dict:
        """What `VideoModel.save` writes into `model_index.json` for `for_model_index` to read back."""
        return {"expand_timesteps": True} if self.image_to_video else {}

    def matches(self, unet: nn.Module) -> bool:
        return type(unet).__name__ == self.unet_class

    # --- where the LoRAs go -----------------------------------------------------------------------
    placements = tuple(PLACEMENTS)

    def placement_targets(self, unet: nn.Module, kind: str, placement: str) -> list[str]:
        """The `kind` path's layers under `placement` (any of `PLACEMENTS`, not only this backbone's own): a LoRA
        trained with another placement still fits this model (`adapters.check_fits`)."""
        names = PLACEMENTS[placement]["spatial" if kind == "spatial" else "temporal"]
        return [f"blocks.{i}.{n}" for i in range(len(unet.blocks)) for n in names]

    def _targets(self, unet: nn.Module, kind: str) -> list[str]:
        return self.placement_targets(unet, kind, self.placement)

    def spatial_targets(self, unet: nn.Module) -> list[str]:
        return self._targets(unet, "spatial")

    def temporal_targets(self, unet: nn.Module) -> list[str]:
        return self._targets(unet, "temporal")

    def fingerprint(self, unet: nn.Module) -> str:
        every = [f"blocks.{i}.{n}" for i in range(len(unet.blocks)) for n in PLACEMENTS["a"]["spatial"]]
        return linear_fingerprint(self.name, unet, every)

    def checkpoint_units(self, unet: nn.Module, policy: str = "all") -> list[nn.Module]:
        """The transformer blocks, for both policies: a DiT block is attention and feed-forward in one,
        there is no lighter unit to recompute."""
        if policy not in ("all", "attention"):
            raise ValueError(f"gradient checkpointing policy must be one of ['all', 'attention'], got {policy!r}")
        return list(unet.blocks)

    # --- objective --------------------------------------------------------------------------------
    def objective(self, scheduler_config: dict) -> FlowMatchObjective:
        return FlowMatchObjective(self.shift, scheduler_config.get("num_train_timesteps", 1000), self.sigma_range)

    # --- text -------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, tokenizer, text_encoder, prompts: Sequence[str]) -> torch.Tensor:
        """UMT5 embeddings `[n, text_tokens, dim]`, each trimmed to its prompt's length and zero-padded (as
        WanPipeline, with 512)."""
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        prompts = [prompt_clean(p) for p in prompts]
        if isinstance(text_encoder, TextEmbeddings):
            return text_encoder(prompts, self.text_tokens)
        inputs = tokenizer(prompts, padding="max_length", max_length=self.text_tokens, truncation=True,
                           add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        ids, mask = inputs.input_ids, inputs.attention_mask
        lengths = mask.gt(0).sum(dim=1).long()
        device = next(text_encoder.parameters()).device
        hidden = text_encoder(ids.to(device), mask.to(device)).last_hidden_state
        rows = [torch.cat([h[:n], h.new_zeros(self.text_tokens - n, h.shape[1])]) for h, n in zip(hidden, lengths)]
        return torch.stack(rows)

    # --- latents ----------------------------------------------------------------------------------
    def vae_scale(self, vae) -> int:
        return int(vae.config.scale_factor_spatial)

    def vae_temporal_scale(self, vae) -> int:
        return int(vae.config.scale_factor_temporal)

    def _check_frames(self, vae, frames: int) -> None:
        k = self.vae_temporal_scale(vae)
        if frames < 1 or (frames - 1) % k:
            raise ValueError(f"Wan encodes 1 + {k}n frames (e.g. {1 + k}, {1 + 4 * k}, 49, 81), got {frames}: "
                             f"trim or pad the clip to {1 + k * max(0, (frames - 1) // k)} frames")

    def latent_shape(self, unet, vae, frames: int, height: int, width: int) -> tuple[int, ...]:
        s = self.vae_scale(vae) * unet.config.patch_size[1]  # the transformer patches latents 2x2
        if height % s or width % s:
            raise ValueError(f"width and height must be multiples of {s}, got {width}x{height}")
        self._check_frames(vae, frames)
        k = self.vae_temporal_scale(vae)
        return (1, unet.config.in_channels, 1 + (frames - 1) // k, height // self.vae_scale(vae),
                width // self.vae_scale(vae))

    def _stats(self, vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(like.device, torch.float32)
        std = torch.tensor(vae.config.latents_std).view(shape).to(like.device, torch.float32)
        return mean, std

    def _encode(self, vae, pixels: torch.Tensor) -> torch.Tensor:
        """Pixel videos `[B, 3, F, H, W]` in -1..1 -> normalised latents (the posterior's mean, as WanPipeline's
        video-to-video does: encoding is deterministic, so cached latents do not depend on a seed)."""
        z = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode().float()
        mean, std = self._stats(vae, z)
        return (z - mean) / std

    @torch.no_grad()
    def frames_to_latents(self, vae, frames: torch.Tensor, generator=None) -> torch.Tensor:
        self._check_frames(vae, frames.shape[0])
        pixels = frames.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1  # [1, 3, F, H, W]
        return self._encode(vae, pixels)

    @torch.no_grad()
    def image_latents(self, vae, frames: torch.Tensor, clip_latents: torch.Tensor | None = None,
                      generator=None, chunk: int = 8) -> torch.Tensor:
        """Every frame encoded on its own as a one-frame video: `[F, C, 1, h, w]` (the clip's latents are
        not reused: a latent frame after the first summarises four video frames)."""
        pixels = frames.permute(0, 3, 1, 2).unsqueeze(2) * 2 - 1  # [F, 3, 1, H, W]
        return torch.cat([self._encode(vae, pixels[i : i + chunk]) for i in range(0, pixels.shape[0], chunk)])

    @torch.no_grad()
    def latents_to_frames(self, vae, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        """Decoded in one call (`chunk` is ignored: the causal decoder carries state from frame to frame)."""
        mean, std = self._stats(vae, latents)
        z = latents.float() * std + mean
        pixels = vae.decode(z.to(vae.device, vae.dtype)).sample.float()[0]  # [3, F, H, W] in -1..1
        return (pixels / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).cpu()

    @torch.no_grad()
    def first_frame(self, unet, vae, image: torch.Tensor, shape: Sequence[int]) -> FirstFrameImage:
        """An image `[H, W, 3]` in 0..1, at the clip's size, as the first latent frame of a clip of `shape`."""
        if not self.image_to_video:
            raise ValueError("this Wan model does not take an image: image-to-video needs Wan 2.2 TI2V-5B "
                             "(wan2.2_ti2v_5B); leave the image out to sample from the prompt alone")
        h, w = shape[3] * self.vae_scale(vae), shape[4] * self.vae_scale(vae)
        if tuple(image.shape) != (h, w, 3):
            raise ValueError(f"the image must be [{h}, {w}, 3] (the clip's size, RGB), got {tuple(image.shape)}")
        latent = self._encode(vae, image.permute(2, 0, 1)[None, :, None] * 2 - 1)  # a one-frame video
        return FirstFrameImage(latent, shape, unet.config.patch_size)

    # --- denoiser ---------------------------------------------------------------------------------
    def predict(self, unet, latents: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """One transformer call; `t` (one value, one per batch item, or `[batch, tokens]` as Wan 2.2 TI2V takes
        it, `FirstFrameImage.timesteps`) is in 0..1000 (sigma * 1000)."""
        t = torch.as_tensor(t, device=latents.device)
        if t.dim() < 2:
            t = t.reshape(-1)
        if t.dim() == 1 and t.numel() == 1:
            t = t.expand(latents.shape[0])
        return unet(hidden_states=latents, timestep=t, encoder_hidden_states=text.to(latents.dtype),
                    return_dict=False)[0]

    # --- sampling ---------------------------------------------------------------------------------
    def make_scheduler(self, name: str, scheduler_config: dict):
        """"unipc": WanPipeline's UniPC in flow-prediction mode; "euler": flow-matching Euler at the same shift."""
        import diffusers

        config = dict(scheduler_config)
        if name == "unipc":
            if config.get("_class_name") != "UniPCMultistepScheduler":
                config = {"num_train_timesteps": config.get("num_train_timesteps", 1000)}
            overrides = {"prediction_type": "flow_prediction", "use_flow_sigmas": True,
                         "flow_shift": float(scheduler_config.get("flow_shift", scheduler_config.get("shift", 3.0)))}
            return diffusers.UniPCMultistepScheduler.from_config(config, **overrides)
        if name == "euler":
            shift = float(scheduler_config.get("flow_shift", scheduler_config.get("shift", 3.0)))
            return diffusers.FlowMatchEulerDiscreteScheduler(
                num_train_timesteps=config.get("num_train_timesteps", 1000), shift=shift)
        raise ValueError(f"unknown scheduler {name!r} for Wan: choose one of {', '.join(SCHEDULERS)}")

    # --- LoRA files: ComfyUI's key layout ---------------------------------------------------------
    def lora_keys_to_file(self, tensors: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
        """Our adapter keys (diffusers module paths) -> ComfyUI's layout for Wan: original module names under
        `diffusion_model.`, with the alpha per layer, as musubi-tuner and diffusion-pipe write them."""
        out = {}
        for key, value in tensors.items():
            path, suffix = _split_lora_key(key)
            name = "diffusion_model." + to_original_name(path)
            out[f"{name}.{suffix}"] = value
            if suffix == "lora_A.weight":
                out[f"{name}.alpha"] = torch.tensor(float(alpha))
        return out

    def lora_keys_from_file(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inverse of `lora_keys_to_file` (alphas dropped: the file's metadata holds the adapter's alpha)."""
        out = {}
        for key, value in tensors.items():
            if key.endswith(".alpha"):
                continue
            path, suffix = _split_lora_key(key)
            out[f"{to_diffusers_name(path.removeprefix('diffusion_model.'))}.{suffix}"] = value
        return out


def _split_lora_key(key: str) -> tuple[str, str]:
    for suffix in ("lora_A.weight", "lora_B.weight"):
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], suffix
    raise ValueError(f"not a LoRA weight key: {key!r}")


# --- module names: diffusers <-> original Wan / ComfyUI ---------------------------------------------
# diffusers' single-file converter (`convert_wan_transformer_to_diffusers`) holds the original -> diffusers
# renames; these are their inverse for the transformer's parameters (checked against it in the tests).
_TOP_LEVEL = {
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "proj_out": "head.head",
    "scale_shift_table": "head.modulation",
    "patch_embedding": "patch_embedding",
}
_IN_BLOCK = {
    "attn1": "self_attn", "attn2": "cross_attn",
    "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o",
    "norm_q": "norm_q", "norm_k": "norm_k",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
    "norm2": "norm3",  # diffusers' cross-attention norm is the original norm3
    "scale_shift_table": "modulation",
}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def to_original_name(path: str) -> str:
    """A diffusers module or parameter path of the transformer -> its original Wan / ComfyUI name."""
    for suffix in ("", ".weight", ".bias"):
        stem = path[: len(path) - len(suffix)] if suffix else path
        if suffix and not path.endswith(suffix):
            continue
        if stem in _TOP_LEVEL:
            return _TOP_LEVEL[stem] + suffix
        m = _BLOCK.match(stem)
        if m:
            rest = m.group(2)
            for attn in ("attn1", "attn2"):
                if rest.startswith(attn + "."):
                    inner = rest[len(attn) + 1 :]
                    if inner in _IN_BLOCK:
                        return f"blocks.{m.group(1)}.{_IN_BLOCK[attn]}.{_IN_BLOCK[inner]}{suffix}"
            if rest in _IN_BLOCK:
                return f"blocks.{m.group(1)}.{_IN_BLOCK[rest]}{suffix}"
    raise ValueError(f"no original Wan name for transformer module {path!r}")


_FROM_ORIGINAL_TOP = {v: k for k, v in _TOP_LEVEL.items()}
_FROM_ORIGINAL_BLOCK = {v: k for k, v in _IN_BLOCK.items() if k not in ("attn1", "attn2")}


def to_diffusers_name(path: str) -> str:
    """An original Wan / ComfyUI module or parameter name -> its diffusers path (inverse of `to_original_name`)."""
    for suffix in ("", ".weight", ".bias"):
        if suffix and not path.endswith(suffix):
            continue
        stem = path[: len(path) - len(suffix)] if suffix else path
        if stem in _FROM_ORIGINAL_TOP:
            return _FROM_ORIGINAL_TOP[stem] + suffix
        m = _BLOCK.match(stem)
        if m:
            rest = m.group(2)
            for original, attn in (("self_attn", "attn1"), ("cross_attn", "attn2")):
                if rest.startswith(original + "."):
                    inner = rest[len(original) + 1 :]
                    if inner in _FROM_ORIGINAL_BLOCK:
                        return f"blocks.{m.group(1)}.{attn}.{_FROM_ORIGINAL_BLOCK[inner]}{suffix}"
            if rest in _FROM_ORIGINAL_BLOCK:
                return f"blocks.{m.group(1)}.{_FROM_ORIGINAL_BLOCK[rest]}{suffix}"
    raise ValueError(f"{path!r} is not a Wan transformer module name this pack knows")
