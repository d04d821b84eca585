"""One FAISS index layer for every nearest-neighbour search in contrastlib (mining,
cluster samplers, retrieval evaluation, kNN monitors).

Kinds, chosen by name with their parameters (:class:`IndexSpec`):

* ``flat``: exact inner product (``IndexFlatIP``);
* ``ivf_flat``: inverted lists over ``nlist`` k-means cells, ``nprobe`` searched;
* ``hnsw``: HNSW graph with ``m`` links per node, ``ef_search`` / ``ef_construction``;
* ``ivf_pq``: inverted lists with product-quantised codes of ``pq_bytes`` bytes a vector.

Scores are inner products (cosine for normalised vectors). Vectors are added and
searched in batches: FAISS keeps a running top-k per query, so no query x corpus matrix
is ever built. Trained kinds are trained on a seeded sample of at most
``train_size`` vectors. ``save`` is atomic. faiss-gpu is used when it is installed and
CUDA is present (``flat``, ``ivf_flat`` and ``ivf_pq``; HNSW has no GPU version) and a
tiny search on the GPU succeeds in a child process, else CPU (:func:`gpu_usable`).

Exact search (``flat``) runs in torch instead (:mod:`contrastlib.index.torch_search`, a
chunked matrix product and top-k) on a CUDA GPU whenever one is present, whatever FAISS
build is installed, or on any torch device named by ``search_device``. ``backend`` says
which ran; mining and retrieval record it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contrastlib.index import gpu as faiss_gpu
from contrastlib.index.flat import FlatRows, faiss_bytes
from contrastlib.index.torch_search import SplitExactSearch, TorchExactSearch, torch_search_device
from contrastlib.utils.io import atomic_path, write_json

KINDS = ("flat", "ivf_flat", "hnsw", "ivf_pq")


@dataclass(frozen=True)
class IndexSpec:
    """Which index, and its parameters (those of other kinds are ignored)."""

    kind: str = "flat"
    nlist: int = 1024
    nprobe: int = 16
    m: int = 32
    ef_search: int = 64
    ef_construction: int = 80
    pq_bytes: int = 32
    train_size: int = 100_000
    seed: int = 0
    #: Where exact (``flat``) search runs: ``faiss``; ``auto`` (torch on the first CUDA GPU
    #: where one is present, whatever FAISS build is installed; else FAISS on the CPU: the
    #: command line's default); or a torch device (``cpu``, ``cuda``, ``cuda:1``;
    #: contrastlib/index/torch_search.py), or several (``cuda:0,cuda:1``: the corpus split
    #: over them, for one too large for a GPU). The default keeps searches inside a training
    #: run (evaluators, re-mining) off the GPU that trains.
    search_device: str = "faiss"
    #: Torch search's score precision: ``fp32``, or ``bf16`` with a float32 re-score of
    #: the candidates.
    score_dtype: str = "fp32"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.score_dtype not in ("fp32", "bf16"):
            raise ValueError(f"score dtype: fp32 or bf16, got {self.score_dtype!r}")
        for name in self.torch_devices:
            try:
                device = torch.device(name)
            except RuntimeError:
                device = None
            if device is None or device.type not in ("cpu", "cuda"):
                raise ValueError(f"search device: auto, faiss, cpu or cuda[:N], or a list of them "
                                 f"(cuda:0,cuda:1: the corpus split over them), got {self.search_device!r}")
        if self.kind != "flat" and self.torch_devices:
            raise ValueError(f"search device {self.search_device!r}: torch searches exactly (index flat), "
                             f"not {self.kind}")
        for name in ("nlist", "nprobe", "m", "ef_search", "ef_construction", "pq_bytes", "train_size"):
            if vars(self)[name] < 1:
                raise ValueError(f"index {name} must be >= 1, got {vars(self)[name]}")

    @property
    def trained(self) -> bool:
        """Whether the kind needs training before vectors are added."""
        return self.kind in ("ivf_flat", "ivf_pq")

    @property
    def torch_devices(self) -> list[str]:
        """The torch devices ``search_device`` names (none for ``auto`` and ``faiss``)."""
        if self.search_device in ("auto", "faiss"):
            return []
        return [d.strip() for d in self.search_device.split(",")]

    def training_rows(self, n: int) -> np.ndarray:
        """Which of ``n`` vectors :meth:`VectorIndex.train` trains on: all, or a seeded sample
        of ``train_size`` (sorted), so a caller can read only those."""
        if n <= self.train_size:
            return np.arange(n)
        return np.sort(np.random.default_rng(self.seed).choice(n, self.train_size, replace=False))


def _faiss() -> Any:
    import faiss

    return faiss


def _as_float32(x: Any, dim: int, what: str) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{what} must be [n, {dim}], got {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} holds NaN or infinite values (un-normalisable embeddings?)")
    return arr


def l2_normalise(x: Any) -> np.ndarray:
    """Rows scaled to unit length (float32), so inner product is cosine similarity; a zero
    row stays zero."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class VectorIndex:
    """A FAISS index of ``dim``-dimensional vectors, searched by inner product.

    Args:
        dim: vector size.
        spec: kind and parameters.
        use_gpu: ``"auto"`` (faiss-gpu and CUDA present), or True / False.
    """

    def __init__(self, dim: int, spec: IndexSpec | None = None, *, use_gpu: bool | str = "auto") -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim, self.spec = dim, spec or IndexSpec()
        self._torch = self._torch_search(use_gpu)
        self.on_gpu = False
        self._flat: FlatRows | None = None
        self._ids_mapped = False  # an IndexIDMap was put around the index for add(ids=)
        if self._torch is None:
            self._index = self._build()
            self._place(use_gpu)
            self._set_search_parameters()
            if self.spec.kind == "flat" and not self.on_gpu:
                self._flat, self._index = FlatRows(dim), None

    def _torch_search(self, use_gpu: bool | str = "auto") -> TorchExactSearch | SplitExactSearch | None:
        """Exact search in torch where :attr:`IndexSpec.search_device` asks for it (``auto``:
        a CUDA GPU is present and ``use_gpu`` does not say no), else None (FAISS)."""
        s = self.spec
        if s.kind != "flat" or s.search_device == "faiss" or (s.search_device == "auto" and use_gpu is False):
            return None
        if len(s.torch_devices) > 1:  # the corpus split over several devices
            return SplitExactSearch(self.dim, devices=s.torch_devices, score_dtype=s.score_dtype)
        device = torch_search_device(s.search_device)
        return None if device is None else TorchExactSearch(self.dim, device=device, score_dtype=s.score_dtype)

    @property
    def backend(self) -> str:
        """What searches: ``faiss-cpu``, ``faiss-gpu`` or ``torch-DEVICE-DTYPE`` (recorded in
        the outputs' summaries)."""
        if self._torch is not None:
            return self._torch.backend
        return "faiss-gpu" if self.on_gpu else "faiss-cpu"

    def _place(self, use_gpu: bool | str) -> None:
        """Move the index to the GPU when asked (``"auto"``: when :func:`gpu_usable`)."""
        if use_gpu == "auto":
            want_gpu, why = faiss_gpu.gpu_usable()
            if not want_gpu and faiss_gpu.gpu_available():  # faiss-gpu and a device, but its kernels fail
                warnings.warn(f"FAISS search stays on the CPU: {why}", RuntimeWarning, stacklevel=3)
        else:
            want_gpu = bool(use_gpu)
        self.on_gpu = want_gpu and self.spec.kind != "hnsw"  # HNSW has no GPU version
        if self.on_gpu:
            usable, why = faiss_gpu.gpu_usable()
            if not usable:
                raise RuntimeError(f"use_gpu=True, but {why}")
            faiss = _faiss()
            self._gpu_resources = faiss.StandardGpuResources()
            self._index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._index)

    # ------------------------------------------------------------------ building
    def _build(self) -> Any:
        faiss, s, d = _faiss(), self.spec, self.dim
        ip = faiss.METRIC_INNER_PRODUCT
        if s.kind == "flat":
            return faiss.IndexFlatIP(d)
        if s.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, s.m, ip)
            index.hnsw.efConstruction = s.ef_construction
            return index
        self._quantizer = faiss.IndexFlatIP(d)
        if s.kind == "ivf_flat":
            return faiss.IndexIVFFlat(self._quantizer, d, s.nlist, ip)
        if d % s.pq_bytes:
            raise ValueError(f"ivf_pq: dim {d} must be a multiple of pq_bytes {s.pq_bytes}")
        return faiss.IndexIVFPQ(self._quantizer, d, s.nlist, s.pq_bytes, 8, ip)

    def _set_search_parameters(self) -> None:
        faiss, s = _faiss(), self.spec
        if s.kind == "hnsw":
            self._index.hnsw.efSearch = s.ef_search
        elif s.trained:
            if self.on_gpu:
                faiss.GpuParameterSpace().set_index_parameter(self._index, "nprobe", s.nprobe)
            else:
                self._index.nprobe = s.nprobe

    @property
    def ntotal(self) -> int:
        if self._torch is not None:
            return self._torch.ntotal
        return self._flat.ntotal if self._flat is not None else int(self._index.ntotal)

    @property
    def nbytes(self) -> int:
        """The index's payload in memory: vectors or codes, lists, graph links and the ids it
        keeps (read from its structures; a GPU index's is its CPU twin's)."""
        if self._torch is not None:
            return self._torch.nbytes
        if self._flat is not None:
            return int(self._flat.data.nbytes)
        return faiss_bytes(self._index)

    @property
    def is_trained(self) -> bool:
        return True if self._torch is not None or self._flat is not None else bool(self._index.is_trained)

    def train(self, vectors: Any) -> None:
        """Train on a seeded sample of at most ``train_size`` vectors (trained kinds only)."""
        if not self.spec.trained:
            return
        x = _as_float32(vectors, self.dim, "training vectors")
        if len(x) < self.spec.nlist:
            raise ValueError(f"{self.spec.kind}: {len(x)} training vectors for nlist={self.spec.nlist}; need at least nlist")
        if len(x) > self.spec.train_size:
            x = x[self.spec.training_rows(len(x))]
        self._index.train(x)
        self._set_search_parameters()

    def reserve(self, n: int) -> None:
        """Room for ``n`` vectors, allocated once (exact search: the index is then exactly
        ``n x dim x 4`` bytes, built from shards without a second copy; other kinds keep
        FAISS's own storage)."""
        if self._torch is not None:
            self._torch.reserve(n)
        elif self._flat is not None:
            self._flat.reserve(n)

    def add(self, vectors: Any, *, ids: Any = None, batch_size: int = 65_536) -> None:
        """Add vectors, in batches: under ids ``ntotal, ntotal + 1, ...``, or under ``ids``
        (distinct integers >= 0; an exact search needs every id below the highest added
        before it searches). Searches return these ids."""
        if not self.is_trained:
            raise RuntimeError(f"{self.spec.kind} index: call train() before add()")
        x = _as_float32(vectors, self.dim, "vectors")
        id_arr = None if ids is None else np.ascontiguousarray(np.asarray(ids, dtype=np.int64))
        if id_arr is not None and (id_arr.shape != (len(x),) or (len(id_arr) and id_arr.min() < 0)):
            raise ValueError(f"ids must be {len(x)} integers >= 0, got shape {id_arr.shape}")
        if id_arr is not None and self._torch is None and self._flat is None and not self._ids_mapped:
            self._map_ids()
        for part in _batches(len(x), batch_size):
            part_ids = None if id_arr is None else id_arr[part]
            if self._torch is not None:
                self._torch.add(x[part], part_ids)
            elif self._flat is not None:
                self._flat.add(x[part], part_ids)
            elif part_ids is not None:
                self._index.add_with_ids(x[part], part_ids)
            elif self._ids_mapped:
                raise ValueError("this index was given ids; give every add ids")
            else:
                self._index.add(x[part])

    def _map_ids(self) -> None:
        """Let a FAISS index keep the caller's ids (IVF kinds keep them natively; HNSW and
        GPU indexes go inside an ``IndexIDMap``)."""
        if self.ntotal:
            raise ValueError("ids: give every add ids, from the first")
        if not (self.spec.trained and not self.on_gpu):
            self._inner = self._index
            self._index = _faiss().IndexIDMap(self._inner)
        self._ids_mapped = True

    def _flat_rows(self) -> np.ndarray:
        assert self._flat is not None
        return self._flat.data[: self._flat.extent]  # (a view: no second copy)

    @property
    def exact(self) -> bool:
        """Whether the index keeps every vector as given (exact search: :meth:`vectors`)."""
        return self._flat is not None or self._torch is not None

    def vectors(self, ids: Any) -> np.ndarray:
        """The stored vectors under ``ids`` (exact search only: :attr:`exact`)."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._flat is not None:
            return self._flat.rows(ids)
        if self._torch is not None:
            return self._torch.rows(ids)
        raise ValueError(f"a {self.spec.kind} index does not keep its vectors exactly")

    def search(self, queries: Any, k: int, *, batch_size: int = 4_096) -> tuple[np.ndarray, np.ndarray]:
        """``(scores [n, k], ids [n, k])``, best first; ids are -1 where fewer than ``k``
        vectors were found. Memory is bounded by ``batch_size x k`` per batch."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = _as_float32(queries, self.dim, "queries")
        scores = np.empty((len(q), k), dtype=np.float32)
        ids = np.empty((len(q), k), dtype=np.int64)
        found = self._torch if self._torch is not None else self._flat if self._flat is not None else self._index
        for part in _batches(len(q), batch_size):
            scores[part], ids[part] = found.search(q[part], k)
        return scores, ids

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (the FAISS index) and ``path.json`` (its spec), each atomically."""
        faiss, path = _faiss(), Path(path)
        if self._torch is not None or self._flat is not None:  # saved as FAISS's flat index of the same vectors
            index = faiss.IndexFlatIP(self.dim)
            stored = self._torch.rows(None) if self._torch is not None else self._flat_rows()
            for part in _batches(len(stored), 65_536):
                index.add(np.ascontiguousarray(stored[part]))
        else:
            index = faiss.index_gpu_to_cpu(self._index) if self.on_gpu else self._index
        with atomic_path(path) as tmp:
            faiss.write_index(index, str(tmp))
        write_json(path.with_name(path.name + ".json"), {"dim": self.dim, "spec": asdict(self.spec)})
        return path

    @classmethod
    def load(cls, path: str | Path, *, use_gpu: bool | str = "auto") -> VectorIndex:
        faiss, path = _faiss(), Path(path)
        meta_path = path.with_name(path.name + ".json")
        if not path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(f"{path}: no saved index (needs {path.name} and {meta_path.name})")
        meta = json.loads(meta_path.read_text())
        out = cls.__new__(cls)
        out.dim, out.spec = int(meta["dim"]), IndexSpec(**meta["spec"])
        out._torch, out.on_gpu, out._flat, out._ids_mapped = out._torch_search(use_gpu), False, None, False
        index = faiss.read_index(str(path))
        if out._torch is not None:  # a flat index's vectors, back into torch
            out._torch.add(index.reconstruct_n(0, index.ntotal))
            return out
        out._index = index
        out._place(use_gpu)
        out._set_search_parameters()
        if out.spec.kind == "flat" and not out.on_gpu:
            out._flat, out._index = FlatRows(out.dim), None
            out._flat.add(index.reconstruct_n(0, index.ntotal))
        return out
