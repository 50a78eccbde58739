"""A training run's folder: settings, loss history, resumable checkpoints and the final adapters.

Layout::

    run_dir/config.json            settings of the run (and the clips it learnt from)
    run_dir/history.json           one dict of losses per step
    run_dir/checkpoint-000050/     temporal.safetensors, spatial.safetensors (or spatial_0, ...),
                                   training_state.pt (optimizers, RNG states, step)
    run_dir/motion.safetensors     the final temporal adapter
    run_dir/appearance.safetensors the final spatial adapter (appearance_0, ... with one per clip)

Every file is written to a temporary name and renamed, and a checkpoint folder is
assembled under a temporary name too, so a crash never leaves a half-written file or
checkpoint under a real name. An adapter with a NaN or infinite weight is never written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import torch

from .adapters import LoraAdapter
from .lora_file import load_adapter, save_adapter

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "training_state.pt"


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked; the message names the folder and the fix."""


def prepare(run_dir: str | Path, resume: bool) -> Path:
    """Check that `run_dir` may be used: a new or empty folder, or one to resume. Never overwrites."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} is a file: choose another run name")
    if not resume and run_dir.is_dir() and any(run_dir.iterdir()):
        raise RunFolderError(
            f"run folder {run_dir} already holds a training run: choose another run name, "
            "or resume that run to continue it"
        )
    return run_dir


@contextlib.contextmanager
def writing(run_dir: Path, last_good: Path | None):
    """Turn a failed write into the folder (permissions, full disk, folder gone) into a RunFolderError.

    The message names the folder and the last complete checkpoint, which a failed write never
    touches (checkpoints are assembled under a temporary name).
    """
    try:
        yield
    except OSError as error:
        reason = error.strerror or str(error)
        kept = (f"the last good checkpoint, {last_good}, is intact" if last_good is not None
                else "no checkpoint had been written yet")
        raise RunFolderError(
            f"cannot write to the run folder {run_dir} ({reason}: {error.filename or run_dir}); {kept}. "
            "Make the folder writable (or free disk space) and resume the run."
        ) from error


def _refuse_non_finite(adapters: dict[str, LoraAdapter]) -> None:
    for name, adapter in adapters.items():
        bad = [k for k, v in adapter.tensors.items() if not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"adapter {name} holds NaN or infinite weights ({bad[0]}): not written")


def write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:06d}"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    found = [p for p in run_dir.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and (p / STATE_FILE).is_file()
             and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return max(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]), default=None)


def save_checkpoint(run_dir: Path, step: int, adapters: dict[str, LoraAdapter], state: dict) -> Path:
    """Write `checkpoint-<step>/` with one `<name>.safetensors` per adapter and `training_state.pt`."""
    _refuse_non_finite(adapters)
    final = run_dir / checkpoint_name(step)
    tmp = run_dir / (final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, adapter in adapters.items():
        save_adapter(adapter, tmp / f"{name}.safetensors")
    torch.save(state, tmp / STATE_FILE)
    if final.exists():  # the same step saved again (a resumed run that had reached it): replace it
        old = run_dir / (final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    return final


def load_checkpoint(checkpoint: Path) -> tuple[dict[str, LoraAdapter], dict]:
    """(adapters by name, training state) of a checkpoint folder; the state is unpickled weights-only."""
    adapters = {p.stem: load_adapter(p) for p in sorted(checkpoint.glob("*.safetensors"))}
    state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
    return adapters, state


def save_final(run_dir: Path, temporal: LoraAdapter | None, spatial: list[LoraAdapter]) -> list[Path]:
    """Write motion.safetensors and appearance.safetensors (appearance_<k> with several)."""
    _refuse_non_finite({"motion": temporal} if temporal is not None else {})
    _refuse_non_finite({f"appearance {k}": a for k, a in enumerate(spatial)})
    paths = []
    if temporal is not None:
        paths.append(save_adapter(temporal, run_dir / "motion.safetensors", overwrite=True))
    for k, adapter in enumerate(spatial):
        name = "appearance.safetensors" if len(spatial) == 1 else f"appearance_{k}.safetensors"
        paths.append(save_adapter(adapter, run_dir / name, overwrite=True))
    return paths
