"""Our pack inside a real, running ComfyUI: the shipped workflows run end to end, and Cancel stops training.

Unit tests call node functions directly; only a real server shows what a user gets: the pack
imports next to ComfyUI's own `nodes` module, /object_info lists our nodes, the UI-format
workflows convert and validate, SaveVideo writes files, and Interrupt leaves a checkpoint and
a server that still works. Skipped unless COMFYUI_DIR points at a ComfyUI checkout (set one
up with tests/comfyui_host_setup.sh); COMFYUI_PYTHON is the python that runs it.

Every workflow is switched to the built-in tiny model and shrunk (64x64, a few frames, 2-3
steps) so the whole module runs in a few minutes on a CPU. Nothing in the checkout changes:
the server gets a temporary --base-directory whose custom_nodes/ holds a link to this repo.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
PACK_LINK = "comfyui-motiondirector"

pytestmark = pytest.mark.skipif(
    not COMFYUI_DIR or not (Path(COMFYUI_DIR) / "main.py").is_file(),
    reason="set COMFYUI_DIR to a ComfyUI checkout (and COMFYUI_PYTHON to its python); see tests/comfyui_host_setup.sh",
)

START_TIMEOUT = 120  # seconds until /object_info answers (a loaded 2-core box imports slowly)
PROMPT_TIMEOUT = 180  # seconds for one shrunk workflow (a few seconds alone; far more on a busy box)
MODULE_BUDGET = 300  # seconds for the whole module, server start included: a hang fails, it never stalls CI
_clock = {"start": 0.0}  # set when the server fixture starts


def time_left(wanted: float) -> float:
    left = MODULE_BUDGET - (time.monotonic() - _clock["start"])
    if left <= 0:
        pytest.fail(f"the host test is over its {MODULE_BUDGET}s budget")
    return min(wanted, left)


SIZE, FRAMES, SAMPLE_STEPS, TRAIN_STEPS = 64, 8, 2, 3


# --- the server -----------------------------------------------------------------------------
class Server:
    """A ComfyUI process on a free loopback port with its own base directory."""

    def __init__(self, base: Path):
        self.base = base
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "comfyui.log"
        self.client_id = uuid.uuid4().hex
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--base-directory", str(self.base),
               "--database-url", "sqlite:///:memory:"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("MOTION_DIRECTOR_MODELS", None)  # inside ComfyUI the pack must use ComfyUI's model folders
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=COMFYUI_DIR, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + time_left(START_TIMEOUT)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                self.get("/object_info", timeout=30)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(1)
        raise RuntimeError(f"ComfyUI did not answer /object_info within {START_TIMEOUT}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read() or b"null")

    def post(self, path: str, body: dict | None = None, timeout: float = 30):
        req = urllib.request.Request(self.url + path, data=json.dumps(body or {}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                data = r.read()
                return json.loads(data) if data else None
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path} -> {e.code}: {e.read().decode(errors='replace')[:4000]}") from None

    def queue(self, prompt: dict) -> str:
        return self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = PROMPT_TIMEOUT) -> dict:
        """The prompt's /history entry once it has finished (successfully or not)."""
        timeout = time_left(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None \
                    and (entry["status"]["completed"] or entry["status"].get("status_str") == "error"):
                return entry
            if self.proc.poll() is not None:
                raise AssertionError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.5)
        self.post("/interrupt")
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout}s:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = PROMPT_TIMEOUT) -> dict:
        entry = self.wait(self.queue(prompt), timeout)
        assert entry["status"].get("status_str") == "success", \
            f"prompt failed: {describe_error(entry)}\n--- server log ---\n{self.log_tail()}"
        return entry


