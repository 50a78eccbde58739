"""The toy world renders exactly, and its metrics separate a copy from a still, a reversed or a recoloured clip."""

import pytest
import torch

from motion_lora.toyworld import metrics
from motion_lora.toyworld.world import BACKGROUNDS, COLOURS, HELD_OUT, MOTIONS, SEEN, SHAPES, offsets, render


def test_rendering_is_exact_and_seeded():
    a, b = render("red", "circle", "zigzag", "gray", seed=3), render("red", "circle", "zigzag", "gray", seed=3)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.centres, b.centres)
    assert not torch.equal(a.frames, render("red", "circle", "zigzag", "gray", seed=4).frames)
    assert a.frames.shape == (8, 32, 32, 3)
    assert a.prompt == "a red circle moving in a zig-zag on a gray background"
    assert set(SEEN).isdisjoint(HELD_OUT)


@pytest.mark.parametrize("motion", list(MOTIONS))
def test_objects_stay_inside_the_frame(motion):
    for seed in range(5):
        clip = render("blue", "triangle", motion, "black", seed=seed)
        assert (clip.centres >= 4.5).all() and (clip.centres <= 32 - 4.5).all()
        assert torch.allclose(clip.centres - clip.centres[0], offsets(motion), atol=1e-4)


@pytest.mark.parametrize("motion", list(MOTIONS))
def test_every_motion_is_staged_near_the_centre_of_its_path(motion):
    """Starts lie within JITTER of the start that centres the path, not anywhere it fits: a motion word then
    means one recognisable path, which a CPU-sized model can learn (see `world.start_position`)."""
    from motion_lora.toyworld.world import start_range

    centred = torch.tensor([(lo + hi) / 2 for lo, hi in start_range(motion)])
    starts = torch.stack([render("red", "square", motion, "gray", seed=seed).centres[0] for seed in range(40)])
    assert ((starts - centred).abs() <= 2.0 + 1e-4).all()  # the README's "within 2 pixels"
    assert (starts.std(dim=0) > 0.5).all()  # still drawn from the seed, in both axes


def test_unknown_attributes_are_named():
    with pytest.raises(ValueError, match="unknown colour 'purple'"):
        render("purple", "circle", "left", "gray")
    with pytest.raises(ValueError, match="unknown motion"):
        offsets("spiral")


def test_tracking_recovers_the_ground_truth():
    for colour in COLOURS:
        for shape in SHAPES:
            for background in BACKGROUNDS:
                clip = render(colour, shape, "circle", background, seed=1)
                t = metrics.track(clip.frames)
                assert (t.colour, t.shape, t.background) == (colour, shape, background)
                # displacements are exact up to pixel aliasing
                assert (t.displacements - (clip.centres[1:] - clip.centres[:-1])).abs().max() < 1.0
    for motion in SEEN:
        assert metrics.track(render("red", "square", motion, "gray", seed=2).frames).motion == motion


@pytest.mark.parametrize("motion", list(HELD_OUT) + ["left", "up"])
def test_motion_fidelity_separates_copy_still_and_reversed(motion):
    ref = render("red", "circle", motion, "gray", seed=0)
    other_object = render("green", "square", motion, "black", seed=7)  # same motion, other look and start
    still = render("red", "circle", "still", "gray", seed=0)
    assert metrics.motion_fidelity(ref.frames, ref.frames) == pytest.approx(1.0)
    assert metrics.motion_fidelity(ref.frames, other_object.frames) > 0.95
    assert metrics.motion_fidelity(ref.frames, still.frames) == pytest.approx(0.0, abs=1e-6)
    reversed_motion = ref.frames.flip(0)  # time reversed: every displacement negated (and reordered)
    if motion not in ("bounce", "circle", "speedup"):  # symmetric or order-dependent paths: checked below
        assert metrics.motion_fidelity(ref.frames, reversed_motion) < -0.95
    mirrored = ref.frames.flip(2)  # left-right mirror: horizontal displacements negated
    if motion in ("left", "speedup"):  # horizontal motions: the mirror image moves the other way
        assert metrics.motion_fidelity(ref.frames, mirrored) < -0.95


