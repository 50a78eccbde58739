"""The model bundle and the built-in tiny model: offline loading, dtypes, clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from motion_lora import adapters
from motion_lora.model import ModelLoadError, is_video_model_folder, load_model
from motion_lora.tiny import build_tiny_model


def _unet_output(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 4, 3, 8, 8, generator=g)
    text = model.encode_prompt("a car turns left")
    with torch.no_grad():
        return model.backbone.predict(model.unet, latents.to(model.dtype), torch.tensor([500]), text).float()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    want, got = a.state_dict(), b.state_dict()
    return want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def _assert_same_output(a: torch.Tensor, b: torch.Tensor) -> None:
    # Two separately built (or loaded) modules may take other CPU kernels (alignment, AVX-512 paths): their
    # outputs agree to float rounding, not bit for bit. Weights are compared exactly elsewhere.
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_tiny_model_is_deterministic_per_seed():
    a, b, c = build_tiny_model(seed=0), build_tiny_model(seed=0), build_tiny_model(seed=1)
    assert _same_weights(a.unet, b.unet) and not _same_weights(a.unet, c.unet)
    _assert_same_output(_unet_output(a), _unet_output(b))
    assert (_unet_output(a) - _unet_output(c)).abs().max() > 1e-3


def test_tiny_model_has_the_real_architecture(tiny_model):
    names = {type(m).__name__ for m in tiny_model.unet.modules()}
    assert {"Transformer2DModel", "TransformerTemporalModel", "CrossAttnDownBlock3D"} <= names
    assert type(tiny_model.unet).__name__ == "UNet3DConditionModel"
    assert type(tiny_model.vae).__name__ == "AutoencoderKL"
    assert type(tiny_model.text_encoder).__name__ == "CLIPTextModel"
    ids = tiny_model.tokenizer("the car").input_ids
    assert ids[0] == tiny_model.tokenizer.bos_token_id and ids[-1] == tiny_model.tokenizer.eos_token_id
    frames = torch.rand(4, 64, 64, 3)
    latents = tiny_model.encode_frames(frames)
    assert latents.shape == (1, 4, 4, 4, 4)  # 16x smaller (ZeroScope: 8x), frames on axis 2, like ZeroScope
    assert tiny_model.decode_latents(latents).shape == (4, 64, 64, 3)


def test_save_and_load_round_trip(tiny_model, tiny_model_dir):
    assert (tiny_model_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(tiny_model_dir.rglob("*.bin"))
    loaded = load_model(tiny_model_dir, dtype="fp32")
    assert _same_weights(loaded.unet, tiny_model.unet)
    _assert_same_output(_unet_output(loaded), _unet_output(tiny_model))
    assert loaded.fingerprint == tiny_model.fingerprint
    assert loaded.source == str(tiny_model_dir)
    assert is_video_model_folder(tiny_model_dir)


@pytest.mark.parametrize("dtype, torch_dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_load_with_a_dtype(tiny_model_dir, dtype, torch_dtype):
    model = load_model(tiny_model_dir, dtype=dtype)
    for part in (model.unet, model.vae, model.text_encoder):
        assert {p.dtype for p in part.parameters()} == {torch_dtype}
    assert model.encode_prompt("x").dtype == torch_dtype
    if dtype == "bf16":  # fp16 convolutions are not implemented on every CPU build; bf16 is
        assert torch.isfinite(_unet_output(model)).all()


def test_loading_is_offline(tiny_model_dir):
    """A fresh interpreter with the hub disabled and no network loads the folder (tokenizer included)."""
    code = f"from motion_lora.model import load_model; print(len(load_model({str(tiny_model_dir)!r}, 'fp32').tokenizer))"
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tiny_model_dir.parent / "hf_home"),
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip().splitlines()[-1]) > 500


def test_missing_folder_names_the_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="not found.*nowhere"):
        load_model(tmp_path / "nowhere")


def test_folder_without_model_index(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(ModelLoadError, match="model_index.json"):
        load_model(tmp_path / "weights")
    assert not is_video_model_folder(tmp_path / "weights")


def test_missing_component_is_named(tiny_model_dir, tmp_path):
    broken = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelLoadError, match=r"broken lacks vae"):
        load_model(broken)


def test_image_model_is_refused_by_name(tmp_path):
    folder = tmp_path / "sd15"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(ModelLoadError, match="StableDiffusionPipeline.*UNet2DConditionModel.*not a supported"):
        load_model(folder)
    assert not is_video_model_folder(folder)


def test_corrupt_weights_are_a_clear_error(tiny_model_dir, tmp_path):
    broken = shutil.copytree(tiny_model_dir, tmp_path / "corrupt")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="could not load .*corrupt"):
        load_model(broken)


def test_a_training_step_on_the_tiny_model_is_well_under_a_second(tiny_model):
    """The tiny model exists so tests and the demo run fast on a CPU."""
    from motion_lora.losses import temporal_loss

    unet, backbone = tiny_model.unet, tiny_model.backbone
    adapters.inject(unet, backbone, "temporal", "temporal", rank=8)
    adapters.set_strengths(unet, {"temporal": 1.0})
    adapters.set_trainable(unet, ["temporal"], True)
    latents, text = torch.randn(1, 4, 8, 4, 4), tiny_model.encode_prompt("a car")  # 8 frames of 64x64 (16x VAE)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        pred = backbone.predict(unet, latents, torch.tensor([500]), text)
        temporal_loss(pred, torch.zeros_like(pred), 0)[0].backward()
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.5, timings


def test_open_model_takes_tiny_or_a_folder(tiny_model_dir):
    from motion_lora.model import open_model
    from motion_lora.tiny import TINY_NAME

    assert open_model("tiny", dtype="fp32").source == "tiny"
    assert open_model(TINY_NAME, dtype="fp32").source == "tiny"
    assert open_model(tiny_model_dir, dtype="fp32").source == str(tiny_model_dir)
    with pytest.raises(ModelLoadError, match="tinyish"):
        open_model(tiny_model_dir.parent / "tinyish")


def test_a_prompt_over_the_tokenizer_limit_is_reported_once(tiny_model, caplog):
    long = " ".join(["a red car drives along a winding mountain road"] * 20)
    limit = tiny_model.tokenizer.model_max_length
    with caplog.at_level("WARNING"):
        tiny_model.encode_prompt(long)
        tiny_model.encode_prompt([long, "a car"])
    said = [r.getMessage() for r in caplog.records if "over the text encoder's limit" in r.getMessage()]
    assert len(said) == 1 and f"limit of {limit}" in said[0], said
    caplog.clear()
    with caplog.at_level("WARNING"):
        tiny_model.encode_prompt("a car")
    assert not caplog.records
