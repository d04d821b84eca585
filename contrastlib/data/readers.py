"""Readers, one per file format. Each fails with a :class:`DataError` naming file and line.

Formats:
    * ``.txt``: one sentence per line (blank lines skipped).
    * ``.tsv`` / ``.csv``: a header row naming the columns, then one row per example.
    * ``.jsonl`` (``.jsonl.gz``): one JSON object per line.
Pair/triplet files are read into tuples of texts in a fixed column order; scored-pair
files (``sentence1 sentence2 score``) into :class:`ScoredPairs`.

A malformed row stops the read with its file and line. With a :class:`BadRows` policy of
``skip`` (``data.on_bad_row: skip``) a malformed row is left out and counted by reason
instead, and the count is reported. A file-level fault (no header, unknown columns, not
UTF-8) always stops the read.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import math
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contrastlib.data.columns import pick_columns, scored_columns
from contrastlib.data.table_checks import read_scored_table, read_table_tuples
from contrastlib.data.tables import is_table
from contrastlib.errors import ConfigError, DataError

#: ``on_bad_row`` choices.
BAD_ROW_POLICIES = ("error", "skip")


def add_bad_row_argument(parser: Any, what: str = "row") -> None:
    """``--on-bad-row`` for a verb that reads rows (an argparse parser)."""
    parser.add_argument("--on-bad-row", choices=BAD_ROW_POLICIES, default="error",
                        help=f"a malformed {what}: stop naming its line (default), or leave it out and count it")


class BadRows:
    """What a reader does with a malformed row: ``error`` (the default) raises its
    :class:`DataError` (file and line); ``skip`` leaves the row out and counts it by
    reason. Rows are never dropped silently: :meth:`summary` is for the run's log."""

    def __init__(self, policy: str = "error", *, key: str = "on_bad_row") -> None:
        if policy not in BAD_ROW_POLICIES:
            raise ConfigError(f"{key}: {' or '.join(BAD_ROW_POLICIES)}, not {policy!r}")
        self.policy = policy
        self.reasons: Counter[str] = Counter()
        self.first: list[str] = []

    def __call__(self, error: DataError) -> None:
        if self.policy == "error":
            raise error
        self.reasons[error.message] += 1
        if len(self.first) < 3:
            self.first.append(str(error))

    @property
    def count(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> str:
        """``""`` when nothing was skipped, else one line: the count, the commonest reasons, the first row."""
        if not self.count:
            return ""
        reasons = "; ".join(f"{why} ({n})" for why, n in self.reasons.most_common(3))
        more = f"; {len(self.reasons) - 3} more reasons" if len(self.reasons) > 3 else ""
        return f"{self.count} bad rows skipped: {reasons}{more}; first at {self.first[0]}"


def _open_text(path: Path) -> io.TextIOBase:
    # utf-8-sig: a UTF-8 byte-order mark (as spreadsheet programs write CSV and TSV) is
    # dropped, not read into the first column's name; text without one reads as UTF-8.
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig", newline="")


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file")
    if path.is_dir():
        raise DataError(path, "is a directory, expected a file")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty")
    return path


def _kind(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".tsv", ".csv", ".jsonl", ".txt"):
        return ext[1:]
    raise DataError(path, f"unknown file type {ext or '(none)'}; expected .txt, .tsv, .csv or .jsonl"
                    " (text tuples and scored pairs also .parquet, .arrow or a save_to_disk folder)")


@contextlib.contextmanager
def reading(path: Path) -> Iterator[None]:
    """Text that is not UTF-8, a gzip that is not one, or a file that cannot be read, as a
    one-line ``DataError`` naming the file."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(path, f"cannot read: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def read_records(path: str | Path, bad_rows: BadRows | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, {column: value})`` from a TSV, CSV or JSONL file (JSON values
    keep their types). Text that is not UTF-8, or a file that cannot be read, is a
    ``DataError`` naming the file. A line that is not a JSON object, or a row with the
    wrong number of columns, goes to ``bad_rows`` (default: raise)."""
    path = _check_file(path)
    with reading(path):
        yield from _records(path, _kind(path), bad_rows or BadRows())


def _records(path: Path, kind: str, bad: BadRows) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open_text(path) as fh:
        if kind == "jsonl":
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    bad(DataError(path, f"invalid JSON ({exc.msg})", n))
                    continue
                if not isinstance(obj, dict):
                    bad(DataError(path, f"expected a JSON object, got {type(obj).__name__}", n))
                    continue
                yield n, {str(k): v for k, v in obj.items()}
            return
        if kind == "txt":
            raise DataError(path, "a .txt file holds one sentence per line, not columns")
        # TSV: tabs separate, quotes are text (STS files hold sentences that start with ").
        reader = (
            csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            if kind == "tsv"
            else csv.reader(fh)
        )
        header: list[str] | None = None
        for row in reader:
            n = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if header is None:
                header = [c.strip() for c in row]
                continue
            if len(row) != len(header):
                bad(DataError(path, f"expected {len(header)} columns ({', '.join(header)}), found {len(row)}", n))
                continue
            yield n, dict(zip(header, row, strict=True))
        if header is None:
            raise DataError(path, "file has no header row")


def read_sentences(path: str | Path) -> list[str]:
    """One sentence per line; blank lines are skipped."""
    sentences = [s for _, s in iter_sentences(path)]
    if not sentences:
        raise DataError(path, "no sentences (only blank lines)")
    return sentences


def iter_sentences(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line number, sentence)`` of a one-sentence-per-line file, read a line at a time;
    blank lines are skipped."""
    path = _check_file(path)
    with reading(path), _open_text(path) as fh:
        for n, line in enumerate(fh, start=1):
            if line := line.strip():
                yield n, line


def _header_line(path: Path, first_record_line: int) -> int:
    """Where a column problem is: the header row for TSV/CSV, the record itself for JSONL."""
    return first_record_line if _kind(path) == "jsonl" else 1


def read_tuples(path: str | Path, *, bad_rows: BadRows | None = None,
                columns: Sequence[str] | None = None) -> tuple[Sequence[tuple[str, ...]], list[str]]:
    """Read pairs ``(anchor, positive)``, triplets ``(anchor, positive, negative)`` or
    n-tuples ``(anchor, positive, negative_1, ..., negative_n)``.

    Returns the rows and the role names found (``["anchor", "positive", "negative", ...]``).
    A ``.txt`` file gives 1-tuples (single sentences, for unsupervised methods). Malformed
    rows go to ``bad_rows`` (default: raise). ``columns`` (``data.columns``) names the
    columns in role order; default: found by their names (:data:`ROLE_ALIASES`). A Parquet
    or Arrow source gives a memory-mapped :class:`~contrastlib.data.tables.TextTable`.
    """
    if is_table(path):
        return read_table_tuples(Path(path), columns, bad_rows or BadRows())
    path = _check_file(path)
    if _kind(path) == "txt":
        if columns:
            raise ConfigError("data.columns: a .txt file holds one sentence per line, no columns")
        return [(s,) for s in read_sentences(path)], ["anchor"]
    bad = bad_rows or BadRows()
    rows: list[tuple[str, ...]] = []
    cols: list[str] | None = None
    for n, rec in read_records(path, bad):
        if cols is None:
            cols = pick_columns(path, list(rec), _header_line(path, n), columns)
        values = []
        for c in cols:
            value = rec.get(c)
            if value is None:
                problem = f"missing field {c!r}"
            elif not isinstance(value, str):
                problem = f"field {c!r} must be a string, got {type(value).__name__}"
            elif not value.strip():
                problem = f"empty text in column {c!r}"
            else:
                values.append(value)
                continue
            bad(DataError(path, problem, n))
            break
        else:
            rows.append(tuple(values))
    if not rows:
        raise DataError(path, f"no usable rows ({bad.summary()})" if bad.count else "no data rows after the header")
    assert cols is not None
    roles = ["anchor", "positive"][: len(cols)] + ["negative"] * max(0, len(cols) - 2)
    return rows, roles


@dataclass
class ScoredPairs:
    """Sentence pairs with a gold similarity score (STS format)."""

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def concat(cls, parts: Sequence[ScoredPairs]) -> ScoredPairs:
        out = cls([], [], [], [])
        for p in parts:
            out.sentences1 += p.sentences1
            out.sentences2 += p.sentences2
            out.scores += p.scores
            out.sources += p.sources
        return out


def read_scored_pairs(path: str | Path, *, bad_rows: BadRows | None = None,
                      columns: Sequence[str] | None = None) -> ScoredPairs:
    """Read ``sentence1 sentence2 score`` rows (TSV/CSV with header, JSONL, Parquet or
    Arrow). Malformed rows go to ``bad_rows`` (default: raise). ``columns``: the two text
    columns and the score column, in that order (default: by name)."""
    bad = bad_rows or BadRows()
    if is_table(path):
        return _table_scored_pairs(Path(path), columns, bad)
    path = _check_file(path)
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    names: list[str] | None = None
    for n, rec in read_records(path, bad):
        if names is None:
            names = scored_columns(path, list(rec), _header_line(path, n), columns)
        first, second, score_col = names
        raw = rec.get(score_col)
        try:
            score = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            bad(DataError(path, f"score {raw!r} is not a number", n))
            continue
        if not math.isfinite(score):
            bad(DataError(path, f"score {raw!r} is not finite", n))
            continue
        a, b = rec.get(first), rec.get(second)
        if not isinstance(a, str) or not isinstance(b, str):
            bad(DataError(path, f"{first} and {second} must be strings", n))
            continue
        s1.append(a)
        s2.append(b)
        scores.append(score)
    if not scores:
        raise DataError(path, f"no usable rows ({bad.summary()})" if bad.count else "no data rows after the header")
    return ScoredPairs(s1, s2, scores, [str(path)] * len(scores))


def _table_scored_pairs(path: Path, columns: Sequence[str] | None, bad: BadRows) -> ScoredPairs:
    table, scores = read_scored_table(path, bad_rows=bad, columns=columns)
    rows = table.take(range(len(table)))  # evaluation sets: read into lists
    return ScoredPairs([r[0] for r in rows], [r[1] for r in rows], scores.tolist(), [str(path)] * len(rows))


def read_scored_pair_files(paths: Sequence[str | Path]) -> ScoredPairs:
    """Read and concatenate several scored-pair files; a directory means all its .tsv files."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.tsv"))
            if not found:
                raise DataError(p, "directory holds no .tsv files")
            files.extend(found)
        else:
            files.append(p)
    return ScoredPairs.concat([read_scored_pairs(f) for f in files])
