"""Exact inner-product search in torch: a chunked matrix product and a running top-k, on
any device torch has (a CUDA GPU whatever FAISS build is installed, or the CPU).

Vectors live on the device in float32. A batch of queries is scored against the corpus
chunk by chunk (``chunk_rows`` rows at a time: memory is ``query batch x chunk`` scores,
never ``queries x corpus``), each chunk's top ``k`` merged into the batch's running top
``k``. With ``score_dtype="bf16"`` the chunk products run in bfloat16 (several times the
fp32 rate on GPUs with tensor cores) and keep ``k + margin`` candidates, which are then
scored again in float32 and re-ranked: the ids and scores returned are float32 ones, and
a true top-``k`` neighbour is lost only if bf16 rounding pushed it below ``k + margin``
others.

Ties: among equal scores kept, the lower id comes first. Which of several exactly equal
scores at the ``k``-th place is kept can differ from FAISS's choice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

SCORE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class TorchExactSearch:
    """The exact search of ``dim``-dimensional vectors by inner product, on ``device``."""

    def __init__(self, dim: int, *, device: str | torch.device = "cpu", score_dtype: str = "fp32",
                 chunk_rows: int = 65_536, margin: int = 32) -> None:
        if score_dtype not in SCORE_DTYPES:
            raise ValueError(f"score_dtype: one of {', '.join(SCORE_DTYPES)}, got {score_dtype!r}")
        if chunk_rows < 1 or margin < 0:
            raise ValueError("chunk_rows must be >= 1 and margin >= 0")
        self.dim, self.device = dim, torch.device(device)
        self.score_dtype, self.chunk_rows, self.margin = score_dtype, chunk_rows, margin
        self._data = torch.zeros((0, dim), device=self.device)  # rows 0..extent-1 in use
        self._low: torch.Tensor | None = None  # the same, in the score dtype (bf16 only)
        self.ntotal = 0  # vectors added
        self.extent = 0

    @property
    def backend(self) -> str:
        return f"torch-{self.device.type}-{self.score_dtype}"

    @property
    def nbytes(self) -> int:
        """Device memory held: the float32 rows, and their bf16 copy once searched."""
        low = 0 if self._low is None else self._low.numel() * self._low.element_size()
        return self._data.numel() * 4 + low

    def reserve(self, n: int) -> None:
        """Room for ``n`` vectors on the device, allocated once."""
        if n > len(self._data):
            grown = torch.zeros((n, self.dim), device=self.device)
            grown[: self.extent] = self._data[: self.extent]
            self._data = grown
            self._low = None

    def add(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Add vectors under ids ``extent, extent + 1, ...``, or under ``ids``."""
        x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(self.device)
        at = torch.arange(self.extent, self.extent + len(x)) if ids is None else torch.as_tensor(ids, dtype=torch.long)
        top = int(at.max()) + 1 if len(at) else 0
        if top > len(self._data):
            self.reserve(max(top, 2 * len(self._data)))
        self._data[at.to(self.device)] = x
        self.ntotal += len(x)
        self.extent = max(self.extent, top)
        self._low = None

    def rows(self, ids: np.ndarray | None) -> np.ndarray:
        """The stored vectors under ``ids`` (None: all), on the CPU."""
        data = self._data[: self.extent]
        return (data if ids is None else data[torch.as_tensor(ids, dtype=torch.long).to(self.device)]).cpu().numpy()

    def _chunks(self) -> list[torch.Tensor]:
        if self.ntotal != self.extent:
            raise RuntimeError(f"vectors added under ids 0..{self.extent - 1} number {self.ntotal}: "
                               "every id below the highest must be added before a search")
        data = self._data[: self.extent]
        if self.score_dtype != "fp32":
            if self._low is None:
                self._low = data.to(SCORE_DTYPES[self.score_dtype])
            data = self._low
        return list(data.split(self.chunk_rows))

    @torch.inference_mode()
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores [n, k], ids [n, k])``, best first; -1 ids (and -inf scores) where the
        index holds fewer than ``k`` vectors."""
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(self.device)
        n = len(q)
        keep = min(k + (self.margin if self.score_dtype != "fp32" else 0), self.ntotal)
        best_s = torch.full((n, 0), float("-inf"), device=self.device)
        best_i = torch.zeros((n, 0), dtype=torch.long, device=self.device)
        start = 0
        parts = self._chunks()
        q_low = q.to(SCORE_DTYPES[self.score_dtype])
        for part in parts:
            scores = (q_low @ part.T).float()
            top = min(keep, part.shape[0])
            s, i = _top(scores, top)
            best_s, best_i = _merge(best_s, best_i, s, i + start, keep)
            start += part.shape[0]
        if self.score_dtype != "fp32" and best_i.shape[1]:  # float32 scores of the candidates
            whole = self._data[: self.extent]
            rescored = torch.empty_like(best_s)
            step = max(1, (1 << 26) // max(1, best_i.shape[1] * self.dim))  # ~256 MB of gathered rows at a time
            for a in range(0, n, step):
                rows = whole.index_select(0, best_i[a : a + step].reshape(-1)).view(-1, best_i.shape[1], self.dim)
                rescored[a : a + step] = torch.einsum("nd,nkd->nk", q[a : a + step], rows)
            best_s, best_i = _merge(best_s[:, :0], best_i[:, :0], rescored, best_i, k)
        best_s, best_i = best_s[:, :k], best_i[:, :k]
        out_s = np.full((n, k), -np.inf, dtype=np.float32)
        out_i = np.full((n, k), -1, dtype=np.int64)
        out_s[:, : best_s.shape[1]] = best_s.cpu().numpy()
        out_i[:, : best_i.shape[1]] = best_i.cpu().numpy()
        return out_s, out_i


class SplitExactSearch:
    """Exact search with the corpus split over several devices (a corpus too large for
    one GPU): row ``i`` lives on device ``i % P`` as that device's row ``i // P``. Every
    query batch is searched on each device, and the ``P`` top-``k`` lists are merged by
    score, the lower id first among equal scores (as one device orders them)."""

    def __init__(self, dim: int, *, devices: list[str], score_dtype: str = "fp32", **kwargs: Any) -> None:
        if len(devices) < 2:
            raise ValueError("a split search needs two devices or more")
        self.dim, self.score_dtype = dim, score_dtype
        self.parts = [TorchExactSearch(dim, device=d, score_dtype=score_dtype, **kwargs) for d in devices]
        self.extent = 0

    @property
    def backend(self) -> str:
        return f"{self.parts[0].backend}-x{len(self.parts)}"

    @property
    def ntotal(self) -> int:
        return sum(p.ntotal for p in self.parts)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts)

    def reserve(self, n: int) -> None:
        for p, part in enumerate(self.parts):
            part.reserve(len(range(p, n, len(self.parts))))

    def add(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> None:
        ids = np.arange(self.extent, self.extent + len(vectors)) if ids is None else np.asarray(ids, dtype=np.int64)
        n = len(self.parts)
        for p, part in enumerate(self.parts):
            mine = ids % n == p
            if mine.any():
                part.add(vectors[mine], ids[mine] // n)
        self.extent = max(self.extent, int(ids.max()) + 1) if len(ids) else self.extent

    def rows(self, ids: np.ndarray | None) -> np.ndarray:
        ids = np.arange(self.extent) if ids is None else np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        n = len(self.parts)
        for p, part in enumerate(self.parts):
            mine = ids % n == p
            if mine.any():
                out[mine] = part.rows(ids[mine] // n)
        return out

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.parts)
        found = [part.search(queries, k) for part in self.parts]
        scores = np.concatenate([s for s, _ in found], axis=1)
        ids = np.concatenate([np.where(i >= 0, i * n + p, -1) for p, (_, i) in enumerate(found)], axis=1)
        # best score first, then the lower id; the -1 fillers (fewer than k) last
        order = np.lexsort((np.where(ids >= 0, ids, np.iinfo(np.int64).max), -scores), axis=1)[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def _top(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best of each row (which of several equal scores at the ``k``-th place is
    kept is topk's choice; the merge orders the kept ones by id)."""
    s, i = torch.topk(scores, k, dim=1)
    return s, i


def _merge(a_s: torch.Tensor, a_i: torch.Tensor, b_s: torch.Tensor, b_i: torch.Tensor,
           k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best of two candidate lists by score, lower id first among equal scores."""
    s, i = torch.cat([a_s, b_s], dim=1), torch.cat([a_i, b_i], dim=1)
    # sort by id, then stably by score: equal scores stay in id order
    by_id = torch.argsort(i, dim=1, stable=True)
    s, i = torch.gather(s, 1, by_id), torch.gather(i, 1, by_id)
    order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.gather(s, 1, order), torch.gather(i, 1, order)


def torch_search_device(requested: Any = "auto") -> torch.device | None:
    """The device exact search runs on in torch: ``auto`` is the first CUDA GPU where one
    is present (None: none, FAISS searches), else the device named."""
    if requested == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else None
    return torch.device(requested)
