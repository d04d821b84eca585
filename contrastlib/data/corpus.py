"""Corpora streamed from their files into text stores on disk (contrastlib/utils/text_store.py),
so that a corpus of any size is read once, a record at a time, and never held in memory.

A corpus file is

* ``.txt``: one text per line (blank lines skipped; the text is its own id);
* BEIR's ``corpus.jsonl`` (or ``.jsonl.gz``): ``_id``, ``text``, optional ``title``; a
  document's text is ``(title + " " + text).strip()`` as MTEB encodes it;
* ``.parquet``: a ``text`` column, with ``_id`` and ``title`` where present, read a record
  batch at a time.

Every check of the in-memory readers holds (``_id`` missing, a field that is not a string,
a duplicated ``_id``: one line naming the file and line), made while streaming or, for
duplicates, from the ids' digests afterwards. Empty documents are kept out of the store
(no candidate to mine) and their ids recorded (``empty_ids``), since a qrels row may still
name one. Stores are cached by the file's path, size and modification time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from contrastlib.data.readers import iter_sentences, read_records
from contrastlib.errors import DataError
from contrastlib.utils.text_store import StoreWriter, TextStore, cached_store, digests_of, store_key

#: Rows of a Parquet file read at a time.
PARQUET_BATCH = 8192


def _joined(path: Path, n: int, rec: dict[str, Any]) -> tuple[str, str]:
    doc_id = rec.get("_id")
    if doc_id is None:
        raise DataError(path, "missing field '_id' (BEIR's corpus.jsonl: _id, title, text)", n)
    doc_id = str(doc_id)
    text, title = rec.get("text"), rec.get("title")
    if not isinstance(text, str):
        raise DataError(path, f"_id {doc_id!r}: field 'text' must be a string", n)
    if title is not None and not isinstance(title, str):
        raise DataError(path, f"_id {doc_id!r}: field 'title' must be a string", n)
    return doc_id, ((title + " " + text).strip() if title is not None else text.strip())


def corpus_records(path: Path) -> Iterator[tuple[int, str, str]]:
    """``(line or row, id, text)`` of a corpus file, one at a time (empty texts included)."""
    if path.suffix == ".txt":
        for n, t in iter_sentences(path):
            yield n, t, t
        return
    if path.suffix == ".parquet":
        yield from _parquet_records(path)
        return
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        for n, rec in read_records(path):
            doc_id, text = _joined(path, n, rec)
            yield n, doc_id, text
        return
    raise DataError(path, "a corpus is a .txt file (one text per line), a BEIR corpus.jsonl or a .parquet file")


def _parquet_records(path: Path) -> Iterator[tuple[int, str, str]]:
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(path, f"not a Parquet file ({str(exc).splitlines()[0]})") from None
    names = set(f.schema_arrow.names)
    if "text" not in names:
        raise DataError(path, f"a Parquet corpus needs a 'text' column; found {', '.join(sorted(names))}")
    columns = [c for c in ("_id", "title", "text") if c in names]
    row = 0
    for batch in f.iter_batches(batch_size=PARQUET_BATCH, columns=columns):
        values = batch.to_pydict()
        for k in range(batch.num_rows):
            row += 1
            rec = {c: values[c][k] for c in columns}
            if "_id" not in rec:  # no ids: the text is its id (as a .txt line's), a bad text reported as such
                rec["_id"] = rec["text"] if isinstance(rec["text"], str) else str(row)
            yield row, *_joined(path, row, rec)


def corpus_store(path: str | Path, *, root: str | Path | None = None) -> TextStore:
    """The non-empty documents of a corpus file as a store with ids (``meta``:
    ``empty_ids``, ``source``); a repeated ``_id`` is an error, a text repeated under
    another id is kept."""
    path = Path(path)

    def fill(w: StoreWriter) -> None:
        empty: list[str] = []
        for _, doc_id, text in corpus_records(path):
            if text:
                w.add(text, doc_id)
            else:
                empty.append(doc_id)
        w.info.update(empty_ids=empty, source=str(path))

    store = cached_store(store_key("corpus", path), fill, with_ids=True, root=root)
    if has_ids(path):
        _check_distinct_ids(path, store)
    if not len(store) and not store.meta["empty_ids"]:
        raise DataError(path, "no records")
    return store


def lines_store(path: str | Path, *, root: str | Path | None = None) -> TextStore:
    """A one-text-per-line file (blank lines skipped, each line stripped) as a store, every
    line kept in order (``embed``'s input: one row per line, repeats included)."""
    path = Path(path)

    def fill(w: StoreWriter) -> None:
        for _, text in iter_sentences(path):
            w.add(text)

    store = cached_store(store_key("lines", path), fill, root=root)
    if not len(store):
        raise DataError(path, "no sentences (only blank lines)")
    return store


def has_ids(path: Path) -> bool:
    """Whether a corpus file's records carry ids (``_id``), whose repeats are errors; a
    ``.txt`` line, or a Parquet row without ``_id``, is its own id and may repeat."""
    if path.suffix == ".txt":
        return False
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return "_id" in pq.ParquetFile(path).schema_arrow.names
    return True


def id_digests(store: TextStore) -> np.ndarray:
    """The digests of every id a corpus file holds: its stored documents', then its empty
    ones' (``empty_ids``), which a qrels row may still name."""
    assert store.ids is not None
    return np.concatenate([store.ids.digests(), digests_of(store.meta["empty_ids"])])


def _check_distinct_ids(path: Path, store: TextStore) -> None:
    digests = id_digests(store)
    if len(np.unique(digests)) == len(digests):
        return
    seen: set[str] = set()  # a repeated id: find its line (the error path only)
    for n, doc_id, _ in corpus_records(path):
        if doc_id in seen:
            raise DataError(path, f"duplicate _id {doc_id!r}", n)
        seen.add(doc_id)
