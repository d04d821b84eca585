"""m-per-class batches: each global batch holds ``G / m`` classes with ``m`` rows each.

The batch layout of pytorch-metric-learning's ``MPerClassSampler`` (a parity sampler),
for losses that read labels or several positives per anchor: SupCon (Khosla et al. 2020,
"Supervised Contrastive Learning"), the triplet and multi-similarity losses with batch
mining (Hermans et al. 2017, "In Defense of the Triplet Loss for Person
Re-Identification", P x K batches; Wang et al. 2019, "Multi-Similarity Loss"). A batch
with one row per class has nothing to mine.

What differs from pytorch-metric-learning, and why:

* an epoch is a pass over the data, not a fixed ``length_before_new_iter`` draw: every
  row appears at least once per epoch (see :class:`MPerClassBatchSampler` for the exact
  count), classes are not drawn uniformly, so a large class is not under-sampled;
* the layout is built once per epoch (seed + epoch) and sharded like every sampler here
  (:mod:`.base`): exact and equal ``__len__`` on every rank, and each rank's slice holds
  whole classes (``m`` must divide the per-device batch).
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Hashable, Sequence
from typing import Any

from contrastlib.registry import SAMPLERS
from contrastlib.samplers.base import GlobalBatchSampler


def default_label(row: Any) -> Hashable:
    """A row's class when none is given: its first text (the anchor), so rows that repeat
    an anchor form one class; a row that is not a tuple is its own key."""
    return row[0] if isinstance(row, (tuple, list)) else row


@SAMPLERS.register(
    "m_per_class", summary="G/m classes x m rows per global batch (pytorch-metric-learning's MPerClassSampler)"
)
class MPerClassBatchSampler(GlobalBatchSampler):
    """Global batches of ``G / m`` distinct classes with ``m`` rows each (``G`` = batch_size x world).

    Per epoch (seed + epoch): each class's rows are shuffled and cut into groups of ``m``.
    A class whose size is not a multiple of ``m`` tops up its last group from its own other
    rows (no row twice in a group). A class with fewer than ``m`` rows is sampled *with
    replacement*, as pytorch-metric-learning does: its group repeats rows, so the same row
    appears more than once in that batch (with the default labels, which make most NLI
    anchors a class of one, that is most groups: pair this sampler with a loss that reads
    labels, or give real ``labels``). The groups are spread evenly over the epoch (each
    class's groups at regular intervals from a random offset) and packed into batches with
    no class twice per batch.

    Every row appears at least once per epoch. An epoch has
    ``P = m * sum_c ceil(n_c / m)`` row slots (``n_c``: rows of class ``c``), so
    ``P // G`` steps (plus a last partial step, see :mod:`.base`), more than ``N // G``
    when classes need topping up. When one class has more groups than the epoch has
    batches, its surplus groups cannot share a batch with each other and are left out of
    that epoch (counted in ``epoch_stats["left_out"]``). The last partial batch holds fewer
    classes.

    Args (besides :class:`GlobalBatchSampler`'s):
        labels: one hashable class per row; default: the row's first text (its anchor).
        m: rows per class in a batch; must divide ``batch_size``, so each rank's slice of a
            global batch holds whole classes.
    """

    takes = frozenset({"labels"})

    def __init__(
        self,
        rows: Sequence[Any],
        batch_size: int,
        *,
        labels: Sequence[Hashable] | None = None,
        m: int = 2,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        self.check_options(batch_size, m=m)
        super().__init__(rows, batch_size, drop_last=drop_last, seed=seed, num_replicas=num_replicas, rank=rank)
        if labels is None:
            labels = [default_label(r) for r in rows]
        elif len(labels) != len(rows):
            raise ValueError(f"labels: {len(labels)} labels for {len(rows)} rows")
        self.m = m
        self.labels = list(labels)
        groups: dict[Hashable, list[int]] = {}
        for i, label in enumerate(self.labels):
            groups.setdefault(label, []).append(i)
        #: Row indices of every class, in order of first appearance.
        self.classes: list[list[int]] = list(groups.values())
        if len(self.classes) * m < batch_size:
            raise ValueError(
                f"{len(self.classes)} classes x m={m} rows cannot fill a batch of {batch_size}"
            )
        #: Row slots in every epoch (rows plus top-ups), see the class docstring.
        self.rows_per_epoch = m * sum(math.ceil(len(c) / m) for c in self.classes)

    @classmethod
    def check_options(cls, batch_size: int, *, m: int = 2) -> None:  # type: ignore[override]
        """Raise ``ValueError("m: ...")`` for a value no data could make work."""
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"m: must be an integer >= 1, got {m!r}")
        if batch_size % m:
            raise ValueError(f"m: must divide the per-device batch size {batch_size}, got {m}")

    def steps_per_epoch(self, world: int) -> int:
        size = self.batch_size * world
        full, rest = divmod(self.rows_per_epoch, size)
        return full + int(not self.drop_last and rest >= world)

    def _groups(self, rng: random.Random) -> list[tuple[int, list[int]]]:
        """``(class, m rows)`` groups of one epoch, spread evenly over it."""
        m = self.m
        keyed: list[tuple[float, float, int, list[int]]] = []
        for c, members in enumerate(self.classes):
            rows = list(members)
            rng.shuffle(rows)
            n_groups = math.ceil(len(rows) / m)
            offset = rng.random()
            for g in range(n_groups):
                group = rows[g * m : (g + 1) * m]
                if len(group) < m:
                    if len(rows) >= m:  # top up from the class's other rows, none twice in the group
                        others = [r for r in rows if r not in group]
                        group += rng.sample(others, m - len(group))
                    else:  # fewer rows than m: with replacement (pytorch-metric-learning)
                        group += rng.choices(rows, k=m - len(group))
                keyed.append(((g + offset) / n_groups, rng.random(), c, group))
        keyed.sort(key=lambda x: (x[0], x[1]))
        return [(c, group) for _, _, c, group in keyed]

    def global_batches(self, epoch: int, global_batch_size: int) -> list[list[int]]:
        per_batch = global_batch_size // self.m
        if per_batch > len(self.classes):
            raise ValueError(
                f"{len(self.classes)} classes x m={self.m} rows cannot fill a global batch of {global_batch_size}"
            )
        pending = deque(self._groups(random.Random(self.seed + epoch)))
        left = Counter(c for c, _ in pending)  # groups left per class
        batches: list[list[int]] = []
        while pending:
            batch: list[int] = []
            taken: set[int] = set()
            deferred: list[tuple[int, list[int]]] = []
            # stop when full, or when every class with groups left is already in the batch
            while pending and len(taken) < per_batch and len(taken) < len(left):
                c, group = pending.popleft()
                if c in taken:
                    deferred.append((c, group))
                    continue
                taken.add(c)
                batch += group
            for c in taken:
                left[c] -= 1
                if not left[c]:
                    del left[c]
            pending.extendleft(reversed(deferred))
            batches.append(batch)
        return batches
