"""What a mining job reads: anchors, their known positives, and the corpus to mine from.

Two inputs:

* a pair file (any of our pair formats: TSV/CSV/JSONL with anchor and positive columns;
  extra columns are ignored). A repeated anchor is one anchor with several positives.
  The corpus is every distinct positive text, plus the texts of ``--corpus`` if given.
* a BEIR-layout directory: the queries of one qrels split are the anchors, their
  relevant documents (grade > 0) the positives, ``corpus.jsonl`` the corpus.

Corpus entries have ids (BEIR ``_id``; for pair files the text itself). A candidate is a
known positive when its id is one of the anchor's positives *or* its text equals a
positive's text (the same document under two ids), or when it is the anchor's own text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from contrastlib.data.beir import read_beir, split_spec
from contrastlib.data.readers import BadRows, read_records, read_sentences, read_tuples
from contrastlib.errors import DataError


@dataclass
class MiningInput:
    source: str
    #: Distinct anchor texts, in first-seen order.
    anchors: list[str]
    #: ``(anchor index, corpus index of the positive)`` per input pair, in input order.
    pairs: list[tuple[int, int]]
    corpus_ids: list[str]
    corpus_texts: list[str]
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
            for t in part:
                h.update(t.encode("utf-8", "surrogatepass") + b"\0")
            h.update(b"\1")
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
    """``(ids, texts)`` of an extra corpus: ``.txt`` (one text per line; the text is its
    id) or a BEIR ``corpus.jsonl`` (``_id``, ``title``, ``text``; empty documents are left
    out, as no candidate)."""
    if path.suffix == ".txt":
        texts = list(dict.fromkeys(read_sentences(path)))
        return texts, texts
    if path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz"):
        ids: list[str] = []
        texts = []
        seen: set[str] = set()
        for n, rec in read_records(path):
            if "_id" not in rec or not isinstance(rec.get("text"), str):
                raise DataError(path, "corpus records need '_id' and 'text' (BEIR's corpus.jsonl)", n)
            doc_id = str(rec["_id"])
            if doc_id in seen:
                raise DataError(path, f"duplicate _id {doc_id!r}", n)
            seen.add(doc_id)
            title = rec.get("title")
            text = (f"{title} {rec['text']}" if isinstance(title, str) else rec["text"]).strip()
            if not text:  # an empty document (real sets hold some) is no candidate
                continue
            ids.append(doc_id)
            texts.append(text)
        return ids, texts
    raise DataError(path, "a corpus is a .txt file (one text per line) or a BEIR corpus.jsonl")


def read_mining_input(data: str, *, corpus: str | None = None, split: str | None = None,
                      on_bad_row: str = "error") -> MiningInput:
    """Read and check a mining job's input (before any model loads). ``on_bad_row``:
    ``skip`` leaves malformed rows of a pair file out and counts them; a BEIR directory's
    checks (ids, qrels) always stop the job."""
    bad = BadRows(on_bad_row, key="--on-bad-row")
    path = Path(data)
    if path.is_dir() or (split is None and ":" in data and Path(split_spec(data)[0]).is_dir()):
        root, default_split = split_spec(data) if not path.is_dir() else (data, "test")
        beir = read_beir(root, split or default_split)
        # empty documents (MTEB encodes them for evaluation) are no candidates here
        kept = [(d, t) for d, t in zip(beir.corpus_ids, beir.corpus_texts, strict=True) if t]
        index = {d: i for i, (d, _) in enumerate(kept)}
        relevant = [(text, d) for qid, text in zip(beir.query_ids, beir.query_texts, strict=True)
                    for d, g in beir.qrels[qid].items() if g > 0]
        # queries with the same text are one anchor with the union of their positives (else
        # one's relevant document would be mined as the other's negative)
        anchors, pairs, repeats = _distinct_pairs((text, index[d]) for text, d in relevant if d in index)
        if not pairs:
            raise DataError(root, "every relevant document is empty: nothing to mine for")
        ids, texts = [d for d, _ in kept], [t for _, t in kept]
        empty_positive_pairs = sum(1 for _, d in relevant if d not in index)
        if corpus:
            extra_ids, extra_texts = read_corpus_file(Path(corpus))
            known = set(beir.corpus_ids)  # the set's own documents, empty ones included
            for i, t in zip(extra_ids, extra_texts, strict=True):
                if i not in known:
                    index[i] = len(ids)
                    ids.append(i)
                    texts.append(t)
        return MiningInput(beir.name, anchors, pairs, ids, texts, duplicate_pairs=repeats,
                           empty_documents=beir.empty_documents, empty_positive_pairs=empty_positive_pairs)
    rows, _ = read_tuples(path, bad_rows=bad)
    if len(rows[0]) < 2:
        raise DataError(path, "mining needs (anchor, positive) pairs, not single sentences")
    corpus_index: dict[str, int] = {}  # the positives' texts are their ids
    anchors, pairs, repeats = _distinct_pairs((a, corpus_index.setdefault(p, len(corpus_index))) for a, p, *_ in rows)
    if corpus:
        for t in read_corpus_file(Path(corpus))[1]:
            corpus_index.setdefault(t, len(corpus_index))
    texts = list(corpus_index)
    return MiningInput(str(path), anchors, pairs, texts, texts, duplicate_pairs=repeats,
                       bad_rows_skipped=bad.count, bad_rows=bad.summary())
