"""The Wan nodes without ComfyUI (models under $MOTION_DIRECTOR_MODELS), and the Wan workflows' layout.

Wan Load Model reads the tiny Wan's files in ComfyUI's layouts; Wan Train trains two steps from a CONDITIONING
and leaves both LoRAs in models/loras/motion_director in ComfyUI's key layout, never over an existing file.
The real-ComfyUI run of the workflows is tests/test_comfyui_host_wan.py.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import ROOT, synthetic_clip
from motion_lora.data import Clip
from motion_lora.lora_file import load_adapter
from motion_lora.tiny_wan import build_tiny_wan
from motion_lora.wan_files import save_wan_transformer
from wan_layout import vae_to_original

PACK_NAME = "comfyui_motiondirector_wan_under_test"
WAN_WORKFLOWS = sorted((ROOT / "workflows").glob("*_wan_*.json"))
TITLE_HEIGHT = 30  # the frontend draws a node's title bar above its pos


def _pack():
    if PACK_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_NAME, ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK_NAME]


NODES = _pack().NODE_CLASS_MAPPINGS
wan_nodes = sys.modules[f"{PACK_NAME}.nodes.wan_nodes"]


@pytest.fixture()
def models(tmp_path, monkeypatch) -> Path:
    """ComfyUI's model folders with the tiny Wan's diffusion model and VAE in ComfyUI's layouts."""
    models = tmp_path / "models"
    monkeypatch.setenv("MOTION_DIRECTOR_MODELS", str(models))
    wan = build_tiny_wan(seed=0)
    save_wan_transformer(wan.unet, models / "diffusion_models" / "tiny_wan.safetensors")
    (models / "vae").mkdir()
    save_file({k: v.contiguous() for k, v in vae_to_original(wan.vae.state_dict()).items()},
              str(models / "vae" / "tiny_wan_vae.safetensors"))
    return models


def _spec(node_id: str) -> dict:
    return NODES[node_id].INPUT_TYPES()["required"]


def test_load_lists_comfyuis_wan_files_and_train_saves_for_core_loader(models):
    spec = _spec("MotionDirectorWanLoadModel")
    assert spec["diffusion_model"][0] == ["tiny_wan.safetensors"] and spec["vae"][0] == ["tiny_wan_vae.safetensors"]
    (model,) = NODES["MotionDirectorWanLoadModel"]().load("tiny_wan.safetensors", "tiny_wan_vae.safetensors", "c")
    clip = Clip(frames=synthetic_clip(frames=5, height=32, width=32), prompt="a red square moves right")
    conditioning = [[torch.randn(1, 512, 4096, generator=torch.Generator().manual_seed(0)), {}]]
    train = NODES["MotionDirectorWanTrain"]()
    args = dict(lora_name="wan_test", steps=2, rank=2, mixed_precision="no", gradient_checkpointing="off")
    with torch.inference_mode():  # as ComfyUI runs nodes
        motion_name, look_name, motion, look, curve = train.train(model, [clip], conditioning, **args)
        again = train.train(model, [clip], conditioning, **{**args, "gradient_checkpointing": "on + CPU offload",
                                                              "blocks_to_swap": 1})
        with pytest.raises(ValueError, match="needs gradient_checkpointing on"):
            train.train(model, [clip], conditioning, **{**args, "lora_name": "refused", "blocks_to_swap": 1})

    assert motion_name == "motion_director/wan_test_motion.safetensors"
    assert look_name == "motion_director/wan_test_appearance.safetensors"
    assert again[:2] == ("motion_director/wan_test_2_motion.safetensors",
                         "motion_director/wan_test_2_appearance.safetensors")  # nothing replaced
    path = models / "loras" / motion_name
    with safe_open(str(path), framework="pt") as f:
        assert all(k.startswith("diffusion_model.blocks.") for k in f.keys())  # ComfyUI's layout
    loaded = load_adapter(path)
    assert loaded.training["placement"] == "c" and loaded.kind == "temporal"
    assert sorted(loaded.targets) == sorted(motion.targets) and all(t.endswith(("to_q", "to_k")) for t in motion.targets)
    assert look.kind == "spatial" and curve.dim() == 4
    assert (models / "motion_director" / "wan_test").is_dir()  # the run folder (checkpoints, history)
    settings = json.loads((models / "motion_director" / "wan_test_2" / "config.json").read_text())
    assert settings["gradient_checkpointing"] is True and settings["offload_activations"] is True
    assert settings["blocks_to_swap"] == 1
    assert NODES["MotionDirectorWanTrain"].INPUT_TYPES()["optional"]["blocks_to_swap"][1]["default"] == 0


def test_train_refuses_what_is_not_one_prompts_conditioning(models):
    with pytest.raises(ValueError, match="CLIP Text Encode"):
        wan_nodes.conditioning_embedding([])
    with pytest.raises(ValueError, match="CLIP Text Encode"):
        wan_nodes.conditioning_embedding([[torch.zeros(2, 4, 4096), {}]])
    assert wan_nodes.conditioning_embedding([[torch.ones(1, 7, 4096), {}]]).shape == (7, 4096)


def test_lora_name_output_links_to_a_combo_only():
    """ComfyUI validates a link by `output type == input type`; a combo input's type is its options list."""
    name_type = NODES["MotionDirectorWanTrain"].RETURN_TYPES[0]
    assert name_type == ["a.safetensors"] and name_type == "COMBO" and not (name_type != ["x"])
    assert name_type != "STRING" and name_type != "MODEL" and json.dumps(name_type) == '"COMBO"'


def _widget_count(node_id: str) -> int:
    spec = NODES[node_id].INPUT_TYPES()
    count = 0
    for section in ("required", "optional"):
        for name, s in spec.get(section, {}).items():
            kind, options = s[0], (s[1] if len(s) > 1 else {})
            if (isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN")) and not options.get("forceInput"):
                count += 1 + bool(kind == "INT" and options.get("control_after_generate", name == "seed"))
    return count


@pytest.mark.parametrize("path", WAN_WORKFLOWS, ids=lambda p: p.name[:1])
def test_wan_workflow_layout(path):
    workflow = json.loads(path.read_text())
    nodes = workflow["nodes"]
    notes = [n for n in nodes if n["type"] == "Note"]
    assert notes and all(f in notes[0]["widgets_values"][0] for f in (
        "models/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors", "models/text_encoders/umt5_xxl",
        "models/vae/wan_2.1_vae.safetensors", "GPU time"))
    boxes = [(n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in nodes]
    for i, a in enumerate(boxes):
        for j, b in enumerate(boxes[:i]):
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], \
                f"{path.name}: {nodes[i]['type']} overlaps {nodes[j]['type']}"
    by_id = {n["id"]: n for n in nodes}
    for link_id, origin, slot, target, target_slot, kind in workflow["links"]:
        assert by_id[origin]["outputs"][slot]["type"] == kind and link_id in by_id[origin]["outputs"][slot]["links"]
        assert by_id[target]["inputs"][target_slot]["link"] == link_id
    for n in nodes:
        if n["type"].startswith("MotionDirector"):
            assert len(n["widgets_values"]) == _widget_count(n["type"]), n["type"]
    assert {"UNETLoader", "LoraLoaderModelOnly", "KSampler", "CreateVideo", "SaveVideo"} <= {n["type"] for n in nodes}
