"""Adapter files: exact round trip, metadata without a model, and clear refusals of anything else."""

from __future__ import annotations

import json

import pytest
import torch

from motion_lora.adapters import LoraAdapter, applied
from motion_lora.lora_file import FORMAT, FORMAT_VERSION, LoraFileError, load_adapter, read_metadata, save_adapter

TRAINING = {"recipe": "single-video", "steps": 150, "temporal_lr": 5e-4, "rank": 4, "beta": 1.0,
            "prompts": ["a car turning"], "mixed_precision": "no"}



@pytest.fixture(scope="module")
def model():
    from motion_lora.tiny import build_tiny_model

    return build_tiny_model(seed=0)


def random_adapter(model, kind: str = "temporal", rank: int = 4, seed: int = 0) -> LoraAdapter:
    g = torch.Generator().manual_seed(seed)
    modules = dict(model.unet.named_modules())
    targets = model.backbone.temporal_targets(model.unet) if kind == "temporal" else model.backbone.spatial_targets(model.unet)
    tensors = {}
    for target in targets:
        layer = modules[target]
        tensors[f"{target}.lora_A.weight"] = torch.randn(rank, layer.in_features, generator=g) * 0.2
        tensors[f"{target}.lora_B.weight"] = torch.randn(layer.out_features, rank, generator=g) * 0.2
    return LoraAdapter(kind, rank, 2.0 * rank, tensors, fingerprint=model.fingerprint, training=dict(TRAINING),
                       name="car turn motion")


def run(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, 2, 8, 8, generator=g)
    text = torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        return model.backbone.predict(model.unet, latents, torch.tensor([500]), text)


def test_round_trip_keeps_tensors_and_metadata(model, tmp_path):
    adapter = random_adapter(model)
    path = save_adapter(adapter, tmp_path / "motion")  # the suffix is added
    assert path == tmp_path / "motion.safetensors" and path.is_file()
    assert not list(tmp_path.glob("*.tmp"))
    loaded = load_adapter(path)
    assert (loaded.kind, loaded.rank, loaded.alpha, loaded.name) == ("temporal", 4, 8.0, "car turn motion")
    assert loaded.fingerprint == model.fingerprint and loaded.training == TRAINING
    assert loaded.tensors.keys() == adapter.tensors.keys()
    assert all(torch.equal(loaded.tensors[k], v) for k, v in adapter.tensors.items())
    meta = read_metadata(path)
    assert meta["format"] == FORMAT and meta["format_version"] == str(FORMAT_VERSION)
    assert (meta["kind"], meta["rank"], meta["target_count"]) == ("temporal", "4", "80")
    assert float(meta["alpha"]) == 8.0 and meta["fingerprint"] == model.fingerprint and meta["training"] == TRAINING
    spatial = random_adapter(model, "spatial", rank=2, seed=1)
    spatial.name = ""
    loaded = load_adapter(save_adapter(spatial, tmp_path / "look.safetensors"))
    assert (loaded.kind, loaded.rank, len(loaded.targets), loaded.name) == ("spatial", 2, 42, "look")


def test_read_metadata_needs_no_model_and_no_tensors(model, tmp_path, monkeypatch):
    path = save_adapter(random_adapter(model), tmp_path / "motion.safetensors")
    import safetensors.torch

    def no_tensors(*args, **kwargs):
        raise AssertionError("read_metadata must not load tensors")

    monkeypatch.setattr(safetensors.torch, "load_file", no_tensors)
    meta = read_metadata(path)
    assert meta["kind"] == "temporal" and meta["training"]["steps"] == 150


def test_loaded_adapter_reproduces_the_saved_one(model, tmp_path):
    adapter = random_adapter(model, seed=2)
    base = run(model)
    with applied(model.unet, model.backbone, [(adapter, 1.0)]):
        before = run(model)
    assert not torch.allclose(before, base, atol=1e-4)
    loaded = load_adapter(save_adapter(adapter, tmp_path / "motion.safetensors"))
    with applied(model.unet, model.backbone, [(loaded, 1.0)]):
        assert torch.equal(run(model), before)
    assert torch.equal(run(model), base)


def test_refuses_to_overwrite_unless_asked(model, tmp_path):
    first, second = random_adapter(model, seed=3), random_adapter(model, seed=4)
    path = save_adapter(first, tmp_path / "motion.safetensors")
    with pytest.raises(FileExistsError, match="motion.safetensors already exists"):
        save_adapter(second, path)
    key = next(iter(first.tensors))
    assert torch.equal(load_adapter(path).tensors[key], first.tensors[key])
    save_adapter(second, path, overwrite=True)
    assert torch.equal(load_adapter(path).tensors[key], second.tensors[key])


