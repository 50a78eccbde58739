"""MotionDirector's two LoRA paths, injected with peft on the layers the backbone names.

A *spatial* adapter sits in the spatial transformers (appearance), a *temporal* one in
the temporal transformers (motion). Adapters live in the UNet under names of our
choosing ("spatial", "spatial_1", "temporal", ...); each has a strength that can change
at run time, and strength 0 takes it out of the forward pass entirely, so a path that is
off costs nothing and leaves the base output bit-identical.

`LoraAdapter` is the same adapter as plain data (tensors + metadata), independent of
any model instance: what files hold, what nodes pass around, what `applied()` injects.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

SPATIAL = "spatial"
TEMPORAL = "temporal"
KINDS = (SPATIAL, TEMPORAL)

# Where LoRA dropout masks (see `inject`): "rank" ours, "output" the official `utils/lora.py` placement.
DROPOUT_PLACEMENTS = ("rank", "output")
DEFAULT_DROPOUT_PLACEMENT = "rank"


class AdapterMismatchError(ValueError):
    """An adapter that does not fit a model (other architecture, other path, other layers)."""


@dataclass
class LoraAdapter:
    """One trained adapter as data. Keys are `<layer path>.lora_A.weight` (down) and `.lora_B.weight` (up)."""

    kind: str
    rank: int
    alpha: float
    tensors: dict[str, torch.Tensor]
    fingerprint: str = ""  # backbone fingerprint of the model it was made for
    training: dict = field(default_factory=dict)  # the settings it was trained with, when known
    name: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"adapter kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def targets(self) -> list[str]:
        return [k[: -len(".lora_A.weight")] for k in self.tensors if k.endswith(".lora_A.weight")]

    @property
    def label(self) -> str:
        return self.name or f"{self.kind} LoRA"


def targets_for(unet: nn.Module, backbone, kind: str) -> list[str]:
    if kind == SPATIAL:
        return backbone.spatial_targets(unet)
    if kind == TEMPORAL:
        return backbone.temporal_targets(unet)
    raise ValueError(f"adapter kind must be one of {KINDS}, got {kind!r}")


def lora_layers(unet: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(path, peft layer) for every linear that carries at least one adapter."""
    from peft.tuners.lora import LoraLayer

    for name, module in unet.named_modules():
        if isinstance(module, LoraLayer):
            yield name, module


def adapter_names(unet: nn.Module) -> set[str]:
    return {a for _, layer in lora_layers(unet) for a in layer.lora_A}


def inject(unet: nn.Module, backbone, name: str, kind: str, rank: int = 32, alpha: float | None = None,
           dropout: float = 0.0, targets: list[str] | None = None,
           dropout_placement: str = DEFAULT_DROPOUT_PLACEMENT) -> list[str]:
    """Add a new adapter `name` on the `kind` path; returns its target layer paths.

    Initialisation is the official one (down ~ N(0, 1/r), up = 0), so a fresh adapter
    changes nothing. The new adapter starts with strength 0.

    LoRA dropout (active in training mode only) sits where `dropout_placement` says:
    - "rank" (ours, the default): `up(dropout(down(x)))`, a mask over the r rank values of
      each token; cheap (r values, not one per feature);
    - "output" (the official MotionDirector `LoraInjectedLinear`): `dropout(up(down(x)))`, a
      mask over the LoRA's `out_features`, a mask as wide as the layer's output.
    Either way dropout 0 adds nothing to the forward pass. (peft's own `lora_dropout`, a mask
    over the input features, `up(down(dropout(x)))`, is neither and is not used.)
    """
    from peft import LoraConfig, inject_adapter_in_model

    if name in adapter_names(unet):
        raise ValueError(f"the model already has an adapter named {name!r}")
    if dropout_placement not in DROPOUT_PLACEMENTS:
        raise ValueError(f"dropout_placement must be one of {DROPOUT_PLACEMENTS}, got {dropout_placement!r}")
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"LoRA dropout must be between 0 and 1, got {dropout}")
    targets = targets or targets_for(unet, backbone, kind)
    before = current_strengths(unet)
    flags = _grad_flags(unet)
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, lora_dropout=0.0,
                        target_modules=targets, init_lora_weights="gaussian", bias="none")
    with warnings.catch_warnings():  # peft warns that a second adapter joins the first: that is the point here
        warnings.simplefilter("ignore", UserWarning)
        inject_adapter_in_model(config, unet, adapter_name=name)
    for _, layer in lora_layers(unet):
        if name in layer.lora_A:
            layer.lora_A[name].to(torch.float32)
            layer.lora_B[name].to(torch.float32)
            if dropout > 0:  # on the output of down (rank) or of up (output); the strength is a scalar after it
                masked = layer.lora_A[name] if dropout_placement == "rank" else layer.lora_B[name]
                masked.register_forward_hook(_dropout_hook(dropout))
    _restore_grad_flags(flags)  # peft's injection activates the new adapter everywhere and flips others' flags
    set_trainable(unet, [name], False)
    set_strengths(unet, {**before, name: 0.0})
    return targets


