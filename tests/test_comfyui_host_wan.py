"""The Wan workflows (6 and 7) inside a real, running ComfyUI, on the tiny Wan.

Workflow 6 trains a Wan motion LoRA with our nodes and samples it with ComfyUI's core nodes (UNETLoader ->
LoraLoaderModelOnly -> KSampler -> VAEDecode -> CreateVideo -> SaveVideo); workflow 7 mixes a motion and an
appearance LoRA with two core LoraLoaderModelOnly. The shipped workflows are converted from their UI format by
comfy-cli, and only their model files (to the tiny Wan's), sizes, frame counts, steps and output names change.

The tiny Wan's files are written in ComfyUI's layouts into the server's models/ folders: the diffusion model in
original Wan keys (models/diffusion_models), the VAE in original keys (models/vae) and a tiny UMT5 in T5 keys
with its SentencePiece model (models/text_encoders), loaded by core CLIPLoader type "wan". ComfyUI builds that
encoder from its fixed XXL config (24 layers of 4096 wide, 10240 wide feed-forward, 256k vocabulary: about 6B
weights), so no tiny file fits it as is. The one substitute: a test-only custom node in the server's
custom_nodes/ points ComfyUI's UMT5 config at a tiny one (same layer layout, 24 blocks of width 4096 so ComfyUI's
own detection of the file still says "T5 XXL", one head, feed-forward 32, a 64-piece vocabulary). Loading,
tokenizing and encoding stay ComfyUI's own code. Skipped unless COMFYUI_DIR points at a ComfyUI checkout.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from comfyui_server import CONVERT, PROBE, Budget, Server, needs_comfyui, run_in_comfy_python

ROOT = Path(__file__).resolve().parents[1]
WAN_WORKFLOWS = sorted((ROOT / "workflows").glob("*_wan_*.json"))
PACK_LINK = "comfyui-motiondirector"

pytestmark = needs_comfyui

SIZE, FRAMES, STEPS, FPS = 64, 5, 2, 16  # Wan: 1 + 4n frames, sides in multiples of 16
TINY = {"diffusion_models": "tiny_wan.safetensors", "vae": "tiny_wan_vae.safetensors",
        "text_encoders": "tiny_umt5.safetensors"}
CLIP_VIDEO = "md_wan_clip.mp4"
MODULE_BUDGET = 420  # seconds for the module, server start included: a hang fails, it never stalls CI
BUDGET = Budget(MODULE_BUDGET, "the Wan host test")

# The test-only custom node: ComfyUI's UMT5 config -> the tiny one next to it. Nothing else is touched.
SHIM = '''
import os
import comfy.sd1_clip as sd1_clip

TINY_CONFIG = os.path.join(os.path.dirname(os.path.realpath(__file__)), "tiny_umt5_config.json")
_init = sd1_clip.SDClipModel.__init__


def _tiny_umt5_init(self, *args, textmodel_json_config=None, **kwargs):
    if str(textmodel_json_config).endswith("umt5_config_xxl.json"):
        textmodel_json_config = TINY_CONFIG
    _init(self, *args, textmodel_json_config=textmodel_json_config, **kwargs)


sd1_clip.SDClipModel.__init__ = _tiny_umt5_init
NODE_CLASS_MAPPINGS = {}
'''

MAKE_VIDEO = r"""
import json, sys
import av, numpy as np
a = json.load(sys.stdin)
with av.open(a["path"], "w") as box:
    stream = box.add_stream("libx264", rate=a["fps"])
    stream.width = stream.height = a["size"]
    stream.pix_fmt = "yuv420p"
    for f in range(a["frames"]):
        img = np.full((a["size"], a["size"], 3), 40, np.uint8)
        x = (a["size"] - 8) * f // max(1, a["frames"] - 1)
        img[24:40, x:x + 8] = (255, 50, 25)
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            box.mux(packet)
    for packet in stream.encode():
        box.mux(packet)
print("{}")
"""

# --- the tiny Wan in ComfyUI's file layouts ---------------------------------------------------------------------
SPIECE = r"""
import base64, io, json, sys
import sentencepiece as spm
words = json.load(sys.stdin)
sentences = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 4
out = io.BytesIO()
spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=out, vocab_size=64,
                               model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                               hard_vocab_limit=False, minloglevel=2)
