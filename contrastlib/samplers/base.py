"""What every batch sampler shares: the global batch of a step is formed once, identically
on every rank, and each rank takes an equal slice of it (a DDP run sees the batches of a one-process run at the global batch size).

With ``W`` ranks and a per-device batch ``B``, a subclass forms global batches of
``W * B`` rows from a seeded order (seed + epoch). Rank ``r`` takes rows
``[r * n / W, (r + 1) * n / W)`` of each global batch of ``n`` rows, so that:

* a DDP run at ``B`` per device sees, step by step, the batches a 1-process run at
  ``W * B`` sees (what is gathered across devices is exactly that global batch), cut to
  a multiple of ``W``. A global batch of fewer than ``W`` rows has no DDP counterpart:
  the last one, or (no-duplicates sampler, when colliding texts leave a batch partial
  mid-epoch) one in the middle, after which the two runs' steps no longer line up;
* ``__len__`` is exact and the same on every rank (no rank waits on a collective that
  another never reaches);
* every rank's batch has the same number of rows: a short last global batch is cut to a
  multiple of ``W`` (at most ``W - 1`` rows are left out of that epoch), or dropped
  entirely with ``drop_last``;
* every epoch has the same number of steps, ``N // (W B)``, plus one for a last partial
  batch of at least ``W`` rows unless ``drop_last``: Lightning reads the length once and
  builds the learning-rate schedule from it. A sampler that forms more batches than that
  in some epoch (the no-duplicates sampler, when colliding texts leave partial batches)
  leaves the extra rows out of that epoch; one that forms fewer repeats batches of the
  same epoch. ``epoch_stats`` counts both.

Lightning calls ``set_epoch`` on ``dataloader.batch_sampler.sampler`` (not on the batch
sampler itself), so a batch sampler here is also its own ``sampler``.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, overload

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def dist_info(num_replicas: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """``(world_size, rank)``: given values, else the initialised process group's, else (1, 0)."""
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    return num_replicas, rank


