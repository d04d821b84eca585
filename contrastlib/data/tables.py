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

from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from contrastlib.data.columns import pick_columns, scored_columns
from contrastlib.data.text_keys import text_key
from contrastlib.errors import DataError

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


def open_dataset(path: str | Path) -> Any:
    """The ``datasets.Dataset`` at ``path`` (see the module docstring); a ``DataError``
    naming the file for anything that is not one."""
    import datasets

    p = Path(path)
    if not p.exists():
        raise DataError(p, "no such file or directory")
    try:
        if p.is_dir() and (p / "dataset_dict.json").is_file():
            splits = sorted(d.name for d in p.iterdir() if (d / "state.json").is_file())
            raise DataError(p, f"holds the splits {', '.join(splits)}; name one folder (e.g. {p / splits[0]})"
                            if splits else "a DatasetDict folder without splits")
        if p.is_dir() and (p / "state.json").is_file():
            ds = datasets.load_from_disk(str(p))
        elif p.suffix == ".arrow":
            ds = datasets.Dataset.from_file(str(p))
        else:
            files = sorted(str(f) for f in p.glob("*.parquet")) if p.is_dir() else [str(p)]
            if not files:
                raise DataError(p, "holds no .parquet files")
            if p.is_file() and p.stat().st_size == 0:
                raise DataError(p, "file is empty")
            # its conversion bar and its logged read errors would break a one-line error
            was_off, level = datasets.are_progress_bars_disabled(), datasets.logging.get_verbosity()
            datasets.disable_progress_bars()
            datasets.logging.set_verbosity(datasets.logging.CRITICAL)
            try:
                ds = datasets.Dataset.from_parquet(files if len(files) > 1 else files[0])
            finally:
                datasets.logging.set_verbosity(level)
                if not was_off:
                    datasets.enable_progress_bars()
    except DataError:
        raise
    except Exception as exc:  # pyarrow's and datasets' errors for a file that is not a table
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(p, f"cannot read as {'Arrow' if p.suffix == '.arrow' else 'a table'}: {first}") from None
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(p, f"holds the splits {', '.join(ds)}; name one folder")
    return ds


def _table(ds: Any) -> Any:
    """The ``pyarrow.Table`` under a ``datasets.Dataset`` read from files (a Dataset object
    given through the Python API is saved first, which writes any ``select`` view out)."""
    return ds.data.table


class TextTable(Sequence[tuple[str, ...]]):
    """Rows of chosen text columns of an Arrow table, read on access.

    ``rows``: the table rows this view keeps, in order (None: all of them).
    """

    def __init__(self, dataset: Any, columns: Sequence[str], source: str, rows: np.ndarray | None = None) -> None:
        self.dataset, self.column_names, self.source, self.rows = dataset, list(columns), source, rows
        self._columns: list[Any] | None = None

    @property
    def columns(self) -> list[Any]:
        """The chosen columns as ``pyarrow.ChunkedArray`` (memory-mapped)."""
        if self._columns is None:
            table = _table(self.dataset)
            self._columns = [table.column(c) for c in self.column_names]
        return self._columns

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers: the dataset pickles by its files
        return {**self.__dict__, "_columns": None}

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else self.dataset.num_rows

    def _positions(self, index: Any) -> Any:
        return self.rows[index] if self.rows is not None else index

    @overload
    def __getitem__(self, i: int) -> tuple[str, ...]: ...
    @overload
    def __getitem__(self, i: slice) -> TextTable: ...
    def __getitem__(self, i: int | slice) -> tuple[str, ...] | TextTable:
        if isinstance(i, slice):
            rows = self.rows[i] if self.rows is not None else np.arange(len(self))[i]
            return TextTable(self.dataset, self.column_names, self.source, rows)
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        j = int(self._positions(i % len(self)))
        return tuple(c[j].as_py() for c in self.columns)

    def take(self, indices: Sequence[int]) -> list[tuple[str, ...]]:
        """Several rows at once (one Arrow gather per column: a batch's rows)."""
        import pyarrow as pa

        positions = pa.array(np.asarray(self._positions(np.asarray(indices, dtype=np.int64)), dtype=np.int64))
        return list(zip(*(c.take(positions).to_pylist() for c in self.columns), strict=True))

    def first_columns(self, k: int) -> TextTable:
        """The same rows, only the first ``k`` columns."""
        return TextTable(self.dataset, self.column_names[:k], self.source, self.rows)

    def column(self, j: int) -> TableColumn:
        """Column ``j``'s texts, read on access."""
        return TableColumn(self, j)

    def text_hashes(self) -> TextHashes:
        """Per row, a stable 63-bit hash of each text (what the no-duplicates sampler compares)."""
        return TextHashes(self)


class TableColumn(Sequence[str]):
    def __init__(self, table: TextTable, j: int) -> None:
        self.table, self.j = table, j

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return self.table[i][self.j]


