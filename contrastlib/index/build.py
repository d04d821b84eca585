"""Indexes built from the embedding cache a shard at a time.

The cache's shards (contrastlib/index/cache.py) come in length order; each shard's vectors
go into the index under their row numbers (``VectorIndex.add(ids=)``), into storage sized
once (``reserve``), so that building holds the index and one shard, never the whole
matrix beside it. Trained kinds (IVF) train on the seeded sample :meth:`IndexSpec.training_rows`
names, read from the cache row by row: the sample ``train()`` would draw from the whole
matrix.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from contrastlib.index.cache import CachedEmbeddings
from contrastlib.index.faiss_index import IndexSpec, VectorIndex, l2_normalise


def index_from_cache(entry: CachedEmbeddings, spec: IndexSpec,
                     prepare: Callable[[np.ndarray], np.ndarray] = l2_normalise) -> VectorIndex:
    """The index of ``prepare(shard)`` for every shard of ``entry`` (normalised by default;
    a Matryoshka size: cut, then normalised), under the rows' numbers."""
    index = VectorIndex(entry.prepared_dim(prepare), spec)
    index.reserve(len(entry))
    if spec.trained:
        index.train(prepare(entry.take(spec.training_rows(len(entry)))))
    for rows, emb in entry.shards():
        index.add(prepare(emb), ids=rows)
    return index
