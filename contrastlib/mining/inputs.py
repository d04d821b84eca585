"""What a mining job reads: anchors, their known positives, and the corpus to mine from.

Two inputs:

* a pair file (any of our pair formats: TSV/CSV/JSONL with anchor and positive columns;
  extra columns are ignored). A repeated anchor is one anchor with several positives.
  The corpus is every distinct positive text, plus the texts of ``--corpus`` if given.
* a BEIR-layout directory: the queries of one qrels split are the anchors, their
  relevant documents (grade > 0) the positives, ``corpus.jsonl`` the corpus.

Corpus entries have ids (BEIR ``_id``; for pair files the text itself). A corpus read from
a file (BEIR's ``corpus.jsonl``, ``--corpus``) is streamed into a text store on disk
(contrastlib/data/corpus.py), cached under the embedding cache's ``corpora/``, and read
from there as needed: no corpus text is held in memory, whatever its size. A candidate is a
known positive when its id is one of the anchor's positives *or* its text equals a
positive's text (the same document under two ids), or when it is the anchor's own text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contrastlib.data.beir import read_beir_streamed, split_spec
from contrastlib.data.corpus import corpus_records, corpus_store, id_digests
from contrastlib.data.readers import BadRows, read_tuples
from contrastlib.errors import DataError
from contrastlib.utils.text_store import (
    StoreWriter,
    TextStore,
    cached_store,
    digests_of,
    first_occurrences,
    rows_of,
    store_key,
    texts_fingerprint,
)


@dataclass
class MiningInput:
    source: str
    #: Distinct anchor texts, in first-seen order.
    anchors: list[str]
    #: ``(anchor index, corpus index of the positive)`` per input pair, in input order.
    pairs: list[tuple[int, int]]
    #: Lists, or a store's columns on disk where a corpus file was read
    #: (contrastlib/utils/text_store.py): a corpus of any size is never held in memory.
    corpus_ids: Sequence[str]
    corpus_texts: Sequence[str]
    #: Input pairs identical to an earlier one (same anchor, same positive): mined once.
    duplicate_pairs: int = 0
    #: Malformed input rows left out under ``--on-bad-row skip``, and the one-line account.
    bad_rows_skipped: int = 0
    bad_rows: str = ""
    #: Empty documents of a BEIR corpus left out of the candidates (an empty text is no
    #: negative a run could train on), and the (query, document) pairs they were in.
    empty_documents: int = 0
    empty_positive_pairs: int = 0

    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        for part in (self.anchors, self.corpus_ids, self.corpus_texts):
            h.update(texts_fingerprint(part).encode())
        for a, p in self.pairs:
            h.update(f"{a},{p};".encode())
        return h.hexdigest()

    def positives_by_anchor(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in self.anchors]
        for a, p in self.pairs:
            if p not in out[a]:
                out[a].append(p)
        return out


def _distinct_pairs(items: Iterable[tuple[str, int]]) -> tuple[list[str], list[tuple[int, int]], int]:
    """``(anchor text, positive corpus index)`` items -> the distinct anchor texts (first
    seen first), the distinct ``(anchor index, positive)`` pairs, and how many items
    repeated an earlier pair (an identical pair adds nothing; sentence-transformers
    collapses them too; counted in the summary)."""
    anchor_at: dict[str, int] = {}
    pairs: dict[tuple[int, int], None] = {}
    n = 0
    for text, positive in items:
        n += 1
        pairs.setdefault((anchor_at.setdefault(text, len(anchor_at)), positive))
    return list(anchor_at), list(pairs), n - len(pairs)


def read_corpus_file(path: Path) -> tuple[list[str], list[str]]:
    """``(ids, texts)`` of an extra corpus in memory (see :func:`contrastlib.data.corpus.corpus_records`:
    ``.txt``, BEIR ``corpus.jsonl``, ``.parquet``): empty documents are left out, as no
    candidate; a ``.txt`` file's repeated lines are one text."""
    ids: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    for n, doc_id, text in corpus_records(path):
        if path.suffix == ".txt":
            if doc_id not in seen:
                seen.add(doc_id)
                ids.append(doc_id)
                texts.append(text)
            continue
        if doc_id in seen:
            raise DataError(path, f"duplicate _id {doc_id!r}", n)
        seen.add(doc_id)
        if text:  # an empty document (real sets hold some) is no candidate
            ids.append(doc_id)
            texts.append(text)
    return ids, texts


def _distinct(store: TextStore, key: str, root: Path | None) -> TextStore:
    """``store`` without its repeated texts (the first of each kept), as a store of its own."""
    keep = first_occurrences(store.digests())
    if len(keep) == len(store):
        return store
    kept = np.zeros(len(store), dtype=bool)
    kept[keep] = True

    def fill(w: StoreWriter) -> None:
        for i, text in enumerate(store):
            if kept[i]:
                w.add(text)

    return cached_store(store_key("distinct", key), fill, root=root)


