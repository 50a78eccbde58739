"""The two LoRA paths: where they go, how strengths act, and that the base model is never touched.

The official target rule (`_find_modules_v2` of showlab/MotionDirector) is written here
a second time, independently of `motion_lora.backbones`, and compared with the
backbone's lists on the tiny model and on ZeroScope's full block layout (built on the
`meta` device: no memory, no weights).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from motion_lora.adapters import (
    AdapterMismatchError,
    LoraAdapter,
    add_adapter,
    applied,
    check_fits,
    current_strengths,
    get_tensors,
    inject,
    lora_layers,
    remove,
    set_strengths,
    set_tensors,
    set_trainable,
    targets_for,
)
from motion_lora.backbones import ZeroScope

BACKBONE = ZeroScope()

# ZeroScope v2 576w / ModelScope T2V unet/config.json (the layout only; about 1.4B parameters)
ZEROSCOPE_UNET_CONFIG = {
    "act_fn": "silu",
    "attention_head_dim": 64,
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "downsample_padding": 1,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 32,
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
}


def official_targets(unet: nn.Module, kind: str) -> list[str]:
    """The official rule: linears under each spatial/temporal transformer whose path has the path's keys."""
    ancestor_class, keys = {"spatial": ("Transformer2DModel", ("attn1", "ff")),
                            "temporal": ("TransformerTemporalModel", ("attn1", "attn2", "ff"))}[kind]
    found = []
    for ancestor_name, ancestor in unet.named_modules():
        if ancestor.__class__.__name__ == ancestor_class:
            for name, module in ancestor.named_modules():
                if isinstance(module, nn.Linear) and any(key in name for key in keys):
                    found.append(f"{ancestor_name}.{name}")
    return found


def meta_unet(**config) -> nn.Module:
    from diffusers import UNet3DConditionModel

    with torch.device("meta"):
        return UNet3DConditionModel.from_config(config)


def random_adapter(unet: nn.Module, kind: str, rank: int = 4, alpha: float | None = None, seed: int = 0,
                   scale: float = 0.1) -> LoraAdapter:
    """An adapter with random up and down weights for `unet` (any device: tensors are made on the CPU)."""
    g = torch.Generator().manual_seed(seed)
    modules = dict(unet.named_modules())
    tensors = {}
    for target in targets_for(unet, BACKBONE, kind):
        layer = getattr(modules[target], "base_layer", modules[target])
        tensors[f"{target}.lora_A.weight"] = torch.randn(rank, layer.in_features, generator=g) * scale
        tensors[f"{target}.lora_B.weight"] = torch.randn(layer.out_features, rank, generator=g) * scale
    return LoraAdapter(kind, rank, float(alpha if alpha is not None else rank), tensors,
                       fingerprint=BACKBONE.fingerprint(unet), name=f"random {kind}")


def run(unet: nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, 2, 8, 8, generator=g)
    text = torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        return BACKBONE.predict(unet, latents, torch.tensor([500]), text)


def inject_random(unet, name, kind, rank=4, alpha=None, dropout=0.0, seed=0, strength=1.0):
    inject(unet, BACKBONE, name, kind, rank=rank, alpha=alpha, dropout=dropout)
    adapter = random_adapter(unet, kind, rank=rank, seed=seed)
    set_tensors(unet, name, {k: v for k, v in adapter.tensors.items()})
    set_strengths(unet, {**current_strengths(unet), name: strength})



@pytest.fixture(scope="module")
def tiny_unet():
    from motion_lora.tiny import build_tiny_model

    return build_tiny_model(seed=0).unet


@pytest.fixture()
def unet(tiny_unet):
    """A private copy of the tiny UNet (eval mode, frozen) for tests that inject adapters."""
    return copy.deepcopy(tiny_unet)


@pytest.fixture(scope="module")
def base_output(tiny_unet):
    return run(tiny_unet)


# --- where the adapters go --------------------------------------------------------------------

