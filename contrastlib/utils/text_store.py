"""Texts on disk, read one at a time: a corpus that never sits in memory.

A store is a folder with one or two columns (``text``, and ``id`` where records have
ids), each kept as

* ``COLUMN.bin``: the UTF-8 bytes of every value, one after another;
* ``COLUMN.offsets.npy``: ``n + 1`` int64 offsets into it;
* ``COLUMN.digests.npy``: a 16-byte BLAKE2b digest per value (for de-duplication and
  membership tests without the values in memory);

plus ``text.chars.npy`` (each text's length in characters, for the embedding cache's
length order) and ``meta.json`` (rows, columns, the texts' fingerprint as
:func:`texts_fingerprint` computes it, and what the builder recorded). A value is read
with one ``pread``: no memory map, so reading a million texts leaves the process's
resident memory where it was, and the store costs 8 bytes a row per column in memory.

Stores are built once, atomically (:func:`build_store`), in a folder named by what they
were built from, and reused (:func:`cached_store`).
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from contrastlib.utils.io import atomic_dir, cache_root

FORMAT_VERSION = 1
#: Bytes read at a time when a column is read through.
_BLOCK = 1 << 22


def texts_fingerprint(texts: Iterable[str]) -> str:
    """A hash of ``texts`` in order (a :class:`TextStore` has it stored)."""
    if isinstance(texts, TextStore):
        return texts.fingerprint
    h = hashlib.blake2b(digest_size=20)
    for t in texts:
        _fingerprint_update(h, t.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _fingerprint_update(h: Any, b: bytes) -> None:
    h.update(len(b).to_bytes(8, "little"))
    h.update(b)


def digest(text: str) -> bytes:
    """The 16-byte digest a store keeps per value."""
    return _digest_bytes(text.encode("utf-8", "surrogatepass"))


def _digest_bytes(b: bytes) -> bytes:
    return hashlib.blake2b(b, digest_size=16).digest()


class TextColumn(Sequence[str]):
    """One column of a store, read by ``pread``."""

    _fd: int | None = None  # (also for a store whose folder could not be read)

    def __init__(self, folder: str | Path, name: str) -> None:
        self.folder: Path = Path(folder)
        self.name = name
        self.offsets = np.load(self.folder / f"{name}.offsets.npy")
        self._fd: int | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _read(self, start: int, stop: int) -> bytes:
        if self._fd is None:
            self._fd = os.open(self.folder / f"{self.name}.bin", os.O_RDONLY)
        return os.pread(self._fd, stop - start, start)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"row {i} of a {n}-row store")
        i %= n
        start, stop = int(self.offsets[i]), int(self.offsets[i + 1])
        return self._read(start, stop).decode("utf-8", "surrogatepass")

    def __iter__(self) -> Iterator[str]:
        """Every value in order, read in blocks of about 4 MiB."""
        i, n = 0, len(self)
        while i < n:
            j = int(np.searchsorted(self.offsets, self.offsets[i] + _BLOCK, side="right")) - 1
            j = min(max(j, i + 1), n)
            base = int(self.offsets[i])
            block = self._read(base, int(self.offsets[j]))
            for k in range(i, j):
                yield block[int(self.offsets[k]) - base : int(self.offsets[k + 1]) - base].decode("utf-8", "surrogatepass")
            i = j

    def __reduce__(self) -> tuple[Any, ...]:  # sent to another process by its folder (never its descriptor)
        return TextColumn, (str(self.folder), self.name)

    def digests(self) -> np.ndarray:
        """``[n]`` 16-byte digests (``S16``), in row order."""
        return np.load(self.folder / f"{self.name}.digests.npy")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


class TextStore(TextColumn):
    """A store's texts as a sequence (its ids, where it has them, in :attr:`ids`)."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.meta: dict[str, Any] = json.loads((folder / "meta.json").read_text())
        super().__init__(folder, "text")
        self.fingerprint: str = self.meta["fingerprint"]
        self.ids: TextColumn | None = TextColumn(folder, "id") if "id" in self.meta["columns"] else None

    def char_lengths(self) -> np.ndarray:
        """Each text's length in characters (int64)."""
        return np.load(self.folder / "text.chars.npy").astype(np.int64)

    def __reduce__(self) -> tuple[Any, ...]:  # sent to another process by its folder
        return TextStore, (str(self.folder),)

    def __repr__(self) -> str:
        return f"TextStore({str(self.folder)!r}, rows={len(self)})"