def read_mining_input(data: str, *, corpus: str | None = None, split: str | None = None,
                      on_bad_row: str = "error", store_root: str | Path | None = None) -> MiningInput:
    """Read and check a mining job's input (before any model loads). ``on_bad_row``:
    ``skip`` leaves malformed rows of a pair file out and counts them; a BEIR directory's
    checks (ids, qrels) always stop the job. ``store_root``: where corpus stores are kept
    (default ``$CONTRASTLIB_CACHE/corpora``)."""
    bad = BadRows(on_bad_row, key="--on-bad-row")
    path = Path(data)
    root_dir = Path(store_root) if store_root is not None else None
    extra = Path(corpus) if corpus else None
    if path.is_dir() or (split is None and ":" in data and Path(split_spec(data)[0]).is_dir()):
        root, default_split = split_spec(data) if not path.is_dir() else (data, "test")
        beir = read_beir_streamed(root, split or default_split, store_root=root_dir)
        store = beir.corpus_texts
        assert isinstance(store, TextStore) and store.ids is not None
        relevant = [(text, d) for qid, text in zip(beir.query_ids, beir.query_texts, strict=True)
                    for d, g in beir.qrels[qid].items() if g > 0]
        wanted = list(dict.fromkeys(d for _, d in relevant))
        # empty documents (MTEB encodes them for evaluation) are no candidates here
        index = {d: int(r) for d, r in zip(wanted, rows_of(store.ids.digests(), digests_of(wanted)), strict=True)
                 if r >= 0}
        # queries with the same text are one anchor with the union of their positives (else
        # one's relevant document would be mined as the other's negative)
        anchors, pairs, repeats = _distinct_pairs((text, index[d]) for text, d in relevant if d in index)
        if not pairs:
            raise DataError(root, "every relevant document is empty: nothing to mine for")
        empty_positive_pairs = sum(1 for _, d in relevant if d not in index)
        if extra is not None:
            store = _with_extra_documents(store, extra, root_dir)
        assert store.ids is not None
        return MiningInput(beir.name, anchors, pairs, store.ids, store, duplicate_pairs=repeats,
                           empty_documents=beir.empty_documents, empty_positive_pairs=empty_positive_pairs)
    rows, _ = read_tuples(path, bad_rows=bad)
    if len(rows[0]) < 2:
        raise DataError(path, "mining needs (anchor, positive) pairs, not single sentences")
    corpus_index: dict[str, int] = {}  # the positives' texts are their ids
    anchors, pairs, repeats = _distinct_pairs((a, corpus_index.setdefault(p, len(corpus_index))) for a, p, *_ in rows)
    texts: Sequence[str] = list(corpus_index)
    if extra is not None:
        positives = list(corpus_index)
        extra_store = corpus_store(extra, root=root_dir)  # (its ids checked; empty documents out)

        def fill(w: StoreWriter) -> None:
            for t in positives:
                w.add(t)
            for t in extra_store:
                w.add(t)

        key = store_key("pairs+corpus", texts_fingerprint(positives), extra_store.fingerprint)
        texts = _distinct(cached_store(key, fill, root=root_dir), key, root_dir)
    return MiningInput(str(path), anchors, pairs, texts, texts, duplicate_pairs=repeats,
                       bad_rows_skipped=bad.count, bad_rows=bad.summary())


def _with_extra_documents(store: TextStore, extra: Path, root: Path | None) -> TextStore:
    """A BEIR set's store followed by ``extra``'s documents whose ids the set lacks (its own
    documents, empty ones included, are never new candidates)."""
    assert store.ids is not None
    ids = store.ids
    extra_store = corpus_store(extra, root=root)
    assert extra_store.ids is not None
    known = id_digests(store)
    extra_digests = extra_store.ids.digests()
    # new: an id the set lacks (its own documents, empty ones included, are never new), once
    # (a .txt file's repeated line is one text, its id)
    new = rows_of(known, extra_digests) < 0
    first = np.zeros(len(new), dtype=bool)
    first[first_occurrences(extra_digests)] = True
    new &= first
    extra_ids = extra_store.ids

    def fill(w: StoreWriter) -> None:
        for doc_id, text in zip(ids, store, strict=True):
            w.add(text, doc_id)
        for is_new, doc_id, text in zip(new, extra_ids, extra_store, strict=True):
            if is_new:
                w.add(text, doc_id)

    # (the folders are named by the files they were built from: ids and empty ids included)
    return cached_store(store_key("beir+corpus", str(store.folder), str(extra_store.folder)),
                        fill, with_ids=True, root=root)
