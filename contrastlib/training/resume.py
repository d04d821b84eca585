"""Exact resume: a run killed anywhere continues as if it had never stopped.

Lightning restores the weights, the optimizer, the scheduler and its own loop counters.
Three things it does not restore are added here:

* **the position inside the epoch.** :class:`ResumableLoader` is a ``DataLoader`` with
  Lightning's ``state_dict`` / ``load_state_dict`` interface. Its state is the epoch and
  the number of batches the trainer has processed in it (the trainer's own progress
  counter after each batch, not a count at the loader, which may have fetched ahead); on resume the batch sampler skips exactly those batches of that epoch
  (:meth:`~contrastlib.samplers.base.GlobalBatchSampler.resume_at`). Without it a
  mid-epoch resume restarts the epoch's batch order, and Lightning warns that the loader
  is not resumable.
* **the random state** (torch, CUDA, numpy, Python), for dropout views and anything else
  drawn in a step. :class:`ResumeState` saves it with each checkpoint and sets it again
  when training starts after the resume, before the first batch is made. Under DDP the
  ranks' states are not the same (a test that restored rank 0's on every rank diverged
  at the first resumed step), so every rank's state is gathered into the checkpoint and
  each rank takes its own back. The loader draws its workers' base
  seed from its own generator, not the global one, so making an iterator draws nothing
  the uninterrupted run would not.
* **a safe, atomic checkpoint file.** :class:`SafeCheckpointIO` writes to a temporary
  name, syncs, keeps the checkpoint it replaces as ``previous.ckpt``, and renames; it
  loads with ``torch.load(weights_only=True)`` only (the content is tensors, numbers,
  strings and containers: the random states are stored as tensors and lists for that).
  :func:`resume_checkpoint` picks the newest checkpoint that loads and warns when it had
  to fall back.

The gradient cache keeps no state between optimizer steps, and checkpoints are saved on
optimizer-step boundaries, so there is no partial accumulation to restore. Methods with
state of their own (MoCo's queue and momentum encoder) keep it in buffers, which the
checkpoint's ``state_dict`` carries.
"""

from __future__ import annotations

import os
import random
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from torch.utils.data import DataLoader

from contrastlib.errors import ConfigError
from contrastlib.samplers.base import GlobalBatchSampler
from contrastlib.utils.io import atomic_path

#: The checkpoint that ``last.ckpt`` replaced, kept for when ``last.ckpt`` is unreadable.
PREVIOUS = "previous.ckpt"