class _ColumnWriter:
    def __init__(self, folder: str | Path, name: str) -> None:
        self.folder: Path = Path(folder)
        self.name = name
        self.fh = open(self.folder / f"{name}.bin", "wb")  # noqa: SIM115  (closed in finish)
        self.offsets = array("q", [0])  # (8 bytes a row while building, not a Python int's 36)
        self.digests = bytearray()

    def add(self, value: str) -> bytes:
        b = value.encode("utf-8", "surrogatepass")
        self.fh.write(b)
        self.offsets.append(self.offsets[-1] + len(b))
        self.digests += _digest_bytes(b)
        return b

    def finish(self) -> None:
        np.save(self.folder / f"{self.name}.offsets.npy", np.frombuffer(self.offsets, dtype=np.int64))
        np.save(self.folder / f"{self.name}.digests.npy", np.frombuffer(bytes(self.digests), dtype="S16"))


class StoreWriter:
    """Rows written to a store being built (:func:`build_store` gives one)."""

    def __init__(self, folder: Path, with_ids: bool) -> None:
        self.text = _ColumnWriter(folder, "text")
        self.id = _ColumnWriter(folder, "id") if with_ids else None
        self.chars = array("q")
        self._h = hashlib.blake2b(digest_size=20)
        #: Anything the builder wants kept in ``meta.json`` (counts, skipped ids).
        self.info: dict[str, Any] = {}

    def add(self, text: str, id: str | None = None) -> None:
        _fingerprint_update(self._h, self.text.add(text))
        self.chars.append(len(text))
        if self.id is not None:
            self.id.add(text if id is None else id)

    def __len__(self) -> int:
        return len(self.chars)


def build_store(folder: str | Path, fill: Callable[[StoreWriter], None], *, with_ids: bool = False) -> TextStore:
    """Build the store at ``folder`` atomically: ``fill(writer)`` adds the rows."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        w = StoreWriter(tmp, with_ids)
        columns = [c for c in (w.text, w.id) if c is not None]
        try:
            fill(w)
        finally:
            for c in columns:
                c.fh.close()
        for c in columns:
            c.finish()
        np.save(tmp / "text.chars.npy", np.frombuffer(w.chars, dtype=np.int64).astype(np.int32))
        meta = {"version": FORMAT_VERSION, "rows": len(w), "columns": ["text"] + (["id"] if w.id else []),
                "fingerprint": w._h.hexdigest(), **w.info}
        (tmp / "meta.json").write_text(json.dumps(meta))
    return TextStore(folder)


def store_key(*parts: Any) -> str:
    """A folder name for a store built from ``parts`` (files are named by their path,
    size and modification time: an edited file gives a new store)."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        if isinstance(p, Path):
            st = p.stat()
            p = ["file", str(p.resolve()), st.st_size, st.st_mtime_ns]
        h.update(json.dumps(p, default=str).encode())
    h.update(f"v{FORMAT_VERSION}".encode())
    return h.hexdigest()


def stores_root() -> Path:
    """``$CONTRASTLIB_CACHE/corpora``: stores reused across runs."""
    return cache_root() / "corpora"


def cached_store(key: str, fill: Callable[[StoreWriter], None], *, with_ids: bool = False,
                 root: str | Path | None = None) -> TextStore:
    """The store named ``key`` under ``root`` (default :func:`stores_root`), built by
    ``fill`` when it is not there yet (or is damaged)."""
    folder = Path(root or stores_root()) / key
    try:
        return TextStore(folder)
    except (OSError, ValueError, KeyError):
        return build_store(folder, fill, with_ids=with_ids)


def first_occurrences(digests: np.ndarray) -> np.ndarray:
    """Row numbers of the first occurrence of each distinct digest, in row order."""
    _, first = np.unique(digests, return_index=True)
    return np.sort(first)


def rows_of(digests: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each of ``queries``, the first row of ``digests`` holding it, else -1."""
    if not len(digests) or not len(queries):
        return np.full(len(queries), -1, dtype=np.int64)
    order = np.argsort(digests, kind="stable")
    ordered = digests[order]
    at = np.minimum(np.searchsorted(ordered, queries), len(ordered) - 1)
    return np.where(ordered[at] == queries, order[at], -1).astype(np.int64)


def digests_of(texts: Iterable[str]) -> np.ndarray:
    """``S16`` digests of ``texts`` (a store's are read from its files)."""
    if isinstance(texts, TextColumn):
        return texts.digests()
    return np.asarray([digest(t) for t in texts], dtype="S16").reshape(-1)