def test_refuses_files_that_are_not_our_adapters(model, tmp_path):
    from safetensors.torch import save_file

    text, pickled = tmp_path / "text.safetensors", tmp_path / "pickle.safetensors"
    text.write_text("hello, not a tensor file")
    torch.save({"a": torch.zeros(2)}, pickled)  # a PyTorch pickle renamed to .safetensors
    for name, path in (("text.safetensors", text), ("pickle.safetensors", pickled)):
        with pytest.raises(LoraFileError, match=rf"{name} is not a readable \.safetensors file"):
            load_adapter(path)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"lora_unet_down.weight": torch.zeros(2, 2)}, str(foreign))  # e.g. an image-model LoRA
    with pytest.raises(LoraFileError, match=r"foreign\.safetensors is not a MotionDirector LoRA .*official-checkpoint import"):
        read_metadata(foreign)
    with pytest.raises(LoraFileError, match="not found"):
        load_adapter(tmp_path / "missing.safetensors")


def _rewrite_metadata(src, dst, **changes):
    from safetensors.torch import load_file, save_file

    meta = {k: (json.dumps(v) if k == "training" else v) for k, v in read_metadata(src).items()}
    meta.update(changes)
    save_file(load_file(str(src)), str(dst), metadata=meta)
    return dst


def test_refuses_newer_format_unknown_kind_and_incomplete_files(model, tmp_path):
    path = save_adapter(random_adapter(model), tmp_path / "motion.safetensors")
    newer = _rewrite_metadata(path, tmp_path / "newer.safetensors", format_version=str(FORMAT_VERSION + 1))
    with pytest.raises(LoraFileError, match=r"newer\.safetensors was written by a newer version of the pack"):
        load_adapter(newer)
    odd = _rewrite_metadata(path, tmp_path / "odd.safetensors", kind="appearance")
    with pytest.raises(LoraFileError, match="unknown adapter kind 'appearance'"):
        load_adapter(odd)
    short = _rewrite_metadata(path, tmp_path / "short.safetensors", target_count="81")
    with pytest.raises(LoraFileError, match=r"short\.safetensors is incomplete: metadata lists 81 layers, the file holds 80"):
        load_adapter(short)


def test_refuses_truncated_and_corrupt_files(model, tmp_path):
    data = save_adapter(random_adapter(model), tmp_path / "motion.safetensors").read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(LoraFileError, match=r"truncated\.safetensors is not a readable \.safetensors file.*re-download"):
        load_adapter(truncated)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(data[:8] + b"\xff" * 16 + data[24:])  # garbage in the JSON header
    with pytest.raises(LoraFileError, match=r"corrupt\.safetensors is not a readable"):
        read_metadata(corrupt)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(LoraFileError, match=r"empty\.safetensors"):
        load_adapter(empty)


def test_damaged_metadata_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "damaged.safetensors"
    save_file({"x.lora_A.weight": torch.zeros(1, 1)}, str(path),
              metadata={"format": "motion_director_lora", "format_version": "one", "kind": "temporal"})
    with pytest.raises(LoraFileError, match="damaged.safetensors has damaged metadata"):
        read_metadata(path)


def test_files_are_readable_by_others_like_any_new_file(model, tmp_path):
    """0644 under the usual umask (an atomic temp file must not leave the 0600 of mkstemp-style files)."""
    import os

    old = os.umask(0o022)
    try:
        path = save_adapter(random_adapter(model), tmp_path / "shared" / "motion")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_non_finite_adapters_are_never_saved_nor_loaded(model, tmp_path):
    from safetensors.torch import load_file, save_file

    good = random_adapter(model)
    broken = LoraAdapter(kind=good.kind, rank=good.rank, alpha=good.alpha, fingerprint=good.fingerprint,
                         tensors={k: (v * float("nan") if i == 3 else v) for i, (k, v) in enumerate(good.tensors.items())},
                         name="diverged")
    with pytest.raises(LoraFileError, match=r"'diverged' \(not saved to .*nan\.safetensors\) holds NaN or infinite "
                                            r"weights .*diverged.*lower learning rate"):
        save_adapter(broken, tmp_path / "nan")
    assert not (tmp_path / "nan.safetensors").exists()
    # a file written by other means (an older version) is refused on load
    path = save_adapter(good, tmp_path / "good")
    tensors = load_file(str(path))
    first = next(iter(tensors))
    tensors[first] = torch.full_like(tensors[first], float("inf"))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    save_file(tensors, str(tmp_path / "inf.safetensors"), metadata=meta)
    with pytest.raises(LoraFileError, match=r"inf\.safetensors holds NaN or infinite weights \(first in "):
        load_adapter(tmp_path / "inf.safetensors")
