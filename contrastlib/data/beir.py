"""BEIR's retrieval layout: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/{split}.tsv``.

* ``corpus.jsonl``: one object per line with ``_id``, ``text`` and optionally ``title``;
* ``queries.jsonl``: ``_id`` and ``text``;
* ``qrels/{split}.tsv``: a header, then ``query-id  corpus-id  score`` (an integer grade;
  a grade above 0 is relevant, 0 is judged not relevant, as trec_eval reads it).

A document's text is ``(title + " " + text).strip()``, as MTEB and BEIR encode it (only
``text`` where there is no title). A document left empty (real sets have some: empty text
and no title) is kept and encoded as the empty string, as MTEB encodes it, and counted
(:attr:`BeirData.empty_documents`). Every problem is a :class:`DataError` naming the file
and line, raised before any model loads: a duplicated ``_id``, an empty query, a field
that is not a string, a qrels row whose query or document id is missing, a grade that is
not an integer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from contrastlib.data.corpus import corpus_store, id_digests
from contrastlib.data.readers import read_records
from contrastlib.data.sources import Chained
from contrastlib.errors import DataError
from contrastlib.utils.text_store import digests_of, rows_of


@dataclass
class BeirData:
    """One split of a BEIR-layout directory."""

    root: Path
    split: str
    #: (A list; or, from :func:`read_beir_streamed`, the columns of a store on disk.)
    corpus_ids: Sequence[str]
    #: ``(title + " " + text).strip()`` per document, in ``corpus_ids`` order.
    corpus_texts: Sequence[str]
    #: Only the queries that have at least one relevant document in this split's qrels,
    #: in file order (a query with no relevant document has no defined score).
    query_ids: list[str]
    query_texts: list[str]
    #: query id -> {document id: grade}, every judged document (grades 0 included).
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Documents whose title and text are both empty (encoded as "", as MTEB does).
    empty_documents: int = 0
    #: Their ids, where the corpus was streamed (:func:`read_beir_streamed` keeps them out
    #: of ``corpus_ids``).
    empty_ids: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.root}:{self.split}"


def split_spec(spec: str) -> tuple[str, str]:
    """``DIR`` or ``DIR:split`` -> ``(DIR, split)`` (default split: ``test``)."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail and not any(c in tail for c in "/\\") and not Path(spec).exists():
        return head, tail
    if sep and not tail and head:
        raise DataError(spec, "empty split after ':' (write DIR or DIR:split)")
    return spec, "test"


