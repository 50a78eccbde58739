"""The shipped example workflows: they parse, name only our nodes and the core nodes listed here,
their links agree on both ends, and every widget value fits the node's inputs, so each one loads by
drag-and-drop and runs once the user has ZeroScope in models/diffusers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from test_nodes import NODES, PACK_NAME

WORKFLOWS = sorted(p for p in (ROOT / "workflows").glob("*.json") if "_wan_" not in p.name)  # Wan: test_wan_nodes
MODEL_FOLDER = "zeroscope_v2_576w"

# The core ComfyUI nodes the workflows use (comfy_extras/nodes_video.py, nodes.py):
# type -> (socket inputs {name: type, required?}, widget names in order, outputs [(name, type)])
CORE_NODES = {
    "LoadVideo": ({}, ["file", "upload"], [("VIDEO", "VIDEO")]),
    "GetVideoComponents": ({"video": ("VIDEO", True)}, [], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "CreateVideo": ({"images": ("IMAGE", True), "audio": ("AUDIO", False)}, ["fps"], [("VIDEO", "VIDEO")]),
    "SaveVideo": ({"video": ("VIDEO", True)}, ["filename_prefix", "format", "codec"], []),
    "LoadImage": ({}, ["image", "upload"], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "PreviewImage": ({"images": ("IMAGE", True)}, [], []),
    "MarkdownNote": ({}, ["text"], []),  # frontend-only nodes: never sent to the server
    "Reroute": ({"": ("*", True)}, [], [("", "*")]),
}
UI_ONLY = {"MarkdownNote", "Reroute"}
CORE_RANGES = {("CreateVideo", "fps"): (1.0, 120.0)}
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
SEED_CONTROLS = {"fixed", "increment", "decrement", "randomize"}
# combos listing the user's own files: any plausible name is fine in a shipped workflow
FILE_COMBOS = {("MotionDirectorLoadModel", "model_name"), ("MotionDirectorLoadLora", "lora_name"),
               ("MotionDirectorLoadOfficialLora", "checkpoint")}


def adds_seed_control(name: str, kind, options: dict) -> bool:
    """The frontend's rule: a hidden control widget follows an INT that asks for one, or any INT named seed
    that does not say `control_after_generate: False`."""
    if kind != "INT":
        return False
    explicit = options.get("control_after_generate")
    return bool(explicit) or (explicit is None and name in ("seed", "noise_seed"))


def our_node(node_type: str):
    """(sockets {name: (type, required)}, widgets [(name, spec)], outputs [(name, type)]) from INPUT_TYPES."""
    cls = NODES[node_type]
    spec = cls.INPUT_TYPES()
    sockets, widgets = {}, []
    for section in ("required", "optional"):
        for name, s in spec.get(section, {}).items():
            kind, options = s[0], (s[1] if len(s) > 1 else {})
            if isinstance(kind, list) or (kind in WIDGET_TYPES and not options.get("forceInput")):
                widgets.append((name, s))
                if adds_seed_control(name, kind, options):
                    widgets.append(("control_after_generate", (list(SEED_CONTROLS), {})))
            else:
                sockets[name] = (kind, section == "required")
    return sockets, widgets, list(zip(cls.RETURN_NAMES, cls.RETURN_TYPES))


def node_facts(node_type: str):
    if node_type in NODES:
        return our_node(node_type)
    sockets, widgets, outputs = CORE_NODES[node_type]
    return sockets, [(w, None) for w in widgets], outputs


def check_widget(node_type: str, name: str, spec, value) -> None:
    where = f"{node_type}.{name} = {value!r}"
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):
        if (node_type, name) in FILE_COMBOS and value not in kind:
            check_name = sys.modules[f"{PACK_NAME}.nodes.lora_folder"].check_name
            assert isinstance(value, str) and check_name(value) == value, where
            if node_type == "MotionDirectorLoadModel":
                assert value == MODEL_FOLDER, where
            return
        assert value in kind, where
    elif kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), where
        assert options.get("min", value) <= value <= options.get("max", value), where
    elif kind == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        assert options.get("min", value) <= value <= options.get("max", value), where
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), where
    elif kind == "STRING":
        assert isinstance(value, str), where


def test_there_are_five_workflows():
    assert len(WORKFLOWS) == 5


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_consistent(path: Path):
    workflow = json.loads(path.read_text())
    assert workflow["version"] == 0.4
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]) and workflow["last_node_id"] >= max(nodes)
    links = {link[0]: link for link in workflow["links"]}
    assert len(links) == len(workflow["links"]) and workflow["last_link_id"] >= max(links)

    for node in workflow["nodes"]:
        node_type = node["type"]
        assert node_type in NODES or node_type in CORE_NODES, f"{path.name}: unknown node {node_type}"
        sockets, widgets, outputs = node_facts(node_type)
        assert {"id", "type", "pos", "size", "inputs", "outputs", "widgets_values", "mode", "order"} <= set(node)

        # outputs: our names and types, each listed link exists and starts here
        assert [(o["name"], o["type"]) for o in node["outputs"]] == outputs, node_type
        for slot, output in enumerate(node["outputs"]):
            for link_id in output["links"] or []:
                assert links[link_id][1:3] == [node["id"], slot], f"{path.name}: link {link_id}"
                assert links[link_id][5] == output["type"] or node_type == "Reroute"

        # inputs: sockets of the node (or widgets turned into inputs), each link exists and ends here
        widget_names = [name for name, _ in widgets]
        for slot, entry in enumerate(node["inputs"]):
            if "widget" in entry:
                assert entry["widget"]["name"] == entry["name"] in widget_names, f"{node_type}.{entry['name']}"
            else:
                assert entry["name"] in sockets and entry["type"] == sockets[entry["name"]][0], f"{node_type}.{entry}"
            if entry["link"] is not None:
                link = links[entry["link"]]
                assert link[3:5] == [node["id"], slot], f"{path.name}: link {entry['link']}"
                source = nodes[link[1]]["outputs"][link[2]]
                if node_type != "Reroute" and nodes[link[1]]["type"] != "Reroute":
                    assert source["type"] == entry["type"] == link[5], f"{path.name}: link {entry['link']} types"
        connected = {e["name"] for e in node["inputs"] if e["link"] is not None}
        required = {name for name, (_, req) in sockets.items() if req}
        assert required <= connected, f"{path.name}: {node_type} lacks {required - connected}"

        # widget values: one per widget, in INPUT_TYPES order, each fitting its input
        values = node["widgets_values"]
        assert len(values) == len(widgets), f"{path.name}: {node_type} has {values}, needs {widget_names}"
        for (name, spec), value in zip(widgets, values):
            if spec is not None:
                check_widget(node_type, name, spec, value)
            elif (node_type, name) in CORE_RANGES:
                low, high = CORE_RANGES[node_type, name]
                assert low <= value <= high

    for link_id, origin, _, target, _, _ in workflow["links"]:
        assert origin in nodes and target in nodes, f"{path.name}: link {link_id} dangles"


def _nodes_of(name_part: str, node_type: str) -> list[dict]:
    path = next(p for p in WORKFLOWS if name_part in p.name)
    return [n for n in json.loads(path.read_text())["nodes"] if n["type"] == node_type]


def test_saved_loras_the_workflows_load_are_the_ones_the_training_workflows_make():
    """Workflow 3, 4 and 5 run as shipped once 1 (run my_motion) and 5 (run my_image) have trained."""
    run_slot = [name for name, _ in our_node("MotionDirectorTrain")[1]].index("run_name")
    run_names = {n["widgets_values"][run_slot] for w in WORKFLOWS for n in _nodes_of(w.name, "MotionDirectorTrain")}
    loaded = {n["widgets_values"][0] for w in WORKFLOWS for n in _nodes_of(w.name, "MotionDirectorLoadLora")}
    assert loaded and all(name.split("/")[0] in run_names for name in loaded)
    assert {name.split("/")[1] for name in loaded} <= {"motion.safetensors", "appearance.safetensors"}


def _box(node: dict) -> tuple[float, float, float, float]:
    """The node's rectangle on the canvas, its title bar (drawn above `pos`) included."""
    x, y = node["pos"]
    w, h = node["size"]
    return x, y - TITLE_HEIGHT, x + w, y + h


