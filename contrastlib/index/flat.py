"""Exact search over vectors kept in one array, and the memory an index's structures hold."""

from __future__ import annotations

from typing import Any

import numpy as np


def _faiss() -> Any:  # (untyped: FAISS's stubs miss attributes its builds have)
    import faiss

    return faiss


def faiss_bytes(index: Any) -> int:
    """The payload of a FAISS index: vectors or codes, lists, graph links, ids."""
    faiss = _faiss()

    ix = faiss.downcast_index(index)
    if isinstance(ix, faiss.IndexIDMap):
        return 8 * int(ix.ntotal) + faiss_bytes(ix.index)
    # duck typing: only faiss-gpu builds have GpuIndex
    if hasattr(faiss, "GpuIndex") and isinstance(ix, faiss.GpuIndex):
        return faiss_bytes(faiss.index_gpu_to_cpu(ix))
    if isinstance(ix, faiss.IndexHNSW):
        h = ix.hnsw
        storage = faiss.downcast_index(ix.storage)
        return int(storage.codes.size() + 4 * h.neighbors.size() + 8 * h.offsets.size() + 4 * h.levels.size())
    if isinstance(ix, faiss.IndexIVF):
        il = ix.invlists
        listed = sum(il.list_size(i) for i in range(il.nlist))
        out = listed * (il.code_size + 8) + ix.quantizer.ntotal * ix.d * 4
        if isinstance(ix, faiss.IndexIVFPQ):
            out += ix.pq.centroids.size() * 4 + ix.precomputed_table.size() * 4
        return int(out)
    return int(ix.ntotal * ix.code_size)


class FlatRows:
    """Exact inner-product search over vectors kept in one float32 array, by FAISS's
    ``knn`` (the routine ``IndexFlatIP.search`` runs: the same ids and scores). Unlike the
    index's own growing storage, the array can be sized once (:meth:`reserve`), so
    building it from shards holds the vectors and one shard, never two copies."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.data = np.zeros((0, dim), dtype=np.float32)
        self.ntotal = 0  # vectors added
        self.extent = 0  # rows in use (ids run 0..extent-1)

    def reserve(self, n: int) -> None:
        if n > len(self.data):
            grown = np.zeros((n, self.dim), dtype=np.float32)  # (untouched pages cost nothing yet)
            grown[: self.extent] = self.data[: self.extent]
            self.data = grown

    def add(self, x: np.ndarray, ids: np.ndarray | None = None) -> None:
        if ids is None:
            ids = np.arange(self.extent, self.extent + len(x))
        top = int(ids.max()) + 1 if len(ids) else 0
        if top > len(self.data):
            self.reserve(max(top, 2 * len(self.data)))
        self.data[ids] = x
        self.ntotal += len(x)
        self.extent = max(self.extent, top)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.ntotal != self.extent:
            raise RuntimeError(f"vectors added under ids 0..{self.extent - 1} number {self.ntotal}: "
                               "every id below the highest must be added before a search")
        faiss = _faiss()
        return faiss.knn(q, self.data[: self.extent], k, metric=faiss.METRIC_INNER_PRODUCT)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        if len(ids) and (ids.min() < 0 or ids.max() >= self.extent):
            raise IndexError(f"ids outside 0..{self.extent - 1}")
        return self.data[ids]