size = spm.SentencePieceProcessor(model_proto=out.getvalue()).get_piece_size()
print(json.dumps({"model": base64.b64encode(out.getvalue()).decode(), "size": size}))
"""


def tiny_spiece_model() -> tuple[bytes, int]:
    """A SentencePiece unigram model in UMT5's id layout (<pad>=0, </s>=1, <unk>=2), trained in ComfyUI's python
    (which has sentencepiece, as ComfyUI's tokenizer needs it): (model bytes, vocabulary size)."""
    import base64

    from motion_lora.tiny_wan import WORDS

    out = run_in_comfy_python(SPIECE, list(WORDS))
    return base64.b64decode(out["model"]), int(out["size"])


def write_tiny_umt5(path: Path, config_path: Path) -> None:
    """A UMT5 encoder in T5 keys (as umt5_xxl_fp16.safetensors stores them) with its tokenizer inside."""
    import torch
    from safetensors.torch import save_file
    from transformers import UMT5Config, UMT5EncoderModel

    spiece, vocab = tiny_spiece_model()
    config = {"d_ff": 32, "d_kv": 8, "d_model": 4096, "num_heads": 1, "num_layers": 24, "vocab_size": vocab,
              "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True, "model_type": "umt5",
              "layer_norm_epsilon": 1e-6, "relative_attention_num_buckets": 32, "pad_token_id": 0,
              "eos_token_id": 1, "decoder_start_token_id": 0}
    config_path.write_text(json.dumps(config))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = UMT5EncoderModel(UMT5Config(feed_forward_proj="gated-gelu", relative_attention_max_distance=128,
                                              **{k: v for k, v in config.items() if k not in
                                                 ("dense_act_fn", "is_gated_act", "model_type")}))
    state = {k: v.contiguous() for k, v in encoder.state_dict().items() if k != "encoder.embed_tokens.weight"}
    state["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))


def write_tiny_wan(models: Path) -> None:
    from safetensors.torch import save_file

    from motion_lora.tiny_wan import build_tiny_wan
    from motion_lora.wan_files import save_wan_transformer
    from wan_layout import vae_to_original

    wan = build_tiny_wan(seed=0)
    save_wan_transformer(wan.unet, models / "diffusion_models" / TINY["diffusion_models"])
    (models / "vae").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vae_to_original(wan.vae.state_dict()).items()},
              str(models / "vae" / TINY["vae"]))


def write_loras(models: Path) -> dict[str, str]:
    """A motion and an appearance LoRA with nonzero weights, saved as Wan Train saves them, for workflow 7."""
    import torch

    from motion_lora import adapters as ad
    from motion_lora.lora_file import save_adapter
    from motion_lora.tiny_wan import build_tiny_wan

    wan = build_tiny_wan(seed=0)
    names = {}
    for kind, role in ((ad.TEMPORAL, "motion"), (ad.SPATIAL, "appearance")):
        ad.inject(wan.unet, wan.backbone, "tmp", kind, rank=2)
        g = torch.Generator().manual_seed(len(names))
        tensors = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in ad.get_tensors(wan.unet, "tmp").items()}
        ad.remove(wan.unet, "tmp")
        name = f"motion_director/host_fixture_{role}.safetensors"
        save_adapter(ad.LoraAdapter(kind, 2, 2.0, tensors, wan.fingerprint, {"placement": "b"}, role),
                     models / "loras" / name, overwrite=True)
        names[role] = name
    return names


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    BUDGET.start()
    base = tmp_path_factory.mktemp("comfyui_wan_base")
    for sub in ("custom_nodes", "input", "output", "temp", "user", "models"):
        (base / sub).mkdir()
    link = base / "custom_nodes" / PACK_LINK
    link.symlink_to(ROOT, target_is_directory=True)
    shim = base / "custom_nodes" / "md_test_tiny_umt5"
    shim.mkdir()
    (shim / "__init__.py").write_text(SHIM)
    write_tiny_umt5(base / "models" / "text_encoders" / TINY["text_encoders"], shim / "tiny_umt5_config.json")
    write_tiny_wan(base / "models")
    run_in_comfy_python(MAKE_VIDEO, {"path": str(base / "input" / CLIP_VIDEO), "frames": 2 * FRAMES, "size": SIZE,
                              "fps": FPS})
    server = Server(base, BUDGET, start_timeout=150, prompt_timeout=240)
    try:
        server.start()
        server.loras = write_loras(base / "models")
        yield server
    finally:
        server.stop()
        link.unlink()


