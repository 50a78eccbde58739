"""Two Wan gaps closed: a LoRA trained with another placement fits a model whose default placement differs,
and the CLI samples a Wan model with the backbone's own scheduler when none is named."""

from __future__ import annotations

import pytest
import torch

from motion_lora import adapters as ad
from motion_lora.backbones import Wan
from motion_lora.cli import build_parser, main
from motion_lora.lora_file import load_adapter, save_adapter
from motion_lora.tiny_wan import build_tiny_wan


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_wan(seed=0)


def _trained_with(model, placement: str, kind: str) -> ad.LoraAdapter:
    """An adapter with nonzero weights on the layers `placement` gives the `kind` path."""
    backbone = Wan(placement=placement)
    ad.inject(model.unet, backbone, "tmp", kind, rank=2)
    g = torch.Generator().manual_seed(0)
    tensors = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in ad.get_tensors(model.unet, "tmp").items()}
    ad.remove(model.unet, "tmp")
    return ad.LoraAdapter(kind, 2, 2.0, tensors, model.fingerprint, training={"placement": placement})


@pytest.mark.parametrize("placement", ["a", "c"])
def test_lora_of_another_placement_fits_and_applies(tiny, tmp_path, placement):
    adapter = load_adapter(save_adapter(_trained_with(tiny, placement, ad.TEMPORAL), tmp_path / "m.safetensors"))
    assert adapter.training["placement"] == placement
    assert tiny.backbone.placement == "b"
    ad.check_fits(adapter, tiny.unet, tiny.backbone)  # its own layers, a valid placement of this model
    x = torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    text = torch.randn(1, 8, 4096, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base = tiny.backbone.predict(tiny.unet, x, 500.0, text)
        with ad.applied(tiny.unet, tiny.backbone, [(adapter, 1.0)]):
            out = tiny.backbone.predict(tiny.unet, x, 500.0, text)
    assert (out - base).abs().max() > 1e-4


def test_layers_that_are_no_placement_are_still_refused(tiny):
    adapter = _trained_with(tiny, "a", ad.TEMPORAL)
    dropped = adapter.targets[0]
    adapter.tensors = {k: v for k, v in adapter.tensors.items() if not k.startswith(dropped + ".")}
    with pytest.raises(ad.AdapterMismatchError, match="temporal"):
        ad.check_fits(adapter, tiny.unet, tiny.backbone)


def test_cli_sample_defaults_to_the_backbones_scheduler(tmp_path):
    args = build_parser().parse_args(["sample", "--model", "tiny-wan", "--prompt", "a car", "--output", "x.gif"])
    assert args.scheduler is None
    out = tmp_path / "wan.gif"
    assert main(["sample", "--model", "tiny-wan", "--prompt", "a red car", "--width", "32", "--height", "32",
                 "--frames", "5", "--steps", "1", "--guidance", "1", "--output", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 0
