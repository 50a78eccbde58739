"""Import LoRA checkpoints written by the official MotionDirector code (showlab/MotionDirector).

The official trainer saves each path as a pickled *list of tensors with no names*,
`[up_0, down_0, up_1, down_1, ...]`, in the order its `_find_modules_v2` walks the UNet:
for each `Transformer2DModel` (spatial) or `TransformerTemporalModel` (temporal) in
`unet.named_modules()` order, each matching linear in that module's own order. That is
exactly the order of our backbone's `spatial_targets` / `temporal_targets`, so pair i
belongs to target linear i. A file carries no names, so all we can check is the count
and the shapes, which we do before building a `LoraAdapter`.

Layout: `checkpoint-N/spatial/lora/N_unet.pt` and `checkpoint-N/temporal/lora/N_unet.pt`
(older releases: a file name containing `unet` ending in `.pt` or `.safetensors`).
Official LoRA math is `W x + up(down(x))` with scale 1 and no alpha/rank factor, so the
imported adapter has `alpha = rank`.

Several-clip spatial files hold every clip's pairs interleaved per linear in clip order,
`[up_c0, down_c0, up_c1, down_c1, ...]` for the first linear, then the next; the clip
count follows from the length, and `clip=k` picks one (the official loader cannot read
such a file at all).

The `.safetensors` variant (cloneofsimo's `save_safeloras`, used by the older
Text-To-Video-Finetuning code MotionDirector grew from) names tensors
`<model>:<i>:up` / `<model>:<i>:down`; pair i is the i-th linear in the same traversal
order. A file whose keys are plain numbers (`"0"`, `"1"`, ...) is read as the flat list in
numeric order. Keys are always sorted numerically, never as strings (`"10"` < `"2"`).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import nn

from .adapters import KINDS, SPATIAL, TEMPORAL, LoraAdapter, targets_for

SOURCE = "official MotionDirector"
SUFFIXES = (".pt", ".safetensors")


class OfficialCheckpointError(ValueError):
    """An official checkpoint that cannot be imported; the message names the file and what was expected."""


def import_official(path: str | Path, model, *, kind: str | None = None, clip: int = 0,
                    backbone=None) -> list[LoraAdapter]:
    """Every LoRA under `path`, as our adapters for `model` (a VideoModel, or a UNet plus `backbone`).

    `path` is a `checkpoint-N` folder (spatial and/or temporal LoRA), a `spatial` or
    `temporal` folder, or one file (kind from its `spatial`/`temporal` folder, from
    `kind`, or else from which path its count and shapes fit). `clip` picks the clip of a
    several-clip spatial file; a temporal file holds the one motion LoRA of all clips and takes
    no clip index, so a whole `checkpoint-N` folder imports with any `clip`. Adapters come back
    in `KINDS` order (spatial, temporal).
    """
    unet, backbone = _unet_and_backbone(model, backbone)
    return [import_official_file(file, unet, kind=file_kind, clip=clip, backbone=backbone)
            for file_kind, file in find_official_files(path, kind)]


def import_official_file(path: str | Path, model, *, kind: str | None = None, clip: int = 0,
                         backbone=None) -> LoraAdapter:
    """One official LoRA file as our adapter; see `import_official`."""
    unet, backbone = _unet_and_backbone(model, backbone)
    path = Path(path)
    tensors = read_official_list(path)
    kind = kind or kind_from_path(path) or _kind_from_fit(tensors, unet, backbone, path)
    return official_to_adapter(tensors, unet, backbone, kind, clip=clip, source=path)


def find_official_files(path: str | Path, kind: str | None = None) -> list[tuple[str | None, Path]]:
    """(kind, file) of each official UNet LoRA file that `path` names, in `KINDS` order.

    The kind is None only for a single file outside a `spatial`/`temporal` folder with no
    `kind` given; `import_official_file` then tells it from the file's content.
    """
    path = Path(path)
    if kind is not None and kind not in KINDS:
        raise OfficialCheckpointError(f"kind must be one of {KINDS}, got {kind!r}")
    if not path.exists():
        raise OfficialCheckpointError(f"official MotionDirector checkpoint not found: {path}")
    if path.is_file():
        return [(kind or kind_from_path(path), path)]
    if path.name == "lora" and path.parent.name in KINDS:  # checkpoint-N/temporal/lora
        path = path.parent
    if path.name in KINDS:
        if kind not in (None, path.name):
            raise OfficialCheckpointError(f"{path} is a {path.name} folder but kind={kind!r} was asked for")
        return [(path.name, _unet_file(path))]
    found = [(k, _unet_file(path / k)) for k in KINDS if (path / k).is_dir() and (kind is None or k == kind)]
    if not found:
        wanted = kind or "spatial' or 'temporal"
        raise OfficialCheckpointError(
            f"{path} holds no official MotionDirector LoRA: expected a '{wanted}' folder with "
            f"lora/<step>_unet.pt inside (as in checkpoint-N/temporal/lora/N_unet.pt), or pass the file itself"
        )
    return found


def kind_from_path(path: str | Path) -> str | None:
    """"spatial" or "temporal" from the nearest folder of that name above `path`, else None."""
    for part in reversed(Path(path).parent.parts):
        if part.lower() in KINDS:
            return part.lower()
    return None


def read_official_list(path: str | Path) -> list[torch.Tensor]:
    """The flat `[up_0, down_0, up_1, down_1, ...]` list of an official `.pt` or `.safetensors` file."""
    path = Path(path)
    if not path.is_file():
        raise OfficialCheckpointError(f"official MotionDirector LoRA file not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        # weights_only: tensors and plain containers only; never unpickle arbitrary objects
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        unsafe = re.search(r"(?:Unsupported global: GLOBAL|Trying to load unsupported GLOBAL|Unsupported operand)"
                           r"\s*(\S*)", text)
        if unsafe and "operand" in unsafe[0] and not _looks_like_a_pickle(path):
            unsafe = None  # random bytes read as opcodes: a broken file, not a hostile one
        if unsafe:
            what = unsafe[1] if unsafe[1] and "operand" not in unsafe[0] else unsafe[0].strip()
            raise OfficialCheckpointError(
                f"{path} holds Python objects other than tensors ({what}), so it was refused "
                "for safety and never unpickled. An official MotionDirector LoRA file is a plain list of tensors: "
                "use a file from the official trainer's checkpoint-N/<spatial|temporal>/lora folder, from a source "
                "you trust"
            ) from e
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        raise OfficialCheckpointError(
            f"{path} is not a readable PyTorch file ({detail[1].strip() if detail else 'unpickling failed'}); "
            "re-download or re-save it"
        ) from e
    except Exception as e:  # a truncated or foreign file: zip errors of many kinds
        raise OfficialCheckpointError(
            f"{path} is not a readable PyTorch file ({type(e).__name__}: {(str(e).splitlines() or [''])[0]}); "
            "re-download or re-save it"
        ) from e
    if not isinstance(content, (list, tuple)) or not all(isinstance(t, torch.Tensor) for t in content):
        what = type(content).__name__
        if isinstance(content, (list, tuple)):
            what = f"{what} of {', '.join(sorted({type(t).__name__ for t in content}))}"
        raise OfficialCheckpointError(
            f"{path} holds a {what}, not the plain list of tensors [up_0, down_0, up_1, down_1, ...] "
            "that the official MotionDirector trainer writes; for a LoRA saved by this pack use Load LoRA"
        )
    return [t.detach() for t in content]


def official_to_adapter(tensors: list[torch.Tensor], unet: nn.Module, backbone, kind: str, *, clip: int = 0,
                        source: str | Path = "") -> LoraAdapter:
    """Turn an official list into our adapter: `down -> lora_A.weight`, `up -> lora_B.weight`, alpha = rank.

    `clip` applies to a spatial list only (one set per training clip); a temporal list has no clips."""
    if kind not in KINDS:
        raise OfficialCheckpointError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == TEMPORAL:
        clip = 0  # the official trainer writes one temporal LoRA, shared by every clip
    where = str(source) or "the official LoRA"
    targets = targets_for(unet, backbone, kind)
    clips = _clip_count(len(tensors), unet, backbone, kind, where)
    if not 0 <= clip < clips:
        raise OfficialCheckpointError(
            f"{where} holds the spatial LoRAs of {clips} training clip(s) (clip 0 to {clips - 1}); "
            f"clip {clip} does not exist"
        )
    modules = dict(unet.named_modules())
    out: dict[str, torch.Tensor] = {}
    ranks: dict[int, str] = {}
    for i, target in enumerate(targets):
        first = 2 * (i * clips + clip)  # pairs are interleaved per linear in clip order
        up, down = tensors[first], tensors[first + 1]
        layer = modules[target]
        layer = getattr(layer, "base_layer", layer)  # the model may already carry peft adapters
        if (down.ndim != 2 or up.ndim != 2 or down.shape[1] != layer.in_features
                or up.shape[0] != layer.out_features or down.shape[0] != up.shape[1]):
            raise OfficialCheckpointError(
                f"{where}: pair {i} (layer {target}) has up {tuple(up.shape)} and down {tuple(down.shape)}, "
                f"but this model's layer is {layer.in_features}->{layer.out_features} (up must be "
                f"[{layer.out_features}, r], down [r, {layer.in_features}]): the file was made for another "
                f"base model, or is not a {kind} LoRA"
            )
        ranks.setdefault(down.shape[0], target)
        out[f"{target}.lora_A.weight"] = down.float().contiguous()
        out[f"{target}.lora_B.weight"] = up.float().contiguous()
    if len(ranks) > 1:
        detail = ", ".join(f"rank {r} at {t}" for r, t in ranks.items())
        raise OfficialCheckpointError(f"{where}: layers have different ranks ({detail}); one rank per adapter is supported")
    rank = next(iter(ranks))
    training = {"source": SOURCE, "file": str(source)}
    if kind == SPATIAL:
        training.update(clip=clip, clips=clips)
    return LoraAdapter(kind=kind, rank=rank, alpha=float(rank), tensors=out, fingerprint=backbone.fingerprint(unet),
                       training=training, name=_name(source, kind, clip, clips))


# --- helpers ---------------------------------------------------------------------------------

def _unet_and_backbone(model, backbone):
    """Accept a VideoModel, or a UNet with (or without) its backbone description."""
    if hasattr(model, "unet") and hasattr(model, "backbone"):
        return model.unet, backbone or model.backbone
    if backbone is None:
        from .backbones import backbone_for

        backbone = backbone_for(model)
    return model, backbone


def _unet_file(folder: Path) -> Path:
    """The one `*unet*.pt|.safetensors` file in `folder/lora` (or `folder`)."""
    search = folder / "lora" if (folder / "lora").is_dir() else folder
    files = sorted(f for f in search.iterdir() if f.is_file() and "unet" in f.name and f.suffix in SUFFIXES)
    if not files:
        raise OfficialCheckpointError(
            f"no official UNet LoRA file in {search}: expected a file like <step>_unet.pt (name containing "
            f"'unet', ending in .pt or .safetensors)"
        )
    if len(files) > 1:
        names = ", ".join(f.name for f in files)
        raise OfficialCheckpointError(f"{search} holds several UNet LoRA files ({names}); pass the one to import")
    return files[0]


def _clip_count(count: int, unet: nn.Module, backbone, kind: str, where: str) -> int:
    """How many clips' pairs a list of `count` tensors holds; refuses a count that fits no clip count."""
    linears = len(targets_for(unet, backbone, kind))
    per_clip = 2 * linears
    if count and count % per_clip == 0 and (kind == SPATIAL or count == per_clip):
        return count // per_clip
    other = TEMPORAL if kind == SPATIAL else SPATIAL
    other_per_clip = 2 * len(targets_for(unet, backbone, other))
    fits_other = count == other_per_clip or (other == SPATIAL and count and count % other_per_clip == 0)
    hint = f"is this a {other} file?" if fits_other else "was it trained on another base model?"
    several = " (or a multiple of it: one set per training clip)" if kind == SPATIAL else ""
    raise OfficialCheckpointError(
        f"{where}: expected {per_clip} tensors{several} for this model's {linears} {kind} layers, "
        f"found {count}: {hint}"
    )


