"""Topic-clustered batches: each global batch is drawn from one k-means cluster of the
anchors' embeddings, so its in-batch negatives are on the same topic (harder ones).

* TAS-B: Hofstätter et al. 2021, "Efficiently Teaching an Effective Dense Retriever with
  Balanced Topic Aware Sampling": queries clustered by k-means, every batch from one
  cluster;
* B3: Thirukovalluru et al. 2025, "Breaking the Batch Barrier (B3) of Contrastive
  Learning via Smart Batch Mining": a teacher's sparse similarity graph, split into
  communities by community detection, batches from those communities, so that the other
  rows' positives are strong negatives;
* ClusterNS: Deng et al. 2023, "Clustering-Aware Negative Sampling for Unsupervised
  Sentence Representation": k-means clusters of the batch supply hard negatives.

None of the peers (sentence-transformers, pytorch-metric-learning) ships such a sampler.
K-means runs once, at construction, on CPU (FAISS, seeded); the batches are formed once per
epoch (seed + epoch) and sharded like every sampler here (:mod:`.base`). Under DDP every
rank computes its own embeddings and clustering, and two machines (or two GPUs' kernels)
can round an embedding differently, so a near-tie lands in different clusters and the
ranks' global batches disagree: rows trained twice, others never. So the first
``set_epoch`` under an initialised process group (Lightning calls it on every rank before
each epoch) replaces every rank's clustering with rank 0's (``broadcast_object_list``).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist

from contrastlib.index import IndexSpec, VectorIndex, l2_normalise
from contrastlib.registry import SAMPLERS
from contrastlib.samplers.base import GlobalBatchSampler

#: Default ``clusters`` is ``ceil(N / batch_size)``, at most this many (k-means cost).
MAX_DEFAULT_CLUSTERS = 4096
#: Nearest clusters (by centroid inner product) kept per cluster for topping up.
NEAREST = 64


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``[k, D]`` initial centroids of unit vectors ``x`` by k-means++ seeding (Arthur and
    Vassilvitskii 2007, "k-means++: The Advantages of Careful Seeding"): each next centroid
    is a vector drawn with probability proportional to its squared distance to the nearest
    one so far. FAISS starts from ``k`` random vectors, which often puts two centroids in
    one well-separated group and merges two others."""
    n = len(x)
    centroids = np.empty((k, x.shape[1]), dtype=np.float32)
    centroids[0] = x[rng.integers(n)]
    dist = np.maximum(2.0 - 2.0 * (x @ centroids[0]), 0.0)  # squared distance of unit vectors
    for j in range(1, k):
        total = float(dist.sum())
        pick = int(np.searchsorted(np.cumsum(dist), rng.random() * total)) if total > 0 else int(rng.integers(n))
        centroids[j] = x[min(pick, n - 1)]
        dist = np.minimum(dist, np.maximum(2.0 - 2.0 * (x @ centroids[j]), 0.0))
    return centroids


