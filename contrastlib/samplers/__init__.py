"""Batch samplers: each forms global batches once and shards them across ranks
(:mod:`.base`). Pick one by name with ``data.sampler`` (``contrastlib list``)."""

from contrastlib.samplers.base import GlobalBatchSampler, dist_info
from contrastlib.samplers.no_duplicates import NoDuplicatesBatchSampler
from contrastlib.samplers.random import RandomBatchSampler

__all__ = ["GlobalBatchSampler", "NoDuplicatesBatchSampler", "RandomBatchSampler", "dist_info"]