class TextHashes(Sequence[tuple[int, ...]]):
    def __init__(self, table: TextTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return tuple(text_key(t) for t in self.table[i])


def first_columns(rows: Sequence[Any], k: int) -> Sequence[Any]:
    """Each row's first ``k`` texts (a table view, or a list of tuples)."""
    return rows.first_columns(k) if isinstance(rows, TextTable) else [r[:k] for r in rows]


def column(rows: Sequence[Any], j: int) -> Sequence[Any]:
    """Column ``j`` of every row (read on access from a table; a list otherwise)."""
    return rows.column(j) if isinstance(rows, TextTable) else [r[j] for r in rows]


def take_rows(rows: Sequence[Any], indices: Sequence[int]) -> list[Any]:
    """``[rows[i] for i in indices]``, in one gather per column for a :class:`TextTable`."""
    return rows.take(indices) if isinstance(rows, TextTable) else [rows[i] for i in indices]


# ---------------------------------------------------------------------------- checks
def check_text_columns(ds: Any, path: Path, columns: Sequence[str], bad: Any) -> np.ndarray | None:
    """The rows whose every chosen column holds non-blank text, as positions (None: all
    rows); a missing, empty or whitespace-only text goes to ``bad`` (a ``BadRows``), which
    raises the first one's error under ``error``. Column types are checked first."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = _table(ds)
    for c in columns:
        t = table.schema.field(c).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise DataError(path, f"column {c!r} holds {t}, expected text")
    blank: dict[str, np.ndarray] = {}  # per column, per row: missing, empty or only whitespace
    for c in columns:
        parts = []
        for chunk in table.column(c).chunks:
            empty = pc.or_kleene(pc.utf8_is_space(chunk), pc.equal(pc.utf8_length(chunk), 0))
            parts.append(pc.fill_null(empty, True).to_numpy(zero_copy_only=False))
        blank[c] = np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
    keep = ~np.logical_or.reduce([blank[c] for c in columns]) if columns else np.ones(table.num_rows, dtype=bool)
    for k in np.flatnonzero(~keep):  # in row order; the first column at fault names the reason
        c = next(c for c in columns if blank[c][k])
        why = f"missing field {c!r}" if table.column(c)[int(k)].as_py() is None else f"empty text in column {c!r}"
        bad(DataError(path, why, int(k) + 1))
    return None if keep.all() else np.flatnonzero(keep)


def check_score_column(ds: Any, path: Path, column: str, bad: Any, keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Every row's score as float64 and the rows kept (those of ``keep`` whose score is a
    finite number); a null or non-finite score goes to ``bad``."""
    import pyarrow as pa

    table = _table(ds)
    t = table.schema.field(column).type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise DataError(path, f"column {column!r} holds {t}, expected numbers")
    scores = table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)  # nulls -> nan
    ok = np.isfinite(scores)
    if keep is not None:
        mask = np.zeros(len(scores), dtype=bool)
        mask[keep] = True
        ok &= mask
        bad_rows = np.flatnonzero(~np.isfinite(scores) & mask)
    else:
        bad_rows = np.flatnonzero(~ok)
    nulls = table.column(column).is_null().to_numpy(zero_copy_only=False)
    for k in bad_rows:
        bad(DataError(path, f"missing field {column!r}" if nulls[k] else f"score {float(scores[k])!r} is not finite", int(k) + 1))
    return scores, None if ok.all() else np.flatnonzero(ok)


# ---------------------------------------------------------------------------- readers
def read_table_tuples(path: Path, columns: Sequence[str] | None, bad: Any) -> tuple[TextTable, list[str]]:
    """A Parquet or Arrow source of text tuples: the chosen columns checked and kept memory-mapped."""
    ds = open_dataset(path)
    cols = pick_columns(path, ds.column_names, None, columns)
    keep = check_text_columns(ds, path, cols, bad)
    table = TextTable(ds, cols, str(path), keep)
    if not len(table):
        raise DataError(path, f"no usable rows ({bad.summary()})" if bad.count else "no data rows")
    roles = ["anchor", "positive"][: len(cols)] + ["negative"] * max(0, len(cols) - 2)
    return table, roles


def read_scored_table(path: str | Path, *, bad_rows: Any,
                      columns: Sequence[str] | None = None) -> tuple[TextTable, np.ndarray]:
    """A Parquet or Arrow source of scored pairs as a memory-mapped ``TextTable`` of the two
    texts and each kept row's score (float64), checked as :func:`read_scored_pairs` checks."""
    path, bad = Path(path), bad_rows
    ds = open_dataset(path)
    first, second, score_col = scored_columns(path, ds.column_names, None, columns)
    keep = check_text_columns(ds, path, [first, second], bad)
    all_scores, keep = check_score_column(ds, path, score_col, bad, keep)
    table = TextTable(ds, [first, second], str(path), keep)
    if not len(table):
        raise DataError(path, f"no usable rows ({bad.summary()})" if bad.count else "no data rows")
    return table, all_scores if keep is None else all_scores[keep]
