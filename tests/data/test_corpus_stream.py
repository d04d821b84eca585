"""Corpora streamed into stores (data/corpus.py, read_beir_streamed): what the in-memory
readers read, the same one-line errors, empty documents kept out and named."""

from __future__ import annotations

import json
import os

import pytest

from contrastlib.data.beir import read_beir, read_beir_streamed
from contrastlib.data.corpus import corpus_records, corpus_store
from contrastlib.errors import DataError

DOCS = [{"_id": "d0", "title": "T0", "text": "zero"}, {"_id": "d1", "text": "one "},
        {"_id": "d2", "title": "", "text": ""}, {"_id": 3, "title": "Three", "text": ""}]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_jsonl_parquet_and_txt_read_alike(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    want = [(1, "d0", "T0 zero"), (2, "d1", "one"), (3, "d2", ""), (4, "3", "Three")]
    assert list(corpus_records(write_jsonl(tmp_path / "corpus.jsonl", DOCS))) == want
    table = pa.table({"_id": ["d0", "d1", "d2", "3"], "title": ["T0", None, "", "Three"],
                      "text": ["zero", "one ", "", ""]})
    pq.write_table(table, tmp_path / "corpus.parquet", row_group_size=2)
    assert list(corpus_records(tmp_path / "corpus.parquet")) == want
    (tmp_path / "c.txt").write_text("first\n\n  second \n")
    assert list(corpus_records(tmp_path / "c.txt")) == [(1, "first", "first"), (3, "second", "second")]
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad.parquet: a Parquet corpus needs a 'text' column; found body"):
        list(corpus_records(tmp_path / "bad.parquet"))


def test_store_keeps_documents_out_when_empty_and_names_them(tmp_path):
    store = corpus_store(write_jsonl(tmp_path / "corpus.jsonl", DOCS), root=tmp_path / "stores")
    assert list(store) == ["T0 zero", "one", "Three"] and store.ids is not None and list(store.ids) == ["d0", "d1", "3"]
    assert store.meta["empty_ids"] == ["d2"]


@pytest.mark.parametrize(("records", "message"), [
    ([{"_id": "a", "text": "x"}, {"_id": "b", "text": "y"}, {"_id": "a", "text": "z"}], r"corpus.jsonl:3: duplicate _id 'a'"),
    ([{"_id": "a", "text": ""}, {"_id": "a", "text": "z"}], r"corpus.jsonl:2: duplicate _id 'a'"),
    ([{"_id": "a", "text": "x"}, {"text": "y"}], r"corpus.jsonl:2: missing field '_id'"),
    ([{"_id": "a", "text": 5}], r"corpus.jsonl:1: _id 'a': field 'text' must be a string"),
])
def test_bad_corpora_are_one_line_errors(tmp_path, records, message):
    with pytest.raises(DataError, match=message):
        corpus_store(write_jsonl(tmp_path / "corpus.jsonl", records), root=tmp_path / "stores")


def test_an_edited_file_gets_a_new_store(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", DOCS[:2])
    first = corpus_store(path, root=tmp_path / "stores")
    write_jsonl(path, [*DOCS[:1], {"_id": "d9", "text": "new"}])
    os.utime(path, ns=(1, 1))
    assert list(corpus_store(path, root=tmp_path / "stores")) == ["T0 zero", "new"] != list(first)


def test_beir_streamed_is_beir_less_its_empty_documents(tmp_path):
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    write_jsonl(root / "corpus.jsonl", DOCS)
    write_jsonl(root / "queries.jsonl", [{"_id": "q0", "text": "a"}, {"_id": "q1", "text": "b"}])
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq0\td2\t1\nq1\t3\t0\nq1\td1\t2\n")
    whole, streamed = read_beir(root), read_beir_streamed(root, store_root=tmp_path / "stores")
    kept = [(i, t) for i, t in zip(whole.corpus_ids, whole.corpus_texts, strict=True) if t]
    assert list(zip(streamed.corpus_ids, streamed.corpus_texts, strict=True)) == kept
    assert streamed.empty_ids == ["d2"] and streamed.empty_documents == whole.empty_documents == 1
    assert (streamed.qrels, streamed.query_ids, streamed.query_texts) == (whole.qrels, whole.query_ids, whole.query_texts)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq0\tnope\t1\n")
    with pytest.raises(DataError, match=r"test.tsv:3: corpus-id 'nope' is not in corpus.jsonl"):
        read_beir_streamed(root, store_root=tmp_path / "stores")


def test_parquet_without_ids_takes_the_text_as_its_id(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a", "b", "a"]}), tmp_path / "c.parquet")
    assert list(corpus_store(tmp_path / "c.parquet", root=tmp_path / "stores")) == ["a", "b", "a"]
    pq.write_table(pa.table({"text": ["a", None]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"n.parquet:2: _id '2': field 'text' must be a string"):
        corpus_store(tmp_path / "n.parquet", root=tmp_path / "stores")
