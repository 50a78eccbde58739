"""Our Wan LoRA files in a real ComfyUI: the core loader takes every key, and the patched model agrees with ours.

The tiny Wan is written as a ComfyUI diffusion-model file (original keys); a motion LoRA and an appearance
LoRA with nonzero weights are saved by `save_adapter`. ComfyUI's python then loads both files as `UNETLoader`
and `LoraLoaderModelOnly` do (tests/comfyui_wan_lora_check.py) and runs the patched model on a fixed input.
Skipped unless COMFYUI_DIR points at a ComfyUI checkout (COMFYUI_PYTHON: its python).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from motion_lora import adapters as ad
from motion_lora.lora_file import save_adapter
from motion_lora.backbones.wan import to_original_name
from motion_lora.tiny_wan import build_tiny_wan
from motion_lora.wan_files import save_wan_transformer
from motion_lora.wan_lora_import import read_wan_lora

COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
CHECK = Path(__file__).with_name("comfyui_wan_lora_check.py")

pytestmark = pytest.mark.skipif(
    not COMFYUI_DIR or not (Path(COMFYUI_DIR) / "main.py").is_file(),
    reason="set COMFYUI_DIR to a ComfyUI checkout (and COMFYUI_PYTHON to its python); see tests/comfyui_host_setup.sh",
)


def _random_adapter(model, kind: str, seed: int) -> ad.LoraAdapter:
    ad.inject(model.unet, model.backbone, "tmp", kind, rank=4)
    g = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn(v.shape, generator=g) * 0.3 for k, v in ad.get_tensors(model.unet, "tmp").items()}
    ad.remove(model.unet, "tmp")
    return ad.LoraAdapter(kind, 4, 2.0, tensors, model.fingerprint, name=kind)  # alpha != rank: the scale counts


def _comfyui(model_file: Path, lora_file: Path, inputs: Path, out: Path) -> tuple[dict, dict]:
    run = subprocess.run([COMFYUI_PYTHON, str(CHECK), str(model_file), str(lora_file), str(inputs), str(out)],
                         cwd=COMFYUI_DIR, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return load_file(str(out)), json.loads(Path(str(out) + ".json").read_text())


def _musubi_file(adapter: ad.LoraAdapter, path: Path) -> Path:
    """The adapter as musubi-tuner writes a Wan LoRA, with per-layer alphas that differ from the rank."""
    out = {}
    for i, target in enumerate(adapter.targets):
        name = "lora_unet_" + to_original_name(target).replace(".", "_")
        out[f"{name}.lora_down.weight"] = adapter.tensors[f"{target}.lora_A.weight"]
        out[f"{name}.lora_up.weight"] = adapter.tensors[f"{target}.lora_B.weight"]
        out[f"{name}.alpha"] = torch.tensor([1.0, 4.0, 8.0][i % 3])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path))
    return path


@pytest.mark.parametrize("kind", [ad.TEMPORAL, ad.SPATIAL, "musubi"])
def test_comfyui_core_loader_applies_our_wan_lora_exactly(tmp_path, kind):
    """Our motion and appearance files, and a musubi-tuner file read with `read_wan_lora`."""
    model = build_tiny_wan(seed=0)
    model_file = save_wan_transformer(model.unet, tmp_path / "diffusion_models" / "tiny_wan.safetensors")
    if kind == "musubi":
        lora_file = _musubi_file(_random_adapter(model, ad.TEMPORAL, seed=3), tmp_path / "loras" / "musubi.safetensors")
        adapter = read_wan_lora(lora_file, ad.TEMPORAL)
    else:
        adapter = _random_adapter(model, kind, seed=1)
        lora_file = save_adapter(adapter, tmp_path / "loras" / f"tiny_wan_{kind}.safetensors")

    g = torch.Generator().manual_seed(2)
    inputs = {"x": torch.randn(1, 16, 2, 4, 4, generator=g), "timestep": torch.tensor([650.0]),
              "context": torch.randn(1, 512, 4096, generator=g)}
    save_file(inputs, str(tmp_path / "inputs.safetensors"))
    theirs, info = _comfyui(model_file, lora_file, tmp_path / "inputs.safetensors", tmp_path / "out.safetensors")

    with torch.no_grad():
        base = model.backbone.predict(model.unet, inputs["x"], inputs["timestep"], inputs["context"])
        with ad.applied(model.unet, model.backbone, [(adapter, 1.0)]):
            ours = model.backbone.predict(model.unet, inputs["x"], inputs["timestep"], inputs["context"])

    assert info["warnings"] == []  # every key of our file was loaded
    assert info["dtype"] == "torch.float32"
    assert (ours - base).abs().max() > 1e-2  # the LoRA changes the output, so agreeing below means something
    assert (theirs["s1"] - ours).abs().max() <= 1e-4
    assert (theirs["base"] - base).abs().max() <= 1e-4
    assert torch.equal(theirs["s0"], theirs["base"])
