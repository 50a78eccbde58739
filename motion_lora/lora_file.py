"""Adapter files: one adapter per `.safetensors`, with metadata readable without a model.

The metadata says what the file is (kind, rank, alpha, layer count, the fingerprint of
the model it fits, the training settings) so loaders can refuse a wrong file with a
clear message before touching a model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .adapters import KINDS, LoraAdapter

FORMAT = "motion_director_lora"
FORMAT_VERSION = 1


class LoraFileError(ValueError):
    """A file that is not a readable adapter of ours; the message names the file and the fix."""


def _first_non_finite(tensors: dict) -> str | None:
    """The name of the first tensor holding NaN or infinity, or None."""
    import torch

    return next((name for name, t in tensors.items() if not bool(torch.isfinite(t).all())), None)


def _non_finite_error(what: str, layer: str) -> LoraFileError:
    return LoraFileError(f"{what} holds NaN or infinite weights (first in {layer}): the training run that made "
                         "it diverged. Such an adapter would only give black or noisy videos; retrain with a "
                         "lower learning rate, or use the run's last good checkpoint")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_adapter(adapter: LoraAdapter, path: str | Path, overwrite: bool = False) -> Path:
    """Write `adapter` to `path` (`.safetensors`). Refuses to replace a file unless `overwrite`, and never
    writes non-finite weights. The file gets the permissions of any new file (0644 under the usual umask),
    so other users of a shared models folder can read it."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    bad = _first_non_finite(adapter.tensors)
    if bad is not None:
        raise _non_finite_error(f"adapter {adapter.label!r} (not saved to {path})", bad)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another name or allow overwriting")
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "kind": adapter.kind,
        "rank": str(adapter.rank),
        "alpha": repr(float(adapter.alpha)),
        "target_count": str(len(adapter.targets)),
        "fingerprint": adapter.fingerprint,
        "name": adapter.name,
        "training": json.dumps(adapter.training, default=str),
    }
    tmp = path.with_name(path.name + ".tmp")
    tensors = file_layout(adapter)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.chmod(tmp, 0o666 & ~_umask())
    tmp.replace(path)  # a crash mid-write never leaves half a file under the real name
    return path


def file_layout(adapter: LoraAdapter) -> dict:
    """The tensors as the file stores them: in the key layout of the adapter's backbone family when it has one
    (Wan: ComfyUI's, so its core LoRA loader reads our files), else our own keys."""
    from .backbones import backbone_for_fingerprint

    to_file = getattr(backbone_for_fingerprint(adapter.fingerprint), "lora_keys_to_file", None)
    return to_file(adapter.tensors, adapter.alpha) if to_file else adapter.tensors


def adapter_layout(tensors: dict, fingerprint: str) -> dict:
    """The inverse of `file_layout`: a file's tensors under `LoraAdapter` keys."""
    from .backbones import backbone_for_fingerprint

    from_file = getattr(backbone_for_fingerprint(fingerprint), "lora_keys_from_file", None)
    return from_file(tensors) if from_file else tensors


def read_metadata(path: str | Path) -> dict:
    """The parsed metadata of an adapter file, without loading its tensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise LoraFileError(f"LoRA file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise LoraFileError(f"{path} is not a readable .safetensors file ({e}); re-save or re-download it") from e
    if meta.get("format") != FORMAT:
        raise LoraFileError(f"{path} is not a MotionDirector LoRA of this pack (no '{FORMAT}' metadata). "
                            "For an official MotionDirector checkpoint use the official-checkpoint import.")
    try:
        version = int(meta.get("format_version", "0"))
        for key in ("rank", "target_count"):
            int(meta.get(key, "0"))
        float(meta.get("alpha", "0"))
        meta["training"] = json.loads(meta.get("training") or "{}")
    except ValueError as e:
        raise LoraFileError(f"{path} has damaged metadata ({e}); re-save it from its run folder") from e
    if version > FORMAT_VERSION:
        raise LoraFileError(f"{path} was written by a newer version of the pack (format "
                            f"{meta['format_version']}); update the pack to read it")
    if meta.get("kind") not in KINDS:
        raise LoraFileError(f"{path} has unknown adapter kind {meta.get('kind')!r}")
    return meta


def load_adapter(path: str | Path) -> LoraAdapter:
    """Read an adapter file written by `save_adapter`."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_metadata(path)
    tensors = load_file(str(path))
    bad = _first_non_finite(tensors)
    if bad is not None:
        raise _non_finite_error(f"{path}", bad)
    tensors = adapter_layout(tensors, meta.get("fingerprint", ""))
    adapter = LoraAdapter(
        kind=meta["kind"],
        rank=int(meta["rank"]),
        alpha=float(meta["alpha"]),
        tensors=tensors,
        fingerprint=meta.get("fingerprint", ""),
        training=meta["training"],
        name=meta.get("name") or path.stem,
    )
    if len(adapter.targets) != int(meta.get("target_count", len(adapter.targets))):
        raise LoraFileError(f"{path} is incomplete: metadata lists {meta['target_count']} layers, "
                            f"the file holds {len(adapter.targets)}")
    return adapter
