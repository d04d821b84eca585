"""On-disk embedding cache: sharded, fingerprinted, resumable.

Embeddings of a list of texts are stored under ``root/<key>/`` where the key is a hash of

* the model's weights (every parameter and buffer, by name) and its settings (pooling,
  normalisation, max length: a TextEncoder's spec, or the module's repr for other
  encoders),
* the encoding settings (precision, prompt, and any extra encode arguments such as
  ``pad_to_multiple_of``, which moves bf16 results by rounding),
* the texts themselves, in order.

Change any of them and the key changes: a stale cache is never read. The texts are
encoded in shards of ``shard_size`` rows, taken in :func:`length_order` so that the run
pads about as little as one sorted pass over all the texts (shards of the input order,
each sorted on its own, padded 3% more tokens on STS-B's sentences;
``docs/benchmarks.md``); the rows go back to input order when read. Each shard is
written atomically (``shard-00000.npy``) and recorded with its SHA-256 in
``manifest.json`` (also written atomically) as soon as it is done. A run killed halfway
resumes at the first shard the manifest does not list; a shard whose bytes no longer
match its checksum is encoded again.
(sentence-transformers' miner caches with one plain ``np.save`` of the whole matrix, so a
kill loses all of it and a half-written file is read back.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from contrastlib.utils.io import atomic_path, cache_root, committed_record, write_json
from contrastlib.utils.marks import prompted
from contrastlib.utils.text_store import TextStore, texts_fingerprint

#: 2: shards follow the length order (1: the input order).
FORMAT_VERSION = 2


def default_cache_dir() -> Path:
    """``$CONTRASTLIB_CACHE`` or ``~/.cache/contrastlib``: embeddings reused across runs."""
    return cache_root() / "embeddings"


def model_fingerprint(encoder: Any) -> str:
    """The encoder's ``weights_fingerprint()``: a hash of its weights and settings (a
    lazily loaded model's is a hash of its files)."""
    return str(encoder.weights_fingerprint())


def length_order(texts: Sequence[str]) -> np.ndarray:
    """Row indices of ``texts`` by length in characters, longest first, ties in input
    order: the order the cache's shards take their texts in."""
    if isinstance(texts, TextStore):
        lengths = texts.char_lengths()
    else:
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    return np.argsort(-lengths, kind="stable")