@pytest.mark.parametrize("layout, n_spatial, n_temporal", [("tiny", 42, 80), ("zeroscope", 96, 170)])
def test_targets_follow_the_official_rule(layout, n_spatial, n_temporal, tiny_unet):
    unet = tiny_unet if layout == "tiny" else meta_unet(**ZEROSCOPE_UNET_CONFIG)
    spatial, temporal = BACKBONE.spatial_targets(unet), BACKBONE.temporal_targets(unet)
    assert spatial == official_targets(unet, "spatial")  # same layers, same (registration) order
    assert temporal == official_targets(unet, "temporal")
    assert (len(spatial), len(temporal)) == (n_spatial, n_temporal)
    if layout == "zeroscope":  # the official checkpoint sizes: 192 and 340 tensors
        assert (2 * len(spatial), 2 * len(temporal)) == (192, 340)
    assert not set(spatial) & set(temporal)
    modules = dict(unet.named_modules())
    assert all(type(modules[t]) is nn.Linear for t in spatial + temporal)
    assert not any(part in ("attn2", "proj_in", "proj_out", "resnets", "time_embedding")
                   for t in spatial for part in t.split("."))
    assert not any(part in ("proj_in", "proj_out", "resnets", "temp_convs", "time_embedding")
                   for t in temporal for part in t.split("."))
    assert temporal[0].startswith("transformer_in.")  # registration order: transformer_in, down, up, mid
    blocks = [t.split(".")[0] for t in temporal if t.split(".")[0] != "transformer_in"]
    assert blocks.index("mid_block") > max(i for i, b in enumerate(blocks) if b == "up_blocks")


def test_targets_see_through_injected_adapters(unet):
    before = (BACKBONE.spatial_targets(unet), BACKBONE.temporal_targets(unet))
    inject(unet, BACKBONE, "spatial", "spatial", rank=4)
    inject(unet, BACKBONE, "temporal", "temporal", rank=2)
    assert (BACKBONE.spatial_targets(unet), BACKBONE.temporal_targets(unet)) == before


# --- each adapter its own settings; strengths at run time -------------------------------------

def test_each_adapter_has_its_own_rank_alpha_and_dropout(unet):
    inject(unet, BACKBONE, "spatial", "spatial", rank=4, alpha=8.0, dropout=0.1)
    inject(unet, BACKBONE, "temporal", "temporal", rank=2, dropout=0.0)
    layers = dict(lora_layers(unet))
    s = layers[BACKBONE.spatial_targets(unet)[0]]
    t = layers[BACKBONE.temporal_targets(unet)[0]]
    assert (s.r["spatial"], s.lora_alpha["spatial"], tuple(s.lora_A["spatial"].weight.shape)) == (4, 8.0, (4, s.in_features))
    assert (t.r["temporal"], t.lora_alpha["temporal"], tuple(t.lora_B["temporal"].weight.shape)) == (2, 2, (t.out_features, 2))
    assert "temporal" not in s.lora_A and "spatial" not in t.lora_A  # each path only on its own layers
    assert len(s.lora_A["spatial"]._forward_hooks) == 1  # rank dropout
    assert len(t.lora_A["temporal"]._forward_hooks) == 0  # dropout 0 costs nothing
    assert current_strengths(unet) == {"spatial": 0.0, "temporal": 0.0}  # new adapters start off
    assert all(not p.requires_grad for p in unet.parameters())
    fresh = get_tensors(unet, "temporal")  # official init: up = 0, so a fresh adapter changes nothing
    assert all(torch.count_nonzero(v) == 0 for k, v in fresh.items() if k.endswith("lora_B.weight"))


def test_strength_zero_is_bit_identical_and_one_is_on(unet, base_output):
    inject_random(unet, "spatial", "spatial", seed=1)
    inject_random(unet, "temporal", "temporal", seed=2)
    both = run(unet)
    assert not torch.allclose(both, base_output, atol=1e-4)
    set_strengths(unet, {"spatial": 0.0, "temporal": 0.0})
    assert torch.equal(run(unet), base_output)
    set_strengths(unet, {"spatial": 1.0, "temporal": 1.0})
    assert torch.equal(run(unet), both)
    assert current_strengths(unet) == {"spatial": 1.0, "temporal": 1.0}