def kmeans(x: np.ndarray, k: int, *, seed: int, iterations: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """``(centroids [k, D], assignment [N])``: seeded spherical k-means on CPU (FAISS).

    Seeded by k-means++ on a sample of at most ``max(2k, 8192)`` vectors; FAISS then
    trains on at most 32 vectors per centroid (a seeded sample) and every vector is
    assigned to its nearest centroid by inner product.
    """
    import faiss

    n, d = x.shape
    rng = np.random.default_rng(seed)
    sample = x if n <= max(2 * k, 8_192) else x[np.sort(rng.choice(n, max(2 * k, 8_192), replace=False))]
    init = kmeans_plus_plus(sample, k, rng)
    if k == 1:
        centroids = init
    else:
        km = faiss.Kmeans(
            d, k, niter=iterations, seed=seed, spherical=True, verbose=False, gpu=False,
            min_points_per_centroid=1, max_points_per_centroid=32,
        )
        km.train(x, init_centroids=init)
        centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    index = VectorIndex(d, IndexSpec("flat"), use_gpu=False)
    index.add(centroids)
    _, ids = index.search(x, 1)
    return centroids, ids[:, 0].astype(np.int64)


@SAMPLERS.register(
    "cluster", summary="each global batch from one k-means topic cluster, topped up from the nearest (TAS-B, B3)"
)
class ClusterBatchSampler(GlobalBatchSampler):
    """Global batches drawn cluster by cluster from a k-means clustering of the anchors.

    Per epoch (seed + epoch) the clusters are put in a random order and each cluster's
    rows are shuffled. Each global batch starts from the first cluster in that order that
    still has rows and draws from it; when it runs out, the batch is topped up from the
    clusters whose centroids are nearest (inner product, the 64 nearest), then from any
    rows left (in a random order). With ``mix > 0``, the last ``floor(mix * G)`` rows of
    each batch are drawn at random from all rows left instead (easy negatives beside the
    hard ones). As with ``no_duplicates``, no text of any row appears twice in a global
    batch: a row that would repeat one waits for a later batch.

    So a cluster of at least ``G`` rows gives batches of that cluster alone, and every row
    appears once per epoch, except rows left out when repeated texts force partial batches
    (counted in ``epoch_stats``, see :mod:`.base`).

    Args (besides :class:`GlobalBatchSampler`'s):
        embeddings: ``[N, D]`` float embeddings of the rows' anchors, row ``i`` for
            ``rows[i]`` (L2-normalised here).
        clusters: k; default ``ceil(N / batch_size)`` (about one cluster per per-device
            batch; a global batch of W devices then spans about W neighbouring clusters),
            at most 4,096; never more than N.
        mix: fraction of each global batch drawn at random, in ``[0, 1]``.
        iterations: k-means iterations.
    """

    #: The pipeline passes ``embeddings`` of each row's first text (see :mod:`contrastlib.pipeline`).
    needs = frozenset({"embeddings"})

    def __init__(
        self,
        rows: Sequence[Any],
        batch_size: int,
        *,
        embeddings: Any,
        clusters: int | None = None,
        mix: float = 0.0,
        iterations: int = 20,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        self.check_options(batch_size, clusters=clusters, mix=mix, iterations=iterations)
        super().__init__(rows, batch_size, drop_last=drop_last, seed=seed, num_replicas=num_replicas, rank=rank)
        x = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
        if x.ndim != 2 or len(x) != len(rows):
            raise ValueError(f"embeddings: expected [{len(rows)}, D], got {tuple(x.shape)}")
        if not np.isfinite(x).all():
            raise ValueError("embeddings: NaN or infinite values")
        x = l2_normalise(x)  # a new array: not the caller's
        n = len(rows)
        k = clusters if clusters is not None else min(math.ceil(n / batch_size), MAX_DEFAULT_CLUSTERS)
        k = max(1, min(k, n))
        self.mix = float(mix)
        self.centroids: np.ndarray = np.zeros((0, x.shape[1]), np.float32)
        #: The cluster of every row.
        self.assignment: np.ndarray = np.zeros(0, np.int64)
        if n:
            self.centroids, self.assignment = kmeans(x, k, seed=seed, iterations=iterations)
        self._index_clusters()
        self._agreed = False

    def _index_clusters(self) -> None:
        #: Row indices of every cluster (some may be empty).
        self.members: list[list[int]] = [[] for _ in range(len(self.centroids))]
        for i, c in enumerate(self.assignment.tolist()):
            self.members[c].append(i)
        #: For every cluster, the other clusters nearest first (at most ``NEAREST``).
        self.nearest: list[list[int]] = self._nearest_clusters()

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.agree_with_rank_0()

    def agree_with_rank_0(self) -> None:
        """Take rank 0's clusters (a collective: every rank calls it, once per process
        group; nothing without one, or with explicit ``num_replicas``/``rank``)."""
        if self._agreed or self.num_replicas is not None or not (dist.is_available() and dist.is_initialized()):
            return
        self._agreed = True
        if dist.get_world_size() == 1:
            return
        payload: list[Any] = [self.centroids, self.assignment]
        dist.broadcast_object_list(payload, src=0)
        if dist.get_rank() != 0:
            self.centroids, self.assignment = payload
            self._index_clusters()
        self._cache = None  # batches formed before (for __len__) used this rank's clusters

    @classmethod
    def check_options(  # type: ignore[override]
        cls, batch_size: int, *, clusters: int | None = None, mix: float = 0.0, iterations: int = 20
    ) -> None:
        """Raise ``ValueError("<option>: ...")`` for a value no data could make work."""
        if clusters is not None and (isinstance(clusters, bool) or not isinstance(clusters, int) or clusters < 1):
            raise ValueError(f"clusters: must be an integer >= 1, got {clusters!r}")
        if isinstance(mix, bool) or not isinstance(mix, (int, float)) or not 0 <= mix <= 1:
            raise ValueError(f"mix: must be a number in [0, 1], got {mix!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations: must be an integer >= 1, got {iterations!r}")

    def _nearest_clusters(self) -> list[list[int]]:
        k = len(self.centroids)
        if k <= 1:
            return [[] for _ in range(k)]
        index = VectorIndex(self.centroids.shape[1], IndexSpec("flat"), use_gpu=False)
        index.add(self.centroids)
        _, ids = index.search(self.centroids, min(k, NEAREST + 1))
        return [[int(j) for j in row if j >= 0 and j != c] for c, row in enumerate(ids)]

    def global_batches(self, epoch: int, global_batch_size: int) -> list[list[int]]:
        rng = random.Random(self.seed + epoch)
        pools: list[deque[int]] = []
        for members in self.members:
            rows = list(members)
            rng.shuffle(rows)
            pools.append(deque(rows))
        order = [c for c, pool in enumerate(pools) if pool]
        rng.shuffle(order)
        stream = list(range(self.num_rows))  # the random draws (mix) and the last resort
        rng.shuffle(stream)
        state = _Epoch(self.keys, pools, stream)
        size = global_batch_size
        n_random = math.floor(self.mix * size)
        batches: list[list[int]] = []
        head, remaining = 0, self.num_rows
        while remaining:
            while not state.has_rows(order[head]):  # clusters before `head` are used up
                head += 1
            chain = [order[head], *self.nearest[order[head]]]
            batch = _Batch()
            state.from_clusters(batch, chain, size - n_random)
            state.from_stream(batch, size)
            if len(batch.rows) < size:  # the random stream ran dry
                state.from_clusters(batch, chain, size)
            remaining -= len(batch.rows)
            batches.append(batch.rows)
        return batches


class _Batch:
    """A global batch under construction: its rows and their texts."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.seen: set[Hashable] = set()


class _Epoch:
    """The rows not yet used in an epoch: per-cluster pools and a random stream."""

    def __init__(self, keys: Sequence[tuple[Hashable, ...]], pools: list[deque[int]], stream: list[int]) -> None:
        self.keys, self.pools, self.stream = keys, pools, stream
        self.cursor = 0
        self.used = bytearray(len(keys))

    def has_rows(self, c: int) -> bool:
        pool = self.pools[c]
        while pool and self.used[pool[0]]:
            pool.popleft()
        return bool(pool)

    def take(self, batch: _Batch, i: int) -> bool:
        """Add row ``i`` unless it is used or repeats a text of the batch."""
        texts = self.keys[i]
        if self.used[i] or any(t in batch.seen for t in texts):
            return False
        self.used[i] = 1
        batch.rows.append(i)
        batch.seen.update(texts)
        return True

    def from_pool(self, batch: _Batch, c: int, limit: int) -> None:
        pool, waiting = self.pools[c], []
        while pool and len(batch.rows) < limit:
            i = pool.popleft()
            if not self.used[i] and not self.take(batch, i):
                waiting.append(i)  # repeats a text of this batch: a later batch takes it
        pool.extendleft(reversed(waiting))

    def from_stream(self, batch: _Batch, limit: int) -> None:
        while self.cursor < len(self.stream) and len(batch.rows) < limit:
            self.take(batch, self.stream[self.cursor])  # one skipped stays in its cluster's pool
            self.cursor += 1

    def from_clusters(self, batch: _Batch, chain: list[int], limit: int) -> None:
        """The seed cluster, then its nearest clusters, then any rows left."""
        for c in chain:
            if len(batch.rows) >= limit:
                return
            self.from_pool(batch, c, limit)
        self.from_stream(batch, limit)
