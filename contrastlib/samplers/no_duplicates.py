"""Batch sampler that never puts the same text twice in a batch.

In-batch negatives assume every other row's texts are negatives; a duplicated text
would be its own negative. The order is a permutation seeded by seed + epoch, so the order
changes every epoch and ``__len__`` is exact; batches are formed as the loader asks for
them, reading only the rows they look at (sentence-transformers' ``NO_DUPLICATES`` and,
on a memory-mapped table whose keys are text hashes, ``NO_DUPLICATES_HASHED``).
Under DDP the rule holds for the global batch (every rank's slice together), since that is
what the loss gathers; see :mod:`contrastlib.samplers.base`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator

from contrastlib.registry import SAMPLERS
from contrastlib.samplers.base import GlobalBatchSampler, permutation


@SAMPLERS.register("no_duplicates", summary="no text twice in a global batch; exact len; reseeded per epoch")
class NoDuplicatesBatchSampler(GlobalBatchSampler):
    """Yield batches of indices into ``rows`` with no repeated text within a global batch
    (the batch gathered across devices), so no text is its own negative.

    Args (see :class:`GlobalBatchSampler`): ``rows`` are the dataset's text tuples (or any
    hashable keys per row); ``batch_size``, ``drop_last``, ``seed``, ``num_replicas``, ``rank``.
    """

    def global_batches(self, epoch: int, global_batch_size: int) -> Iterator[list[int]]:
        """Formed one at a time, each from the rows put off by the batch before (in their
        order) and then the epoch's permutation: a row whose text is already in the batch
        waits for the next one. Only the rows looked at are read (their texts, or the hashes
        a memory-mapped table gives), so a batch costs the same at 10 million rows as at 10
        thousand; rows put off stay few unless most rows share a text."""
        order = permutation(len(self.keys), self.seed + epoch)
        # rows held in memory can change mid-epoch (re-mining): this epoch's batches are
        # formed from the rows as they were when it began; a memory-mapped table cannot change
        keys = list(self.keys) if isinstance(self.rows, (list, tuple)) else self.keys
        waiting: list[int] = []  # rows put off, in the order they are to be tried again
        pos, n = 0, len(order)
        while waiting or pos < n:
            batch: list[int] = []
            seen: set[Hashable] = set()
            put_off: list[int] = []
            tried = 0
            while len(batch) < global_batch_size:
                if tried < len(waiting):
                    i = waiting[tried]
                    tried += 1
                elif pos < n:
                    i = int(order[pos])
                    pos += 1
                else:
                    break
                texts = keys[i]
                if any(t in seen for t in texts):
                    put_off.append(i)
                    continue
                batch.append(i)
                seen.update(texts)
            waiting = put_off + waiting[tried:]
            yield batch
