"""Training rows in Arrow: Parquet files (or a folder of them), folders written by Hugging
Face ``datasets``' ``save_to_disk``, and single ``.arrow`` files.

They are opened the way ``datasets`` opens them (``Dataset.from_parquet`` converts a
Parquet file once into its cache; ``load_from_disk`` and ``Dataset.from_file`` map the
files as they are), and the rows stay in the memory-mapped Arrow columns: a
:class:`TextTable` is a sequence whose rows are read from the mapped columns when they are
asked for, so the Python heap does not grow with the row count. The checks a text file's
reader makes row by row (a missing, empty or non-text value; a score that is not a finite
number) run over whole columns in Arrow, before any model loads. A bad row's error names
the file and the row (1-based) where a text file's names the line.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import itertools
import json
import mmap
import operator
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from contrastlib.data.text_keys import text_key
from contrastlib.errors import DataError
from contrastlib.utils.io import atomic_path, cache_root

#: File suffixes read as Arrow tables.
TABLE_SUFFIXES = (".parquet", ".arrow")


def is_table(path: str | Path) -> bool:
    """Whether ``path`` is read as an Arrow table (a Parquet or Arrow file, a folder
    ``save_to_disk`` wrote, or a folder of Parquet files)."""
    p = Path(path)
    if p.suffix in TABLE_SUFFIXES:
        return True
    if not p.is_dir():
        return False
    return any((p / f).is_file() for f in ("state.json", "dataset_dict.json")) or any(p.glob("*.parquet"))


@dataclass(frozen=True)
class ArrowFiles:
    """A table as the Arrow files that hold it, in row order (what a ``datasets.Dataset``
    read from files is: its ``cache_files``); mapped when its rows are read."""

    files: tuple[str, ...]

    @property
    def table(self) -> Any:
        # keyed by each file's identity and version too: a file replaced under the same
        # name (a notebook that writes and trains again) is mapped anew
        return mapped_table(tuple((f, *file_version(f)) for f in self.files))

    @property
    def num_rows(self) -> int:
        return int(self.table.num_rows)

    @property
    def column_names(self) -> list[str]:
        return list(self.table.column_names)


def open_dataset(path: str | Path) -> ArrowFiles:
    """The Arrow files of the table at ``path`` (see the module docstring); a ``DataError``
    naming the file for anything that is not one. ``datasets`` itself is imported only for
    a ``save_to_disk`` folder (it knows that layout); Parquet is converted here and an
    ``.arrow`` file mapped as it is."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, "no such file or directory")
    try:
        if p.is_dir() and (p / "dataset_dict.json").is_file():
            splits = sorted(d.name for d in p.iterdir() if (d / "state.json").is_file())
            raise DataError(p, f"holds the splits {', '.join(splits)}; name one folder (e.g. {p / splits[0]})"
                            if splits else "a DatasetDict folder without splits")
        if p.is_dir() and (p / "state.json").is_file():
            import datasets

            loaded = datasets.load_from_disk(str(p))
            if isinstance(loaded, datasets.DatasetDict):
                raise DataError(p, f"holds the splits {', '.join(loaded)}; name one folder")
            source = ArrowFiles(tuple(f["filename"] for f in loaded.cache_files))
        elif p.suffix == ".arrow":
            if p.stat().st_size == 0:
                raise DataError(p, "file is empty")
            source = ArrowFiles((str(p),))
        else:
            files = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
            if not files:
                raise DataError(p, "holds no .parquet files")
            if p.is_file() and p.stat().st_size == 0:
                raise DataError(p, "file is empty")
            source = ArrowFiles((str(parquet_as_arrow(files)),))
        source.table  # noqa: B018  (map it now: a file that is not Arrow fails here, naming itself)
    except DataError:
        raise
    except Exception as exc:  # pyarrow's and datasets' errors for a file that is not a table
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(p, f"cannot read as {'Arrow' if p.suffix == '.arrow' else 'a table'}: {first}") from None
    return source


