"""Batch sampler that never puts the same text twice in a batch.

In-batch negatives assume every other row's texts are negatives; a duplicated text
would be its own negative. The batches of an epoch are built once per epoch (seed +
epoch), so ``__len__`` is exact and the order changes every epoch (PEERS.md item 5).
Under DDP each rank takes every ``world_size``-th batch of the same global order, all
ranks the same number.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterator, Sequence

import torch.distributed as dist
from torch.utils.data import Sampler

from contrastlib.registry import SAMPLERS


def _dist_info(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    if num_replicas is None:
        num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if rank is None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    return num_replicas, rank


@SAMPLERS.register("no_duplicates", summary="no text twice in a batch; exact len; reseeded per epoch")
class NoDuplicatesBatchSampler(Sampler[list[int]]):
    """Yield batches of indices into ``rows`` with no repeated text within a batch.

    Args:
        rows: the dataset's text tuples (or any hashable keys per row).
        batch_size: rows per batch.
        drop_last: drop the final batch if it has fewer than ``batch_size`` rows.
        seed: base seed; the epoch number is added to it.
        num_replicas, rank: DDP split (default: read from ``torch.distributed``).
    """

    def __init__(
        self,
        rows: Sequence[Sequence[Hashable]],
        batch_size: int,
        *,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.keys = [tuple(r) for r in rows]
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self.num_replicas, self.rank = num_replicas, rank
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _build(self) -> list[list[int]]:
        order = list(range(len(self.keys)))
        random.Random(self.seed + self.epoch).shuffle(order)
        batches: list[list[int]] = []
        pending = order
        while pending:
            batch: list[int] = []
            seen: set[Hashable] = set()
            deferred: list[int] = []
            pos = 0
            while pos < len(pending) and len(batch) < self.batch_size:
                i = pending[pos]
                pos += 1
                texts = self.keys[i]
                if any(t in seen for t in texts):
                    deferred.append(i)
                    continue
                batch.append(i)
                seen.update(texts)
            pending = deferred + pending[pos:]
            batches.append(batch)
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches = [b for b in batches if len(b) == self.batch_size]
        return batches

    def _global_batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._build())
        return self._cache[1]

    def _local_batches(self) -> list[list[int]]:
        world, rank = _dist_info(self.num_replicas, self.rank)
        batches = self._global_batches()
        usable = len(batches) - len(batches) % world  # every rank gets the same count
        return batches[rank:usable:world]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._local_batches()

    def __len__(self) -> int:
        return len(self._local_batches())
