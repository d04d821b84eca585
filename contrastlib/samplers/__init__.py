"""Batch samplers (no-duplicates now; m-per-class, cluster and mined batches later)."""

from contrastlib.samplers.no_duplicates import NoDuplicatesBatchSampler

__all__ = ["NoDuplicatesBatchSampler"]
