"""Batches of several sources, every global batch from one source (in-batch negatives share
a distribution), as sentence-transformers' multi-dataset batch samplers compose them:

* ``proportional``: every batch of every source once per epoch, the sources' batches in a
  seeded random order, so a source appears in proportion to its size
  (sentence-transformers' ``PROPORTIONAL``);
* ``round_robin``: one batch of each source in turn, until the source with the fewest
  batches has given all of its own (sentence-transformers' ``ROUND_ROBIN``): every source
  trains equally often, the larger ones on a part of their rows each epoch.

Each source's batches come from its own sampler (the run's ``data.sampler``, built on that
source's rows), so what it promises (no text twice, classes per batch) holds per source;
under DDP the global batch is formed once and split as every sampler's is
(:mod:`contrastlib.samplers.base`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from contrastlib.data.sources import starts_of
from contrastlib.samplers.base import GlobalBatchSampler, permutation

COMPOSITIONS = ("proportional", "round_robin")


class SourcesSampler(GlobalBatchSampler):
    """Global batches of ``parts`` (one sampler per source, each over its own rows ``0..n_s``),
    as rows of the sources one after another (source ``s``'s row ``i`` is ``starts[s] + i``)."""

    def __init__(self, parts: Sequence[GlobalBatchSampler], composition: str = "proportional", *, batch_size: int,
                 drop_last: bool = False, seed: int = 0, num_replicas: int | None = None,
                 rank: int | None = None) -> None:
        if composition not in COMPOSITIONS:
            raise ValueError(f"composition: one of {', '.join(COMPOSITIONS)}, got {composition!r}")
        if not parts:
            raise ValueError("no sources")
        total = sum(p.num_rows for p in parts)
        super().__init__(range(total), batch_size, drop_last=drop_last, seed=seed, num_replicas=num_replicas, rank=rank)
        self.parts, self.composition = list(parts), composition
        self.starts = starts_of([p.num_rows for p in parts])
        for p in self.parts:
            p.num_replicas, p.rank = num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for p in self.parts:
            p.set_epoch(epoch)

    def refresh(self) -> None:
        super().refresh()
        for p in self.parts:
            p.refresh()

    def steps_per_epoch(self, world: int) -> int:
        steps = [p.steps_per_epoch(world) for p in self.parts]
        return sum(steps) if self.composition == "proportional" else len(steps) * min(steps)

    def order(self, epoch: int, world: int) -> np.ndarray:
        """The source of each global batch of ``epoch``."""
        steps = [p.steps_per_epoch(world) for p in self.parts]
        if self.composition == "round_robin":
            return np.tile(np.arange(len(steps)), min(steps))
        each = np.repeat(np.arange(len(steps)), steps)
        # seeded apart from the sources' own orders (seed + s + epoch)
        return each[permutation(len(each), self.seed + epoch + 1_000_003)]

    def global_batches(self, epoch: int, global_batch_size: int) -> Iterator[np.ndarray]:
        world = max(1, global_batch_size // self.batch_size)
        for p in self.parts:
            p.epoch = epoch
        # each source's own steps_per_epoch batches, formed as they are asked for
        streams = [p._shared_batches(world) for p in self.parts]
        for s in self.order(epoch, world):
            batch = next(streams[s], None)
            if batch is not None:
                yield np.asarray(batch, dtype=np.int64) + self.starts[s]
