"""Row layouts of a mined file and writing them as JSONL or Parquet, atomically.

Layouts (sentence-transformers' names, same columns):

* ``triplet``: one row per negative: ``anchor, positive, negative``;
* ``n-tuple``: one row per pair: ``anchor, positive, negative_1 ... negative_n``. Columns
  are fixed, so a pair short of negatives has no row (it is counted in the summary);
* ``labeled-pair``: ``anchor, text, label`` (1 for the positive, 0 for each negative);
* ``labeled-list``: one row per pair: ``anchor, texts, labels`` (lists: the positive first).

With scores, ``triplet`` and ``n-tuple`` rows get a ``score`` list (the positive's score,
then each negative's); ``labeled-pair`` and ``labeled-list`` a ``score`` / ``scores``.
The ``triplet`` and ``n-tuple`` files read straight back as training data
(``data.train``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from contrastlib.mining.miner import PairResult
from contrastlib.utils.io import atomic_path

FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")
SUFFIXES = (".jsonl", ".parquet")


def check_output_path(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix not in SUFFIXES:
        raise ValueError(f"{out}: the output must end in .jsonl or .parquet")
    return out


def rows_for(
    result: PairResult, anchors: Sequence[str], corpus: Sequence[str], fmt: str, num_negatives: int, scores: bool
) -> list[dict[str, Any]]:
    a, p = anchors[result.anchor], corpus[result.positive]
    negs = [corpus[j] for j in result.negatives]
    if fmt == "triplet":
        return [
            {"anchor": a, "positive": p, "negative": n, **({"score": [result.positive_score, s]} if scores else {})}
            for n, s in zip(negs, result.scores, strict=True)
        ]
    if fmt == "n-tuple":
        if len(negs) < num_negatives:
            return []
        row: dict[str, Any] = {"anchor": a, "positive": p}
        row.update({f"negative_{i + 1}": n for i, n in enumerate(negs)})
        if scores:
            row["score"] = [result.positive_score, *result.scores]
        return [row]
    if fmt == "labeled-pair":
        out = [{"anchor": a, "text": p, "label": 1, **({"score": result.positive_score} if scores else {})}]
        out += [
            {"anchor": a, "text": n, "label": 0, **({"score": s} if scores else {})}
            for n, s in zip(negs, result.scores, strict=True)
        ]
        return out
    if fmt == "labeled-list":
        row = {"anchor": a, "texts": [p, *negs], "labels": [1] + [0] * len(negs)}
        if scores:
            row["scores"] = [result.positive_score, *result.scores]
        return [row]
    raise ValueError(f"unknown output format {fmt!r}; valid: {', '.join(FORMATS)}")


def write_jsonl_lines(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON lines, atomically; returns the count."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl_lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def write_rows(path: Path, rows: Iterable[dict[str, Any]], *, batch_rows: int = 50_000) -> int:
    """Write ``rows`` to ``path`` (``.jsonl`` or ``.parquet``), atomically."""
    if path.suffix == ".jsonl":
        return write_jsonl_lines(path, rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 0
    with atomic_path(path) as tmp:
        writer: Any = None
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal writer
            table = pa.Table.from_pylist(batch)
            if writer is None:
                writer = pq.ParquetWriter(str(tmp), table.schema)
            writer.write_table(table.cast(writer.schema))
            batch.clear()

        for r in rows:
            batch.append(r)
            n += 1
            if len(batch) >= batch_rows:
                flush()
        if batch or writer is None:
            if not batch:  # no rows at all: an empty file with no columns
                pq.write_table(pa.table({}), str(tmp))
            else:
                flush()
        if writer is not None:
            writer.close()
    return n
