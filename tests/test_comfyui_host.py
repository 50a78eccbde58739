"""Our pack inside a real, running ComfyUI: the shipped workflows run end to end, and Cancel stops training.

Unit tests call node functions directly; only a real server shows what a user gets: the pack
imports next to ComfyUI's own `nodes` module, /object_info lists our nodes, the UI-format
workflows convert and validate, SaveVideo writes files, and Interrupt leaves a checkpoint and
a server that still works. Skipped unless COMFYUI_DIR points at a ComfyUI checkout (set one
up with tests/comfyui_host_setup.sh); COMFYUI_PYTHON is the python that runs it.

Every workflow runs as shipped, with only the model switched to the built-in tiny model and
Train's steps lowered: the pack's sample inputs (copied into the input folder when the pack
loads), the shipped sizes, frames and sampling steps. Workflows 3-5 run after 1 and 5 trained
the runs they load, as their notes say. Nothing in the checkout changes: the server gets a
temporary --base-directory whose custom_nodes/ holds a link to this repo.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from comfyui_server import (COMFYUI_DIR, COMFYUI_PYTHON, CONVERT, PROBE, Budget, Server, describe_error,
                            needs_comfyui, run_in_comfy_python)

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted(p for p in (ROOT / "workflows").glob("*.json") if "_wan_" not in p.name)  # Wan: test_comfyui_host_wan.py
# in the order their notes ask for: 4 mixes the runs of 1 and 5
RUN_ORDER = sorted(WORKFLOWS, key=lambda p: (p.name.startswith("4_"), p.name))
PACK_LINK = "comfyui-motiondirector"

pytestmark = needs_comfyui

START_TIMEOUT = 120  # seconds until /object_info answers (a loaded 2-core box imports slowly)
PROMPT_TIMEOUT = 240  # seconds for one workflow on the tiny model (about a minute alone; more on a busy box)
MODULE_BUDGET = 540  # seconds for the whole module, server start included: a hang fails, it never stalls CI
BUDGET = Budget(MODULE_BUDGET, "the host test")
time_left = BUDGET.left


SIZE, FRAMES, TRAIN_STEPS = 64, 8, 2  # SIZE/FRAMES: the synthetic media of the other tests


MAKE_MEDIA = r"""
import json, sys
from pathlib import Path
import av, numpy as np
from PIL import Image
args = json.load(sys.stdin)

def frames(n, size, seed):
    # a square moving left to right over a colour gradient
    rng = np.random.default_rng(seed)
    base = (np.linspace(0, 255, size)[None, :, None] * rng.random(3)).astype(np.uint8)
    out = []
    for f in range(n):
        img = np.broadcast_to(base, (size, size, 3)).copy()
        x = int((size - size // 4) * f / max(1, n - 1))
        img[size // 3: size // 3 + size // 4, x: x + size // 4] = (255, 50, 25)
        out.append(img)
    return out

for i, path in enumerate(args["videos"]):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(path, "w") as box:
        stream = box.add_stream("libx264", rate=8)
        stream.width = stream.height = args["size"]
        stream.pix_fmt = "yuv420p"
        for img in frames(args["frames"], args["size"], i):
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
for i, path in enumerate(args["images"]):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frames(1, args["size"], 10 + i)[0]).save(path)
print("{}")
"""

# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A running ComfyUI with our pack and synthetic media in its input folder; always stopped at the end."""
    BUDGET.start()
    base = tmp_path_factory.mktemp("comfyui_base")
    for sub in ("custom_nodes", "input", "output", "temp", "user", "models"):
        (base / sub).mkdir()
    link = base / "custom_nodes" / PACK_LINK
    link.symlink_to(ROOT, target_is_directory=True)
    media = {"videos": [str(base / "input" / "md_clip.mp4"),
                        str(base / "input" / "md_clips" / "clip_a.mp4"),
                        str(base / "input" / "md_clips" / "clip_b.mp4")],
             "images": [str(base / "input" / "md_image.png"),
                        str(base / "input" / "md_images" / "image_a.png"),
                        str(base / "input" / "md_images" / "image_b.png")],
             "frames": 2 * FRAMES, "size": SIZE}
    run_in_comfy_python(MAKE_MEDIA, media)
    sd15 = base / "models" / "diffusers" / "sd15"  # an image model: not offered, and the user is told why
    sd15.mkdir(parents=True)
    (sd15 / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}))
    server = Server(base, BUDGET, START_TIMEOUT, PROMPT_TIMEOUT)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        link.unlink()  # so no later clean-up of the temp folder can reach into the repo


