"""Reading a table source into training rows: one pass over every row of the chosen
columns that checks what a text file's reader checks row by row (a missing, empty or
non-text value; a score that is not a finite number), over whole columns in Arrow and
with ordinary reads (nothing of the file stays mapped); then a
:class:`~contrastlib.data.tables.TextTable` of the rows kept."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from contrastlib.data.columns import pick_columns, scored_columns
from contrastlib.data.tables import ArrowFiles, TextTable, file_version, ipc_batches, open_dataset
from contrastlib.errors import DataError
from contrastlib.utils.io import atomic_path, cache_root


def _drop_cached(name: str) -> None:
    """Ask the kernel to drop ``name``'s clean pages from its cache after a pass over the
    whole file: a sequential read leaves them in large blocks, and a map of the file then
    brings a whole block into the process for each row it reads (300 MB for 64 random rows
    of a 10M-row file here). Training reads rows at random and brings back only those."""
    fd = os.open(name, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError):  # no posix_fadvise (macOS, Windows): the pages stay cached
        pass
    finally:
        os.close(fd)


def _batches(ds: ArrowFiles, columns: Sequence[str]) -> Iterator[Any]:
    """The table's record batches (only ``columns``) in row order, read from its files
    with ordinary reads one batch at a time: a pass over every row that does not map the
    whole file into the process (a pass over the memory-mapped table would leave every
    page of it resident)."""
    import pyarrow as pa

    for name in ds.files:
        with pa.OSFile(name) as source:
            for batch in ipc_batches(source):
                yield batch.select(list(columns))
        _drop_cached(name)


def check_text_columns(ds: ArrowFiles, path: Path, columns: Sequence[str], bad: Any) -> np.ndarray | None:
    """The rows whose every chosen column holds non-blank text, as positions (None: all
    rows); a missing, empty or whitespace-only text goes to ``bad`` (a ``BadRows``), which
    raises the first one's error under ``error``. Column types are checked first."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = ds.table
    for c in columns:
        t = table.schema.field(c).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise DataError(path, f"column {c!r} holds {t}, expected text")
    marker = _clean_marker(ds, columns)
    if marker.is_file():  # these files' columns passed before: no second pass
        return None
    blank: dict[str, list[np.ndarray]] = {c: [] for c in columns}  # per column, per row: missing or blank
    for batch in _batches(ds, columns):
        for c in columns:
            col = batch.column(c)
            empty = pc.or_kleene(pc.utf8_is_space(col), pc.equal(pc.utf8_length(col), 0))
            blank[c].append(pc.fill_null(empty, True).to_numpy(zero_copy_only=False))
    masks = {c: np.concatenate(parts) if parts else np.zeros(0, dtype=bool) for c, parts in blank.items()}
    keep = ~np.logical_or.reduce([masks[c] for c in columns]) if columns else np.ones(table.num_rows, dtype=bool)
    for k in np.flatnonzero(~keep):  # in row order; the first column at fault names the reason
        c = next(c for c in columns if masks[c][k])
        why = f"missing field {c!r}" if table.column(c)[int(k)].as_py() is None else f"empty text in column {c!r}"
        bad(DataError(path, why, int(k) + 1))
    if keep.all():
        try:  # a record only: a cache that cannot be written costs the next run a second pass
            marker.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(marker) as tmp:
                tmp.write_text(json.dumps({"columns": list(columns), "rows": int(table.num_rows)}))
        except OSError:
            pass
        return None
    return np.flatnonzero(keep)


def _clean_marker(ds: ArrowFiles, columns: Sequence[str]) -> Path:
    """Where a pass that found every row of ``columns`` good is recorded, by the files'
    paths, sizes and modification times."""
    stats = [(name, *file_version(name)[1:]) for name in ds.files]  # (path, size, mtime)
    key = hashlib.sha256(json.dumps(["text-v1", stats, list(columns)]).encode()).hexdigest()[:32]
    return cache_root() / "tables" / "checked" / f"{key}.json"


def check_score_column(ds: ArrowFiles, path: Path, column: str, bad: Any, keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Every row's score as float64 and the rows kept (those of ``keep`` whose score is a
    finite number); a null or non-finite score goes to ``bad``."""
    import pyarrow as pa

    table = ds.table
    t = table.schema.field(column).type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise DataError(path, f"column {column!r} holds {t}, expected numbers")
    parts = [(b.column(column).to_numpy(zero_copy_only=False).astype(np.float64),  # nulls -> nan
              b.column(column).is_null().to_numpy(zero_copy_only=False)) for b in _batches(ds, [column])]
    scores = np.concatenate([s for s, _ in parts]) if parts else np.zeros(0)
    nulls = np.concatenate([n for _, n in parts]) if parts else np.zeros(0, dtype=bool)
    ok = np.isfinite(scores)
    if keep is not None:
        mask = np.zeros(len(scores), dtype=bool)
        mask[keep] = True
        ok &= mask
        bad_rows = np.flatnonzero(~np.isfinite(scores) & mask)
    else:
        bad_rows = np.flatnonzero(~ok)
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
