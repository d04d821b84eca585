"""Batches that keep each anchor with its mined negatives: a row's hard negatives come back
as other rows' positives in the same global batch, so the in-batch negatives of every
anchor are mined ones rather than random.

Rows are ``(anchor, positive, negative_1, ..., negative_k)`` as hard-negative mining writes
them (:mod:`contrastlib.mining`). Row ``j`` is *linked* to row ``i`` when ``j``'s positive
is one of ``i``'s mined negatives. The idea is that of B3 (Thirukovalluru et al. 2025,
"Breaking the Batch Barrier (B3) of Contrastive Learning via Smart Batch Mining": batches
from communities of a teacher's similarity graph, so that the other rows' positives are
strong negatives) and of TAS-B's topic-aware batches (Hofstätter et al. 2021, "Efficiently
Teaching an Effective Dense Retriever with Balanced Topic Aware Sampling"), here driven
directly by the mined negatives (they are the graph; no community detection). No peer
ships it.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

from contrastlib.registry import SAMPLERS
from contrastlib.samplers.base import GlobalBatchSampler


class _Batch:
    """The texts of a global batch under construction, by role, and the repeat rule."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.anchors: set[Hashable] = set()
        self.positives: set[Hashable] = set()
        self.negatives: set[Hashable] = set()

    def fits(self, row: tuple[Hashable, ...]) -> bool:
        """A text may appear once, except that a positive (not also an anchor) may also be
        other rows' negative."""
        anchor, rest = row[0], row[1:]
        if anchor in self.anchors or anchor in self.positives or anchor in self.negatives:
            return False
        if rest and (rest[0] in self.anchors or rest[0] in self.positives):
            return False
        return all(n not in self.anchors and (n in self.positives or n not in self.negatives) for n in rest[1:])

    def add(self, i: int, row: tuple[Hashable, ...]) -> None:
        self.rows.append(i)
        self.anchors.add(row[0])
        if len(row) > 1:
            self.positives.add(row[1])
            self.negatives.update(row[2:])


@SAMPLERS.register("mined", summary="each anchor with the rows whose positives are its mined negatives")
class MinedBatchSampler(GlobalBatchSampler):
    """Global batches that pull in, breadth-first, the rows linked to each seed row.

    Per epoch (seed + epoch) the rows are put in a random order. A global batch takes the
    first row of that order not yet used (the seed row), then the rows whose positive is
    one of its mined negatives (in the negatives' order, hardest first as mining writes
    them), then the rows linked to those, breadth-first, until the batch is full or
    nothing linked fits; then the next seed row, and so on. A row used once is not used
    again in the epoch, so every row appears once per epoch, except rows left out when
    repeated texts force partial batches (counted in ``epoch_stats``, see :mod:`.base`).
    A linked row that does not fit waits for a later batch.

    The repeat rule: no text appears twice in a global batch, except that a row's positive
    may also be the mined negative of other rows in it (that is the point). Such a batch
    shows that text twice to a loss that takes the negative columns as candidates: for the
    row whose positive it is, the other copy is a negative with its own positive's text.
    Mask candidates whose text equals the anchor's positive, or train on the
    ``(anchor, positive)`` columns and let the linked rows supply the hard negatives.

    Args (besides :class:`GlobalBatchSampler`'s):
        neighbours: for every row, the rows to keep with it (indices, in order of
            preference), instead of the links read from the texts.
    """

    takes = frozenset({"neighbours"})

    def __init__(
        self,
        rows: Sequence[Any],
        batch_size: int,
        *,
        neighbours: Sequence[Sequence[int]] | None = None,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(rows, batch_size, drop_last=drop_last, seed=seed, num_replicas=num_replicas, rank=rank)
        n = len(self.keys)
        self.neighbours: list[list[int]] | None = None
        if neighbours is not None:
            if len(neighbours) != n:
                raise ValueError(f"neighbours: {len(neighbours)} lists for {n} rows")
            self.neighbours = [[int(j) for j in nb] for nb in neighbours]
            bad = next((j for nb in self.neighbours for j in nb if not 0 <= j < n), None)
            if bad is not None:
                raise ValueError(f"neighbours: row index {bad} out of range for {n} rows")
        #: Rows by their positive text (the links read from the texts).
        self.by_positive: dict[Hashable, list[int]] = {}
        for i, key in enumerate(self.keys):
            if len(key) > 1:
                self.by_positive.setdefault(key[1], []).append(i)

    def linked(self, i: int) -> Iterator[int]:
        """Rows linked to row ``i``, in order of preference (may repeat, may include used rows)."""
        if self.neighbours is not None:
            yield from self.neighbours[i]
            return
        for negative in self.keys[i][2:]:
            yield from self.by_positive.get(negative, ())

    def global_batches(self, epoch: int, global_batch_size: int) -> list[list[int]]:
        order = list(range(self.num_rows))
        random.Random(self.seed + epoch).shuffle(order)
        keys, size = self.keys, global_batch_size
        used = bytearray(self.num_rows)
        pending = deque(order)
        batches: list[list[int]] = []
        while pending:
            batch = _Batch()
            waiting: list[int] = []
            while pending and len(batch.rows) < size:
                seed_row = pending.popleft()
                if used[seed_row]:
                    continue
                if not batch.fits(keys[seed_row]):
                    waiting.append(seed_row)
                    continue
                queue = deque([seed_row])
                while queue and len(batch.rows) < size:
                    i = queue.popleft()
                    if used[i] or not batch.fits(keys[i]):
                        continue  # a linked row that does not fit stays in the order for later
                    used[i] = 1
                    batch.add(i, keys[i])
                    queue.extend(j for j in self.linked(i) if not used[j])
            pending.extendleft(reversed(waiting))
            if batch.rows:
                batches.append(batch.rows)
        return batches