def _grad_flags(unet: nn.Module) -> list[tuple[nn.Parameter, bool]]:
    return [(p, p.requires_grad) for p in unet.parameters()]


def _restore_grad_flags(flags: list[tuple[nn.Parameter, bool]]) -> None:
    for p, flag in flags:
        p.requires_grad_(flag)


def _dropout_hook(p: float):
    """Dropout on a module's output, while that module is in training mode."""

    def hook(module, inputs, output):
        return F.dropout(output, p, module.training)

    return hook


def current_strengths(unet: nn.Module) -> dict[str, float]:
    """Strength of every adapter (0 for an inactive one)."""
    out: dict[str, float] = {}
    for _, layer in lora_layers(unet):
        for a in layer.lora_A:
            if a in out:
                continue
            active = a in layer.active_adapters
            out[a] = float(layer.scaling[a] * layer.r[a] / layer.lora_alpha[a]) if active else 0.0
    return out


def set_strengths(unet: nn.Module, strengths: dict[str, float], layers: list | None = None) -> None:
    """Set each named adapter's strength; adapters not named are switched off.

    Strength multiplies the LoRA output (alpha/rank included); 0 removes the adapter from
    the forward pass; values above 1 exaggerate it. `layers` (a saved `list(lora_layers(unet))`)
    spares the walk over every module, which a training loop would otherwise pay twice a step.
    """
    for _, layer in (layers if layers is not None else lora_layers(unet)):
        active = []
        for a in layer.lora_A:
            s = float(strengths.get(a, 0.0))
            layer.scaling[a] = s * layer.lora_alpha[a] / layer.r[a]
            if s != 0.0:
                active.append(a)
        layer._active_adapter = active  # not set_adapter(): that also flips requires_grad


@contextlib.contextmanager
def at_strengths(unet: nn.Module, strengths: dict[str, float]):
    """Run a block with these adapter strengths (adapters not named are off), then restore the previous ones.

    `at_strengths(unet, {})` runs the base model alone, without removing anything.
    """
    before = current_strengths(unet)
    set_strengths(unet, strengths)
    try:
        yield
    finally:
        set_strengths(unet, before)


def set_trainable(unet: nn.Module, names: Iterable[str], trainable: bool) -> None:
    names = set(names)
    for p in adapter_parameters(unet, names):
        p.requires_grad_(trainable)


def adapter_parameters(unet: nn.Module, names: Iterable[str]) -> list[nn.Parameter]:
    names = set(names)
    params = []
    for _, layer in lora_layers(unet):
        for a in names & set(layer.lora_A):
            params += [layer.lora_A[a].weight, layer.lora_B[a].weight]
    return params