@pytest.fixture(scope="module")
def object_info(host) -> dict:
    return host.get("/object_info", timeout=60)


# --- preparing a shipped workflow -------------------------------------------------------------------------------
FILE_INPUTS = {("UNETLoader", "unet_name"): "diffusion_models", ("MotionDirectorWanLoadModel", "diffusion_model"):
               "diffusion_models", ("VAELoader", "vae_name"): "vae", ("MotionDirectorWanLoadModel", "vae"): "vae",
               ("CLIPLoader", "clip_name"): "text_encoders"}


def shrink(prompt: dict, tag: str, loras: dict[str, str]) -> dict:
    """Only the model files (to the tiny Wan's), sizes, frames, steps and output names change."""
    prompt = copy.deepcopy(prompt)
    for node_id, node in prompt.items():
        cls, inputs = node["class_type"], node["inputs"]
        for name, value in list(inputs.items()):
            if isinstance(value, list):
                continue  # a link
            if (cls, name) in FILE_INPUTS:
                inputs[name] = TINY[FILE_INPUTS[cls, name]]
            elif cls == "LoadVideo" and name == "file":
                inputs[name] = CLIP_VIDEO
            elif cls == "LoraLoaderModelOnly" and name == "lora_name":
                inputs[name] = loras["appearance" if "appearance" in value else "motion"]
            elif name in ("width", "height"):
                inputs[name] = SIZE
            elif name in ("num_frames", "length"):
                inputs[name] = FRAMES
            elif name == "steps":
                inputs[name] = STEPS
            elif cls == "MotionDirectorWanTrain" and name == "lora_name":
                inputs[name] = f"host_{tag}"
            elif name == "filename_prefix":
                inputs[name] = f"host/{tag}_{node_id}"
    return prompt


def saved_videos(host: Server, prompt: dict, entry: dict) -> list[list[int]]:
    paths = []
    for node_id, node in prompt.items():
        if node["class_type"] == "SaveVideo":
            files = entry["outputs"].get(node_id, {}).get("images", [])
            assert files, f"SaveVideo reported no file: {entry['outputs']}"
            paths += [str(host.base / "output" / f.get("subfolder", "") / f["filename"]) for f in files]
    return run_in_comfy_python(PROBE, paths)


def test_wan_workflows_ship_in_ui_format_with_notes():
    assert [p.name for p in WAN_WORKFLOWS] == ["6_wan_train_motion_then_sample_with_core_nodes.json",
                                              "7_wan_mix_motion_and_appearance.json"]


@pytest.mark.parametrize("path", WAN_WORKFLOWS, ids=lambda p: p.name[:1])
def test_wan_workflow_runs_in_comfyui(host, object_info, path):
    workflow = json.loads(path.read_text())
    for node in workflow["nodes"]:
        assert node["type"] in object_info or node["type"] == "Note", f"{path.name}: ComfyUI has no {node['type']}"
    tag = path.name[:1]
    prompt = shrink(run_in_comfy_python(CONVERT, {"workflow": workflow, "object_info": object_info}), tag, host.loras)
    classes = {n["class_type"] for n in prompt.values()}
    assert {"UNETLoader", "LoraLoaderModelOnly", "CLIPLoader", "CLIPTextEncode", "KSampler", "VAEDecode",
            "CreateVideo", "SaveVideo"} <= classes, classes
    log_before = len(host.log_tail(None))
    entry = host.run(prompt)

    assert saved_videos(host, prompt, entry) == [[FRAMES, SIZE, SIZE]]
    log = host.log_tail(None)[log_before:]
    assert "lora key not loaded" not in log, log[-4000:]
    assert "clip missing" not in log, log[-4000:]  # the tiny UMT5 file filled every weight ComfyUI built
    if tag == "6":  # the trained LoRA went to models/loras in ComfyUI's layout, and KSampler sampled with it
        lora = host.base / "models" / "loras" / "motion_director" / f"host_{tag}_motion.safetensors"
        assert lora.is_file()
        from safetensors import safe_open

        with safe_open(str(lora), framework="pt") as f:
            keys = list(f.keys())
            assert json.loads(f.metadata()["training"])["placement"] == "b"
        assert keys and all(k.startswith("diffusion_model.blocks.") for k in keys)
        assert (host.base / "models" / "loras" / "motion_director" / f"host_{tag}_appearance.safetensors").is_file()
        assert (host.base / "models" / "motion_director" / f"host_{tag}").is_dir()  # the run folder