def test_other_motions_score_lower_than_the_same_motion():
    ref = render("red", "circle", "zigzag", "gray", seed=0)
    same = metrics.motion_fidelity(ref.frames, render("blue", "triangle", "zigzag", "black", seed=5).frames)
    for motion in MOTIONS:
        if motion != "zigzag":
            other = metrics.motion_fidelity(ref.frames, render("blue", "triangle", motion, "black", seed=5).frames)
            assert other < same - 0.2, motion


def test_prompt_fidelity_and_leakage():
    clip = render("red", "circle", "left", "gray", seed=0)
    right = "a red circle moving left on a gray background"
    assert metrics.prompt_fidelity(clip.frames, right) == {"colour": 1.0, "shape": 1.0, "background": 1.0,
                                                           "score": 1.0}
    wrong_colour = metrics.prompt_fidelity(clip.frames, "a blue circle moving left on a gray background")
    assert wrong_colour["colour"] == 0.0 and wrong_colour["score"] == pytest.approx(2 / 3)
    # trained on the red circle on gray, asked for a blue square on black
    asked = "a blue square moving left on a black background"
    assert metrics.leakage(clip.frames, asked, right) == 1.0  # the red circle on gray came out: all leaked
    assert metrics.leakage(render("blue", "square", "left", "black").frames, asked, right) == 0.0
    assert metrics.leakage(clip.frames, right, right) is None  # nothing asked differently: nothing can leak
    half = render("blue", "circle", "left", "black").frames  # the circle leaked, colour and background did not
    assert metrics.leakage(half, asked, right) == pytest.approx(1 / 3)


def test_temporal_consistency():
    clip = render("yellow", "triangle", "bounce", "black", seed=0)
    assert metrics.temporal_consistency(clip.frames) == 1.0
    flicker = clip.frames.clone()
    flicker[1::2] = render("yellow", "triangle", "bounce", "black", seed=0).frames[0, 0, 0]  # object gone
    assert metrics.temporal_consistency(flicker) <= 0.5
    changing = torch.cat([clip.frames[:4], render("red", "square", "bounce", "black", seed=0).frames[4:]])
    assert metrics.temporal_consistency(changing) <= 0.5


def test_score_and_bad_input():
    clip = render("red", "circle", "zigzag", "gray", seed=0)
    s = metrics.score(clip.frames, clip.frames, clip.prompt, clip.prompt)
    assert s["motion_fidelity"] == pytest.approx(1.0) and s["prompt_fidelity"] == 1.0 and s["leakage"] is None
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\]"):
        metrics.track(torch.zeros(8, 32, 32))


def test_tokenizer_spells_world_words_as_single_tokens():
    from motion_lora.toyworld.model import build_tokenizer, world_words

    tokenizer = build_tokenizer()
    assert all(len(tokenizer.tokenize(w)) == 1 for w in world_words())
    longest = "a yellow triangle moving in a zig-zag on a black background"
    assert len(tokenizer(longest).input_ids) <= tokenizer.model_max_length


