"""Batch sampler that never puts the same text twice in a batch.

In-batch negatives assume every other row's texts are negatives; a duplicated text
would be its own negative. The batches of an epoch are built once per epoch (seed +
epoch), so ``__len__`` is exact and the order changes every epoch.
Under DDP the rule holds for the global batch (every rank's slice together), since that is
what the loss gathers; see :mod:`contrastlib.samplers.base`.
"""

from __future__ import annotations

import random
from collections.abc import Hashable

from contrastlib.registry import SAMPLERS
from contrastlib.samplers.base import GlobalBatchSampler


@SAMPLERS.register("no_duplicates", summary="no text twice in a global batch; exact len; reseeded per epoch")
class NoDuplicatesBatchSampler(GlobalBatchSampler):
    """Yield batches of indices into ``rows`` with no repeated text within a global batch
    (the batch gathered across devices), so no text is its own negative.

    Args (see :class:`GlobalBatchSampler`): ``rows`` are the dataset's text tuples (or any
    hashable keys per row); ``batch_size``, ``drop_last``, ``seed``, ``num_replicas``, ``rank``.
    """

    def global_batches(self, epoch: int, global_batch_size: int) -> list[list[int]]:
        order = list(range(len(self.keys)))
        random.Random(self.seed + epoch).shuffle(order)
        batches: list[list[int]] = []
        pending = order
        while pending:
            batch: list[int] = []
            seen: set[Hashable] = set()
            deferred: list[int] = []
            pos = 0
            while pos < len(pending) and len(batch) < global_batch_size:
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
        return batches
