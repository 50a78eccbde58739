"""Data-parallel training: two CPU processes (gloo) end with identical adapters, and only rank 0 writes."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _worker(rank: int, tmp: str) -> None:
    import sys
    from pathlib import Path

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import synthetic_clip
    from motion_lora.data import Clip
    from motion_lora.tiny import build_tiny_model
    from motion_lora.training import TrainCallbacks, TrainConfig, train

    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=WORLD)
    try:
        model = build_tiny_model(seed=0)
        clips = [Clip(synthetic_clip(4, 32, 32, seed=s), "a car", source=f"memory-{s}") for s in (0, 1)]
        steps = []
        config = TrainConfig(steps=3, rank=4, checkpoint_every=2, gradient_checkpointing=False, spatial_per_clip=True,
                             spatial_mask_prob=0.5)
        result = train(model, clips, config, run_dir=Path(tmp) / f"run{rank}",
                       callbacks=TrainCallbacks(on_step=lambda info: steps.append(info.step)))
        tensors = {f"temporal/{k}": v for k, v in result.temporal.tensors.items()}
        for n, adapter in enumerate(result.spatial):
            tensors.update({f"spatial{n}/{k}": v for k, v in adapter.tensors.items()})
        torch.save({"tensors": tensors, "history": result.history, "steps": steps}, f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_processes_keep_identical_adapters_and_only_rank0_writes(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    out = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    a, b = out[0]["tensors"], out[1]["tensors"]
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)  # the adapters did train
    assert out[0]["history"] != out[1]["history"]  # each rank drew its own noise and timesteps
    assert out[0]["steps"] == [1, 2, 3] and out[1]["steps"] == []  # callbacks on rank 0 only
    run0, run1 = tmp_path / "run0", tmp_path / "run1"
    assert (run0 / "motion.safetensors").is_file() and (run0 / "checkpoint-000002" / "training_state.pt").is_file()
    assert not run1.exists() or not any(run1.iterdir())
    state = torch.load(run0 / "checkpoint-000002" / "training_state.pt", weights_only=True)
    assert state["world_size"] == WORLD and len(state["rng"]) == WORLD
