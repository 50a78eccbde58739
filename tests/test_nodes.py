"""The ComfyUI nodes without ComfyUI: specs are valid, every node runs on the tiny model the way
ComfyUI calls it (keyword arguments, under torch.inference_mode(), inference-mode IMAGE tensors),
Apply nodes never change the handle they get, bad input gives clear errors, Cancel saves a checkpoint.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import json
import logging
import textwrap
import types
from pathlib import Path

import pytest
import torch

from conftest import ROOT, synthetic_clip

PACK_NAME = "comfyui_motiondirector_under_test"


def load_pack():
    """Import the pack the way ComfyUI's load_custom_node does: its folder's __init__.py as a package."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(PACK_NAME, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


PACK = load_pack()
NODES = PACK.NODE_CLASS_MAPPINGS
comfy_bridge = sys.modules[f"{PACK_NAME}.nodes.comfy"]


@pytest.fixture(autouse=True)
def models_dir(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty models folder (no ComfyUI: the env variable decides)."""
    monkeypatch.setenv("MOTION_DIRECTOR_MODELS", str(tmp_path / "models"))
    return tmp_path / "models"


def spec_of(node_id: str) -> dict:
    spec = NODES[node_id].INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def run(node_id: str, **inputs):
    """Call a node as ComfyUI does: every widget value passed (defaults for those not given), under inference mode."""
    cls = NODES[node_id]
    for name, (kind, options) in cls.INPUT_TYPES()["required"].items():
        if name not in inputs and "default" in options:
            inputs[name] = options["default"]
        elif name not in inputs and isinstance(kind, list):
            inputs[name] = kind[0]
    with torch.inference_mode():
        out = getattr(cls(), cls.FUNCTION)(**inputs)
    if isinstance(out, dict):  # {"ui": shown on the node, "result": the outputs}, unwrapped as ComfyUI does
        LAST_UI[node_id] = out.get("ui")
        return out["result"]
    return out


LAST_UI: dict = {}  # node id -> the "ui" part of its last run


def lib(module: str):
    """A module of the pack's own library (`<pack>.motion_lora.<module>`): the one its nodes use."""
    return importlib.import_module(f"{PACK_NAME}.motion_lora.{module}")


def inference_frames(frames: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    with torch.inference_mode():
        return synthetic_clip(frames, size, size, seed).clone()


def random_adapter(model, kind: str, rank: int = 4, scale: float = 0.5, seed: int = 0):
    """An adapter for the tiny model with weights large enough to change its output visibly."""
    from comfyui_motiondirector_under_test.motion_lora.adapters import LoraAdapter, targets_for

    g = torch.Generator().manual_seed(seed)
    modules = dict(model.unet.named_modules())
    tensors = {}
    for target in targets_for(model.unet, model.backbone, kind):
        layer = getattr(modules[target], "base_layer", modules[target])
        tensors[f"{target}.lora_A.weight"] = torch.randn(rank, layer.in_features, generator=g) * scale
        tensors[f"{target}.lora_B.weight"] = torch.randn(layer.out_features, rank, generator=g) * scale
    return LoraAdapter(kind, rank, float(rank), tensors, fingerprint=model.fingerprint, name=f"random {kind}")


@pytest.fixture(scope="module")
def loaded():
    """The tiny model through Load Model (shared: nodes must never change it)."""
    with torch.inference_mode():
        (handle,) = NODES["MotionDirectorLoadModel"]().load(model_name="tiny (built-in test model, no weights)",
                                                            dtype="auto")
    return handle


def sample(handle, seed: int = 0, **options):
    options = {"prompt": "a car is turning", "width": 64, "height": 64, "frames": 2, "steps": 1, "cfg": 7.0,
               "seed": seed, **options}
    frames, fps = run("MotionDirectorSample", model=handle, **options)
    return frames


# --- specs ----------------------------------------------------------------------------------


def _check_input(node_id: str, name: str, spec: tuple) -> None:
    where = f"{node_id}.{name}"
    assert isinstance(spec, tuple) and 1 <= len(spec) <= 2, where
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    assert options.get("tooltip"), f"{where} has no tooltip"
    if isinstance(kind, list):
        assert kind, f"{where}: empty combo"
        assert all(isinstance(v, str) for v in kind), where
        if "default" in options:
            assert options["default"] in kind, where
        return
    assert isinstance(kind, str) and kind == kind.upper(), f"{where}: type {kind!r}"
    if kind in ("INT", "FLOAT") and not options.get("forceInput"):
        assert "default" in options, f"{where} has no default"
        assert options.get("min", -float("inf")) <= options["default"] <= options.get("max", float("inf")), where
        if kind == "INT":
            assert all(isinstance(options[k], int) for k in ("default", "min", "max") if k in options), where
    if kind == "BOOLEAN":
        assert isinstance(options.get("default"), bool), where
    if kind == "STRING":
        assert isinstance(options.get("default", ""), str), where


@pytest.mark.parametrize("node_id", sorted(NODES))
def test_node_spec_is_valid(node_id):
    cls = NODES[node_id]
    assert node_id.startswith("MotionDirector")
    assert PACK.NODE_DISPLAY_NAME_MAPPINGS[node_id].startswith("MotionDirector ")
    assert cls.CATEGORY.split("/")[0] == "MotionDirector"
    assert cls.DESCRIPTION
    assert callable(getattr(cls, cls.FUNCTION))
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
    for section in ("required", "optional"):
        for name, input_spec in spec.get(section, {}).items():
            _check_input(node_id, name, input_spec)
    assert isinstance(cls.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in cls.RETURN_TYPES)
    assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
    assert all(cls.OUTPUT_TOOLTIPS)


def test_combos_follow_the_library():
    from comfyui_motiondirector_under_test.motion_lora.sampling import SCHEDULERS
    from comfyui_motiondirector_under_test.motion_lora.tiny import TINY_NAME
    from comfyui_motiondirector_under_test.motion_lora.training import RECIPES

    assert spec_of("MotionDirectorSample")["scheduler"][0] == list(SCHEDULERS)
    assert spec_of("MotionDirectorTrain")["recipe"][0] == list(RECIPES)
    assert TINY_NAME in spec_of("MotionDirectorLoadModel")["model_name"][0] and TINY_NAME.startswith("tiny")


def test_seed_widgets():
    """Sampling seeds advance after each queue (ComfyUI's control-after-generate); training's must not, or
    re-queueing an unchanged graph would retrain. The frontend adds a "randomize" control to any INT named seed
    unless it says control_after_generate: False. Train has no IS_CHANGED so ComfyUI caches it by its inputs."""
    assert spec_of("MotionDirectorSample")["seed"][1]["control_after_generate"] is True
    assert spec_of("MotionDirectorTrain")["seed"][1]["control_after_generate"] is False
    assert not hasattr(NODES["MotionDirectorTrain"], "IS_CHANGED")


def test_pack_imports_fast_without_heavy_libraries():
    code = textwrap.dedent(f"""
        import importlib.util, sys, time
        t = time.time()
        spec = importlib.util.spec_from_file_location("md_pack", {str(ROOT / '__init__.py')!r},
                                                      submodule_search_locations=[{str(ROOT)!r}])
        module = importlib.util.module_from_spec(spec); sys.modules["md_pack"] = module; spec.loader.exec_module(module)
        heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "diffusers", "transformers", "peft"}})
        print(time.time() - t, len(module.NODE_CLASS_MAPPINGS), ",".join(heavy) or "-")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    seconds, count, heavy = out.stdout.split()
    assert float(seconds) < 1.0 and int(count) == len(NODES) and heavy == "-"


# --- load model ------------------------------------------------------------------------------


def test_load_model_lists_and_loads_diffusers_folders(models_dir, tiny_model_dir):
    (models_dir / "diffusers").mkdir(parents=True)
    (models_dir / "diffusers" / "tiny_t2v").symlink_to(tiny_model_dir)
    (models_dir / "diffusers" / "not_a_model").mkdir()
    image_model = models_dir / "diffusers" / "sd15"  # an SD 1.5 folder: an image model, explained, not offered
    image_model.mkdir()
    (image_model / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}))
    names, options = spec_of("MotionDirectorLoadModel")["model_name"]
    assert "tiny_t2v" in names and "not_a_model" not in names and "sd15" not in names
    assert "sd15 (an image model (StableDiffusionPipeline, UNet2DConditionModel)" in options["tooltip"]
    (handle,) = run("MotionDirectorLoadModel", model_name="tiny_t2v", dtype="fp32")
    assert handle.model.source.endswith("tiny_t2v") and handle.adapters == ()
    assert not next(handle.model.unet.parameters()).is_inference()  # trainable later
    # ComfyUI asks VALIDATE_INPUTS before running (instead of "Value not in list"): it says where the model goes
    validate = NODES["MotionDirectorLoadModel"].VALIDATE_INPUTS
    assert validate(model_name="tiny_t2v") is True and validate(model_name=spec_of(
        "MotionDirectorLoadModel")["model_name"][0][-1]) is True
    message = validate(model_name="zeroscope_v2_576w")
    assert str(models_dir / "diffusers" / "zeroscope_v2_576w") in message and "cerspense/zeroscope_v2_576w" in message
    assert "tiny" in message and "sd15: an image model" in message and "Installed: tiny_t2v" in message
    with pytest.raises(ValueError, match="is not installed"):
        run("MotionDirectorLoadModel", model_name="zeroscope_v2_576w")


# --- clips -----------------------------------------------------------------------------------


def test_clip_from_frames_chains_and_previews():
    frames = inference_frames(8, 96)
    clips, preview = run("MotionDirectorClipFromFrames", frames=frames, prompt="a square moves", num_frames=4,
                         stride=2, width=64, height=64)
    assert len(clips) == 1 and clips[0].frames.shape == (4, 64, 64, 3) and clips[0].prompt == "a square moves"
    assert preview.shape == (4, 64, 64, 3) and torch.equal(preview, clips[0].frames)
    clips2, preview2 = run("MotionDirectorClipFromFrames", frames=frames, prompt="again", num_frames=2,
                           target_fps=4.0, video_fps=8.0, width=64, height=64, previous_clips=clips)
    assert [c.prompt for c in clips2] == ["a square moves", "again"] and len(clips) == 1
    assert preview2.shape[0] == 2 and clips2[1].fps == 4.0
    with pytest.raises(ValueError, match="video_fps"):
        run("MotionDirectorClipFromFrames", frames=frames, prompt="", target_fps=4.0)
    with pytest.raises(ValueError, match="only 8 frames"):
        run("MotionDirectorClipFromFrames", frames=frames, prompt="", num_frames=16)


def test_clips_from_images_and_path(tmp_path):
    from comfyui_motiondirector_under_test.motion_lora.video_io import write_video

    images = inference_frames(2, 64)
    clips, preview = run("MotionDirectorClipsFromImages", images=images, prompt="a red square", width=64, height=64)
    assert [c.num_frames for c in clips] == [1, 1] and preview.shape == (2, 64, 64, 3)
    write_video(synthetic_clip(6, 64, 64), tmp_path / "clips" / "a.mp4", fps=8)
    (tmp_path / "clips" / "a.txt").write_text("a square slides right")
    clips, preview = run("MotionDirectorClipsFromPath", path=str(tmp_path / "clips"), prompt="fallback",
                         num_frames=4, width=64, height=64, previous_clips=clips)
    assert [c.prompt for c in clips] == ["a red square", "a red square", "a square slides right"]
    assert preview.shape == (4, 64, 64, 3)
    stamp = NODES["MotionDirectorClipsFromPath"].IS_CHANGED
    folder_stamp = stamp(path=str(tmp_path / "clips"))
    assert folder_stamp == stamp(path=str(tmp_path / "clips"))  # cache holds
    (tmp_path / "clips" / "a.txt").write_text("a square slides right, slowly")
    assert stamp(path=str(tmp_path / "clips")) != folder_stamp  # a new caption reloads
    file_stamp = stamp(path=str(tmp_path / "clips" / "a.mp4"))
    assert file_stamp == stamp(path=str(tmp_path / "clips" / "a.mp4"))
    (tmp_path / "clips" / "a.txt").unlink()
    assert stamp(path=str(tmp_path / "clips" / "a.mp4")) != file_stamp  # a single file's caption counts too
    with pytest.raises(ValueError, match="path is empty"):
        run("MotionDirectorClipsFromPath", path=" ", prompt="")


# --- train, save, load -----------------------------------------------------------------------

TRAIN = dict(steps=2, rank=4, checkpoint_every=1)


@pytest.fixture(scope="module")
def trained(loaded, tmp_path_factory):
    """One short run through the Train node, saved in its own models folder."""
    import os

    models = tmp_path_factory.mktemp("trained_models")
    old = os.environ.get("MOTION_DIRECTOR_MODELS")
    os.environ["MOTION_DIRECTOR_MODELS"] = str(models)
    try:
        clips, _ = run("MotionDirectorClipFromFrames", frames=inference_frames(4), prompt="a square moves",
                       num_frames=4, width=64, height=64)
        outputs = run("MotionDirectorTrain", model=loaded, clips=clips, run_name="square", **TRAIN)
    finally:
        if old is None:
            del os.environ["MOTION_DIRECTOR_MODELS"]
        else:
            os.environ["MOTION_DIRECTOR_MODELS"] = old
    return models, outputs


def test_train_outputs_both_loras_and_a_loss_curve(trained, loaded):
    from comfyui_motiondirector_under_test.motion_lora.adapters import LoraAdapter

    models, (motion, appearance, curve, run_folder) = trained
    assert isinstance(motion, LoraAdapter) and motion.kind == "temporal" and motion.rank == 4
    assert isinstance(appearance, LoraAdapter) and appearance.kind == "spatial"
    assert curve.dim() == 4 and curve.shape[0] == 1 and curve.shape[-1] == 3 and 0 <= curve.min() <= curve.max() <= 1
    assert Path(run_folder) == models / "motion_director" / "square"
    assert (Path(run_folder) / "motion.safetensors").is_file()
    assert (Path(run_folder) / "appearance.safetensors").is_file()
    assert loaded.adapters == () and not list(_lora_layers(loaded))  # the shared model is as it was


def test_train_records_gradient_checkpointing(trained):
    """The real run's config.json holds the widget's default: checkpoint everything (least memory)."""
    import json

    _, (*_rest, run_folder) = trained
    assert json.loads((Path(run_folder) / "config.json").read_text())["gradient_checkpointing"] == "all"


@pytest.mark.parametrize("choice, value, policy", [("all", "all", "all"), ("attention", "attention", "attention"),
                                                   ("off", False, None)])
def test_gradient_checkpointing_widget_reaches_train_config(choice, value, policy, loaded, models_dir, monkeypatch):
    from comfyui_motiondirector_under_test.motion_lora import training

    class Stop(Exception):
        pass

    seen = {}

    def fake_train(model, clips, config, **kwargs):
        seen["config"] = config
        raise Stop

    monkeypatch.setattr(training, "train", fake_train)
    spec = spec_of("MotionDirectorTrain")["gradient_checkpointing"]
    assert spec[0] == ["all", "attention", "off"] and spec[1]["default"] == "all"
    assert list(NODES["MotionDirectorTrain"].INPUT_TYPES()["required"])[-2:] == ["gradient_checkpointing", "resume"]
    clips, _ = run("MotionDirectorClipsFromImages", images=inference_frames(1), prompt="a square", width=64, height=64)
    with pytest.raises(Stop):
        run("MotionDirectorTrain", model=loaded, clips=clips, recipe="images", steps=1, gradient_checkpointing=choice)
    config = seen["config"]
    assert config.gradient_checkpointing == value and config.checkpoint_policy == policy
    config.check()


def _lora_layers(handle):
    from comfyui_motiondirector_under_test.motion_lora.adapters import lora_layers

    return lora_layers(handle.model.unet)


def test_load_lora_lists_runs_and_loads(trained, monkeypatch):
    models, (motion, *_rest) = trained
    monkeypatch.setenv("MOTION_DIRECTOR_MODELS", str(models))
    names = spec_of("MotionDirectorLoadLora")["lora_name"][0]
    assert "square/motion.safetensors" in names and "square/appearance.safetensors" in names
    assert "square/checkpoint-000001/temporal.safetensors" in names
    official = spec_of("MotionDirectorLoadOfficialLora")["checkpoint"][0]
    assert not any(name.startswith("square/") for name in official)  # a run's training state is not a checkpoint
    (loaded_motion,) = run("MotionDirectorLoadLora", lora_name="square/motion.safetensors")
    assert loaded_motion.kind == "temporal"
    assert all(torch.equal(loaded_motion.tensors[k], v) for k, v in motion.tensors.items())
    with pytest.raises(ValueError, match="not found"):
        run("MotionDirectorLoadLora", lora_name="square/nothing.safetensors")
    stamp = NODES["MotionDirectorLoadLora"].IS_CHANGED
    assert stamp(lora_name="square/motion.safetensors") == stamp(lora_name="square/motion.safetensors") != ""
    assert stamp(lora_name="square/motion.safetensors") != stamp(lora_name="square/appearance.safetensors")


def test_training_again_never_overwrites_a_run(loaded, models_dir):
    clips, _ = run("MotionDirectorClipsFromImages", images=inference_frames(1), prompt="a square", width=64, height=64)
    first = run("MotionDirectorTrain", model=loaded, clips=clips, recipe="images", run_name="look", steps=1, rank=4)
    second = run("MotionDirectorTrain", model=loaded, clips=clips, recipe="images", run_name="look", steps=1, rank=4)
    assert Path(first[3]).name == "look" and Path(second[3]).name == "look_2"
    motion, appearance = second[0], second[1]
    assert appearance.kind == "spatial"
    with pytest.raises(ValueError, match="no motion LoRA.*did not train the motion path"):
        run("MotionDirectorApplyMotion", model=loaded, lora=motion)
    with pytest.raises(ValueError, match="no motion LoRA"):
        run("MotionDirectorSaveLora", lora=motion, name="x")


def test_train_with_appearance_images(loaded, models_dir):
    motion_clips, _ = run("MotionDirectorClipFromFrames", frames=inference_frames(4), prompt="a square moves",
                          num_frames=4, width=64, height=64)
    look, _ = run("MotionDirectorClipsFromImages", images=inference_frames(1, seed=3), prompt="a blue square",
                  width=64, height=64)
    motion, appearance, _, _ = run("MotionDirectorTrain", model=loaded, clips=motion_clips, appearance=look,
                                   run_name="mix", steps=1, rank=4)
    assert motion.kind == "temporal" and appearance.kind == "spatial"


def test_train_refuses_a_patched_model_and_bad_run_names(loaded, models_dir):
    clips, _ = run("MotionDirectorClipsFromImages", images=inference_frames(1), prompt="", width=64, height=64)
    patched = loaded.with_adapter(random_adapter(loaded.model, "temporal"), 1.0, "temporal")
    with pytest.raises(ValueError, match="straight to Train"):
        run("MotionDirectorTrain", model=patched, clips=clips, recipe="images", steps=1)
    for bad in ("../escape", "/tmp/abs", ""):
        with pytest.raises(ValueError, match="run name"):
            run("MotionDirectorTrain", model=loaded, clips=clips, recipe="images", steps=1, run_name=bad)


def test_save_lora_stays_in_its_folder(trained, models_dir):
    from comfyui_motiondirector_under_test.motion_lora.lora_file import read_metadata

    _, (motion, *_rest) = trained
    (path,) = run("MotionDirectorSaveLora", lora=motion, name="mine/dance")
    assert Path(path) == models_dir / "motion_director" / "mine" / "dance.safetensors"
    assert read_metadata(path)["kind"] == "temporal"
    for bad in ("../dance", "mine/../../dance", "/tmp/dance", "C:/dance", "", "a//b"):
        with pytest.raises(ValueError, match="name"):
            run("MotionDirectorSaveLora", lora=motion, name=bad)
    assert not (models_dir / "dance.safetensors").exists() and not Path("/tmp/dance.safetensors").exists()
    with pytest.raises(FileExistsError, match="overwrite"):
        run("MotionDirectorSaveLora", lora=motion, name="mine/dance")
    run("MotionDirectorSaveLora", lora=motion, name="mine/dance", overwrite=True)


def test_cancel_stops_training_and_saves_a_checkpoint(loaded, models_dir, monkeypatch, caplog):
    """A stand-in for ComfyUI's interrupt flag and progress bar (whose hook raises on Cancel, as main.py's does):
    Cancel is pressed once step 1 is reported."""
    state = {"interrupted": False, "unloaded": 0, "updates": [], "cancel_at": 1}

    class ProgressBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            state["updates"].append((value, total, preview))
            if value >= state["cancel_at"]:
                state["interrupted"] = True  # the user presses Cancel
            if state["interrupted"]:  # ComfyUI's progress hook raises then, and clears the flag
                state["interrupted"] = False
                raise mm.InterruptProcessingException()

    mm = types.SimpleNamespace(
        processing_interrupted=lambda: state["interrupted"],
        interrupt_current_processing=lambda value=True: state.update(interrupted=value),
        unload_all_models=lambda: state.update(unloaded=state["unloaded"] + 1),
        soft_empty_cache=lambda force=False: None,
        get_torch_device=lambda: torch.device("cpu"),
        InterruptProcessingException=type("InterruptProcessingException", (Exception,), {}),
    )
    comfy_pkg = types.ModuleType("comfy")
    comfy_pkg.__path__ = []
    comfy_pkg.model_management = mm
    comfy_pkg.utils = types.SimpleNamespace(ProgressBar=ProgressBar)
    monkeypatch.setitem(sys.modules, "comfy", comfy_pkg)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    monkeypatch.setitem(sys.modules, "comfy.utils", comfy_pkg.utils)

    clips, _ = run("MotionDirectorClipFromFrames", frames=inference_frames(4), prompt="", num_frames=4,
                   width=64, height=64)
    training = lib("training")

    preview_frames = synthetic_clip(4, 64, 64)
    # the validation sample itself is the trainer's to test; here only its way to the progress bar
    monkeypatch.setattr(training, "_preview", lambda *args: preview_frames)
    settings = dict(model=loaded, clips=clips, run_name="stopped", steps=50, rank=4, checkpoint_every=100,
                    validation_prompt="a square", validation_every=1)
    # Cancel ends the prompt as ComfyUI's own Cancel does (an interruption, not an error dialog) ...
    with caplog.at_level(logging.WARNING), pytest.raises(mm.InterruptProcessingException):
        run("MotionDirectorTrain", **settings)
    checkpoint = models_dir / "motion_director" / "stopped" / "checkpoint-000001"
    assert (checkpoint / "temporal.safetensors").is_file()
    # ... and the console says where the checkpoint went and how to continue
    logged = caplog.text
    assert "cancelled at step 1" in logged and str(checkpoint) in logged and "resume" in logged
    assert state["unloaded"] == 1 and state["updates"][0] == (1, 50, None)
    kind, image, size = state["updates"][1][2]  # the validation sample as the progress bar's live preview
    assert kind == "JPEG" and image.size == (64, 64) and size == 512
    assert state["interrupted"] is False  # the flag is cleared: the next prompt starts clean
    assert not list(_lora_layers(loaded))

    # resume continues that run from its checkpoint, in the same folder (not stopped_2)
    state["cancel_at"] = 10**9
    motion, _, _, run_folder = run("MotionDirectorTrain", **{**settings, "steps": 3, "validation_every": 0},
                                   resume=True)
    assert run_folder == str(checkpoint.parent) and not (checkpoint.parent.parent / "stopped_2").exists()
    history = json.loads((checkpoint.parent / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3]
    assert "step 3" in LAST_UI["MotionDirectorTrain"]["text"][0]
    with pytest.raises(ValueError, match="no run 'never_ran'.*stopped"):
        run("MotionDirectorTrain", **{**settings, "run_name": "never_ran"}, resume=True)

    # sampling stops too, the way ComfyUI's own samplers do
    state["interrupted"] = True
    with pytest.raises(mm.InterruptProcessingException):
        sample(loaded)


# --- apply and sample ------------------------------------------------------------------------


def test_apply_returns_new_handles_and_branches_sample_as_alone(loaded):
    motion = random_adapter(loaded.model, "temporal", seed=1)
    look = random_adapter(loaded.model, "spatial", seed=2)
    base_alone = sample(loaded)
    (moving,) = run("MotionDirectorApplyMotion", model=loaded, lora=motion, strength=1.0)
    (both,) = run("MotionDirectorApplyAppearance", model=moving, lora=look, strength=0.5)
    assert loaded.adapters == () and len(moving.adapters) == 1 and len(both.adapters) == 2
    assert moving.model is loaded.model  # one shared model, no copy
    moving_alone = sample(moving)
    both_out = sample(both)
    assert torch.equal(sample(loaded), base_alone)  # base branch unaffected by the other branches
    assert torch.equal(sample(moving), moving_alone)
    assert not torch.equal(moving_alone, base_alone) and not torch.equal(both_out, moving_alone)
    (off,) = run("MotionDirectorApplyMotion", model=loaded, lora=motion, strength=0.0)
    assert torch.equal(sample(off), base_alone)
    assert not list(_lora_layers(loaded))


def test_apply_refuses_wrong_path_and_wrong_model(loaded):
    from comfyui_motiondirector_under_test.motion_lora.adapters import LoraAdapter

    motion = random_adapter(loaded.model, "temporal")
    look = random_adapter(loaded.model, "spatial")
    with pytest.raises(ValueError, match="Apply Motion instead"):
        run("MotionDirectorApplyAppearance", model=loaded, lora=motion)
    with pytest.raises(ValueError, match="Apply Appearance instead"):
        run("MotionDirectorApplyMotion", model=loaded, lora=look)
    wide = {k: torch.zeros(v.shape[0], v.shape[1] * 2) if k.endswith("lora_A.weight") else v
            for k, v in motion.tensors.items()}
    other = LoraAdapter("temporal", 4, 4.0, wide, fingerprint="unet3d-0000000000000000")
    with pytest.raises(ValueError, match="another model"):
        run("MotionDirectorApplyMotion", model=loaded, lora=other)
    renamed = {k.replace("transformer_in", "transformer_elsewhere"): v for k, v in motion.tensors.items()}
    with pytest.raises(ValueError, match="another model"):
        run("MotionDirectorApplyMotion", model=loaded,
            lora=LoraAdapter("temporal", 4, 4.0, renamed, fingerprint="other-arch"))


def test_sample_outputs_frames_and_fps_and_noise_prior(loaded):
    frames, fps = run("MotionDirectorSample", model=loaded, prompt="a square", width=64, height=64, frames=4,
                      steps=1, fps=12.0)
    assert frames.shape == (4, 64, 64, 3) and frames.dtype == torch.float32 and 0 <= frames.min() <= frames.max() <= 1
    assert fps == 12.0 and isinstance(fps, float)
    with pytest.raises(ValueError, match="reference"):
        sample(loaded, noise_prior=0.5)
    reference = inference_frames(2)
    prior = sample(loaded, noise_prior=0.5, reference=reference, scheduler="euler", inversion_steps=2)
    assert prior.shape == (2, 64, 64, 3) and not torch.equal(prior, sample(loaded, scheduler="euler"))


def test_sample_animates_an_image_where_the_model_takes_one(loaded):
    """The optional image input reaches the sampler as the first frame (Wan 2.2 TI2V); other models say why not."""
    import dataclasses

    from comfyui_motiondirector_under_test.motion_lora.backbones import Wan
    from comfyui_motiondirector_under_test.motion_lora.patched_model import PatchedModel
    from comfyui_motiondirector_under_test.motion_lora.tiny_wan import build_tiny_wan

    picture = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(0))  # a ComfyUI IMAGE batch
    with pytest.raises(ValueError, match="do not take an image: image-to-video needs Wan 2.2 TI2V-5B"):
        sample(loaded, image=picture)
    ti2v = PatchedModel(dataclasses.replace(build_tiny_wan(seed=0), backbone=Wan(image_to_video=True)))
    options = dict(prompt="a car", width=32, height=32, frames=5, steps=2, cfg=1.0, scheduler="euler")
    plain, _ = run("MotionDirectorSample", model=ti2v, **options)
    animated, _ = run("MotionDirectorSample", model=ti2v, image=picture, **options)
    assert animated.shape == plain.shape == (5, 32, 32, 3) and not torch.equal(animated, plain)


# --- official checkpoints ---------------------------------------------------------------------


def test_load_official_checkpoint(loaded, models_dir):
    from comfyui_motiondirector_under_test.motion_lora.adapters import targets_for

    motion = random_adapter(loaded.model, "temporal", seed=5)
    listed = []  # official order: [up_0, down_0, up_1, down_1, ...] in the target order
    for target in targets_for(loaded.model.unet, loaded.model.backbone, "temporal"):
        listed += [motion.tensors[f"{target}.lora_B.weight"], motion.tensors[f"{target}.lora_A.weight"]]
    folder = models_dir / "motion_director" / "official" / "checkpoint-100"
    (folder / "temporal" / "lora").mkdir(parents=True)
    torch.save(listed, folder / "temporal" / "lora" / "100_unet.pt")
    names = spec_of("MotionDirectorLoadOfficialLora")["checkpoint"][0]
    assert names == ["official/checkpoint-100"]
    assert "official/checkpoint-100/temporal/lora/100_unet.pt" not in spec_of("MotionDirectorLoadLora")["lora_name"][0]
    (imported,) = run("MotionDirectorLoadOfficialLora", model=loaded, checkpoint="official/checkpoint-100",
                      kind="motion (temporal)")
    assert imported.kind == "temporal"
    assert all(torch.equal(imported.tensors[k], v) for k, v in motion.tensors.items())
    with pytest.raises(ValueError, match="spatial"):
        run("MotionDirectorLoadOfficialLora", model=loaded, checkpoint="official/checkpoint-100",
            kind="appearance (spatial)")


# --- loss curve ------------------------------------------------------------------------------


def test_loss_plot_draws_the_history():
    from comfyui_motiondirector_under_test.motion_lora.loss_plot import loss_series, render_loss_plot

    flat = [{"step": i + 1, "loss_temporal": 1.0 / (i + 1), "loss_spatial": 0.5} for i in range(20)]
    nested = [{"step": i + 1, "losses": {"temporal": 0.2 + 0.01 * i}} for i in range(20)]
    assert set(loss_series(flat)) == {"loss_temporal", "loss_spatial"}
    assert loss_series(flat)["loss_spatial"][3] == (4, 0.5)
    assert loss_series(nested)["temporal"][-1] == (20, pytest.approx(0.39))
    a, b, empty = render_loss_plot(flat), render_loss_plot(nested), render_loss_plot([])
    assert a.shape == b.shape == empty.shape == (1, 384, 768, 3)
    assert not torch.equal(a, b) and not torch.equal(a, empty)
    red = (a[0, :, :, 0] > 0.7) & (a[0, :, :, 1] < 0.35)  # the second series' colour is drawn
    assert red.sum() > 50


def test_train_widgets_override_the_recipe_only_when_set():
    from comfyui_motiondirector_under_test.motion_lora.training import TrainConfig

    overrides = sys.modules[f"{PACK_NAME}.nodes.train_node"].overrides
    assert overrides(steps=-1, spatial_lr=-1.0, train_spatial="recipe", spatial_per_clip="recipe") == {}
    chosen = overrides(steps=7, beta=0.0, temporal_lr=1e-4, train_temporal="off", spatial_per_clip="on")
    assert chosen == {"steps": 7, "beta": 0.0, "temporal_lr": 1e-4, "train_temporal": False, "spatial_per_clip": True}
    config = TrainConfig.from_recipe("multi-video", **chosen)
    assert (config.steps, config.beta, config.train_temporal, config.checkpoint_every) == (7, 0.0, False, 100)


def test_loss_plot_step_axis_has_distinct_whole_steps():
    from comfyui_motiondirector_under_test.motion_lora.loss_plot import step_ticks

    assert step_ticks(1, 4) == [1, 2, 3, 4]  # a short run: every step once (was 1, 2, 2, 3, 4)
    assert step_ticks(1, 2) == [1, 2] and step_ticks(3, 3) == [3]
    for first, last in ((1, 7), (1, 150), (1, 400), (51, 150)):
        ticks = step_ticks(first, last)
        assert ticks == sorted(set(ticks)) and len(ticks) <= 6 and ticks[0] >= first and ticks[-1] <= last
    assert step_ticks(1, 150) == [1, 50, 100, 150]


def test_save_lora_reports_where_it_wrote_and_load_lora_lists_finals_first(loaded, models_dir):
    motion = random_adapter(loaded.model, "temporal")
    (path,) = run("MotionDirectorSaveLora", lora=motion, name="zz_saved")
    assert LAST_UI["MotionDirectorSaveLora"] == {"text": [f"saved to {path}"]}
    run("MotionDirectorSaveLora", lora=motion, name="aa_run/checkpoint-000050/temporal")
    run("MotionDirectorSaveLora", lora=motion, name="aa_run/motion")
    names = spec_of("MotionDirectorLoadLora")["lora_name"][0]
    assert names == ["aa_run/motion.safetensors", "zz_saved.safetensors",
                     "aa_run/checkpoint-000050/temporal.safetensors"]


def test_node_errors_name_a_module_not_a_file_path():
    """ComfyUI shows `<module>.<class>`; inside custom_nodes the module would be the folder's full path."""
    with pytest.raises(ValueError) as info:
        run("MotionDirectorSaveLora", lora=object(), name="../out")
    assert type(info.value).__module__ == "nodes.lora_folder" and type(info.value).__qualname__ == "LoraNameError"


def test_sample_inputs_are_copied_once_and_never_over_a_users_file(tmp_path):
    examples = sys.modules[f"{PACK_NAME}.nodes.examples"]
    (tmp_path / "motiondirector_car_turn.mp4").write_bytes(b"the user's own")
    copied = examples.copy_examples(tmp_path)
    names = {p.relative_to(tmp_path).as_posix() for p in copied}
    assert "motiondirector_terracotta_warrior.jpg" in names and "motiondirector_clips/car_turn.mp4" in names
    assert "motiondirector_car_turn.mp4" not in names and "SOURCE.md" not in names
    assert (tmp_path / "motiondirector_car_turn.mp4").read_bytes() == b"the user's own"
    assert examples.copy_examples(tmp_path) == []  # nothing left to copy
    assert examples.copy_examples() == []  # without ComfyUI: nothing is written anywhere


def test_a_second_copy_of_the_pack_loads_no_nodes_and_names_both_folders(tmp_path):
    copy = tmp_path / "MotionDirector-copy"
    copy.symlink_to(ROOT, target_is_directory=True)
    code = textwrap.dedent(f"""
        import importlib.util, logging, sys
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        def load(name, folder):
            spec = importlib.util.spec_from_file_location(name, folder + "/__init__.py", submodule_search_locations=[folder])
            module = importlib.util.module_from_spec(spec); sys.modules[name] = module; spec.loader.exec_module(module)
            return module
        first = load("/a/custom_nodes/first", {str(ROOT)!r})
        second = load("/b/custom_nodes/second", {str(copy)!r})
        print(len(first.NODE_CLASS_MAPPINGS), len(second.NODE_CLASS_MAPPINGS), second.WEB_DIRECTORY)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    first, second, web = out.stdout.split()
    assert int(first) == len(NODES) and int(second) == 0 and web == "None"
    assert "installed twice" in out.stderr and str(ROOT) in out.stderr and str(copy) in out.stderr


def test_the_pack_file_imported_as_a_plain_module_registers_nothing_and_does_not_fail():
    """pytest imports a folder's `__init__.py` as a plain module `__init__` when the folder name is no identifier
    (a clone in `comfyui-motiondirector/`); relative imports would fail there, so the pack registers nothing."""
    spec = importlib.util.spec_from_file_location("__init__", ROOT / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS == {} and module.WEB_DIRECTORY is None