class ResumableLoader(DataLoader):
    """A DataLoader whose place inside an epoch survives a checkpoint (see the module
    docstring). ``position`` is set by :class:`ResumeState` once the trainer exists."""

    position: Callable[[], tuple[int, int] | None] | None = None

    def state_dict(self) -> dict[str, int]:
        at = self.position() if self.position is not None else None
        if at is None:
            return {}
        epoch, batches = at
        return {"epoch": int(epoch), "batches": int(batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state and isinstance(self.batch_sampler, GlobalBatchSampler):
            self.batch_sampler.resume_at(state["epoch"], state["batches"])


def rng_states() -> dict[str, Any]:
    """The global random states, as types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, py_gauss = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(gauss)],
        "python": [int(version), torch.tensor(state, dtype=torch.int64), py_gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, py_gauss = states["python"]
    random.setstate((version, tuple(int(x) for x in state.tolist()), py_gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumeState(pl.Callback):
    """Saves the random state with every checkpoint and the loader's position; restores
    both on resume (see the module docstring)."""

    def __init__(self, loader: ResumableLoader, last: Path | None = None) -> None:
        self.loader, self.last = loader, last
        #: True when the run stopped on ``max_steps`` inside an epoch and ``last`` was
        #: saved at that batch (the caller must not save it again after ``fit``).
        self.saved_final = False
        self._pending: dict[str, Any] | None = None
        self._at: tuple[int, int] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.loader.position = lambda: self._at

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # Runs before ModelCheckpoint's save (Lightning calls checkpoint callbacks last).
        # Recorded per batch, not read at save time: after the last batch of an epoch the
        # trainer's epoch counter moves on while its batch counter still holds the old
        # epoch's count.
        current = trainer.fit_loop.epoch_loop.batch_progress.current
        self._at = (trainer.current_epoch, int(current.processed))  # type: ignore[attr-defined]
        # A run that stops on max_steps inside an epoch: Lightning's loops count that epoch
        # as finished once fit returns, and a checkpoint saved then resumes at the next
        # epoch, skipping the rest of this one. Saved here, the state is mid-epoch.
        if (self.last is not None and 0 < trainer.max_steps <= trainer.global_step
                and self._at[1] < trainer.num_training_batches):
            trainer.save_checkpoint(self.last, weights_only=False)
            self.saved_final = True

    def state_dict(self) -> dict[str, Any]:
        # Lightning builds the checkpoint dict on every rank (rank 0 writes it), so this
        # runs on all ranks at once and may gather: each rank's random state is kept.
        states = rng_states()
        out: dict[str, Any] = {"rng": states, "loader": self.loader.state_dict()}
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, states)
            out["rng_per_rank"] = gathered
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("rng")
        per_rank = state_dict.get("rng_per_rank")
        if per_rank and dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
            if world == len(per_rank):
                self._pending = per_rank[rank]
            elif rank == 0:
                warnings.warn(f"resume: the checkpoint holds the random states of {len(per_rank)} ranks, this run "
                              f"has {world}; every rank takes rank 0's (the run continues, not bit for bit)",
                              stacklevel=2)
        # Lightning hands the loader its state only when it builds the loader after the
        # restore; a scheduler that asks for the number of steps builds it before.
        self.loader.load_state_dict(state_dict.get("loader") or {})

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the restore and before the first batch is fetched: a batch made in the
        # main process (num_workers=0) draws from the state the checkpoint saved.
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic writes, the replaced checkpoint kept as ``previous.ckpt`` (for ``last.ckpt``),
    and ``weights_only=True`` loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            if path.name == "last.ckpt" and path.is_file():
                # keep the one being replaced; ``last.ckpt`` exists at every moment
                with atomic_path(path.with_name(PREVIOUS)) as keep:
                    keep.unlink()
                    os.link(path, keep)
        _fsync_dir(path.parent)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> Any:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def checkpoint_step(path: Path) -> int | None:
    """The global step stored in a checkpoint, or None when it is truncated, fails its
    zip checksums (every member's CRC is read), or does not load with ``weights_only``."""
    try:
        with zipfile.ZipFile(path) as z:
            if z.testzip() is not None:
                return None
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt["global_step"])
    except Exception:
        return None


def resume_checkpoint(run_dir: Path, *, warn: Callable[[str], None] | None = None) -> Path:
    """The checkpoint to resume ``run_dir`` from: ``last.ckpt``, or when it is missing,
    truncated or corrupt, the newest of ``previous.ckpt`` and ``step-*.ckpt`` that loads,
    with a warning that names both files."""
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if last.is_file() and checkpoint_step(last) is not None:
        return last
    candidates = []
    for path in [ckpt_dir / PREVIOUS, *ckpt_dir.glob("step-*.ckpt")]:
        step = checkpoint_step(path) if path.is_file() else None
        if step is not None:
            candidates.append((step, path.stat().st_mtime, path))
    why = "does not exist" if not last.exists() else "is truncated or corrupt"
    if not candidates:
        raise ConfigError(f"resume: {last} {why}, and no earlier checkpoint in {ckpt_dir} loads")
    step, _, path = max(candidates)
    message = f"resume: {last} {why}; resuming from {path.name} (step {step}) instead"
    (warn or (lambda m: warnings.warn(m, stacklevel=2)))(message)
    return path
