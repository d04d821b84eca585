"""A UTF-8 byte-order mark (as spreadsheet programs write CSV and TSV) reads like the same
file without it, in every reader: tuples, scored pairs, sentences, JSON lines, BEIR and
preference files, plain and gzipped."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import pytest

from contrastlib.data import (
    ScoredPairs,
    read_records,
    read_scored_pairs,
    read_sentences,
    read_tuples,
)
from contrastlib.data.beir import read_beir
from contrastlib.data.preference import read_preferences

BOM = "\ufeff"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def _pair(tmp_path: Path, name: str, text: str) -> tuple[Path, Path]:
    """The same text written without and with a byte-order mark."""
    return _write(tmp_path / "plain" / name, text), _write(tmp_path / "bom" / name, BOM + text)


CASES = {
    "scored tsv": ("s.tsv", "sentence1\tsentence2\tscore\na\tb\t1.5\nc\td\t4\n", read_scored_pairs),
    "scored csv": ("s.csv", "sentence1,sentence2,score\na,b,1.5\n\"c, e\",d,4\n", read_scored_pairs),
    "scored tsv.gz": ("s.tsv.gz", "sentence1\tsentence2\tscore\na\tb\t1.5\n", read_scored_pairs),
    "triplets tsv": ("t.tsv", "anchor\tpositive\tnegative\na\tb\tc\n", read_tuples),
    "triplets csv": ("t.csv", "anchor,positive,negative\na,b,c\n", read_tuples),
    "pairs jsonl": ("p.jsonl", '{"anchor": "a", "positive": "b"}\n', read_tuples),
    "sentences txt": ("s.txt", "first\nsecond\n", read_sentences),
    "records jsonl": ("r.jsonl", '{"x": 1, "y": "z"}\n', lambda p: list(read_records(p))),
}


@pytest.mark.parametrize("case", CASES)
def test_a_byte_order_mark_reads_like_the_file_without_it(tmp_path, case):
    name, text, read = CASES[case]
    plain, bom = _pair(tmp_path, name, text)
    assert bom.read_bytes() != plain.read_bytes()  # the mark is really there
    got, want = read(bom), read(plain)
    if isinstance(got, ScoredPairs):  # it names its file: compare what was read
        got, want = (dataclasses.replace(x, sources=[]) for x in (got, want))
    assert got == want
    assert BOM not in repr(got)


def test_beir_files_with_byte_order_marks(tmp_path):
    files = {
        "corpus.jsonl": '{"_id": "d1", "title": "T", "text": "doc one"}\n{"_id": "d2", "text": "doc two"}\n',
        "queries.jsonl": '{"_id": "q1", "text": "query"}\n',
        "qrels/test.tsv": "query-id\tcorpus-id\tscore\nq1\td2\t1\n",
    }
    for rel, text in files.items():
        _pair(tmp_path, rel, text)
    plain, bom = read_beir(tmp_path / "plain"), read_beir(tmp_path / "bom")
    assert (bom.corpus_ids, bom.corpus_texts, bom.query_ids, bom.qrels) == (
        plain.corpus_ids, plain.corpus_texts, plain.query_ids, plain.qrels)
    assert bom.qrels == {"q1": {"d2": 1}}


def test_preference_files_with_byte_order_marks(tmp_path):
    rows = [{"prompt": "p", "chosen": "good", "rejected": "bad"}, {"prompt": "q", "chosen": "yes", "rejected": "no"}]
    plain, bom = _pair(tmp_path, "prefs.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    a, b = read_preferences(plain), read_preferences(bom)
    assert [dataclasses.replace(r, where="") for r in b.rows] == [dataclasses.replace(r, where="") for r in a.rows]
    assert [(r.prompt, r.responses) for r in b.rows] == [("p", ("good", "bad")), ("q", ("yes", "no"))]
