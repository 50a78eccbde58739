"""One frame is an image: a 1-frame `predict` runs the UNet without its temporal layers, as the official UNet does.

The reference is built here independently of the backbone: a copy of the UNet whose `transformer_in`,
temporal convolutions and temporal transformers are replaced by pass-through modules. diffusers zero-inits
the last convolution of every `TemporalConvLayer` (so it starts as an identity); here every temporal
convolution gets random weights, so skipping it or not shows in the output.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from motion_lora import adapters as ad
from motion_lora import grad_checkpoint
from motion_lora.backbones import ZeroScope
from motion_lora.tiny import UNET_CONFIG

BACKBONE = ZeroScope()


class PassTemporalTransformer(nn.Module):
    """Stands in for a `TransformerTemporalModel`: returns its input, as a 1-tuple (callers use `[0]`)."""

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,)


class PassTemporalConv(nn.Module):
    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


def random_temporal_unet(seed: int = 0) -> nn.Module:
    """The tiny UNet layout, random weights, with every temporal convolution's last layer non-zero too."""
    from diffusers import UNet3DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet3DConditionModel(**UNET_CONFIG).eval().requires_grad_(False)
        for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
            for conv in block.temp_convs:
                last = conv.conv4[-1]
                assert not last.weight.any()  # diffusers' zero init: an identity until trained
                last.reset_parameters()  # PyTorch's default init instead
    return unet


def without_temporal_layers(unet: nn.Module, convs: bool = True, transformers: bool = True) -> nn.Module:
    """A copy of `unet` with the temporal modules replaced by pass-throughs (the official 1-frame network)."""
    ref = copy.deepcopy(unet)
    if transformers:
        ref.transformer_in = PassTemporalTransformer()
    for block in [*ref.down_blocks, ref.mid_block, *ref.up_blocks]:
        if convs:
            block.temp_convs = nn.ModuleList(PassTemporalConv() for _ in block.temp_convs)
        if transformers and hasattr(block, "temp_attentions"):
            block.temp_attentions = nn.ModuleList(PassTemporalTransformer() for _ in block.temp_attentions)
    return ref


def inputs(frames: int, batch: int = 1, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, frames, 8, 8, generator=g)
    text = torch.randn(batch, 77, UNET_CONFIG["cross_attention_dim"], generator=g)
    return latents, torch.tensor([500] * batch), text


def plain(unet, latents, t, text):
    return unet(latents, t, encoder_hidden_states=text, return_dict=False)[0]


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def unet():
    return random_temporal_unet()


def test_the_reference_network_is_sensitive_to_each_kind_of_temporal_layer(unet):
    """Guards the test itself: with random temporal convolutions, each kind of temporal module changes a 1-frame output."""
    x = inputs(1)
    with torch.no_grad():
        full = plain(unet, *x)
        for convs, transformers in [(True, False), (False, True)]:
            assert rel_l2(plain(without_temporal_layers(unet, convs, transformers), *x), full) > 0.05


@pytest.mark.parametrize("batch", [1, 2])
def test_one_frame_predict_is_the_network_without_temporal_layers(unet, batch):
    latents, t, text = inputs(1, batch)
    with torch.no_grad():
        got = BACKBONE.predict(unet, latents, t, text)
        want = plain(without_temporal_layers(unet), latents, t, text)
        diffusers_plain = plain(unet, latents, t, text)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert rel_l2(got, diffusers_plain) > 0.1  # diffusers' own forward runs them on the frame
    # nothing stays swapped: the plain forward afterwards is diffusers' again
    assert not any("forward" in m.__dict__ for m in unet.modules())
    with torch.no_grad():
        assert torch.equal(plain(unet, latents, t, text), diffusers_plain)


def test_several_frames_are_unchanged(unet):
    latents, t, text = inputs(3)
    with torch.no_grad():
        assert torch.equal(BACKBONE.predict(unet, latents, t, text), plain(unet, latents, t, text))


def test_bf16_autocast_matches_the_reference(unet):
    latents, t, text = inputs(1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = BACKBONE.predict(unet, latents, t, text)
        want = plain(without_temporal_layers(unet), latents, t, text)
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=1e-6)


def _lora_unet(unet):
    """A copy with a random spatial and a random temporal LoRA, both on (training mode, LoRA dropout on)."""
    unet = copy.deepcopy(unet).train()
    g = torch.Generator().manual_seed(3)
    for kind in ad.KINDS:
        ad.inject(unet, BACKBONE, kind, kind, rank=4, dropout=0.1)
        ad.set_tensors(unet, kind, {k: torch.randn(v.shape, generator=g) * 0.3
                                    for k, v in ad.get_tensors(unet, kind).items()})
    ad.set_strengths(unet, {ad.SPATIAL: 1.0, ad.TEMPORAL: 1.0})
    ad.set_trainable(unet, ad.KINDS, True)
    return unet


def _grads(unet, run) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    torch.manual_seed(7)  # the same LoRA dropout masks in both networks
    out = run()
    out.square().mean().backward()
    named = {n: p.grad for n, p in unet.named_parameters() if "lora_" in n}
    return out.detach(), named


def test_backprop_through_peft_loras_and_gradient_checkpointing_matches_the_reference(unet):
    """The spatial path trains through it: same output and LoRA gradients as the reference, also under
    gradient checkpointing; the temporal LoRA, being skipped, gets no gradient at all."""
    latents, t, text = inputs(1)
    ours = _lora_unet(unet)
    ref = without_temporal_layers(ours)
    want, want_grads = _grads(ref, lambda: plain(ref, latents, t, text))
    units = BACKBONE.checkpoint_units(ours)
    with grad_checkpoint.checkpointed(units):
        wrappers = [m.__dict__["forward"] for m in units]
        got, got_grads = _grads(ours, lambda: BACKBONE.predict(ours, latents, t, text))
        assert [m.__dict__["forward"] for m in units] == wrappers  # the checkpoint wrappers are back
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    temporal_grads = {n: g for n, g in got_grads.items() if ".temporal." in n}
    spatial_grads = {n: g for n, g in got_grads.items() if ".spatial." in n}
    assert temporal_grads and all(g is None for g in temporal_grads.values())
    assert set(spatial_grads) == set(want_grads) and all(g is not None for g in spatial_grads.values())
    for name, grad in spatial_grads.items():
        torch.testing.assert_close(grad, want_grads[name], rtol=1e-5, atol=1e-7)
    assert any(g.abs().max() > 0 for g in spatial_grads.values())