def test_cli_renders_and_scores(tmp_path, capsys):
    import json

    from motion_lora.cli import main

    ref, other = tmp_path / "ref.gif", tmp_path / "still.mp4"
    assert main(["toyworld", "render", "--motion", "zigzag", "--output", str(ref)]) == 0
    assert main(["toyworld", "render", "--motion", "still", "--colour", "blue", "--output", str(other)]) == 0
    capsys.readouterr()
    prompt = "a red circle moving in a zig-zag on a gray background"
    assert main(["metrics", str(ref), str(ref), "--prompt", prompt]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["motion_fidelity"] == pytest.approx(1.0) and same["prompt_fidelity"] == 1.0
    assert main(["metrics", str(ref), str(other), "--prompt", prompt, "--training-prompt", prompt]) == 0
    still = json.loads(capsys.readouterr().out)
    assert still["motion_fidelity"] < 0.1 and still["prompt_fidelity"] < 1.0
    assert main(["metrics", str(ref), str(tmp_path / "missing.gif"), "--prompt", prompt]) == 2
    with pytest.raises(ValueError, match="same length"):
        metrics.motion_fidelity(torch.zeros(8, 32, 32, 3), torch.zeros(1, 32, 32, 3))


def test_prompt_following_scores_a_model_that_renders_exactly_what_it_is_asked_as_perfect():
    """The base-model score counts per attribute over every seen prompt; the Wan toy model reuses it
    with its own clip generator, so it is tested here through that `generate` hook."""
    from motion_lora.toyworld.evaluate import prompt_following, seen_prompts
    from motion_lora.toyworld.world import prompt_for

    asked = {prompt_for(*p): p for p in seen_prompts()}
    exact = lambda model, prompt, seed=0: render(*asked[prompt], seed=seed).frames
    score = prompt_following(None, seeds=(0,), generate=exact)
    assert score["samples"] == len(asked) and score["all"] == 1.0 and score["motion"] == 1.0
    still = lambda model, prompt, seed=0: render(*asked[prompt][:2], "still", asked[prompt][3], seed=seed).frames
    assert prompt_following(None, generate=still)["motion"] < 0.5


def test_pretraining_runs_end_to_end_and_writes_a_loadable_model(tmp_path):
    """Two steps of each phase: the command's code path works and the folder loads (the shipped weights come
    from the same function at full length)."""
    from motion_lora.model import load_model
    from motion_lora.toyworld.pretrain import PretrainConfig, pretrain

    config = PretrainConfig(vae_steps=2, vae_batch=2, unet_steps=2, batch=2, save_every=1)
    out = pretrain(tmp_path / "toy", config, log=tmp_path / "log.txt")
    model = load_model(out, dtype="fp32")
    assert model.vae.config.scaling_factor == 1.0  # the normalisation lives in the VAE's weights
    assert "unet step 2/2" in (tmp_path / "log.txt").read_text()


def test_latent_normalisation_is_exact_and_gives_unit_latents():
    import torch

    from motion_lora.toyworld.model import build_toy_model
    from motion_lora.toyworld.pretrain import normalise_latents

    vae = build_toy_model().vae
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        before = vae.encode(x).latent_dist
        recon = vae.decode(before.mean).sample
        mu, std = before.mean.mean(dim=(0, 2, 3)), before.mean.std(dim=(0, 2, 3))
        normalise_latents(vae, mu, std)
        after = vae.encode(x).latent_dist
        torch.testing.assert_close(after.mean, (before.mean - mu.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1),
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(after.std, before.std / std.view(1, -1, 1, 1), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(vae.decode(after.mean).sample, recon, rtol=1e-4, atol=1e-5)


def test_ablation_bench_plain_lora_loop_trains(tiny_model):
    """The bench's straightforward baseline (one LoRA on every attention and feed-forward linear) runs and
    changes the model: the bench would otherwise only be tried when someone runs it for an hour."""
    import torch

    from bench.bench_ablation import plain_targets, train_plain
    from motion_lora import adapters
    from motion_lora.toyworld.world import render

    clip = render("red", "square", "zigzag", "gray", frames=4, size=32).as_clip()
    targets = plain_targets(tiny_model.unet)
    assert any("attn1" in t for t in targets) and any("ff" in t for t in targets)
    assert any("temp_attentions" in t or "transformer_in" in t for t in targets)
    name = train_plain(tiny_model, [clip], steps=2, rank=2, lr=1e-2, seed=0)
    tensors = adapters.get_tensors(tiny_model.unet, name)
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in tensors.items())
    adapters.remove(tiny_model.unet, name)


def test_ablation_bench_configurations_set_what_their_names_say(monkeypatch):
    """Each bench configuration reaches the trainer as its name says: beta, whether the spatial path trains, and
    where LoRA dropout sits ("-output": the official placement; otherwise ours, on the rank values)."""
    import motion_lora.training as training
    from bench.bench_ablation import CONFIGS, train_md

    seen = {}
    monkeypatch.setattr(training, "train", lambda model, clips, config, appearance=None: config)
    for name in [c for c in CONFIGS if c not in ("base", "plain")]:
        seen[name] = train_md(None, [object()], name, steps=1, rank=2, lr=1e-3, seed=0)
    assert (seen["temporal"].beta, seen["temporal"].train_spatial) == (0.0, False)
    assert (seen["dual-b0"].beta, seen["dual-b0"].train_spatial) == (0.0, True)
    assert [seen[f"md-b{b}"].beta for b in ("0.5", "1", "2")] == [0.5, 1.0, 2.0]
    assert seen["md-b1-output"].beta == 1.0 and seen["md-b1-output"].dropout_placement == "output"
    assert {seen[n].dropout_placement for n in seen if n != "md-b1-output"} == {"rank"}


def test_ablation_bench_compact_table_has_a_row_per_configuration_and_a_column_per_motion():
    from bench.bench_ablation import compact

    cell = lambda mf, pf, lk: {"motion_fidelity": mf, "motion_fidelity_sd": 0.1, "prompt_fidelity": pf,
                               "prompt_fidelity_sd": 0.0, "leakage": lk, "leakage_sd": 0.0}
    results = {"_settings": {}, "zigzag/1": {"base": cell(0.0, 1.0, 0.0), "md-b1": cell(0.5, 0.5, 0.2)},
               "circle/1": {"base": cell(0.2, 0.5, 0.1)}}
    lines = compact(results).splitlines()
    assert lines[0].startswith("| one clip | zigzag: motion fidelity | circle: motion fidelity |")
    assert lines[2] == "| base | 0.00 ± 0.10 | 0.20 ± 0.10 | 0.75 | 0.05 |"
    assert lines[3] == "| md-b1 | 0.50 ± 0.10 | - | 0.50 | 0.20 |"


def test_the_untrained_text_encoder_starts_with_words_far_apart():
    """Word embeddings start far apart, as a pretrained CLIP's are. From CLIP's std 0.02 (words 0.15 apart)
    pretraining grew the colour words and left the motion words where they were, so the trained encoder's
    outputs for "left" and "right" ended 0.2 apart against 2 to 6 for two colours and the UNet never used
    the motion word (the shipped model of 2026-11 followed the seed's noise, not the motion word)."""
    from motion_lora.toyworld.model import build_toy_model
    from motion_lora.toyworld.world import SEEN

    model = build_toy_model()
    words = sorted({w for phrase in SEEN.values() for w in phrase.split()} - {"moving"})
    ids = [model.tokenizer.convert_tokens_to_ids(w + "</w>") for w in words]
    vectors = model.text_encoder.get_input_embeddings().weight[ids].detach()
    gaps = torch.cdist(vectors, vectors) + torch.eye(len(ids)) * 1e9
    assert gaps.min() > 2.0, (words, gaps.min())
    with torch.no_grad():
        h = model.encode_prompt(["a red circle moving left on a gray background",
                                 "a red circle moving right on a gray background"])
    assert (h[0] - h[1]).norm(dim=-1).max() > 3.0


def test_pretraining_weighs_the_noisiest_steps_by_their_clean_clip_error():
    """The high-noise floor: the clean-clip error of every timestep weighs at least `floor`, so the epsilon-loss
    weight is 1 / SNR where SNR < 1 (213 at t = 999); Min-SNR's clipping at gamma stays for the clean end."""
    from diffusers import DDPMScheduler

    from motion_lora.tiny import SCHEDULER_CONFIG
    from motion_lora.toyworld.pretrain import _snr_weight

    scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    t = torch.tensor([0, 200, 600, 999])
    alpha = scheduler.alphas_cumprod[t]
    snr = alpha / (1 - alpha)
    torch.testing.assert_close(_snr_weight(scheduler, t, 5.0, 1.0), snr.clamp(1.0, 5.0) / snr)
    torch.testing.assert_close(_snr_weight(scheduler, t, 5.0, 0.0), snr.clamp(max=5.0) / snr)
    assert _snr_weight(scheduler, t, 5.0, 1.0)[-1] > 100 and _snr_weight(scheduler, t, 5.0, 0.0)[-1] == 1.0
    from motion_lora.toyworld.pretrain import PretrainConfig

    assert PretrainConfig().high_noise_floor == 1.0  # the shipped weights' setting (pretrain.json)