def _kind_from_fit(tensors: list[torch.Tensor], unet: nn.Module, backbone, path: Path) -> str:
    """The one path whose count and shapes the list fits; an error if none or both do."""
    fits, reasons = [], []
    for kind in KINDS:
        try:
            official_to_adapter(tensors, unet, backbone, kind, source=path)
            fits.append(kind)
        except OfficialCheckpointError as e:
            reasons.append(f"as {kind}: {e}")
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise OfficialCheckpointError(f"{path} fits both the spatial and the temporal path; pass kind='spatial' or 'temporal'")
    raise OfficialCheckpointError(f"{path} fits neither LoRA path of this model. " + " | ".join(reasons))


_PAIR_KEY = re.compile(r"(?P<model>.*):(?P<index>\d+):(?P<side>up|down)")
_NUMBER_KEY = re.compile(r"(?:.*\D)?(?P<index>\d+)")


def _read_safetensors(path: Path) -> list[torch.Tensor]:
    """An older `.safetensors` official file as the same flat list (see the module docstring)."""
    from safetensors.torch import load_file

    try:
        named = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for a corrupt header or body
        raise OfficialCheckpointError(f"{path} is not a readable .safetensors file ({e}); re-download it") from e
    pairs = {key: _PAIR_KEY.fullmatch(key) for key in named}
    if named and all(pairs.values()):
        models = sorted({m["model"] for m in pairs.values()})
        if len(models) > 1:  # a file holding UNet and text-encoder LoRAs: keep the UNet's
            unet_models = [m for m in models if "unet" in m]
            if len(unet_models) != 1:
                raise OfficialCheckpointError(f"{path} holds LoRAs of several models ({', '.join(models)}); "
                                              "expected one UNet LoRA")
            models = unet_models
        keys = [k for k, m in pairs.items() if m["model"] == models[0]]
        keys.sort(key=lambda k: (int(pairs[k]["index"]), pairs[k]["side"] != "up"))  # up before down
        return [named[k] for k in keys]
    numbers = {key: _NUMBER_KEY.fullmatch(key) for key in named}
    if named and all(numbers.values()):
        return [named[k] for k in sorted(named, key=lambda k: int(numbers[k]["index"]))]
    raise OfficialCheckpointError(
        f"{path} is not an official MotionDirector LoRA: expected tensors named '<model>:<i>:up|down' or "
        f"numbered '0', '1', ...; found keys like {sorted(named)[:3]}. For a LoRA saved by this pack use Load LoRA"
    )


def _name(source: str | Path, kind: str, clip: int, clips: int) -> str:
    """A readable label such as "checkpoint-150 temporal" (the folder above the kind folder)."""
    path = Path(source)
    parts = path.parent.parts
    anchor = path.stem
    for i in range(len(parts) - 1, 0, -1):
        if parts[i].lower() in KINDS:
            anchor = parts[i - 1]
            break
    label = f"{anchor} {kind}" if source else f"official {kind}"
    return f"{label} clip {clip}" if clips > 1 else label


def _looks_like_a_pickle(path: Path) -> bool:
    """A pickle starts with a protocol marker (protocol 2+) or, in protocol 0/1, a mark, list, dict or global."""
    with open(path, "rb") as f:
        return f.read(1) in (b"\x80", b"(", b"]", b"}", b"c")
