"""Plain shuffling as a batch sampler, sharded like every other (see :mod:`.base`)."""

from __future__ import annotations

import torch

from contrastlib.registry import SAMPLERS
from contrastlib.samplers.base import GlobalBatchSampler


@SAMPLERS.register("random", summary="shuffled batches; exact len; reseeded per epoch; DDP-sharded")
class RandomBatchSampler(GlobalBatchSampler):
    """A permutation of the rows (seed + epoch), cut into global batches."""

    def global_batches(self, epoch: int, global_batch_size: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.num_rows, generator=g).tolist()
        return [order[s : s + global_batch_size] for s in range(0, len(order), global_batch_size)]