def test_strength_scales_the_lora_delta_linearly(unet):
    inject_random(unet, "spatial", "spatial", rank=4, alpha=2.0, seed=3)  # alpha/rank = 0.5 is folded into strength
    target = BACKBONE.spatial_targets(unet)[0]
    layer = dict(lora_layers(unet))[target]
    x = torch.randn(3, 5, layer.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = layer.base_layer(x)
        a, b = layer.lora_A["spatial"].weight, layer.lora_B["spatial"].weight
        deltas = {}
        for s in (0.0, 0.5, 1.0, 2.0, 3.5):
            set_strengths(unet, {"spatial": s})
            deltas[s] = layer(x) - base
    assert torch.equal(deltas[0.0], torch.zeros_like(base))
    torch.testing.assert_close(deltas[1.0], x @ a.T @ b.T * 0.5)  # alpha / rank with strength 1
    for s in (0.5, 2.0, 3.5):
        torch.testing.assert_close(deltas[s], s * deltas[1.0], atol=1e-6, rtol=1e-5)


def _dropout_layer(unet, p: float, placement: str, rank: int = 4):
    """One spatial linear with a LoRA whose up maps output feature j to rank value j % rank (up[j, j % r] = 1),
    so a mask over the rank values zeroes whole groups of outputs, a mask over the outputs single ones."""
    inject(unet, BACKBONE, "spatial", "spatial", rank=rank, dropout=p, dropout_placement=placement)
    set_strengths(unet, {"spatial": 1.0})
    layer = dict(lora_layers(unet))[BACKBONE.spatial_targets(unet)[0]]
    with torch.no_grad():
        layer.lora_A["spatial"].weight.normal_(generator=torch.Generator().manual_seed(0))
        up = layer.lora_B["spatial"].weight
        up.zero_()
        up[torch.arange(up.shape[0]), torch.arange(up.shape[0]) % rank] = 1.0
    return layer


def _lora_delta(layer, x, training: bool, seed: int = 0) -> torch.Tensor:
    layer.train(training)
    torch.manual_seed(seed)
    with torch.no_grad():
        return layer(x) - layer.base_layer(x)


@pytest.mark.parametrize("placement", ["rank", "output"])
def test_lora_dropout_masks_the_placement_s_tensor_at_rate_p(unet, placement):
    p, rank = 0.3, 4
    layer = _dropout_layer(unet, p, placement, rank)
    x = torch.randn(4000, layer.in_features, generator=torch.Generator().manual_seed(1))
    full = _lora_delta(layer, x, training=False)  # eval: no dropout
    assert full.ne(0).all() and layer.out_features >= 4 * rank
    delta = _lora_delta(layer, x, training=True)
    dropped = delta == 0
    kept = ~dropped
    torch.testing.assert_close(delta[kept], full[kept] / (1 - p))  # inverted dropout: kept values scaled by 1/(1-p)
    groups = torch.arange(layer.out_features) % rank  # outputs that read the same rank value
    same_as_group = (dropped == dropped[:, groups]).all()
    if placement == "rank":  # up(dropout(down(x))): whole groups of outputs drop together
        assert same_as_group
        rate = dropped[:, :rank].float().mean()
    else:  # official dropout(up(down(x))): each output feature on its own
        assert not same_as_group
        rate = dropped.float().mean()
    assert abs(float(rate) - p) < 0.02, rate
    assert torch.equal(_lora_delta(layer, x, training=True), delta)  # same seed, same mask
    assert not torch.equal(_lora_delta(layer, x, training=True, seed=1), delta)


@pytest.mark.parametrize("placement", ["rank", "output"])
def test_lora_dropout_zero_adds_nothing(unet, placement):
    layer = _dropout_layer(unet, 0.0, placement)
    assert not layer.lora_A["spatial"]._forward_hooks and not layer.lora_B["spatial"]._forward_hooks
    x = torch.randn(64, layer.in_features, generator=torch.Generator().manual_seed(2))
    assert torch.equal(_lora_delta(layer, x, training=True), _lora_delta(layer, x, training=False))


def test_bad_dropout_settings_are_refused(unet):
    with pytest.raises(ValueError, match="dropout_placement must be one of"):
        inject(unet, BACKBONE, "spatial", "spatial", dropout=0.1, dropout_placement="input")
    with pytest.raises(ValueError, match="LoRA dropout must be between 0 and 1"):
        inject(unet, BACKBONE, "spatial", "spatial", dropout=1.5)
    assert not list(lora_layers(unet))  # nothing injected


def test_either_path_can_be_absent(unet, base_output):
    inject_random(unet, "temporal", "temporal", seed=4)
    assert set(dict(lora_layers(unet))) == set(BACKBONE.temporal_targets(unet))
    assert not torch.allclose(run(unet), base_output, atol=1e-4)
    remove(unet, "temporal")
    inject_random(unet, "spatial", "spatial", seed=5)
    assert set(dict(lora_layers(unet))) == set(BACKBONE.spatial_targets(unet))
    assert not torch.allclose(run(unet), base_output, atol=1e-4)


def test_several_spatial_adapters_toggle_individually(unet, base_output):
    inject_random(unet, "spatial_0", "spatial", seed=6, strength=0.0)
    inject_random(unet, "spatial_1", "spatial", seed=7, strength=0.0)
    outputs = {}
    for on in [(), ("spatial_0",), ("spatial_1",), ("spatial_0", "spatial_1")]:
        set_strengths(unet, {name: 1.0 for name in on})
        assert {n for n, s in current_strengths(unet).items() if s} == set(on)
        outputs[on] = run(unet)
    assert torch.equal(outputs[()], base_output)
    values = list(outputs.values())
    assert all(not torch.allclose(values[i], values[j], atol=1e-4) for i in range(4) for j in range(i + 1, 4))
    set_strengths(unet, {"spatial_0": 1.0})  # back to one of them: exactly the same output again
    assert torch.equal(run(unet), outputs[("spatial_0",)])
    layer = dict(lora_layers(unet))[BACKBONE.spatial_targets(unet)[0]]
    x = torch.randn(2, layer.in_features)
    with torch.no_grad():  # at one layer the two deltas add up
        base = layer.base_layer(x)
        d = {}
        for on in [("spatial_0",), ("spatial_1",), ("spatial_0", "spatial_1")]:
            set_strengths(unet, {name: 1.0 for name in on})
            d[on] = layer(x) - base
    torch.testing.assert_close(d[("spatial_0", "spatial_1")], d[("spatial_0",)] + d[("spatial_1",)])


# --- the base model is never touched ----------------------------------------------------------

def test_applied_leaves_base_weights_and_outputs_untouched(unet, base_output):
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    motion, look = random_adapter(unet, "temporal", seed=8), random_adapter(unet, "spatial", seed=9)
    with applied(unet, BACKBONE, [(motion, 1.0), (look, 0.7)]) as names:
        assert len(names) == 2
        inside = run(unet)
        lora_keys = {k for k in unet.state_dict() if "lora_" in k}
        assert lora_keys
        weights = {k.replace(".base_layer", ""): v for k, v in unet.state_dict().items() if "lora_" not in k}
        assert set(weights) == set(state)  # peft only wraps: same weights under ...to_q.base_layer.weight
        assert all(torch.equal(weights[k], v) for k, v in state.items())
    assert not torch.allclose(inside, base_output, atol=1e-4)
    assert set(unet.state_dict()) == set(state)
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in state.items())
    assert not list(lora_layers(unet))
    assert torch.equal(run(unet), base_output)
    add_adapter(unet, BACKBONE, "motion", motion)  # the explicit way: add, use, remove
    set_strengths(unet, {"motion": 1.0})
    assert not torch.allclose(run(unet), base_output, atol=1e-4)
    remove(unet, "motion")
    assert set(unet.state_dict()) == set(state)
    assert torch.equal(run(unet), base_output)


