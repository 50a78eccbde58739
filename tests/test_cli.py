"""The command line: train, sample, info and demo on the tiny model, as a user would call them."""

from __future__ import annotations

import json

import pytest

from conftest import synthetic_clip
from motion_lora.cli import main
from motion_lora.lora_file import read_metadata
from motion_lora.video_io import read_video, write_video

SMALL = ["--frames", "4", "--width", "64", "--height", "64"]


@pytest.fixture()
def clip_file(tmp_path):
    return write_video(synthetic_clip(frames=10), tmp_path / "clip.mp4", fps=8)


def test_train_then_sample_with_the_motion_lora(tmp_path, clip_file, capsys):
    run = tmp_path / "run"
    code = main(["train", "--model", "tiny", "--data", str(clip_file), "--prompt", "a square moves",
                 "--output", str(run), "--steps", "2", "--rank", "4", "--checkpoint-every", "1", *SMALL])
    assert code == 0
    motion = run / "motion.safetensors"
    meta = read_metadata(motion)
    assert meta["kind"] == "temporal" and meta["rank"] == "4"
    assert meta["training"]["steps"] == 2 and meta["training"]["prompts"] == ["a square moves"]
    assert (run / "appearance.safetensors").is_file()

    out = tmp_path / "sample.mp4"
    code = main(["sample", "--model", "tiny", "--prompt", "a dog", "--motion", str(motion), "--steps", "2",
                 "--frames", "4", "--width", "64", "--height", "64", "--output", str(out)])
    assert code == 0
    frames, _ = read_video(out)
    assert frames.shape == (4, 64, 64, 3)

    capsys.readouterr()
    assert main(["info", str(motion)]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{"):])["kind"] == "temporal"


def test_train_reads_a_yaml_config_and_flags_override_it(tmp_path, clip_file):
    config = tmp_path / "run.yaml"
    config.write_text(f"model: tiny\ndata: {clip_file}\nprompt: from the file\nrecipe: single-video\n"
                      f"steps: 5\nrank: 2\nnum_frames: 4\nwidth: 64\nheight: 64\noutput: {tmp_path / 'run'}\n")
    assert main(["train", "--config", str(config), "--steps", "1"]) == 0
    settings = json.loads((tmp_path / "run" / "config.json").read_text())
    assert settings["steps"] == 1 and settings["rank"] == 2 and settings["prompts"] == ["from the file"]


def test_train_refuses_an_existing_run_folder(tmp_path, clip_file, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "motion.safetensors").write_bytes(b"precious")
    code = main(["train", "--model", "tiny", "--data", str(clip_file), "--output", str(run), "--steps", "1", *SMALL])
    assert code == 2
    captured = capsys.readouterr()
    assert str(run) in captured.err
    assert "%|" not in captured.err + captured.out and "0/1" not in captured.err + captured.out, \
        f"a progress bar was drawn before the refusal: {captured.err!r}"
    assert (run / "motion.safetensors").read_bytes() == b"precious"


def test_train_takes_the_memory_settings_for_big_wan_models(tmp_path, clip_file, capsys, monkeypatch):
    """--blocks-to-swap and --offload-activations reach the trainer (recorded in the run's settings), and
    swapping without checkpointing is refused before training."""
    from motion_lora import training

    seen = []
    original = training.train

    def spy(model, clips, config, **kwargs):
        seen.append(config)
        return original(model, clips, config, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    run = tmp_path / "run"
    assert main(["train", "--model", "tiny-wan", "--data", str(clip_file), "--prompt", "a square moves",
                 "--output", str(run), "--steps", "1", "--rank", "2", "--blocks-to-swap", "1",
                 "--offload-activations", "--frames", "5", "--width", "32", "--height", "32"]) == 0
    assert (seen[-1].blocks_to_swap, seen[-1].offload_activations) == (1, True)
    assert (run / "motion.safetensors").is_file()
    assert main(["train", "--model", "tiny-wan", "--data", str(clip_file), "--output", str(tmp_path / "r2"),
                 "--steps", "1", "--blocks-to-swap", "1", "--gradient-checkpointing", "off", "--frames", "5",
                 "--width", "32", "--height", "32"]) == 2
    assert "needs gradient_checkpointing on" in capsys.readouterr().err


def test_sample_refuses_a_spatial_lora_as_motion(tmp_path, clip_file):
    run = tmp_path / "run"
    assert main(["train", "--model", "tiny", "--data", str(clip_file), "--output", str(run), "--steps", "1",
                 "--rank", "2", *SMALL]) == 0
    with pytest.raises(SystemExit, match="temporal"):
        main(["sample", "--model", "tiny", "--prompt", "x", "--motion", str(run / "appearance.safetensors"),
              "--output", str(tmp_path / "x.mp4")])


def test_bad_data_path_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "--model", "tiny", "--data", str(tmp_path / "missing.mp4"), "--output",
                 str(tmp_path / "run"), "--steps", "1"])
    assert code == 2
    assert "missing.mp4" in capsys.readouterr().err


def test_demo_trains_and_writes_a_video(tmp_path, clip_file):
    from motion_lora.demo import run_demo

    paths = run_demo(tmp_path / "demo", clip=clip_file, steps=2)
    frames, _ = read_video(paths["video"])
    assert frames.shape[0] == 8 and frames.shape[-1] == 3
    assert read_metadata(paths["motion"])["kind"] == "temporal"


@pytest.mark.parametrize("name, text, message", [("bad.yaml", "model: [tiny\n", "not valid YAML"),
                                                 ("list.yaml", "- tiny\n", "must hold a mapping"),
                                                 ("bad.json", "{model", "not valid JSON")])
def test_bad_config_file_is_a_clear_error(tmp_path, capsys, name, text, message):
    config = tmp_path / name
    config.write_text(text)
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert name in err and message in err


def test_the_sampling_bar_counts_the_noise_prior_inversion_too(tmp_path, clip_file, monkeypatch):
    """With the noise prior the sampler reports inversion + sampling steps; the bar's total follows it, so it
    ends full instead of at 26 of 2."""
    from motion_lora import cli

    seen = []
    original = cli._Progress.update

    def update(self, step, text="", total=None):
        original(self, step, text, total)
        seen.append((step, self.total))

    monkeypatch.setattr(cli._Progress, "update", update)
    out = tmp_path / "prior.mp4"
    assert main(["sample", "--model", "tiny-wan", "--prompt", "a car", "--steps", "2", "--noise-prior", "0.5",
                 "--reference", str(clip_file), "--output", str(out), "--frames", "5", "--width", "32",
                 "--height", "32"]) == 0
    assert out.is_file() and seen[-1] == (52, 52)  # 50 inversion steps (the default) + 2


def test_sample_animates_an_image_on_a_ti2v_model_and_says_which_models_cannot(tmp_path, capsys):
    import dataclasses

    import numpy as np
    from PIL import Image

    from motion_lora.backbones import Wan
    from motion_lora.tiny_wan import build_tiny_wan

    picture = tmp_path / "picture.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(picture)
    common = ["--prompt", "a car", "--steps", "2", "--frames", "5", "--width", "32", "--height", "32",
              "--image", str(picture)]
    assert main(["sample", "--model", "tiny-wan", *common, "--output", str(tmp_path / "no.mp4")]) == 2
    assert "does not take an image: image-to-video needs Wan 2.2 TI2V-5B" in capsys.readouterr().err
    tiny = build_tiny_wan(seed=0)
    folder = dataclasses.replace(tiny, backbone=Wan(image_to_video=True)).save(tmp_path / "ti2v")
    out = tmp_path / "animated.mp4"
    assert main(["sample", "--model", str(folder), "--dtype", "fp32", *common, "--output", str(out)]) == 0
    assert out.is_file()


def test_sample_refuses_an_existing_output_before_sampling(tmp_path, capsys):
    out = tmp_path / "video.mp4"
    out.write_bytes(b"precious")
    assert main(["sample", "--model", "tiny", "--prompt", "x", "--output", str(out)]) == 2
    assert "video.mp4 already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"


def test_import_official_writes_both_paths_and_refuses_to_overwrite_any(tmp_path, capsys):
    import torch

    from motion_lora.tiny import build_tiny_model

    model = build_tiny_model(seed=0)
    checkpoint = tmp_path / "checkpoint-150"
    for kind, targets in (("spatial", model.backbone.spatial_targets(model.unet)),
                          ("temporal", model.backbone.temporal_targets(model.unet))):
        modules = dict(model.unet.named_modules())
        pairs = []
        for name in targets:
            pairs += [torch.randn(modules[name].out_features, 2), torch.randn(2, modules[name].in_features)]
        (checkpoint / kind / "lora").mkdir(parents=True)
        torch.save(pairs, checkpoint / kind / "lora" / "150_unet.pt")
    out = tmp_path / "imported"
    assert main(["import-official", str(checkpoint), "--model", "tiny", "--output", str(out)]) == 0
    assert read_metadata(out / "spatial.safetensors")["rank"] == "2"
    assert read_metadata(out / "temporal.safetensors")["kind"] == "temporal"

    (out / "spatial.safetensors").unlink()
    temporal_before = (out / "temporal.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["import-official", str(checkpoint), "--model", "tiny", "--output", str(out)]) == 2
    assert "temporal.safetensors" in capsys.readouterr().err
    assert not (out / "spatial.safetensors").exists()  # refused before writing anything
    assert (out / "temporal.safetensors").read_bytes() == temporal_before


def test_ctrl_c_during_training_saves_a_checkpoint_and_says_how_to_resume(tmp_path, clip_file, capsys, monkeypatch):
    import os
    import signal

    from motion_lora import cli

    original = cli._Progress.update

    def update(self, step, text=""):
        original(self, step, text)
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C during step 2

    monkeypatch.setattr(cli._Progress, "update", update)
    run = tmp_path / "run"
    code = main(["train", "--model", "tiny", "--data", str(clip_file), "--output", str(run), "--steps", "50",
                 "--rank", "2", "--checkpoint-every", "100", *SMALL])
    assert code == 130
    err = capsys.readouterr().err
    assert "cancelled at step 2" in err and "--resume" in err
    assert (run / "checkpoint-000002" / "training_state.pt").is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_diverging_run_exits_with_the_step_and_the_setting_to_lower(tmp_path, clip_file, capsys):
    run = tmp_path / "run"
    code = main(["train", "--model", "tiny", "--data", str(clip_file), "--output", str(run), "--steps", "10",
                 "--rank", "4", "--temporal-lr", "1e6", "--checkpoint-every", "1", "--dropout-placement", "output",
                 "--frames", "4", "--width", "32", "--height", "32"])
    err = capsys.readouterr().err
    assert code == 1 and "error: training diverged at step" in err and "temporal_lr = 1e+06" in err, err
    assert not (run / "motion.safetensors").exists() and list(run.glob("checkpoint-*"))
    assert json.loads((run / "config.json").read_text())["dropout_placement"] == "output"