def describe_error(entry: dict) -> str:
    for kind, msg in entry.get("status", {}).get("messages", []):
        if kind in ("execution_error", "execution_interrupted"):
            return (f"{kind} in node {msg.get('node_id')} ({msg.get('node_type')}): "
                    f"{msg.get('exception_type', '')}: {msg.get('exception_message', '')}\n"
                    + "".join(msg.get("traceback") or []))
    return json.dumps(entry.get("status"), indent=1)[:4000]


def run_in_comfy_python(code: str, payload) -> object:
    """Run `code` in ComfyUI's python (it has comfy-cli, av, Pillow): JSON in on stdin, JSON out on stdout."""
    proc = subprocess.run([COMFYUI_PYTHON, "-c", code], input=json.dumps(payload), capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"helper failed in {COMFYUI_PYTHON}:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


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

PROBE = r"""
import json, sys
import av
out = []
for path in json.load(sys.stdin):
    with av.open(path) as box:
        frames = [f for f in box.decode(video=0)]
        out.append([len(frames), frames[0].width, frames[0].height])
print(json.dumps(out))
"""

CONVERT = r"""
import json, sys
from comfy_cli.workflow_to_api import convert_ui_to_api
args = json.load(sys.stdin)
print(json.dumps(convert_ui_to_api(args["workflow"], args["object_info"])))
"""


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A running ComfyUI with our pack and synthetic media in its input folder; always stopped at the end."""
    _clock["start"] = time.monotonic()
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
    server = Server(base)
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


def shrink(prompt: dict, object_info: dict, tag: str, loras: dict[str, str]) -> dict:
    """The workflow on the tiny model, 64x64, few frames and steps, synthetic media, unique output names."""
    prompt = copy.deepcopy(prompt)
    for node_id, node in prompt.items():
        cls = node["class_type"]
        specs = inputs_of(object_info[cls])
        for name, value in list(node["inputs"].items()):
            if isinstance(value, list) or name not in specs:
                continue  # a link, or a hidden input
            spec = specs[name]
            options = combo_options(spec)
            new = value
            if cls.startswith("MotionDirector") and options and any(str(o).startswith("tiny") for o in options):
                new = next(o for o in options if str(o).startswith("tiny"))
            elif cls == "LoadVideo" and name == "file":
                new = "md_clip.mp4"
            elif cls == "LoadImage" and name == "image":
                new = "md_image.png"
            elif cls == "MotionDirectorLoadLora" and name == "lora_name":
                kinds = " ".join(consumers(prompt, node_id))
                new = loras["appearance" if "Appearance" in kinds else "motion"]
            elif name in ("width", "height"):
                new = clamp(spec, SIZE)
            elif name in ("frames", "num_frames", "length", "frame_count"):
                new = clamp(spec, FRAMES)
            elif name == "steps":
                new = clamp(spec, TRAIN_STEPS if "Train" in cls else SAMPLE_STEPS)
            elif name in ("validation_steps", "inversion_steps"):
                new = clamp(spec, 2)
            elif name == "validation_every" and value:
                new = clamp(spec, 2)
            elif name == "run_name":
                new = f"host_{tag}_{node_id}"
            elif cls == "MotionDirectorSaveLora" and name == "name":
                new = f"host_saved/{tag}_{node_id}"
            elif name == "filename_prefix":
                new = f"host/{tag}_{node_id}"
            elif cls.startswith("MotionDirector") and isinstance(value, str) and value \
                    and ("folder" in name or "path" in name):
                new = "md_images" if "image" in name else "md_clips"
            node["inputs"][name] = new
    return prompt


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
    for path, (frames, width, height) in zip(videos, run_in_comfy_python(PROBE, videos)):
        assert (frames, width, height) == (FRAMES, SIZE, SIZE), f"{path}: {frames} frames of {width}x{height}"


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


@pytest.mark.parametrize("workflow_path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_shipped_workflow_runs(host, object_info, loras, workflow_path):
    info = host.get("/object_info", timeout=60)  # fresh: the LoRA combo lists files saved since the start
    for label, name in loras.items():
        options = combo_options(inputs_of(info["MotionDirectorLoadLora"])["lora_name"])
        assert name in options, f"Load LoRA does not list {name} (saved before this request): {options}"
    workflow = json.loads(workflow_path.read_text())
    api = to_api(workflow, info)
    check_converted_widgets(api, info)
    prompt = shrink(api, info, workflow_path.stem, loras)
    entry = host.run(prompt)
    check_outputs(host, prompt, entry)
    for node_id, node in prompt.items():
        if node["class_type"] == "MotionDirectorTrain":
            run = host.base / "models" / "motion_director" / node["inputs"]["run_name"]
            assert run.is_dir(), f"Train (node {node_id}) left no run folder {run}"
            saved = sorted(f"{run.name}/{f.name}" for f in run.glob("*.safetensors"))
            assert saved, f"no adapter saved in {run}: {list(run.iterdir())}"
            listed = combo_options(inputs_of(host.get("/object_info/MotionDirectorLoadLora")[
                "MotionDirectorLoadLora"])["lora_name"])
            assert set(saved) <= set(listed), f"Load LoRA does not list the new run's {saved} without a restart: {listed}"
    trained = sorted(p.name for p in (host.base / "models" / "motion_director").iterdir())
    if any(n["class_type"] == "MotionDirectorTrain" for n in prompt.values()):
        host.run(prompt)  # the unchanged graph again: ComfyUI's cache answers, nothing trains
        again = sorted(p.name for p in (host.base / "models" / "motion_director").iterdir())
        assert again == trained, f"re-queueing the unchanged graph trained again: {sorted(set(again) - set(trained))}"
    for node_id, node in prompt.items():
        if node["class_type"] == "MotionDirectorSaveLora":
            saved = host.base / "models" / "motion_director" / (node["inputs"]["name"] + ".safetensors")
            assert saved.is_file(), f"Save LoRA (node {node_id}) did not write {saved}"


def training_prompt(object_info: dict, loras: dict[str, str]) -> dict:
    for path in WORKFLOWS:
        workflow = json.loads(path.read_text())
        if any(n.get("type") == "MotionDirectorTrain" for n in workflow.get("nodes", [])):
            return shrink(to_api(workflow, object_info), object_info, "cancel", loras)
    pytest.skip("no shipped workflow trains")


def test_cancel_training_keeps_checkpoint_and_server(host, object_info, loras):
    prompt = training_prompt(object_info, loras)
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
    assert entry["status"]["status_str"] == "error", f"the run was not stopped: {entry['status']}"
    message = describe_error(entry)
    checkpoints = sorted(runs.glob("host_cancel*/checkpoint-*"))
    assert checkpoints, (f"Cancel left no checkpoint: the run folder holds only "
                         f"{[p.name for p in runs.glob('host_cancel*/*')]}; ComfyUI said: {message}")
    assert any(checkpoints[-1].glob("*.safetensors")), list(checkpoints[-1].iterdir())
    # where it was saved reaches the user: in the error ComfyUI shows, or at least in the console
    reported = message + host.log_tail(20000)
    assert "cancelled at step" in reported and checkpoints[-1].parent.name in reported, \
        f"the user is not told where the checkpoint went: {message}"
    assert stopped_after < 30, f"Cancel took {stopped_after:.1f}s to stop training"

    # the server is still usable: it answers and runs another (changed, so not cached) prompt
    assert "MotionDirectorLoadModel" in host.get("/object_info", timeout=60)
    # a changed training input trains again, into a new folder beside the cancelled run (never over it)
    again = copy.deepcopy(prompt)
    again[train_id]["inputs"].update(steps=2, checkpoint_every=2)
    host.run(again)
    assert (runs / "host_cancel_2" / "motion.safetensors").is_file(), sorted(p.name for p in runs.iterdir())
    assert checkpoints[-1].is_dir(), "the cancelled run's checkpoint was lost"


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
