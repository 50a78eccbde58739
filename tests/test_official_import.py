"""Official MotionDirector checkpoints import exactly: same layers, same order, same outputs.

Files are written here in the official layout and order (a pickled plain list
`[up_0, down_0, ...]` per path, several clips interleaved per linear); the reference
output adds `up @ down` to the weights of a copy of the UNet by hand, independently of
peft and of our backbone's target lists.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from motion_lora.adapters import applied
from motion_lora.lora_file import load_adapter, save_adapter
from motion_lora.official_import import (
    OfficialCheckpointError,
    find_official_files,
    import_official,
    import_official_file,
)

RANK = 4
OFFICIAL_KEYS = {"spatial": ("Transformer2DModel", ("attn1", "ff")),
                 "temporal": ("TransformerTemporalModel", ("attn1", "attn2", "ff"))}


class NotATensor:  # a pickled custom object: weights-only loading must refuse it
    def __init__(self):
        self.payload = "anything"


def official_linears(unet: nn.Module, kind: str) -> list[tuple[str, nn.Linear]]:
    """The official `_find_modules_v2` traversal: ancestors in named_modules order, then their linears."""
    ancestor_class, keys = OFFICIAL_KEYS[kind]
    found = []
    for ancestor_name, ancestor in unet.named_modules():
        if ancestor.__class__.__name__ != ancestor_class:
            continue
        for name, module in ancestor.named_modules():
            if isinstance(module, nn.Linear) and any(key in name for key in keys):
                found.append((f"{ancestor_name}.{name}", module))
    return found


def official_pairs(unet: nn.Module, kind: str, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random (up, down) per official target linear, large enough to change the output visibly."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(lin.out_features, RANK, generator=g) * 0.2, torch.randn(RANK, lin.in_features, generator=g) * 0.2)
            for _, lin in official_linears(unet, kind)]


def official_list(*clips: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """The official file content: per linear, `[up_c0, down_c0, up_c1, down_c1, ...]`; as Parameters, like the official save."""
    out = []
    for per_linear in zip(*clips):
        for up, down in per_linear:
            out += [nn.Parameter(up.clone()), nn.Parameter(down.clone())]
    return out


def by_hand(unet: nn.Module, kinds_pairs: dict[str, list]) -> nn.Module:
    """A copy of the UNet with `W += up @ down` on each official target (official scale 1)."""
    merged = copy.deepcopy(unet)
    for kind, pairs in kinds_pairs.items():
        linears = official_linears(merged, kind)
        assert len(linears) == len(pairs)
        with torch.no_grad():
            for (_, lin), (up, down) in zip(linears, pairs):
                lin.weight += up @ down
    return merged


def run(unet: nn.Module, backbone) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, 2, 8, 8, generator=g)
    text = torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        return backbone.predict(unet, latents, torch.tensor([500]), text)


def write_checkpoint(root, unet, step=150, spatial_clips=1, seed=0):
    """checkpoint-N/{spatial,temporal}/lora/N_unet.pt as the official trainer writes them."""
    spatial = [official_pairs(unet, "spatial", seed + 1 + k) for k in range(spatial_clips)]
    temporal = official_pairs(unet, "temporal", seed)
    folder = root / f"checkpoint-{step}"
    for kind, content in (("spatial", official_list(*spatial)), ("temporal", official_list(temporal))):
        (folder / kind / "lora").mkdir(parents=True)
        torch.save(content, folder / kind / "lora" / f"{step}_unet.pt")
    return folder, spatial, temporal



@pytest.fixture(scope="module")
def model():
    from motion_lora.tiny import build_tiny_model

    return build_tiny_model(seed=0)


def test_backbone_targets_follow_the_official_traversal(model):
    for kind, ours in (("spatial", model.backbone.spatial_targets(model.unet)),
                       ("temporal", model.backbone.temporal_targets(model.unet))):
        assert ours == [name for name, _ in official_linears(model.unet, kind)]


def test_checkpoint_folder_imports_both_paths_and_reproduces_by_hand_outputs(model, tmp_path):
    folder, spatial, temporal = write_checkpoint(tmp_path, model.unet)
    adapters = import_official(folder, model)
    assert [a.kind for a in adapters] == ["spatial", "temporal"]
    sp, tm = adapters
    assert (sp.rank, sp.alpha, tm.rank, tm.alpha) == (RANK, RANK, RANK, RANK)  # official scale 1: alpha = rank
    assert len(sp.targets) == 42 and len(tm.targets) == 80
    assert sp.fingerprint == tm.fingerprint == model.fingerprint
    assert tm.training["source"] == "official MotionDirector" and tm.training["file"].endswith("150_unet.pt")
    assert "checkpoint-150" in tm.name

    base = run(model.unet, model.backbone)
    for chosen, pairs in (([tm], {"temporal": temporal}), ([sp], {"spatial": spatial[0]}),
                          ([sp, tm], {"spatial": spatial[0], "temporal": temporal})):
        with applied(model.unet, model.backbone, [(a, 1.0) for a in chosen]):
            ours = run(model.unet, model.backbone)
        reference = run(by_hand(model.unet, pairs), model.backbone)
        assert not torch.allclose(reference, base, atol=1e-3)  # the LoRA really changes the output
        torch.testing.assert_close(ours, reference, atol=2e-5, rtol=1e-4)
    assert torch.equal(run(model.unet, model.backbone), base)  # nothing left behind


def test_kind_folder_lora_folder_and_single_file(model, tmp_path):
    folder, _, temporal = write_checkpoint(tmp_path, model.unet)
    file = folder / "temporal" / "lora" / "150_unet.pt"
    assert find_official_files(folder) == [("spatial", folder / "spatial" / "lora" / "150_unet.pt"), ("temporal", file)]
    assert find_official_files(folder, kind="temporal") == [("temporal", file)]
    assert find_official_files(folder / "temporal") == [("temporal", file)]
    assert find_official_files(folder / "temporal" / "lora") == [("temporal", file)]
    assert find_official_files(file) == [("temporal", file)]
    from_file = import_official(file, model)[0]
    assert from_file.kind == "temporal"
    # the same list copied elsewhere: the kind is told from which path its count and shapes fit
    loose = tmp_path / "motion_unet.pt"
    loose.write_bytes(file.read_bytes())
    from_content = import_official_file(loose, model.unet, backbone=model.backbone)
    assert from_content.kind == "temporal"
    for key, value in from_file.tensors.items():
        assert torch.equal(from_content.tensors[key], value)
    up, down = temporal[0]
    first = from_file.targets[0]
    assert torch.equal(from_file.tensors[f"{first}.lora_A.weight"], down)
    assert torch.equal(from_file.tensors[f"{first}.lora_B.weight"], up)


def test_multi_clip_spatial_file_imports_the_chosen_clip(model, tmp_path):
    folder, spatial, _ = write_checkpoint(tmp_path, model.unet, spatial_clips=3)
    file = folder / "spatial" / "lora" / "150_unet.pt"
    assert len(torch.load(file, weights_only=True)) == 3 * 42 * 2
    for k in range(3):
        adapter = import_official_file(file, model, clip=k)
        assert adapter.training["clip"] == k and adapter.training["clips"] == 3 and f"clip {k}" in adapter.name
        for target, (up, down) in zip(adapter.targets, spatial[k]):
            assert torch.equal(adapter.tensors[f"{target}.lora_A.weight"], down)
            assert torch.equal(adapter.tensors[f"{target}.lora_B.weight"], up)
    with applied(model.unet, model.backbone, [(adapter, 1.0)]):  # the last clip, end to end
        ours = run(model.unet, model.backbone)
    torch.testing.assert_close(ours, run(by_hand(model.unet, {"spatial": spatial[2]}), model.backbone), atol=2e-5, rtol=1e-4)
    with pytest.raises(OfficialCheckpointError, match=r"3 training clip.*clip 3 does not exist"):
        import_official_file(file, model, clip=3)


def test_whole_checkpoint_folder_with_a_clip_index_applies_it_to_the_spatial_file_only(model, tmp_path):
    """`import-official checkpoint-N --clip 1`: the spatial file has 2 clips, the temporal file none."""
    from motion_lora.cli import main

    clip = 1
    folder, spatial, temporal = write_checkpoint(tmp_path, model.unet, spatial_clips=2)
    sp, tm = import_official(folder, model, clip=clip)
    assert (sp.kind, sp.training["clip"], sp.training["clips"], tm.kind) == ("spatial", clip, 2, "temporal")
    assert "clip" not in tm.training and "clip" not in tm.name
    with applied(model.unet, model.backbone, [(sp, 1.0), (tm, 1.0)]):
        ours = run(model.unet, model.backbone)
    reference = run(by_hand(model.unet, {"spatial": spatial[clip], "temporal": temporal}), model.backbone)
    torch.testing.assert_close(ours, reference, atol=2e-5, rtol=1e-4)
    assert import_official_file(folder / "temporal" / "lora" / "150_unet.pt", model, clip=clip).tensors.keys() == tm.tensors.keys()

    out = tmp_path / "imported"  # the command line, on the built-in tiny model (the same seed-0 weights)
    assert main(["import-official", str(folder), "--model", "tiny", "--clip", str(clip), "--output", str(out)]) == 0
    files = {kind: load_adapter(out / f"{kind}.safetensors") for kind in ("spatial", "temporal")}
    for adapter in (sp, tm):
        saved = files[adapter.kind]
        assert saved.tensors.keys() == adapter.tensors.keys()
        assert all(torch.equal(saved.tensors[k], v) for k, v in adapter.tensors.items())
    with pytest.raises(OfficialCheckpointError, match=r"2 training clip.*clip 2 does not exist"):
        import_official(folder, model, clip=2)  # a clip the spatial file lacks is still refused


def test_wrong_count_is_refused_with_what_was_expected(model, tmp_path):
    folder, _, _ = write_checkpoint(tmp_path, model.unet)
    spatial_file = folder / "spatial" / "lora" / "150_unet.pt"
    temporal_file = folder / "temporal" / "lora" / "150_unet.pt"
    with pytest.raises(OfficialCheckpointError, match=r"expected 160 tensors .* 80 temporal layers, found 84: is this a spatial file\?"):
        import_official_file(spatial_file, model, kind="temporal")
    with pytest.raises(OfficialCheckpointError, match=r"expected 84 tensors .* 42 spatial layers, found 160: is this a temporal file\?"):
        import_official_file(temporal_file, model, kind="spatial")
    short = tmp_path / "short" / "temporal" / "1_unet.pt"
    short.parent.mkdir(parents=True)
    torch.save(torch.load(temporal_file, weights_only=True)[:-2], short)
    with pytest.raises(OfficialCheckpointError, match=r"found 158: was it trained on another base model"):
        import_official(short.parent, model)


def test_wrong_shapes_are_refused(model, tmp_path):
    pairs = official_pairs(model.unet, "temporal", 0)
    swapped = [t for up, down in pairs for t in (down, up)]  # down first: every shape is transposed
    path = tmp_path / "temporal" / "lora" / "5_unet.pt"
    path.parent.mkdir(parents=True)
    torch.save(swapped, path)
    with pytest.raises(OfficialCheckpointError, match=r"pair 0 \(layer transformer_in\..*this model's layer is"):
        import_official(path, model)
    other_width = [t for up, down in pairs for t in (torch.zeros(up.shape[0] + 8, RANK), down)]
    torch.save(other_width, path)
    with pytest.raises(OfficialCheckpointError, match="another base model"):
        import_official(path, model)
    mixed = [t for up, down in pairs for t in (up, down)]
    mixed[-2], mixed[-1] = mixed[-2][:, :2], mixed[-1][:2]  # last layer at rank 2
    torch.save(mixed, path)
    with pytest.raises(OfficialCheckpointError, match="different ranks"):
        import_official(path, model)


def test_unsafe_or_foreign_content_is_refused(model, tmp_path):
    folder = tmp_path / "temporal" / "lora"
    folder.mkdir(parents=True)
    evil = folder / "1_unet.pt"
    torch.save([NotATensor()], evil)
    with pytest.raises(OfficialCheckpointError, match=r"1_unet\.pt holds Python objects other than tensors "
                                                      r"\(.*NotATensor\), so it was refused for safety"):
        import_official(evil, model)
    plain_pickle = tmp_path / "plain" / "temporal" / "lora" / "1_unet.pt"  # an old-style pickle, no zip
    plain_pickle.parent.mkdir(parents=True)
    plain_pickle.write_bytes(b"(i__builtin__\nobject\n.")
    with pytest.raises(OfficialCheckpointError, match=r"objects other than tensors \(Unsupported operand.*refused "
                                                      r"for safety"):
        import_official(plain_pickle, model)
    as_dict = folder / "2_unet.pt"
    torch.save({"up": torch.zeros(2, 2)}, as_dict)
    with pytest.raises(OfficialCheckpointError, match="holds a dict, not the plain list"):
        import_official(as_dict, model)
    garbage = folder / "3_unet.pt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(OfficialCheckpointError, match=r"3_unet\.pt is not a readable PyTorch file"):
        import_official(garbage, model)
    with pytest.raises(OfficialCheckpointError, match="several UNet LoRA files"):
        import_official(folder.parent, model)
    with pytest.raises(OfficialCheckpointError, match="holds no official MotionDirector LoRA"):
        import_official((tmp_path / "empty").mkdir() or tmp_path / "empty", model)
    with pytest.raises(OfficialCheckpointError, match="not found"):
        import_official(tmp_path / "missing", model)


def test_safetensors_variant_reads_in_numeric_order(model, tmp_path):
    from safetensors.torch import save_file

    pairs = official_pairs(model.unet, "temporal", 3)
    named = {}
    for i, (up, down) in enumerate(pairs):  # cloneofsimo save_safeloras naming; "10" must come after "9"
        named[f"unet:{i}:up"], named[f"unet:{i}:down"] = up, down
    folder = tmp_path / "temporal" / "lora"
    folder.mkdir(parents=True)
    save_file(named, str(folder / "100_unet.safetensors"))
    (numbered := tmp_path / "flat" / "temporal").mkdir(parents=True)
    save_file({str(i): t for i, t in enumerate(t for pair in pairs for t in pair)}, str(numbered / "unet.safetensors"))
    reference = run(by_hand(model.unet, {"temporal": pairs}), model.backbone)
    for path in (folder.parent, numbered):
        (adapter,) = import_official(path, model)
        with applied(model.unet, model.backbone, [(adapter, 1.0)]):
            torch.testing.assert_close(run(model.unet, model.backbone), reference, atol=2e-5, rtol=1e-4)
    with_text = {**named, "text_encoder:0:up": torch.zeros(2, RANK), "text_encoder:0:down": torch.zeros(RANK, 2)}
    save_file(with_text, str(folder / "100_unet.safetensors"))  # a UNet and a text-encoder LoRA in one file
    (adapter,) = import_official(folder.parent, model)
    assert len(adapter.targets) == 80
    save_file({"weird_key": torch.zeros(1)}, str(numbered / "unet.safetensors"))
    with pytest.raises(OfficialCheckpointError, match="not an official MotionDirector LoRA"):
        import_official(numbered, model)


def test_imported_adapter_saves_and_loads_as_ours(model, tmp_path):
    folder, _, _ = write_checkpoint(tmp_path, model.unet)
    (temporal,) = import_official(folder, model, kind="temporal")
    path = save_adapter(temporal, tmp_path / "motion.safetensors")
    loaded = load_adapter(path)
    assert loaded.kind == "temporal" and loaded.rank == RANK and loaded.training["source"] == "official MotionDirector"
    with applied(model.unet, model.backbone, [(temporal, 1.0)]):
        first = run(model.unet, model.backbone)
    with applied(model.unet, model.backbone, [(loaded, 1.0)]):
        assert torch.equal(run(model.unet, model.backbone), first)


def test_zeroscope_layout_counts(tmp_path):
    """On ZeroScope's full layout (meta device: shapes only) the official sizes are 192 spatial and 340 temporal."""
    from diffusers import UNet3DConditionModel

    from motion_lora.backbones import ZeroScope
    from motion_lora.official_import import official_to_adapter

    config = dict(block_out_channels=[320, 640, 1280, 1280], cross_attention_dim=1024, attention_head_dim=64,
                  layers_per_block=2, norm_num_groups=32,
                  down_block_types=["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
                  up_block_types=["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3)
    with torch.device("meta"):
        unet = UNet3DConditionModel.from_config(config)
    backbone = ZeroScope()
    lists = {}
    for kind in ("spatial", "temporal"):
        lists[kind] = [t for _, lin in official_linears(unet, kind)
                       for t in (torch.empty(lin.out_features, 32, device="meta"), torch.empty(32, lin.in_features, device="meta"))]
    assert (len(lists["spatial"]), len(lists["temporal"])) == (192, 340)
    adapter = official_to_adapter(lists["temporal"], unet, backbone, "temporal")
    assert (adapter.rank, adapter.alpha, len(adapter.targets)) == (32, 32.0, 170)
    two_clips = [t for i in range(0, 192, 2) for t in lists["spatial"][i:i + 2] * 2]  # interleaved per linear
    assert len(official_to_adapter(two_clips, unet, backbone, "spatial", clip=1).targets) == 96
    with pytest.raises(OfficialCheckpointError, match=r"expected 192 tensors .* 96 spatial layers, found 340: is this a temporal file\?"):
        official_to_adapter(lists["temporal"], unet, backbone, "spatial")