@pytest.fixture(scope="module")
def object_info(host) -> dict:
    return host.get("/object_info", timeout=60)


# --- preparing a workflow -------------------------------------------------------------------
def inputs_of(info: dict) -> dict:
    spec = info.get("input", {})
    return {**spec.get("required", {}), **spec.get("optional", {})}


def combo_options(spec) -> list | None:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1:
        return spec[1].get("options")
    return None


def clamp(spec, value):
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "min" in opts:
        value = max(opts["min"], value)
    if "max" in opts:
        value = min(opts["max"], value)
    return value


def consumers(prompt: dict, node_id: str) -> list[str]:
    """Class types of the nodes fed by `node_id`."""
    return [n["class_type"] for n in prompt.values()
            for v in n["inputs"].values() if isinstance(v, list) and len(v) == 2 and str(v[0]) == str(node_id)]


def to_api(workflow: dict, object_info: dict) -> dict:
    return run_in_comfy_python(CONVERT, {"workflow": workflow, "object_info": object_info})


def on_tiny(prompt: dict, object_info: dict, steps: int = TRAIN_STEPS) -> dict:
    """The workflow as shipped, with only the model switched to the tiny one and Train's steps lowered."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        if node["class_type"] == "MotionDirectorLoadModel":
            options = combo_options(inputs_of(object_info["MotionDirectorLoadModel"])["model_name"])
            node["inputs"]["model_name"] = next(o for o in options if str(o).startswith("tiny"))
        if node["class_type"] == "MotionDirectorTrain":
            node["inputs"]["steps"] = steps
    return prompt


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def frontend_widgets(info: dict) -> list[str]:
    """The widget slots ComfyUI's frontend gives a node, in order, as its saved `widgets_values` holds them.

    The frontend's useIntWidget adds a "control after generate" slot after every INT with
    `control_after_generate` true, and after an INT named `seed`/`noise_seed` unless that flag
    is explicitly false; migrateWidgetsValues only accepts lists of exactly this length.
    """
    slots = []
    spec = info.get("input", {})
    order = info.get("input_order") or {k: list(v) for k, v in spec.items()}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            kind, opts = spec[section][name][0], (spec[section][name] + [{}])[1] or {}
            if not (isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")) \
                    or opts.get("forceInput"):
                continue
            slots.append(name)
            control = opts.get("control_after_generate")
            if kind == "INT" and (control if control is not None else name in ("seed", "noise_seed")):
                slots.append(f"{name}:control_after_generate")
    return slots


def check_widget_layout(workflow: dict, object_info: dict) -> None:
    """Our nodes' saved widget lists have the frontend's length (else values land in the wrong widgets)."""
    for node in workflow["nodes"]:
        if not node["type"].startswith("MotionDirector"):
            continue
        slots = frontend_widgets(object_info[node["type"]])
        values = node.get("widgets_values") or []
        assert len(values) == len(slots), (
            f"{node['type']} (node {node['id']}) saves {len(values)} widget values {values} but the frontend "
            f"has {len(slots)} widgets {slots}: loading the workflow shifts them")


def check_converted_widgets(prompt: dict, object_info: dict) -> None:
    """Each widget value of our nodes has its input's type after conversion (a shifted widget list would not).

    ComfyUI's own validation turns "1" into 1 and 1 into "1", so an off-by-one widget list can slip
    through it; this check cannot be fooled that way.
    """
    kinds = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool}
    for node_id, node in prompt.items():
        if not node["class_type"].startswith("MotionDirector"):
            continue
        specs = inputs_of(object_info[node["class_type"]])
        for name, value in node["inputs"].items():
            if isinstance(value, list) or name not in specs:
                continue
            spec, options = specs[name], combo_options(specs[name])
            where = f"{node['class_type']} (node {node_id}) input {name}={value!r}"
            if options is not None:
                if name not in ("model_name", "lora_name", "checkpoint"):  # files the user adds
                    assert value in options, f"{where} is not one of {options}"
            elif spec[0] in kinds:
                assert isinstance(value, kinds[spec[0]]) and not (spec[0] != "BOOLEAN" and isinstance(value, bool)), \
                    f"{where} is not a {spec[0]}: the workflow's widget list does not match the node's inputs"


def check_outputs(host: Server, prompt: dict, entry: dict) -> None:
    """Every SaveVideo/SaveImage/PreviewImage produced files that exist and are not empty."""
    roots = {"output": host.base / "output", "temp": host.base / "temp", "input": host.base / "input"}
    outputs = entry.get("outputs", {})
    videos = []
    for node_id, node in prompt.items():
        if node["class_type"] not in ("SaveVideo", "SaveImage", "PreviewImage", "SaveAnimatedWEBP"):
            continue
        files = outputs.get(node_id, {}).get("images", [])
        assert files, f"{node['class_type']} (node {node_id}) reported no file: {outputs.get(node_id)}"
        for f in files:
            path = roots[f.get("type", "output")] / f.get("subfolder", "") / f["filename"]
            assert path.is_file() and path.stat().st_size > 0, f"{node['class_type']} output {path} missing or empty"
            if node["class_type"] == "SaveVideo":
                videos.append(str(path))
    samples = [n["inputs"] for n in prompt.values() if n["class_type"] == "MotionDirectorSample"]
    for path, got in zip(videos, run_in_comfy_python(PROBE, videos)):
        assert any(tuple(got) == (s["frames"], s["width"], s["height"]) for s in samples), \
            f"{path}: {got[0]} frames of {got[1]}x{got[2]}, not what Sample was asked for"


# --- tests ----------------------------------------------------------------------------------
def test_pack_loads_and_lists_nodes(host, object_info):
    ours = sorted(k for k in object_info if k.startswith("MotionDirector"))
    log = host.log_tail(20000)
    assert ours, f"no MotionDirector node in /object_info; server log:\n{log}"
    failed = [l for l in log.splitlines() if PACK_LINK in l and ("IMPORT FAILED" in l or "Cannot import" in l)]
    assert not failed, f"ComfyUI could not import the pack: {failed}\n{log}"
    timing = [l for l in log.splitlines() if l.strip().endswith(PACK_LINK) and "seconds:" in l]
    assert timing and float(timing[0].split()[0]) < 2.0, f"pack import time (ComfyUI's own count): {timing}"
    assert "MotionDirectorLoadModel" in ours, ours
    tiny = combo_options(inputs_of(object_info["MotionDirectorLoadModel"])["model_name"])
    assert any(str(o).startswith("tiny") for o in tiny), tiny
    for name in ours:  # everything of ours sits under one menu entry
        assert object_info[name]["category"].startswith("MotionDirector"), (name, object_info[name]["category"])


def make_loras(models: Path) -> dict[str, str]:
    """A motion and an appearance LoRA for the tiny model, as Load LoRA finds them in models/motion_director."""
    import torch

    from motion_lora.adapters import LoraAdapter, get_tensors, inject
    from motion_lora.lora_file import save_adapter
    from motion_lora.tiny import build_tiny_model

    model = build_tiny_model(seed=0)
    names = {}
    for kind, label in (("temporal", "motion"), ("spatial", "appearance")):
        inject(model.unet, model.backbone, label, kind, rank=4)
        tensors = {k: (v if "lora_A" in k else torch.randn_like(v) * 0.01)
                   for k, v in get_tensors(model.unet, label).items()}
        adapter = LoraAdapter(kind=kind, rank=4, alpha=4.0, tensors=tensors,
                              fingerprint=model.backbone.fingerprint(model.unet), name=f"host {label}")
        save_adapter(adapter, models / "motion_director" / "host_fixture" / f"{label}.safetensors", overwrite=True)
        names[label] = f"host_fixture/{label}.safetensors"
    return names


@pytest.fixture(scope="module")
def loras(host) -> dict[str, str]:
    return make_loras(host.base / "models")


@pytest.mark.parametrize("workflow_path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_shipped_workflow_widget_layout(object_info, workflow_path):
    check_widget_layout(json.loads(workflow_path.read_text()), object_info)


@pytest.mark.parametrize("workflow_path", RUN_ORDER, ids=[p.stem for p in RUN_ORDER])
def test_shipped_workflow_runs(host, object_info, workflow_path):
    info = host.get("/object_info", timeout=60)  # fresh: the LoRA combo lists the runs trained so far
    workflow = json.loads(workflow_path.read_text())
    api = to_api(workflow, info)
    check_converted_widgets(api, info)
    prompt = on_tiny(api, info)
    entry = host.run(prompt)
    check_outputs(host, prompt, entry)
    runs = host.base / "models" / "motion_director"
    for node_id, node in prompt.items():
        if node["class_type"] == "MotionDirectorTrain":
            run = runs / node["inputs"]["run_name"]
            assert run.is_dir(), f"Train (node {node_id}) left no run folder {run}"
            saved = sorted(f"{run.name}/{f.name}" for f in run.glob("*.safetensors"))
            assert saved, f"no adapter saved in {run}: {list(run.iterdir())}"
            assert all((run / Path(n).name).stat().st_mode & 0o044 == 0o044 for n in saved), "adapters not 0644"
            listed = combo_options(inputs_of(host.get("/object_info/MotionDirectorLoadLora")[
                "MotionDirectorLoadLora"])["lora_name"])
            assert set(saved) <= set(listed), f"Load LoRA does not list the new run's {saved} without a restart: {listed}"
            finals = [n for n in listed if "/checkpoint-" not in n]
            assert listed[:len(finals)] == finals, f"Load LoRA lists checkpoints before finished LoRAs: {listed}"
            shown = entry["outputs"].get(node_id, {}).get("text", [""])[0]
            assert str(run) in shown, f"Train does not show its run folder on the node: {entry['outputs'].get(node_id)}"
    trained = sorted(p.name for p in runs.iterdir())
    if any(n["class_type"] == "MotionDirectorTrain" for n in prompt.values()):
        host.run(prompt)  # the unchanged graph again: ComfyUI's cache answers, nothing trains
        again = sorted(p.name for p in runs.iterdir())
        assert again == trained, f"re-queueing the unchanged graph trained again: {sorted(set(again) - set(trained))}"


def test_a_missing_model_says_where_to_put_it(host, object_info):
    """Workflow 1 exactly as shipped, without ZeroScope installed: ComfyUI's dialog names the folder and model."""
    api = to_api(json.loads(WORKFLOWS[0].read_text()), object_info)
    req = urllib.request.Request(host.url + "/prompt", data=json.dumps({"prompt": api}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    body = json.loads(info.value.read())
    errors = [e for node in body["node_errors"].values() for e in node["errors"]]
    details = " ".join(e["details"] for e in errors)
    assert not any(e["type"] == "value_not_in_list" for e in errors), errors
    where = str(host.base / "models" / "diffusers" / "zeroscope_v2_576w")
    assert where in details and "cerspense/zeroscope_v2_576w" in details and "tiny" in details, details
    assert "sd15: an image model" in details, f"the SD 1.5 folder is not explained: {details}"
    tooltip = inputs_of(object_info["MotionDirectorLoadModel"])["model_name"][1]["tooltip"]
    assert "sd15 (an image model" in tooltip, tooltip


def test_a_training_run_gives_its_memory_back(host, object_info):
    """The server's resident memory after a training run is about what it was before it."""
    prompt = training_prompt(object_info)
    train = next(n for n in prompt.values() if n["class_type"] == "MotionDirectorTrain")
    train["inputs"].update(run_name="host_memory", seed=11, validation_every=0)
    before = rss_mb(host.proc.pid)  # warm: the workflows before this one trained with the same graph
    host.run(prompt)
    after = rss_mb(host.proc.pid)
    assert after - before < 120, f"the server kept {after - before:.0f} MB after a training run ({before:.0f} -> {after:.0f})"


def training_prompt(object_info: dict) -> dict:
    """Workflow 1 on the tiny model, its Sample, video and previews left out (only training matters here)."""
    workflow = json.loads(WORKFLOWS[0].read_text())
    prompt = on_tiny(to_api(workflow, object_info), object_info)
    keep = {"MotionDirectorLoadModel", "LoadVideo", "GetVideoComponents", "MotionDirectorClipFromFrames",
            "MotionDirectorTrain"}
    prompt = {i: n for i, n in prompt.items() if n["class_type"] in keep}
    train_id = next(i for i, n in prompt.items() if n["class_type"] == "MotionDirectorTrain")
    prompt["loss"] = {"class_type": "PreviewImage", "inputs": {"images": [train_id, 2]}}  # ComfyUI needs an output
    return prompt


def test_cancel_is_an_interruption_and_resume_continues_the_run(host, object_info):
    prompt = training_prompt(object_info)
    train_id = next(i for i, n in prompt.items() if n["class_type"] == "MotionDirectorTrain")
    train = prompt[train_id]["inputs"]
    spec = inputs_of(object_info["MotionDirectorTrain"])
    train["steps"] = clamp(spec["steps"], 10000)
    train["checkpoint_every"] = clamp(spec["checkpoint_every"], 10000)  # only Cancel writes a checkpoint
    train["validation_every"] = 0
    train["run_name"] = "host_cancel"
    runs = host.base / "models" / "motion_director"

    prompt_id = host.queue(prompt)
    deadline = time.monotonic() + time_left(90)
    while not list(runs.glob("host_cancel*/config.json")):  # written just before the first step
        assert time.monotonic() < deadline, f"training never started:\n{host.log_tail()}"
        assert host.get("/queue")["queue_running"] or not host.get(f"/history/{prompt_id}"), \
            f"training ended before Cancel: {describe_error(host.get(f'/history/{prompt_id}')[prompt_id])}"
        time.sleep(0.5)
    time.sleep(3)  # a few steps
    t0 = time.monotonic()
    host.post("/interrupt")
    entry = host.wait(prompt_id, timeout=60)
    stopped_after = time.monotonic() - t0
    kinds = [kind for kind, _ in entry["status"]["messages"]]
    # what ComfyUI's own Cancel gives: an interruption, not an error (so the page shows no error dialog)
    assert "execution_interrupted" in kinds and "execution_error" not in kinds, \
        f"Cancel was reported as {kinds}: {describe_error(entry)}"
    checkpoints = sorted(runs.glob("host_cancel/checkpoint-*"))
    assert checkpoints, f"Cancel left no checkpoint: {[p.name for p in runs.glob('host_cancel*/*')]}"
    assert any(checkpoints[-1].glob("*.safetensors")), list(checkpoints[-1].iterdir())
    log = host.log_tail(20000)
    assert "cancelled at step" in log and str(checkpoints[-1]) in log and "resume" in log, \
        f"the console does not say where the checkpoint went:\n{log[-3000:]}"
    assert stopped_after < 30, f"Cancel took {stopped_after:.1f}s to stop training"
    assert "MotionDirectorLoadModel" in host.get("/object_info", timeout=60)  # the server still answers

    # resume: the same run continues from its checkpoint, in the same folder (no host_cancel_2)
    done = int(checkpoints[-1].name.split("-")[1])
    again = copy.deepcopy(prompt)
    again[train_id]["inputs"].update(steps=done + 2, resume=True)
    entry = host.run(again)
    assert (runs / "host_cancel" / "motion.safetensors").is_file() and not (runs / "host_cancel_2").exists(), \
        sorted(p.name for p in runs.iterdir())
    history = json.loads((runs / "host_cancel" / "history.json").read_text())
    assert len(history) == done + 2, f"the resumed run did not continue from step {done}: {len(history)} steps"
    assert f"step {done + 2}" in entry["outputs"][train_id]["text"][0]


def test_two_copies_of_the_pack_never_mix_and_the_user_is_told(tmp_path):
    """Two folders holding the pack (a hand clone and a Manager install): ComfyUI's own loader imports both."""
    for name in ("comfyui-motiondirector", "ComfyUI-MotionDirector-copy"):
        (tmp_path / name).symlink_to(ROOT, target_is_directory=True)
    code = r"""
import asyncio, io, json, logging, sys
sys.argv = ["main.py", "--cpu"]
sys.path.insert(0, ".")
import comfy.options
comfy.options.enable_args_parsing()  # as main.py does, so --cpu counts
log = io.StringIO()
logging.basicConfig(stream=log, level=logging.INFO, force=True)
import nodes
first, second = json.load(sys.stdin)
asyncio.run(nodes.load_custom_node(first))
asyncio.run(nodes.load_custom_node(second))
ours = {k: v for k, v in nodes.NODE_CLASS_MAPPINGS.items() if k.startswith("MotionDirector")}
loader = ours["MotionDirectorLoadModel"]
(model,) = getattr(loader(), loader.FUNCTION)(model_name=loader.INPUT_TYPES()["required"]["model_name"][0][-1])
libraries = sorted({m.__name__.rsplit(".motion_lora", 1)[0] for m in list(sys.modules.values())
                    if ".motion_lora" in getattr(m, "__name__", "")})
print(json.dumps({"modules": sorted({c.RELATIVE_PYTHON_MODULE for c in ours.values()}),
                  "model_module": type(model).__module__, "libraries": libraries, "log": log.getvalue()}))
"""
    proc = subprocess.run([COMFYUI_PYTHON, "-c", code], input=json.dumps(
        [str(tmp_path / "comfyui-motiondirector"), str(tmp_path / "ComfyUI-MotionDirector-copy")]),
        capture_output=True, text=True, timeout=time_left(180), cwd=COMFYUI_DIR)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["modules"] == ["custom_nodes.comfyui-motiondirector"], out["modules"]  # every node from one copy
    assert out["libraries"] == [str(tmp_path / "comfyui-motiondirector").replace(".", "_x_")], out["libraries"]
    assert "motion_lora" in out["model_module"] and "comfyui-motiondirector" in out["model_module"]
    warning = [line for line in out["log"].splitlines() if "installed twice" in line]
    assert warning and str(tmp_path / "comfyui-motiondirector") in warning[0] \
        and str(tmp_path / "ComfyUI-MotionDirector-copy") in warning[0], out["log"][-3000:]


def test_bad_input_reaches_the_user_as_a_clear_error(host, loras):
    """A Save LoRA name that leaves the folder fails in ComfyUI with a message naming the input; nothing escapes."""
    models = host.base / "models"
    for name in ("../escaped", str(host.base / "escaped_abs")):
        prompt = {"1": {"class_type": "MotionDirectorLoadLora", "inputs": {"lora_name": loras["motion"]}},
                  "2": {"class_type": "MotionDirectorSaveLora", "inputs": {"lora": ["1", 0], "name": name,
                                                                         "overwrite": False}}}
        entry = host.wait(host.queue(prompt), timeout=60)
        message = describe_error(entry)
        assert entry["status"]["status_str"] == "error" and "execution_error" in message, message
        assert name in message and "LoRA name" in message, f"the error does not name the bad input: {message}"
        error = next(m for k, m in entry["status"]["messages"] if k == "execution_error")
        assert error["exception_type"] == "nodes.lora_folder.LoraNameError", \
            f"the error's type reads as a file path: {error['exception_type']}"
        assert not list(host.base.glob("**/escaped*")) and not list(models.parent.glob("escaped*")), \
            f"a file was written outside models/motion_director for {name!r}"
    # and an existing name is never replaced silently
    prompt = {"1": {"class_type": "MotionDirectorLoadLora", "inputs": {"lora_name": loras["appearance"]}},
              "2": {"class_type": "MotionDirectorSaveLora", "inputs": {"lora": ["1", 0], "name": "host_fixture/motion",
                                                                     "overwrite": False}}}
    before = (models / "motion_director" / loras["motion"]).read_bytes()
    entry = host.wait(host.queue(prompt), timeout=60)
    assert entry["status"]["status_str"] == "error", "Save LoRA replaced an existing file without overwrite"
    assert (models / "motion_director" / loras["motion"]).read_bytes() == before


def test_save_lora_shows_where_the_file_went(host, loras):
    prompt = {"1": {"class_type": "MotionDirectorLoadLora", "inputs": {"lora_name": loras["motion"]}},
              "2": {"class_type": "MotionDirectorSaveLora", "inputs": {"lora": ["1", 0], "name": "host_saved/shown",
                                                                     "overwrite": False}}}
    entry = host.run(prompt)
    path = host.base / "models" / "motion_director" / "host_saved" / "shown.safetensors"
    assert path.is_file() and path.stat().st_mode & 0o777 == 0o644, oct(path.stat().st_mode)
    assert entry["outputs"]["2"]["text"] == [f"saved to {path}"], entry["outputs"]