def test_applied_restores_adapters_already_in_the_unet(unet):
    """A training run's adapters are switched off inside `applied` and come back as they were, trainable."""
    inject_random(unet, "spatial", "spatial", seed=10, strength=1.0)
    inject_random(unet, "temporal", "temporal", seed=11, strength=0.5)
    set_trainable(unet, ["spatial", "temporal"], True)
    before = run(unet)
    with applied(unet, BACKBONE, [(random_adapter(unet, "temporal", seed=12), 1.0)]):
        assert current_strengths(unet)["spatial"] == 0.0 and current_strengths(unet)["temporal"] == 0.0
    assert current_strengths(unet) == {"spatial": 1.0, "temporal": 0.5}
    layers = dict(lora_layers(unet))
    for target, name in ((BACKBONE.spatial_targets(unet)[0], "spatial"), (BACKBONE.temporal_targets(unet)[0], "temporal")):
        assert layers[target].lora_A[name].weight.requires_grad and layers[target].lora_B[name].weight.requires_grad
    assert torch.equal(run(unet), before)


def test_dropout_varies_in_train_mode_only(unet):
    inject_random(unet, "spatial", "spatial", dropout=0.5, seed=13)
    layer = dict(lora_layers(unet))[BACKBONE.spatial_targets(unet)[0]]
    x = torch.randn(4, 16, layer.in_features)
    with torch.no_grad():
        layer.train()
        assert not torch.equal(layer(x), layer(x))
        layer.eval()
        assert torch.equal(layer(x), layer(x))
        set_strengths(unet, {})
        assert torch.equal(layer(x), layer.base_layer(x))