class GlobalBatchSampler(Sampler[list[int]]):
    """Base class: subclasses implement :meth:`global_batches`.

    Every sampler takes the same arguments, so ``data.sampler`` can name any of them,
    and declares the row data it is given besides the rows:

    * ``needs``: what it cannot work without: ``embeddings`` (of each row's anchor, by the
      model being trained), ``labels`` (a class per row), ``neighbours`` (rows to keep
      together); a method whose data cannot give one is refused before any model loads;
    * ``takes``: what it uses when the data has it.

    Its own options (``data.sampler_options``) are its other keyword arguments;
    :meth:`check_options` checks them without data.

    Args:
        rows: the dataset's rows (their keys, for samplers that look at content; others
            use only ``len(rows)``).
        batch_size: rows per device and step (the global batch is ``batch_size * W``).
        drop_last: drop a global batch shorter than ``batch_size * W``.
        seed: base seed; the epoch number is added to it.
        num_replicas, rank: the DDP split (default: read from ``torch.distributed`` when
            iterated, so a sampler built before the process group starts is still right).
    """

    needs: ClassVar[frozenset[str]] = frozenset()
    takes: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        rows: Sequence[Any],
        batch_size: int,
        *,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.rows = rows
        self.num_rows = len(rows)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self.num_replicas, self.rank = num_replicas, rank
        #: ((epoch, world), whether that epoch forms any usable batch): ``__len__``'s answer.
        self._cache: tuple[tuple[int, int], bool] | None = None
        #: (epoch, batches): skip that epoch's first batches once (a mid-epoch resume).
        self._resume: tuple[int, int] | None = None
        #: Yield ``epoch * len(rows) + i`` for row ``i``: for datasets whose items are
        #: random per epoch and seeded by (epoch, row) (``ViewsDataset``).
        self.tag_epoch = False
        #: ((epoch, world), rows left out of / repeated in that epoch): see ``epoch_stats``.
        self._stats: tuple[tuple[int, int], dict[str, int]] | None = None

    @classmethod
    def check_options(cls, batch_size: int, **options: Any) -> None:
        """Raise ``ValueError("KEY: ...")`` for an option value no data could make work."""

    # ---------------------------------------------------------------- for subclasses
    @property
    def keys(self) -> RowKeys:
        """Per row, its texts (or keys): what "no text twice in a batch" compares. A view
        read row by row as batches are formed, never a copy of every row."""
        return RowKeys(self.rows)

    def refresh(self) -> None:
        """The rows' contents changed (re-mining): read them again from the next epoch
        built (a batch of the current epoch keeps the rows it was formed with)."""
        self._cache = None
        self._stats = None

    def global_batches(self, epoch: int, global_batch_size: int) -> Iterable[Sequence[int] | np.ndarray]:
        """Every global batch of ``epoch`` (at most ``global_batch_size`` rows each), in
        order: a list, or a generator that forms each batch when it is asked for (the
        same batches every time it is called with the same arguments)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- the protocol
    @property
    def sampler(self) -> GlobalBatchSampler:
        """Lightning's ``_set_sampler_epoch`` looks for ``batch_sampler.sampler.set_epoch``."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, batches: int) -> None:
        """The next iteration over ``epoch`` starts after its first ``batches`` batches (a
        run resumed mid-epoch sees the rest of the same order, not a restarted one)."""
        self._resume = (epoch, batches)

    def steps_per_epoch(self, world: int) -> int:
        """Global batches in every epoch (see the module docstring)."""
        size = self.batch_size * world
        full, rest = divmod(self.num_rows, size)
        return full + int(not self.drop_last and rest >= world)

    def _usable(self, world: int) -> Iterator[list[int]]:
        """This epoch's global batches, each cut to a multiple of ``world`` (empty ones left out)."""
        for batch in self.global_batches(self.epoch, self.batch_size * world):
            n = len(batch) - len(batch) % world  # equal shapes on every rank
            if n:
                yield batch[:n].tolist() if isinstance(batch, np.ndarray) else [int(i) for i in batch[:n]]

    def _shared_batches(self, world: int) -> Iterator[list[int]]:
        """The ``steps_per_epoch`` global batches of this epoch, formed as they are asked
        for: batches beyond that are left out, and if there are fewer, the epoch's first
        ones repeat (``epoch_stats`` counts both once the epoch has been read to its end)."""
        steps = self.steps_per_epoch(world)
        given = left_out = repeated = 0
        for batch in self._usable(world):
            if given < steps:
                given += 1
                yield batch
            else:
                left_out += len(batch)
        while 0 < given < steps:  # fewer batches than steps: the same epoch's again, from its start
            for batch in self._usable(world):
                if given == steps:
                    break
                given += 1
                repeated += len(batch)
                yield batch
        self._stats = ((self.epoch, world), {"left_out": left_out, "repeated": repeated})

    @property
    def epoch_stats(self) -> dict[str, int]:
        """Rows of the current epoch left out of it and repeated in it (see the module
        docstring): recorded when the epoch was read to its end, else found by forming it."""
        world, _ = dist_info(self.num_replicas, self.rank)
        if self._stats is None or self._stats[0] != (self.epoch, world):
            for _ in self._shared_batches(world):
                pass
        assert self._stats is not None
        return self._stats[1]

    def _shared(self) -> list[list[int]]:
        """Every global batch of this epoch, as a list (for tests and inspection)."""
        world, _ = dist_info(self.num_replicas, self.rank)
        return list(self._shared_batches(world))

    def local_batches(self) -> Iterator[list[int]]:
        """This rank's slice of every global batch of the epoch, formed as they are asked for."""
        world, rank = dist_info(self.num_replicas, self.rank)
        for batch in self._shared_batches(world):
            share = len(batch) // world
            yield batch[rank * share : (rank + 1) * share]

    def __iter__(self) -> Iterator[list[int]]:
        skip = 0
        if self._resume is not None:
            if self._resume[0] == self.epoch:
                skip = self._resume[1]
            self._resume = None
        offset = self.epoch * self.num_rows if self.tag_epoch else 0
        for batch in itertools.islice(self.local_batches(), skip, None):
            yield [offset + i for i in batch] if offset else batch

    def __len__(self) -> int:
        """``steps_per_epoch`` (the same on every rank and in every epoch), or 0 when no
        global batch of the epoch holds ``world`` rows (found by forming its first batches)."""
        world, _ = dist_info(self.num_replicas, self.rank)
        key = (self.epoch, world)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, next(self._usable(world), None) is not None)
        return self.steps_per_epoch(world) if self._cache[1] else 0


class RowKeys(Sequence[tuple[Hashable, ...]]):
    """Per row, its texts (or other hashable keys) as a tuple: a row that is a tuple or
    list as it is, anything else as a 1-tuple. Read from the rows on each access."""

    def __init__(self, rows: Sequence[Any]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, i: int) -> tuple[Hashable, ...]: ...
    @overload
    def __getitem__(self, i: slice) -> list[tuple[Hashable, ...]]: ...
    def __getitem__(self, i: int | slice) -> tuple[Hashable, ...] | list[tuple[Hashable, ...]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        r = self.rows[i]
        return tuple(r) if isinstance(r, (tuple, list)) else (r,)


def permutation(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(n)`` as an integer array (torch's generator, so
    the same on every platform and rank; no Python object per row)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g).numpy()
