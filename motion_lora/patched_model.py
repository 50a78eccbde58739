"""What flows between the nodes: one shared model plus the adapters to apply when sampling.

Like ComfyUI's own model patching, adding an adapter never changes the handle it was
given: `with_adapter` returns a new handle, and the UNet itself only carries the adapters
inside `adapters.applied(...)` while a sample runs. Two branches of one loaded model
therefore sample exactly as they would alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .adapters import KINDS, SPATIAL, TEMPORAL, AdapterMismatchError, LoraAdapter, check_fits
from .model import VideoModel

ROLE = {TEMPORAL: "motion", SPATIAL: "appearance"}


@dataclass(frozen=True)
class MissingLora:
    """Stands in for an adapter a training run did not produce; using it says why."""

    kind: str
    reason: str

    @property
    def label(self) -> str:
        return f"{ROLE.get(self.kind, self.kind)} LoRA"

    def error(self) -> ValueError:
        return ValueError(f"there is no {self.label}: {self.reason}")


@dataclass(frozen=True)
class PatchedModel:
    """A shared `VideoModel` and the (adapter, strength) pairs to apply at sample time."""

    model: VideoModel
    adapters: tuple[tuple[LoraAdapter, float], ...] = ()

    def with_adapter(self, adapter: LoraAdapter | MissingLora, strength: float, kind: str) -> "PatchedModel":
        """A new handle with `adapter` added; refuses the wrong path or a model it was not made for."""
        if kind not in KINDS:
            raise ValueError(f"adapter kind must be one of {KINDS}, got {kind!r}")
        if isinstance(adapter, MissingLora):
            raise adapter.error()
        if not isinstance(adapter, LoraAdapter):
            raise TypeError(f"expected a LoRA adapter, got {type(adapter).__name__}")
        if adapter.kind != kind:
            raise AdapterMismatchError(
                f"{adapter.label} is {_article(ROLE[adapter.kind])} {ROLE[adapter.kind]} ({adapter.kind}) LoRA, "
                f"not {_article(ROLE[kind])} {ROLE[kind]} one: "
                f"connect it to Apply {ROLE[adapter.kind].capitalize()} instead."
            )
        check_fits(adapter, self.model.unet, self.model.backbone)
        return replace(self, adapters=self.adapters + ((adapter, float(strength)),))

    @property
    def applied(self) -> list[tuple[LoraAdapter, float]]:
        """The adapters as `sampling.sample(adapters=...)` takes them."""
        return list(self.adapters)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