def ipc_batches(buffer_or_file: Any) -> Iterator[Any]:
    """The record batches of an Arrow IPC stream (``datasets``' format) or file (Feather v2)."""
    import pyarrow as pa

    try:
        yield from pa.ipc.open_stream(buffer_or_file)
    except pa.ArrowInvalid:
        if isinstance(buffer_or_file, pa.NativeFile):
            buffer_or_file.seek(0)
        reader = pa.ipc.open_file(buffer_or_file)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)


#: Rows per record batch of a converted file: few batches (opening the file touches each
#: batch's header, and the kernel maps the pages around it), each a few tens of MB at most.
ARROW_BATCH_ROWS = 100_000


def parquet_as_arrow(files: Sequence[Path]) -> Path:
    """Parquet ``files`` (one table, in order) as one Arrow stream file under the cache
    (``$CONTRASTLIB_CACHE/tables``), converted once, one record batch at a time, and
    written atomically; reused while the files' paths, sizes and modification times hold.

    ``datasets.Dataset.from_parquet`` gives the same rows; its conversion peaked at
    about 1 GB over the process's baseline on a 10M-row file here (so did pyarrow's
    ``iter_batches``, which reads ahead), this one at one row group (+145 MB at 100k-row
    groups). The result is what ``datasets`` maps: its Arrow stream format."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = hashlib.sha256(json.dumps(["parquet-v1", ARROW_BATCH_ROWS, stats]).encode()).hexdigest()[:24]
    target = cache_root() / "tables" / f"{files[0].stem}-{key}.arrow"
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(files[0], f"cannot write its Arrow conversion under {target.parent} ({exc.strerror}); "
                        "set CONTRASTLIB_CACHE to a writable folder") from None
    schema = pq.read_schema(files[0])
    with atomic_path(target) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for f in files:
            source = pq.ParquetFile(f)
            if not source.schema_arrow.equals(schema):
                raise DataError(f, f"its columns differ from {files[0].name}'s ({source.schema_arrow} vs {schema})")
            for g in range(source.num_row_groups):  # one row group in memory at a time
                for batch in source.read_row_group(g, use_threads=False).to_batches(max_chunksize=ARROW_BATCH_ROWS):
                    writer.write_batch(batch)
    return target


def file_version(name: str) -> tuple[int, int, int]:
    """``(inode, size, mtime_ns)``: what tells a file apart from a replaced or rewritten one."""
    st = os.stat(name)
    return st.st_ino, st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=8)
def mapped_table(files: tuple[tuple[str, int, int, int], ...]) -> Any:
    """The Arrow stream ``files`` as one table over read-only memory maps advised for
    random access (``MADV_RANDOM``): reading a row faults in its own pages only. (A map
    without the advice reads around every fault, up to the device's read-ahead: 8 MB here,
    so 64 random rows of a 10M-row file mapped 300 MB and read them from disk when cold.)"""
    import pyarrow as pa

    tables = []
    for name, *_ in files:
        with open(name, "rb") as fh:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        with contextlib.suppress(AttributeError, OSError):  # MADV_RANDOM: Linux and macOS
            mm.madvise(mmap.MADV_RANDOM)
        batches = list(ipc_batches(pa.py_buffer(mm)))  # zero-copy: the buffers stay in the map
        if not batches:
            raise ValueError(f"{name}: no record batches")
        tables.append(pa.Table.from_batches(batches))
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


class TextTable(Sequence[tuple[str, ...]]):
    """Rows of chosen text columns of an Arrow table, read on access.

    ``rows``: the table rows this view keeps, in order (None: all of them).
    """

    def __init__(self, dataset: Any, columns: Sequence[str], source: str, rows: np.ndarray | None = None) -> None:
        self.dataset, self.column_names, self.source, self.rows = dataset, list(columns), source, rows
        #: Rows in the view, fixed when it is made (``len`` is asked on every row read).
        self._len = len(rows) if rows is not None else dataset.num_rows
        self._columns: list[Any] | None = None
        self._starts: list[list[int]] = []

    @property
    def columns(self) -> list[Any]:
        """The chosen columns as ``pyarrow.ChunkedArray`` (memory-mapped)."""
        if self._columns is None:
            table = self.dataset.table
            self._columns = [table.column(c) for c in self.column_names]
            self._starts = [list(itertools.accumulate((len(ch) for ch in col.chunks), initial=0)) for col in self._columns]
        return self._columns

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers: the dataset pickles by its files
        return {**self.__dict__, "_columns": None, "_starts": []}

    def _gather(self, c: int, positions: np.ndarray) -> list[Any]:
        """Column ``c``'s values at ``positions``, chunk by chunk. (``ChunkedArray.take``
        joins every chunk into one array first: the whole column in memory, per batch.)"""
        col, starts = self.columns[c], np.asarray(self._starts[c])
        which = np.searchsorted(starts, positions, side="right") - 1
        out: list[Any] = [None] * len(positions)
        for ch in np.unique(which):
            picked = np.flatnonzero(which == ch)
            local = positions[picked] - starts[ch]
            for k, value in zip(picked, col.chunk(int(ch)).take(local).to_pylist(), strict=True):
                out[k] = value
        return out

    def __len__(self) -> int:
        return self._len

    def _positions(self, index: Any) -> Any:
        return self.rows[index] if self.rows is not None else index

    @overload
    def __getitem__(self, i: int) -> tuple[str, ...]: ...
    @overload
    def __getitem__(self, i: slice) -> TextTable: ...
    def __getitem__(self, i: int | slice) -> tuple[str, ...] | TextTable:
        if isinstance(i, slice):
            rows = self.rows[i] if self.rows is not None else np.arange(*i.indices(len(self)))
            return TextTable(self.dataset, self.column_names, self.source, rows)
        if not -self._len <= i < self._len:
            raise IndexError(i)
        j = int(self._positions(i % self._len))
        out = []  # one row: a scalar per column, its chunk found by bisecting the chunk starts
        for col, starts in zip(self.columns, self._starts, strict=True):
            ch = bisect.bisect_right(starts, j) - 1
            out.append(col.chunk(ch)[j - starts[ch]].as_py())
        return tuple(out)

    def take(self, indices: Sequence[int]) -> list[tuple[str, ...]]:
        """Several rows at once (a gather per column and chunk: a batch's rows)."""
        positions = np.asarray(self._positions(np.asarray(indices, dtype=np.int64)), dtype=np.int64)
        return list(zip(*(self._gather(c, positions) for c in range(len(self.column_names))), strict=True))

    def first_columns(self, k: int) -> TextTable:
        """The same rows, only the first ``k`` columns."""
        return TextTable(self.dataset, self.column_names[:k], self.source, self.rows)

    def column(self, j: int) -> RowView:
        """Column ``j``'s texts, read on access."""
        return RowView(self, operator.itemgetter(j))

    def text_hashes(self) -> RowView:
        """Per row, a stable 63-bit hash of each text (what the no-duplicates sampler compares)."""
        return RowView(self, _hash_texts)


class RowView(Sequence[Any]):
    """``fn(row)`` of each row of a table, read on access (``fn`` picklable)."""

    def __init__(self, table: TextTable, fn: Callable[[tuple[str, ...]], Any]) -> None:
        self.table, self.fn = table, fn

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return self.fn(self.table[i])


def _hash_texts(row: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(text_key(t) for t in row)


def first_columns(rows: Sequence[Any], k: int) -> Sequence[Any]:
    """Each row's first ``k`` texts (a table view, or a list of tuples)."""
    return rows.first_columns(k) if isinstance(rows, TextTable) else [r[:k] for r in rows]


def column(rows: Sequence[Any], j: int) -> Sequence[Any]:
    """Column ``j`` of every row (read on access from a table; a list otherwise)."""
    return rows.column(j) if isinstance(rows, TextTable) else [r[j] for r in rows]


def take_rows(rows: Sequence[Any], indices: Sequence[int]) -> list[Any]:
    """``[rows[i] for i in indices]``, in one gather per column for a :class:`TextTable`."""
    return rows.take(indices) if isinstance(rows, TextTable) else [rows[i] for i in indices]