def get_tensors(unet: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The adapter's weights as a detached CPU state dict in `LoraAdapter` key format."""
    out = {}
    for path, layer in lora_layers(unet):
        if name in layer.lora_A:
            out[f"{path}.lora_A.weight"] = layer.lora_A[name].weight.detach().float().cpu().clone()
            out[f"{path}.lora_B.weight"] = layer.lora_B[name].weight.detach().float().cpu().clone()
    return out


def set_tensors(unet: nn.Module, name: str, tensors: dict[str, torch.Tensor]) -> None:
    """Copy weights into adapter `name`; every key and shape is checked before anything is written."""
    layers = {path: layer for path, layer in lora_layers(unet) if name in layer.lora_A}
    params = {}
    for path, layer in layers.items():
        params[f"{path}.lora_A.weight"] = layer.lora_A[name].weight
        params[f"{path}.lora_B.weight"] = layer.lora_B[name].weight
    missing = sorted(set(params) - set(tensors))
    extra = sorted(set(tensors) - set(params))
    if missing or extra:
        raise AdapterMismatchError(
            f"adapter layers do not match the model: {len(missing)} missing (e.g. {missing[:2]}), "
            f"{len(extra)} unexpected (e.g. {extra[:2]})"
        )
    bad = [(k, tuple(tensors[k].shape), tuple(p.shape)) for k, p in params.items() if tensors[k].shape != p.shape]
    if bad:
        k, got, want = bad[0]
        raise AdapterMismatchError(f"{len(bad)} adapter tensors have the wrong shape, e.g. {k}: {got}, model needs {want}")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(tensors[k].to(p.device, p.dtype))


def remove(unet: nn.Module, name: str) -> None:
    """Delete adapter `name`; a linear left with no adapter is unwrapped back to the original layer."""
    modules = dict(unet.named_modules())
    for path, layer in list(lora_layers(unet)):
        if name not in layer.lora_A:
            continue
        still_active = [a for a in layer.active_adapters if a != name]
        flags = _grad_flags(layer)
        with warnings.catch_warnings():  # "Setting active adapter to ...": we set it back just below
            warnings.simplefilter("ignore", UserWarning)
            layer.delete_adapter(name)
        layer._active_adapter = still_active  # delete_adapter() may activate others; keep ours
        _restore_grad_flags(flags)  # ... and its set_adapter() flips their requires_grad
        if not layer.lora_A:
            parent_path, _, child = path.rpartition(".")
            setattr(modules[parent_path] if parent_path else unet, child, layer.get_base_layer())


def check_fits(adapter: LoraAdapter, unet: nn.Module, backbone) -> None:
    """Raise AdapterMismatchError unless every layer of `adapter` exists in `unet` with the right shape."""
    # a matching fingerprint is no shortcut: the kind and every layer must fit too
    expected = targets_for(unet, backbone, adapter.kind)
    modules = dict(unet.named_modules())
    got = adapter.targets
    if set(got) != set(expected) and _own_placement(adapter, unet, backbone) is not None:
        expected = got  # trained with another valid placement of this model (Wan's "a"/"b"/"c"): its own layers
    if set(got) != set(expected):
        other = SPATIAL if adapter.kind == TEMPORAL else TEMPORAL
        if set(got) and set(got) <= set(targets_for(unet, backbone, other)):
            raise AdapterMismatchError(f"{adapter.label} says it is {adapter.kind} but its layers are the {other} path's")
        raise AdapterMismatchError(
            f"{adapter.label} was made for another model (fingerprint {adapter.fingerprint or 'unknown'}, "
            f"this model is {backbone.fingerprint(unet)}): {len(set(got) - set(expected))} of its {len(got)} layers are not "
            f"{adapter.kind} layers of this model. Use a LoRA trained on the same base model."
        )
    for target in got:
        layer = modules[target]
        layer = getattr(layer, "base_layer", layer)
        a = adapter.tensors[f"{target}.lora_A.weight"]
        b = adapter.tensors[f"{target}.lora_B.weight"]
        if a.shape[1] != layer.in_features or b.shape[0] != layer.out_features or a.shape[0] != b.shape[1]:
            raise AdapterMismatchError(
                f"{adapter.label} was made for another model: layer {target} is {layer.in_features}->"
                f"{layer.out_features} here but the adapter expects {a.shape[1]}->{b.shape[0]}"
            )


def _own_placement(adapter: LoraAdapter, unet: nn.Module, backbone) -> str | None:
    """The placement (a backbone setting such as Wan's "a"/"b"/"c") whose `adapter.kind` layers are exactly the
    adapter's, or None. The one recorded in the adapter's training metadata is tried first."""
    targets_of = getattr(backbone, "placement_targets", None)
    if targets_of is None:
        return None
    recorded = adapter.training.get("placement")
    names = [recorded] if recorded else []
    names += [n for n in getattr(backbone, "placements", ()) if n != recorded]
    got = set(adapter.targets)
    return next((n for n in names if n in backbone.placements and set(targets_of(unet, adapter.kind, n)) == got), None)


def add_adapter(unet: nn.Module, backbone, name: str, adapter: LoraAdapter) -> None:
    """Inject `adapter` under `name` (strength 0) after checking that it fits."""
    check_fits(adapter, unet, backbone)
    inject(unet, backbone, name, adapter.kind, adapter.rank, adapter.alpha, targets=adapter.targets)
    try:
        set_tensors(unet, name, adapter.tensors)
    except Exception:
        remove(unet, name)  # never leave a half-added adapter behind
        raise


@contextlib.contextmanager
def applied(unet: nn.Module, backbone, adapters: Iterable[tuple[LoraAdapter, float]]):
    """Run a block with exactly these adapters at these strengths, then leave the UNet as it was.

    Adapters already in the UNet (a training run's, say) are switched off inside the
    block and restored after it; the injected ones are removed again, so the base
    weights and every other user of the same UNet are unaffected.
    """
    adapters = list(adapters)
    before = current_strengths(unet)
    names = []
    try:
        for i, (adapter, _) in enumerate(adapters):
            name = f"applied_{i}"
            while name in before:
                name += "_"
            add_adapter(unet, backbone, name, adapter)
            names.append(name)
        set_strengths(unet, {n: float(s) for n, (_, s) in zip(names, adapters)})
        yield names
    finally:
        for name in names:
            remove(unet, name)
        set_strengths(unet, before)