# --- refusing what does not fit ---------------------------------------------------------------

def test_check_fits_refuses_another_model(unet):
    from motion_lora.tiny import UNET_CONFIG

    wider = tuple(c * 3 // 2 for c in UNET_CONFIG["block_out_channels"])
    same_names = random_adapter(meta_unet(**{**UNET_CONFIG, "block_out_channels": wider}), "temporal")
    assert same_names.targets == BACKBONE.temporal_targets(unet)  # same layout, other widths
    with pytest.raises(AdapterMismatchError,
                       match=r"made for another model: layer .*temp_attentions.* is 32->32 here but the adapter expects 48->48"):
        check_fits(same_names, unet, BACKBONE)
    zeroscope = meta_unet(**ZEROSCOPE_UNET_CONFIG)
    with pytest.raises(AdapterMismatchError, match=r"made for another model .* Use a LoRA trained on the same base model"):
        check_fits(random_adapter(zeroscope, "spatial"), unet, BACKBONE)
    with pytest.raises(AdapterMismatchError):  # refused before anything is injected
        add_adapter(unet, BACKBONE, "x", same_names)
    assert not list(lora_layers(unet))
    check_fits(random_adapter(unet, "temporal"), unet, BACKBONE)  # and the right one passes


def test_check_fits_refuses_a_spatial_adapter_labelled_temporal(unet):
    spatial = random_adapter(unet, "spatial")
    mislabelled = LoraAdapter("temporal", spatial.rank, spatial.alpha, spatial.tensors,
                              fingerprint=spatial.fingerprint, name="motion.safetensors")
    with pytest.raises(AdapterMismatchError, match="motion.safetensors says it is temporal but its layers are the spatial path's"):
        check_fits(mislabelled, unet, BACKBONE)
    partial = random_adapter(unet, "temporal")
    partial.tensors = dict(list(partial.tensors.items())[:-2])  # one layer missing, same fingerprint
    with pytest.raises(AdapterMismatchError):
        check_fits(partial, unet, BACKBONE)
    with pytest.raises(ValueError, match="kind must be one of"):
        LoraAdapter("appearance", 4, 4.0, {})


def test_set_tensors_checks_everything_before_writing(unet):
    inject(unet, BACKBONE, "temporal", "temporal", rank=4)
    before = get_tensors(unet, "temporal")
    good = random_adapter(unet, "temporal", seed=14).tensors
    first, last = next(iter(good)), list(good)[-1]
    cases = {
        "missing": {k: v for k, v in good.items() if k != last},
        "unexpected": {**good, "down_blocks.0.resnets.0.conv1.lora_A.weight": torch.zeros(4, 4)},
        "wrong shape": {**good, last: torch.zeros(good[last].shape[0], good[last].shape[1] + 1)},
    }
    for problem, tensors in cases.items():
        with pytest.raises(AdapterMismatchError, match=problem):
            set_tensors(unet, "temporal", tensors)
        after = get_tensors(unet, "temporal")
        assert all(torch.equal(after[k], before[k]) for k in before), f"{problem}: something was written"
    assert not torch.equal(good[first], before[first])
    set_tensors(unet, "temporal", good)
    assert all(torch.equal(get_tensors(unet, "temporal")[k], v) for k, v in good.items())


def test_a_failed_add_leaves_nothing_behind(unet, base_output):
    """An adapter whose rank field disagrees with its tensors is refused and not left half-injected."""
    adapter = random_adapter(unet, "temporal", rank=4)
    adapter.rank = 8
    with pytest.raises(AdapterMismatchError):
        with applied(unet, BACKBONE, [(adapter, 1.0)]):
            pass
    assert not list(lora_layers(unet))
    assert torch.equal(run(unet), base_output)
