"""Wan LoRA files: ours are in ComfyUI's key layout and read back; other trainers' Wan LoRAs read in exactly."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from motion_lora import adapters as ad
from motion_lora.backbones.wan import to_original_name
from motion_lora.lora_file import load_adapter, read_metadata, save_adapter
from motion_lora.tiny_wan import build_tiny_wan
from motion_lora.wan_lora_import import WanLoraImportError, read_wan_lora


@pytest.fixture(scope="module")
def wan():
    return build_tiny_wan(seed=0)


def _adapter(model, kind=ad.TEMPORAL, rank=4, alpha=None, seed=0) -> ad.LoraAdapter:
    ad.inject(model.unet, model.backbone, "tmp", kind, rank=rank)
    g = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in ad.get_tensors(model.unet, "tmp").items()}
    ad.remove(model.unet, "tmp")
    return ad.LoraAdapter(kind, rank, float(alpha or rank), tensors, model.fingerprint, {"steps": 3}, "motion")


def _weight_deltas(model, adapter, strength=1.0) -> dict[str, torch.Tensor]:
    """What `adapter` adds to each linear's weight: strength * alpha / rank * B @ A."""
    return {k[: -len(".lora_A.weight")]: strength * adapter.alpha / adapter.rank
            * adapter.tensors[k.replace("lora_A", "lora_B")] @ v
            for k, v in adapter.tensors.items() if k.endswith(".lora_A.weight")}


def test_saved_wan_adapter_uses_comfyui_keys_and_reads_back(wan, tmp_path):
    adapter = _adapter(wan, alpha=2.0)
    path = save_adapter(adapter, tmp_path / "motion.safetensors")
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    linears = {f"diffusion_model.{to_original_name(t)}" for t in adapter.targets}
    assert "diffusion_model.blocks.0.self_attn.q" in linears
    # exactly what ComfyUI's generic LoRA format maps: <module>.lora_A.weight / .lora_B.weight / .alpha
    assert keys == {f"{m}.{s}" for m in linears for s in ("lora_A.weight", "lora_B.weight", "alpha")}
    with safe_open(str(path), framework="pt") as f:
        assert float(f.get_tensor("diffusion_model.blocks.1.self_attn.o.alpha")) == 2.0
    assert read_metadata(path)["kind"] == ad.TEMPORAL
    back = load_adapter(path)
    assert back.tensors.keys() == adapter.tensors.keys()
    assert all(torch.equal(back.tensors[k], v) for k, v in adapter.tensors.items())
    assert (back.alpha, back.rank, back.fingerprint) == (2.0, 4, wan.fingerprint)
    ad.check_fits(back, wan.unet, wan.backbone)


def test_zeroscope_files_keep_their_own_keys(tmp_path, tiny_model):
    ad.inject(tiny_model.unet, tiny_model.backbone, "tmp", ad.TEMPORAL, rank=2)
    tensors = ad.get_tensors(tiny_model.unet, "tmp")
    adapter = ad.LoraAdapter(ad.TEMPORAL, 2, 2.0, tensors, tiny_model.fingerprint)
    path = save_adapter(adapter, tmp_path / "z.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(tensors)


def _musubi_file(adapter, path, alphas):
    """The adapter as musubi-tuner writes Wan LoRAs: lora_unet_<module_with_underscores>.lora_down/up + alpha."""
    out = {}
    for i, target in enumerate(adapter.targets):
        name = "lora_unet_" + to_original_name(target).replace(".", "_")
        out[f"{name}.lora_down.weight"] = adapter.tensors[f"{target}.lora_A.weight"].half()
        out[f"{name}.lora_up.weight"] = adapter.tensors[f"{target}.lora_B.weight"].half()
        out[f"{name}.alpha"] = torch.tensor(alphas[i % len(alphas)], dtype=torch.float16)
    save_file(out, str(path))


def test_reads_musubi_tuner_lora_with_per_layer_alphas(wan, tmp_path):
    adapter = _adapter(wan, rank=4)
    _musubi_file(adapter, tmp_path / "musubi.safetensors", alphas=[4.0, 2.0, 1.0])
    imported = read_wan_lora(tmp_path / "musubi.safetensors", ad.TEMPORAL)
    assert set(imported.targets) == set(adapter.targets) and imported.alpha == imported.rank == 4
    ours = _weight_deltas(wan, adapter)
    theirs = _weight_deltas(wan, imported)
    for i, target in enumerate(adapter.targets):
        alpha = [4.0, 2.0, 1.0][i % 3]
        assert torch.allclose(theirs[target], ours[target] * alpha / 4, atol=1e-3)
    ad.check_fits(imported, wan.unet, wan.backbone)  # the same layers as our temporal path: Apply nodes take it


def test_reads_diffusion_pipe_lora_with_mixed_ranks(wan, tmp_path):
    adapter = _adapter(wan, kind=ad.SPATIAL, rank=4)
    out = {}
    for i, target in enumerate(adapter.targets):
        r = 4 if i % 2 else 2  # some layers at a smaller rank
        name = "diffusion_model." + to_original_name(target)
        out[f"{name}.lora_A.weight"] = adapter.tensors[f"{target}.lora_A.weight"][:r].contiguous()
        out[f"{name}.lora_B.weight"] = adapter.tensors[f"{target}.lora_B.weight"][:, :r].contiguous()
    save_file(out, str(tmp_path / "dp.safetensors"))
    imported = read_wan_lora(tmp_path / "dp.safetensors", ad.SPATIAL)
    assert imported.rank == 4
    theirs = _weight_deltas(wan, imported)
    for i, target in enumerate(adapter.targets):
        r = 4 if i % 2 else 2
        want = adapter.tensors[f"{target}.lora_B.weight"][:, :r] @ adapter.tensors[f"{target}.lora_A.weight"][:r]
        assert torch.allclose(theirs[target], want, atol=1e-6)


def test_foreign_files_with_unknown_keys_are_refused(wan, tmp_path):
    save_file({"lora_unet_blocks_0_mystery.lora_down.weight": torch.zeros(2, 4),
               "lora_unet_blocks_0_mystery.lora_up.weight": torch.zeros(4, 2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WanLoraImportError, match="not a Wan transformer layer"):
        read_wan_lora(tmp_path / "bad.safetensors")
    save_file({"something.else": torch.zeros(1)}, str(tmp_path / "none.safetensors"))
    with pytest.raises(WanLoraImportError, match="no LoRA weights"):
        read_wan_lora(tmp_path / "none.safetensors")
