"""Plain shuffling as a batch sampler, sharded like every other (see :mod:`.base`)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from contrastlib.registry import SAMPLERS
from contrastlib.samplers.base import GlobalBatchSampler, permutation


@SAMPLERS.register("random", summary="shuffled batches; exact len; reseeded per epoch; DDP-sharded")
class RandomBatchSampler(GlobalBatchSampler):
    """A permutation of the rows (seed + epoch), cut into global batches."""

    def global_batches(self, epoch: int, global_batch_size: int) -> Iterator[np.ndarray]:
        order = permutation(self.num_rows, self.seed + epoch)  # one integer array, no list of rows
        for s in range(0, len(order), global_batch_size):
            yield order[s : s + global_batch_size]