class EmbeddingCache:
    """Embeddings on disk under ``root``, one directory per (model, settings, texts).

    Args:
        root: cache directory (created when needed).
        shard_size: texts per shard: the unit that a killed run keeps.
    """

    def __init__(self, root: str | Path, *, shard_size: int = 2048) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.root = Path(root)
        self.shard_size = shard_size
        #: What the last :meth:`embed` did: shards reused and encoded.
        self.last_stats: dict[str, int] = {}
        #: Encodes missing shards elsewhere before :meth:`embed` encodes what is left:
        #: ``pool(job)`` (several processes or devices, contrastlib/pool.py); None: here.
        self.pool: Callable[[ShardJob], None] | None = None

    def key(self, encoder: Any, texts: Sequence[str], *, precision: str = "fp32", prompt: str = "",
            model_fp: str | None = None, encode_kwargs: dict[str, Any] | None = None) -> str:
        h = hashlib.blake2b(digest_size=16)
        settings = {"v": FORMAT_VERSION, "precision": precision, "prompt": prompt, "shard_size": self.shard_size,
                    "encode": encode_kwargs or {}}
        h.update((model_fp or model_fingerprint(encoder)).encode())
        h.update(json.dumps(settings, sort_keys=True).encode())
        h.update(texts_fingerprint(texts).encode())
        return h.hexdigest()

    def ensure(
        self,
        encoder: Any,
        texts: Sequence[str],
        *,
        prompt: str = "",
        batch_size: int = 128,
        precision: str = "fp32",
        show_progress_bar: bool = True,
        desc: str = "embed",
        model_fp: str | None = None,
        encode_kwargs: dict[str, Any] | None = None,
    ) -> CachedEmbeddings:
        """Encode the shards of ``texts`` the cache does not hold yet, and return the
        entry, read one shard at a time (:class:`CachedEmbeddings`): no more than a shard's
        embeddings is held here, whatever the number of texts. ``texts`` may be a list or
        a :class:`~contrastlib.utils.text_store.TextStore` (read from disk as needed)."""
        key = self.key(encoder, texts, precision=precision, prompt=prompt, model_fp=model_fp,
                       encode_kwargs=encode_kwargs)
        folder = self.root / key
        folder.mkdir(parents=True, exist_ok=True)
        manifest_path = folder / "manifest.json"
        n_shards = -(-len(texts) // self.shard_size)
        manifest: dict[str, Any] = {"version": FORMAT_VERSION, "n": len(texts), "shard_size": self.shard_size,
                                    "precision": precision, "prompt": prompt, "shards": {}}
        if manifest_path.is_file():
            try:
                stored = json.loads(manifest_path.read_text())
            except (OSError, ValueError):  # unreadable or not JSON: start a new manifest
                stored = None
            if _valid_manifest(stored, len(texts), self.shard_size):
                manifest = stored  # (shards not listed in it are encoded again)
        order = length_order(texts)

        def load(shards: Sequence[int]) -> list[int]:
            """Check ``shards`` as the manifest lists them, else as their sidecars vouch for
            them (a pool's process, or a manifest lost; the manifest then records them);
            returns those still missing."""
            adopted, missing = False, []
            for i in shards:
                listed = manifest["shards"].pop(str(i), None)
                found = committed_record(folder / f"shard-{i:05d}.npy", listed["sha256"] if listed else None,
                                         _sidecar_path(folder, i))
                if found is None:
                    missing.append(i)
                    continue
                adopted |= listed is None or found["sha256"] != listed["sha256"]
                manifest["shards"][str(i)] = listed if listed and found["sha256"] == listed["sha256"] else found
            if adopted:
                write_json(manifest_path, manifest)
            return missing

        missing = load(range(n_shards))
        self.last_stats = {"shards": n_shards, "reused": n_shards - len(missing), "encoded": len(missing)}
        job = ShardJob(folder, texts, missing, prompt, batch_size, precision, dict(encode_kwargs or {}),
                       self.shard_size, order=order)
        if missing and self.pool is not None:  # other processes encode them; their shards are then read
            self.pool(job)
            job = dataclasses.replace(job, shard_ids=load(missing))
            missing = job.shard_ids
        with tqdm(total=len(texts), desc=desc, unit="text", disable=not show_progress_bar or not missing) as bar:
            bar.update(len(texts) - sum(len(order[i * self.shard_size : (i + 1) * self.shard_size]) for i in missing))
            for i, emb, entry in encode_shards(encoder, job):
                manifest["shards"][str(i)] = entry
                write_json(manifest_path, manifest)
                bar.update(len(emb))
        return CachedEmbeddings(folder, order, self.shard_size,
                                [manifest["shards"][str(i)]["sha256"] for i in range(n_shards)])

    def embed(self, encoder: Any, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        """``[len(texts), dim]`` float32 embeddings in input order: :meth:`ensure`'s entry
        read whole (arguments as for :meth:`ensure`)."""
        return self.ensure(encoder, texts, **kwargs).matrix()

    def ensurer(self, encoder: Any, **kwargs: Any) -> Callable[[Sequence[str], str], CachedEmbeddings]:
        """``ensure(texts, kind)``: :meth:`ensure` with the model hashed once."""
        fp = model_fingerprint(encoder)

        def ensure(texts: Sequence[str], kind: str) -> CachedEmbeddings:
            return self.ensure(encoder, texts, desc=f"embed {kind}", model_fp=fp, **kwargs)

        return ensure

    def embedder(self, encoder: Any, **kwargs: Any) -> Callable[[Sequence[str], str], np.ndarray]:
        """``embed(texts, kind)`` for evaluators and the miner: the model is hashed once."""
        fp = model_fingerprint(encoder)

        def embed(texts: Sequence[str], kind: str) -> np.ndarray:
            return self.embed(encoder, texts, desc=f"embed {kind}", model_fp=fp, **kwargs)

        return embed



class CachedEmbeddings:
    """One cache entry's embeddings on disk, in input order by row number: read a shard at a
    time (:meth:`shards`), as rows (:meth:`take`), or whole (:meth:`matrix`)."""

    def __init__(self, folder: Path, order: np.ndarray, shard_size: int, checksums: list[str] | None = None) -> None:
        self.folder, self.order, self.shard_size = folder, order, shard_size
        #: Each shard's SHA-256, in shard order (what the embeddings are, in a few bytes).
        self.checksums = checksums or []
        self._position: np.ndarray | None = None
        self._data_at: dict[int, tuple[int, int]] = {}  # shard -> (byte offset of its rows, dim)

    def __len__(self) -> int:
        return len(self.order)

    @property
    def n_shards(self) -> int:
        return -(-len(self.order) // self.shard_size)

    def rows_of(self, i: int) -> np.ndarray:
        """The input rows of shard ``i``, in the shard's order."""
        return self.order[i * self.shard_size : (i + 1) * self.shard_size]

    def shard(self, i: int) -> np.ndarray:
        return np.load(self.folder / f"shard-{i:05d}.npy")

    def shards(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(input rows, embeddings)`` of each shard in turn."""
        for i in range(self.n_shards):
            yield self.rows_of(i), self.shard(i)

    @property
    def dim(self) -> int:
        return self._layout(0)[1] if len(self.order) else 0

    def prepared_dim(self, prepare: Callable[[np.ndarray], np.ndarray] | None = None) -> int:
        """Columns of ``prepare(shard)`` (a Matryoshka cut has fewer): tried on one zero row,
        so nothing is read and no row index is built."""
        if not len(self.order) or prepare is None:
            return self.dim
        return int(prepare(np.zeros((1, self.dim), dtype=np.float32)).shape[1])

    def _layout(self, i: int) -> tuple[int, int]:
        if i not in self._data_at:
            with open(self.folder / f"shard-{i:05d}.npy", "rb") as fh:
                major, _ = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(fh)
                if fortran or dtype != np.float32 or len(shape) != 2:
                    raise ValueError(f"{fh.name}: not a [rows, dim] float32 shard")
                self._data_at[i] = (fh.tell(), int(shape[1]))
        return self._data_at[i]

    def take(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """``[len(rows), dim]`` embeddings of input rows ``rows``, each read from its shard's
        file (no shard is read whole)."""
        if self._position is None:
            self._position = np.empty(len(self.order), dtype=np.int64)
            self._position[self.order] = np.arange(len(self.order))
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self.order)):
            raise IndexError(f"rows outside 0..{len(self.order) - 1}")
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        fds: dict[int, int] = {}
        try:
            for k, r in enumerate(rows):
                i, j = divmod(int(self._position[r]), self.shard_size)
                start, dim = self._layout(i)
                if i not in fds:
                    fds[i] = os.open(self.folder / f"shard-{i:05d}.npy", os.O_RDONLY)
                out[k] = np.frombuffer(os.pread(fds[i], 4 * dim, start + 4 * dim * j), dtype=np.float32)
        finally:
            for fd in fds.values():
                os.close(fd)
        return out

    def write(self, path: Path, fmt: str, prepare: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[int, int]:
        """Write every row of ``prepare(shard)`` in input order to ``path`` as ``fmt``
        (``npy``, or ``safetensors`` with one tensor ``embeddings``), a shard at a time: each
        row goes to its place in the file, so no more than a shard is held. Returns the shape."""
        n = len(self.order)
        dim = self.prepared_dim(prepare)
        with open(path, "wb") as fh:
            if fmt == "npy":
                np.lib.format.write_array_header_1_0(
                    fh, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": (n, dim)})
            else:  # safetensors: an 8-byte header size, a JSON header padded to 8 bytes, the data
                header = json.dumps({"embeddings": {"dtype": "F32", "shape": [n, dim], "data_offsets": [0, 4 * n * dim]}},
                                    separators=(",", ":")).encode()
                header += b" " * (-len(header) % 8)
                fh.write(len(header).to_bytes(8, "little") + header)
            start = fh.tell()
            fh.truncate(start + 4 * n * dim)
            fd = fh.fileno()
            for rows, emb in self.shards():
                block = np.ascontiguousarray(prepare(emb) if prepare else emb, dtype="<f4")
                for r, row in zip(rows.tolist(), block, strict=True):
                    os.pwrite(fd, row.tobytes(), start + 4 * dim * r)
        return n, dim

    def matrix(self) -> np.ndarray:
        """Every row, in input order."""
        if not len(self.order):
            return np.zeros((0, 0), dtype=np.float32)
        out = np.empty((len(self.order), self.dim), dtype=np.float32)
        for rows, emb in self.shards():
            out[rows] = emb
        return out


@dataclass(frozen=True)
class ShardJob:
    """Shards of one cache entry to encode: what a process of an encode pool is given."""

    folder: Path
    texts: Sequence[str]
    shard_ids: list[int]
    prompt: str
    batch_size: int
    precision: str
    encode_kwargs: dict[str, Any]
    shard_size: int
    #: Each shard's texts (aligned with ``shard_ids``), given instead of ``texts`` to a
    #: process that encodes only these (an encode pool's).
    chunks: list[list[str]] | None = None
    #: ``length_order(texts)``, where the caller has it already.
    order: np.ndarray | None = None


def shard_texts(job: ShardJob) -> Iterator[list[str]]:
    """The texts of each of ``job``'s shards (the cache's length order cut into shards),
    one shard at a time (a store's texts are read from disk as each shard comes)."""
    if job.chunks is not None:
        yield from job.chunks
        return
    order = job.order if job.order is not None else length_order(job.texts)
    for i in job.shard_ids:
        yield [job.texts[j] for j in order[i * job.shard_size : (i + 1) * job.shard_size]]


def encode_shards(encoder: Any, job: ShardJob) -> Iterator[tuple[int, np.ndarray, dict[str, Any]]]:
    """Encode ``job``'s shards one at a time, each written atomically with its sidecar
    (``shard-N.json``: rows, SHA-256 and the writing process's id, written after the
    shard), and yield each with its record. Any
    process may run it on its own shards: the files are the record, not a shared manifest."""
    kwargs = {"batch_size": job.batch_size, **job.encode_kwargs}
    if job.precision != "fp32":  # (a SentenceTransformer's ``precision`` means quantisation)
        kwargs["precision"] = job.precision
    for i, chunk in zip(job.shard_ids, shard_texts(job), strict=True):
        emb = np.asarray(encoder.encode([prompted(job.prompt, t) for t in chunk], show_progress_bar=False, **kwargs),
                         dtype=np.float32)
        buf = io.BytesIO()
        np.save(buf, emb)
        with atomic_path(job.folder / f"shard-{i:05d}.npy") as tmp:
            tmp.write_bytes(buf.getvalue())
        entry = {"rows": len(chunk), "sha256": hashlib.sha256(buf.getvalue()).hexdigest(), "pid": os.getpid()}
        write_json(_sidecar_path(job.folder, i), entry)
        yield i, emb, entry


def _sidecar_path(folder: Path, i: int) -> Path:
    return folder / f"shard-{i:05d}.json"


def _valid_manifest(stored: Any, n: int, shard_size: int) -> bool:
    if not isinstance(stored, dict) or stored.get("n") != n or stored.get("shard_size") != shard_size:
        return False
    shards = stored.get("shards")
    return isinstance(shards, dict) and all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in shards.values()
    )