def _read_jsonl_texts(path: Path, *, with_title: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, rec in read_records(path):
        doc_id = rec.get("_id")
        if doc_id is None:
            raise DataError(path, "missing field '_id'", n)
        doc_id = str(doc_id)
        if doc_id in out:
            raise DataError(path, f"duplicate _id {doc_id!r}", n)
        text = rec.get("text")
        if not isinstance(text, str):
            raise DataError(path, f"_id {doc_id!r}: field 'text' must be a string", n)
        title = rec.get("title") if with_title else None
        if title is not None and not isinstance(title, str):
            raise DataError(path, f"_id {doc_id!r}: field 'title' must be a string", n)
        joined = (title + " " + text).strip() if title is not None else text.strip()
        if not joined and not with_title:  # a document may be empty (MTEB encodes ""), a query not
            raise DataError(path, f"empty query (_id {doc_id!r})", n)
        out[doc_id] = joined
    if not out:
        raise DataError(path, "no records")
    return out


def read_qrels(path: Path) -> list[tuple[int, str, str, int]]:
    """``(line, query id, document id, grade)`` rows of a qrels TSV."""
    if not path.is_file():
        raise DataError(path, "no such qrels file")
    rows: list[tuple[int, str, str, int]] = []
    seen: set[tuple[str, str]] = set()
    for n, rec in read_records(path):
        try:
            qid, did, raw = rec["query-id"], rec["corpus-id"], rec["score"]
        except KeyError:
            raise DataError(path, f"qrels need columns query-id, corpus-id, score; found {', '.join(rec)}", 1) from None
        try:
            grade = int(str(raw).strip())
        except ValueError:
            raise DataError(path, f"score {raw!r} is not an integer grade", n) from None
        if (qid, did) in seen:
            raise DataError(path, f"duplicate judgement for query {qid!r}, document {did!r}", n)
        seen.add((qid, did))
        rows.append((n, qid, did, grade))
    return rows


def _paths(root: Path, split: str) -> tuple[Path, Path, Path]:
    if not root.is_dir():
        raise DataError(root, "not a directory (expected BEIR's layout: corpus.jsonl, queries.jsonl, qrels/)")
    corpus_path, queries_path = root / "corpus.jsonl", root / "queries.jsonl"
    qrels_path = root / "qrels" / f"{split}.tsv"
    for p in (corpus_path, queries_path):
        if not p.is_file():
            raise DataError(p, "missing (BEIR's layout: corpus.jsonl, queries.jsonl, qrels/{split}.tsv)")
    if not qrels_path.is_file():
        have = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise DataError(qrels_path, f"missing; splits present: {', '.join(have) or 'none'}")
    return corpus_path, queries_path, qrels_path


def read_beir(root: str | Path, split: str = "test") -> BeirData:
    """Read and check one split of a BEIR-layout directory."""
    root = Path(root)
    corpus_path, queries_path, qrels_path = _paths(root, split)
    corpus = _read_jsonl_texts(corpus_path, with_title=True)
    queries = _read_jsonl_texts(queries_path, with_title=False)
    qrels: dict[str, dict[str, int]] = {}
    for n, qid, did, grade in read_qrels(qrels_path):
        if qid not in queries:
            raise DataError(qrels_path, f"query-id {qid!r} is not in {queries_path.name}", n)
        if did not in corpus:
            raise DataError(qrels_path, f"corpus-id {did!r} is not in {corpus_path.name}", n)
        qrels.setdefault(qid, {})[did] = grade
    query_ids = [q for q in queries if any(g > 0 for g in qrels.get(q, {}).values())]
    if not query_ids:
        raise DataError(qrels_path, "no query has a relevant document (grade > 0)")
    return BeirData(
        root=root,
        split=split,
        corpus_ids=list(corpus),
        corpus_texts=list(corpus.values()),
        query_ids=query_ids,
        query_texts=[queries[q] for q in query_ids],
        qrels={q: qrels[q] for q in query_ids},
        empty_documents=sum(1 for t in corpus.values() if not t),
    )


def read_beir_streamed(root: str | Path, split: str = "test", *, store_root: str | Path | None = None,
                       empty_last: bool = False) -> BeirData:
    """:func:`read_beir` with the corpus streamed into a store on disk
    (contrastlib/data/corpus.py): ``corpus_ids`` and ``corpus_texts`` are its columns, read
    as needed, and hold the non-empty documents only (the empty ones' ids are
    ``empty_ids``). The same checks, the same one-line errors. ``empty_last``: the empty
    documents follow the others, as "" (evaluation encodes them, as MTEB does; ties are
    broken by id, so where they sit changes no ranking)."""
    root = Path(root)
    corpus_path, queries_path, qrels_path = _paths(root, split)
    store = corpus_store(corpus_path, root=store_root)
    assert store.ids is not None
    empty_ids = list(store.meta["empty_ids"])
    queries = _read_jsonl_texts(queries_path, with_title=False)
    rows = read_qrels(qrels_path)
    found = rows_of(id_digests(store), digests_of([did for _, _, did, _ in rows]))
    qrels: dict[str, dict[str, int]] = {}
    for (n, qid, did, grade), at in zip(rows, found, strict=True):
        if qid not in queries:
            raise DataError(qrels_path, f"query-id {qid!r} is not in {queries_path.name}", n)
        if at < 0:
            raise DataError(qrels_path, f"corpus-id {did!r} is not in {corpus_path.name}", n)
        qrels.setdefault(qid, {})[did] = grade
    query_ids = [q for q in queries if any(g > 0 for g in qrels.get(q, {}).values())]
    if not query_ids:
        raise DataError(qrels_path, "no query has a relevant document (grade > 0)")
    ids: Sequence[str] = store.ids
    texts: Sequence[str] = store
    if empty_last and empty_ids:
        ids, texts = Chained([store.ids, empty_ids]), Chained([store, [""] * len(empty_ids)])
    return BeirData(root=root, split=split, corpus_ids=ids, corpus_texts=texts, query_ids=query_ids,
                    query_texts=[queries[q] for q in query_ids], qrels={q: qrels[q] for q in query_ids},
                    empty_documents=len(empty_ids), empty_ids=empty_ids)
