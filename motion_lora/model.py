"""The model bundle: one object holding a text-to-video model's parts, loaded offline.

A diffusers folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`,
`tokenizer/`, `scheduler/`) becomes a `VideoModel`; nothing is ever fetched from a hub.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .backbones import Backbone, backbone_for, backbone_for_class

logger = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


_warned_prompts: set[tuple[int, str]] = set()


def _warn_if_too_long(tokenizer, prompt: str) -> None:
    """Say once per prompt that the text encoder only reads its first `model_max_length` tokens."""
    limit = getattr(tokenizer, "model_max_length", None)
    if not prompt or not isinstance(limit, int) or limit <= 0 or limit > 100_000:
        return
    count = len(tokenizer(prompt, truncation=False).input_ids)
    if count > limit and (limit, prompt) not in _warned_prompts:
        _warned_prompts.add((limit, prompt))
        kept = tokenizer.decode(tokenizer(prompt, truncation=True, max_length=limit).input_ids,
                                skip_special_tokens=True)
        logger.warning("the prompt is %d tokens long, over the text encoder's limit of %d: only its start is "
                       "used (%r...); shorten it to keep the rest", count, limit, kept[-60:])


class ModelLoadError(ValueError):
    """A model folder that cannot be loaded; the message names the folder and the fix."""


@dataclass
class VideoModel:
    """A loaded text-to-video model. The UNet is shared by everything that uses this bundle."""

    unet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: object
    scheduler_config: dict
    backbone: Backbone
    source: str = ""  # folder it came from, or "tiny"
    dtype: torch.dtype = torch.float32
    # Wan 2.2 A14B: `unet` is the high-noise expert, used for timesteps >= boundary_ratio * 1000, and this
    # low-noise expert below (as WanPipeline's transformer_2). Training and adapters use `unet` only.
    low_noise_unet: nn.Module | None = None
    boundary_ratio: float | None = None

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def fingerprint(self) -> str:
        """Identifies which adapters fit this model (layer names and shapes)."""
        return self.backbone.fingerprint(self.unet)

    def encode_prompt(self, prompts: str | Sequence[str]) -> torch.Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        for prompt in prompts:
            _warn_if_too_long(self.tokenizer, prompt)
        return self.backbone.encode_prompt(self.tokenizer, self.text_encoder, prompts).to(self.device, self.dtype)

    def encode_frames(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """`[F, H, W, 3]` frames in 0..1 -> latents of one clip in the backbone's layout."""
        return self.backbone.frames_to_latents(self.vae, frames, generator)

    def decode_latents(self, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        """Latents of one clip -> float frames `[F, H, W, 3]` in 0..1 on the CPU."""
        return self.backbone.latents_to_frames(self.vae, latents, chunk)

    def to(self, device: str | torch.device | None = None) -> "VideoModel":
        for part in (self.unet, self.vae, self.text_encoder):
            part.to(device)
        return self

    def save(self, folder: str | Path) -> Path:
        """Write a diffusers folder that `load_model` reads back."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        parts = _components(self.backbone)
        for field in ("unet", "vae", "text_encoder"):
            getattr(self, field).save_pretrained(folder / parts[field][0], safe_serialization=True)
        self.tokenizer.save_pretrained(folder / parts["tokenizer"][0])
        (folder / "scheduler").mkdir(exist_ok=True)
        (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(self.scheduler_config, indent=2))
        index = {
            "_class_name": getattr(self.backbone, "pipeline_class", "TextToVideoSDPipeline"),
            "_diffusers_version": _diffusers_version(),
            "scheduler": ["diffusers", self.scheduler_config.get("_class_name", "DDIMScheduler")],
        }
        for field in ("unet", "vae", "text_encoder", "tokenizer"):
            subfolder, library, _ = parts[field]
            index[subfolder] = [library, type(getattr(self, field)).__name__]
        if self.low_noise_unet is not None:  # WanPipeline's two-expert layout
            self.low_noise_unet.save_pretrained(folder / f"{parts['unet'][0]}_2", safe_serialization=True)
            index[f"{parts['unet'][0]}_2"] = [parts["unet"][1], type(self.low_noise_unet).__name__]
            index["boundary_ratio"] = self.boundary_ratio
        index.update(getattr(self.backbone, "model_index_settings", dict)())
        (folder / "model_index.json").write_text(json.dumps(index, indent=2))
        return folder


# VideoModel part -> (subfolder, library, class) of a ZeroScope / ModelScope folder; other families say their own
ZEROSCOPE_COMPONENTS = {
    "unet": ("unet", "diffusers", "UNet3DConditionModel"),
    "vae": ("vae", "diffusers", "AutoencoderKL"),
    "text_encoder": ("text_encoder", "transformers", "CLIPTextModel"),
    "tokenizer": ("tokenizer", "transformers", "CLIPTokenizer"),
}


def _components(backbone) -> dict[str, tuple[str, str, str]]:
    return getattr(backbone, "components", ZEROSCOPE_COMPONENTS)


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def read_model_index(folder: str | Path) -> dict:
    """The parsed `model_index.json` of a diffusers folder, or a ModelLoadError that says what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"model folder not found: {folder}. Put a diffusers text-to-video model there "
                             "(for example ZeroScope v2 under ComfyUI/models/diffusers/zeroscope_v2_576w).")
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ModelLoadError(f"{folder} has no model_index.json: it is not a diffusers model folder. "
                             "Download the whole repository folder, not single weight files.")
    try:
        return json.loads(index_file.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{index_file} is not valid JSON ({e}); re-download the model.") from e


def _denoiser_entry(index: dict) -> list:
    """[library, class] of the denoiser a model_index.json announces ("unet" for UNets, "transformer" for DiTs)."""
    return index.get("unet") or index.get("transformer") or [None, None]


def is_video_model_folder(folder: str | Path) -> bool:
    """True if the folder holds a diffusers model whose denoiser a backbone here supports."""
    try:
        index = read_model_index(folder)
    except ModelLoadError:
        return False
    return backbone_for_class(_denoiser_entry(index)[1]) is not None


def load_model(folder: str | Path, dtype: str | torch.dtype = "fp16", device: str | torch.device = "cpu") -> VideoModel:
    """Load a diffusers text-to-video folder fully offline into a `VideoModel`.

    `dtype` is one of fp32 / fp16 / bf16 (or a torch dtype); the VAE and text encoder
    take the same dtype. Weights are read from safetensors; a `.bin` only with
    weights-only unpickling (transformers' and diffusers' default for local files).
    The backbone says which classes and subfolders make up its family's folder.
    """
    import diffusers
    import transformers

    folder = Path(folder)
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    index = read_model_index(folder)
    unet_entry = _denoiser_entry(index)
    backbone = backbone_for_class(unet_entry[1])
    if backbone is None:
        raise ModelLoadError(
            f"{folder} is a {index.get('_class_name', 'unknown')} model with denoiser {unet_entry[1]}: not a "
            "supported text-to-video model. Use ZeroScope v2 or ModelScope T2V (UNet3DConditionModel), "
            "or Wan 2.1 / 2.2 (WanTransformer3DModel)."
        )
    parts = _components(backbone)
    missing = [sub for sub in [*(p[0] for p in parts.values()), "scheduler"] if not (folder / sub).is_dir()]
    if missing:
        raise ModelLoadError(f"{folder} lacks {', '.join(missing)}: download the complete model folder.")

    libraries = {"diffusers": diffusers, "transformers": transformers}
    loaded = {}
    try:
        for field, (subfolder, library, class_name) in parts.items():
            cls = getattr(libraries[library], class_name)
            opts = dict(subfolder=subfolder, local_files_only=True)
            if library == "diffusers":
                opts["torch_dtype"] = dtype
            loaded[field] = cls.from_pretrained(folder, **opts)
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"could not load {folder}: {e}") from e
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    if not scheduler_file.is_file():
        raise ModelLoadError(f"{folder}/scheduler has no scheduler_config.json: download the complete model folder.")
    scheduler_config = json.loads(scheduler_file.read_text())

    if hasattr(backbone, "for_model_index"):  # settings the folder states (Wan 2.2 TI2V: image-to-video)
        backbone = backbone.for_model_index(index)
    unet, vae, text_encoder, tokenizer = (loaded[f] for f in ("unet", "vae", "text_encoder", "tokenizer"))
    low_noise, boundary = _low_noise_expert(folder, index, parts, dtype, libraries)
    text_encoder.to(dtype=dtype)
    _keep_fp32_parts(text_encoder, dtype)
    for part in (unet, vae, text_encoder, low_noise):
        if part is not None:
            part.requires_grad_(False).eval().to(device)
    model = VideoModel(unet, vae, text_encoder, tokenizer, scheduler_config, backbone, str(folder), dtype,
                       low_noise, boundary)
    backbone_for(unet)  # the weights agree with what model_index.json announced
    return model


