"""Registry of supported text-to-video backbones.

Add a family by writing a module with a class that follows `base.Backbone` and
listing an instance in `BACKBONES`; nothing else in the library names a family.
"""

from __future__ import annotations

from torch import nn

from .base import Backbone
from .wan import Wan
from .zeroscope import ZeroScope

BACKBONES: list = [ZeroScope(), Wan()]


def backbone_for(unet: nn.Module) -> Backbone:
    """The backbone description that fits `unet`, or a clear error."""
    for backbone in BACKBONES:
        if backbone.matches(unet):
            return backbone
    supported = ", ".join(b.unet_class for b in BACKBONES)
    raise ValueError(f"unsupported denoiser {type(unet).__name__}: this version supports {supported}")


def backbone_for_class(unet_class: str) -> Backbone | None:
    """The backbone whose denoiser class is named `unet_class` (from a model_index.json)."""
    return next((b for b in BACKBONES if b.unet_class == unet_class), None)


def backbone_for_fingerprint(fingerprint: str) -> Backbone | None:
    """The backbone whose family wrote an adapter with this fingerprint ("wan-..."), for its file layout."""
    family = (fingerprint or "").partition("-")[0]
    return next((b for b in BACKBONES if b.name == family), None)


__all__ = ["Backbone", "BACKBONES", "backbone_for", "backbone_for_class", "backbone_for_fingerprint", "Wan",
           "ZeroScope"]