TITLE_HEIGHT = 30  # the frontend's LiteGraph.NODE_TITLE_HEIGHT


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_reads_as_shipped(path: Path):
    """A note says what to provide and how long it takes; no two nodes overlap; nothing sits below Train
    where its live validation preview grows; it opens at a zoom where the frontend draws text (>= 0.58)."""
    workflow = json.loads(path.read_text())
    notes = [n for n in workflow["nodes"] if n["type"] == "MarkdownNote"]
    assert len(notes) == 1, path.name
    text = notes[0]["widgets_values"][0]
    assert "H100" in text and "models/diffusers/zeroscope_v2_576w" in text and "tiny" in text, text
    if any(n["type"] == "MotionDirectorLoadLora" for n in workflow["nodes"]):
        assert "workflow 1" in text.lower(), f"{path.name} needs another workflow's LoRA but does not say so"
    boxes = [(n["id"], n["type"], _box(n)) for n in workflow["nodes"]]
    for i, (a, ta, (ax0, ay0, ax1, ay1)) in enumerate(boxes):
        for b, tb, (bx0, by0, bx1, by1) in boxes[i + 1:]:
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, f"{path.name}: {ta} {a} overlaps {tb} {b}"
    for n in workflow["nodes"]:
        if n["type"] == "MotionDirectorTrain":  # it grows by its report box, and by the live preview when on
            room = 300 if n["widgets_values"][12] > 0 else 100
            x0, _, x1, y1 = _box(n)
            below = [m["type"] for m in workflow["nodes"] if m is not n and _box(m)[1] >= y1 and
                     _box(m)[0] < x1 and _box(m)[2] > x0 and _box(m)[1] < y1 + room]
            assert not below, f"{path.name}: {below} sit where Train's live preview grows"
    assert workflow["extra"]["ds"]["scale"] >= 0.58
    assert all(g["title"] for g in workflow.get("groups", []))


def test_shipped_inputs_exist_in_the_pack():
    """The files the workflows name ship in examples/ (copied into ComfyUI's input folder at load)."""
    examples = ROOT / "examples"
    for path in WORKFLOWS:
        for n in json.loads(path.read_text())["nodes"]:
            if n["type"] in ("LoadVideo", "LoadImage"):
                assert (examples / n["widgets_values"][0]).is_file(), (path.name, n["widgets_values"][0])
            if n["type"] == "MotionDirectorClipsFromPath":
                assert (examples / n["widgets_values"][0]).is_dir(), (path.name, n["widgets_values"][0])
    assert sum(p.stat().st_size for p in examples.rglob("*") if p.is_file()) < 400_000