def _low_noise_expert(folder: Path, index: dict, parts: dict, dtype, libraries) -> tuple[nn.Module | None, float | None]:
    """A Wan 2.2 A14B folder's second expert (`transformer_2`) and its `boundary_ratio`, or (None, None)."""
    subfolder, library, class_name = parts["unet"]
    entry = index.get(f"{subfolder}_2")
    if not entry or entry[0] is None:
        return None, None
    if index.get("boundary_ratio") is None:
        raise ModelLoadError(f"{folder}/model_index.json has {subfolder}_2 but no boundary_ratio: download the "
                             "complete model folder.")
    try:
        expert = getattr(libraries[library], class_name).from_pretrained(
            folder, subfolder=f"{subfolder}_2", local_files_only=True, torch_dtype=dtype)
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"could not load {folder}/{subfolder}_2: {e}") from e
    return expert, float(index["boundary_ratio"])


def _keep_fp32_parts(module: nn.Module, dtype: torch.dtype) -> None:
    """In fp16, put back in fp32 what the model class keeps there (T5/UMT5's `wo`: it overflows in fp16)."""
    keep = getattr(module, "_keep_in_fp32_modules", None) or []
    if dtype != torch.float16 or not keep:
        return
    for name, child in module.named_modules():
        if any(part in keep for part in name.split(".")):
            child.to(torch.float32)


def open_model(spec: str | Path, dtype: str | torch.dtype = "fp16", device: str | torch.device = "cpu") -> VideoModel:
    """A diffusers folder, "tiny" for the built-in random test model, "tiny-wan" for the built-in random tiny
    Wan, or "toyworld" for the pretrained toy model.

    The one entry point for "which model did the user pick", shared by the CLI and the nodes
    (the display names of the built-in models work too).
    """
    from .tiny import TINY_NAME, build_tiny_model
    from .tiny_wan import TINY_WAN_NAME, build_tiny_wan
    from .toyworld.model import TOY_NAME, load_toy_model

    if str(spec) in ("tiny", TINY_NAME) and not Path(spec).is_dir():
        return build_tiny_model(seed=0, dtype=dtype, device=device)
    if str(spec) in ("tiny-wan", TINY_WAN_NAME) and not Path(spec).is_dir():
        return build_tiny_wan(seed=0, dtype=dtype, device=device)
    if str(spec) in ("toyworld", TOY_NAME) and not Path(spec).is_dir():
        return load_toy_model(dtype=dtype, device=device)
    return load_model(spec, dtype=dtype, device=device)
