"""Readers: formats, column aliases, and errors that name the file and line."""

from __future__ import annotations

import gzip
import json

import pytest

from contrastlib.data import read_scored_pair_files, read_scored_pairs, read_sentences, read_tuples
from contrastlib.errors import DataError


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_scored_pairs_tsv(tmp_path):
    p = write(tmp_path, "s.tsv", "sentence1\tsentence2\tscore\na\tb\t1.5\nc\td\t4\n")
    d = read_scored_pairs(p)
    assert d.sentences1 == ["a", "c"] and d.scores == [1.5, 4.0]


def test_scored_pairs_keep_quotes_verbatim(tmp_path):
    p = write(tmp_path, "s.tsv", 'sentence1\tsentence2\tscore\n"quoted" start\tb\t1\n')
    assert read_scored_pairs(p).sentences1 == ['"quoted" start']


@pytest.mark.parametrize(
    "text,line,match",
    [
        ("sentence1\tsentence2\tscore\na\tb\n", 2, "expected 3 columns"),
        ("sentence1\tsentence2\tscore\na\tb\t1\nc\td\tnot-a-number\n", 3, "not a number"),
        ("sentence1\tsentence2\tscore\na\tb\tnan\n", 2, "not finite"),
        ("sentence1\tsentence2\nа\tb\n", 1, "missing column 'score'"),
        ("s1\tsentence2\tscore\na\tb\t1\n", 1, "missing column 'sentence1'"),
    ],
)
def test_scored_pair_errors_name_file_and_line(tmp_path, text, line, match):
    p = write(tmp_path, "bad.tsv", text)
    with pytest.raises(DataError, match=match) as info:
        read_scored_pairs(p)
    assert info.value.line == line
    assert str(info.value).startswith(f"{p}:{line}: ")


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="file is empty"):
        read_scored_pairs(write(tmp_path, "e.tsv", ""))
    with pytest.raises(DataError, match="no such file"):
        read_scored_pairs(tmp_path / "missing.tsv")
    with pytest.raises(DataError, match="no data rows"):
        read_scored_pairs(write(tmp_path, "h.tsv", "sentence1\tsentence2\tscore\n"))
    with pytest.raises(DataError, match="unknown file type"):
        read_scored_pairs(write(tmp_path, "x.xlsx", "abc"))
    with pytest.raises(DataError, match=r"x\.parquet: cannot read as a table: Parquet file size is 3 bytes"):
        read_scored_pairs(write(tmp_path, "x.parquet", "abc"))


def test_triplets_with_aliases_and_formats(tmp_path):
    tsv = write(tmp_path, "t.tsv", "anchor\tpositive\tnegative\na\tb\tc\n")
    csv_ = write(tmp_path, "t.csv", 'sent0,sent1,hard_negative\n"a, with comma",b,c\n')
    jsonl = write(tmp_path, "t.jsonl", json.dumps({"query": "a", "pos": "b"}) + "\n")
    assert read_tuples(tsv) == ([("a", "b", "c")], ["anchor", "positive", "negative"])
    assert read_tuples(csv_)[0] == [("a, with comma", "b", "c")]
    assert read_tuples(jsonl) == ([("a", "b")], ["anchor", "positive"])
    gz = tmp_path / "t.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(json.dumps({"anchor": "x", "positive": "y"}) + "\n")
    assert read_tuples(gz)[0] == [("x", "y")]


def test_tuple_errors(tmp_path):
    with pytest.raises(DataError, match=r"t.jsonl:2: invalid JSON"):
        read_tuples(write(tmp_path, "t.jsonl", '{"anchor": "a", "positive": "b"}\n{oops\n'))
    with pytest.raises(DataError, match=r":2: missing field 'positive'"):
        read_tuples(write(tmp_path, "u.jsonl", '{"anchor": "a", "positive": "b"}\n{"anchor": "a"}\n'))
    with pytest.raises(DataError, match=r":1: missing column 'positive'"):
        read_tuples(write(tmp_path, "v.tsv", "anchor\tother\na\tb\n"))
    with pytest.raises(DataError, match=r":3: empty text"):
        read_tuples(write(tmp_path, "w.tsv", "anchor\tpositive\na\tb\n \tc\n"))


def test_sentences(tmp_path):
    assert read_sentences(write(tmp_path, "s.txt", "a\n\n b \n")) == ["a", "b"]
    assert read_tuples(write(tmp_path, "u.txt", "a\nb\n")) == ([("a",), ("b",)], ["anchor"])
    with pytest.raises(DataError, match="only blank lines"):
        read_sentences(write(tmp_path, "blank.txt", "\n\n"))


def test_directory_of_scored_pairs_is_pooled(tmp_path):
    d = tmp_path / "sick"
    d.mkdir()
    write(d, "a.tsv", "sentence1\tsentence2\tscore\na\tb\t1\n")
    write(d, "b.tsv", "sentence1\tsentence2\tscore\nc\td\t2\ne\tf\t3\n")
    assert len(read_scored_pair_files([d])) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .tsv files"):
        read_scored_pair_files([tmp_path / "empty"])


# ---------------------------------------------------------------------------- on_bad_row
BAD_JSONL = ('{"anchor": "a", "positive": "b"}\n{"anchor": "c"\n{"anchor": "e", "positive": ""}\n'
             '[1, 2]\n{"anchor": "g", "positive": "h"}\n{"anchor": "i", "positive": 7}\n')


def test_bad_rows_stop_the_read_by_default_and_are_counted_when_skipped(tmp_path):
    from contrastlib.data.readers import BadRows

    p = write(tmp_path, "t.jsonl", BAD_JSONL)
    with pytest.raises(DataError, match=r"t\.jsonl:2: invalid JSON"):
        read_tuples(p)
    bad = BadRows("skip")
    rows, roles = read_tuples(p, bad_rows=bad)
    assert rows == [("a", "b"), ("g", "h")] and roles == ["anchor", "positive"]
    assert bad.count == 4 and bad.first[0].endswith("t.jsonl:2: invalid JSON (Expecting ',' delimiter)")
    assert bad.reasons["empty text in column 'positive'"] == 1
    assert bad.reasons["expected a JSON object, got list"] == 1
    assert bad.reasons["field 'positive' must be a string, got int"] == 1
    assert bad.summary().startswith("4 bad rows skipped: ") and "\n" not in bad.summary()


def test_skipped_rows_in_tsv_and_scored_pairs(tmp_path):
    from contrastlib.data.readers import BadRows

    tsv = write(tmp_path, "t.tsv", "anchor\tpositive\na\tb\nonly-one-column\nc\td\te\nf\tg\n")
    bad = BadRows("skip")
    assert read_tuples(tsv, bad_rows=bad)[0] == [("a", "b"), ("f", "g")]
    assert bad.count == 2 and bad.first[0].endswith("t.tsv:3: expected 2 columns (anchor, positive), found 1")
    scored = write(tmp_path, "s.tsv", "sentence1\tsentence2\tscore\na\tb\tnan\nc\td\tx\ne\tf\t3\n")
    with pytest.raises(DataError, match=r"s\.tsv:2: score 'nan' is not finite"):
        read_scored_pairs(scored)
    bad = BadRows("skip")
    assert read_scored_pairs(scored, bad_rows=bad).scores == [3.0] and bad.count == 2


def test_a_file_of_only_bad_rows_is_still_an_error_that_says_so(tmp_path):
    from contrastlib.data.readers import BadRows

    p = write(tmp_path, "t.jsonl", '{"anchor": "c", "positive": 3}\n{"anchor": "e", "positive": ""}\n')
    with pytest.raises(DataError, match=r"no usable rows \(2 bad rows skipped: "):
        read_tuples(p, bad_rows=BadRows("skip"))


def test_fit_reports_skipped_rows_and_refuses_unknown_policies(tmp_path, capsys):
    from contrastlib.cli.main import main

    p = write(tmp_path, "t.jsonl", BAD_JSONL)
    assert main(["fit", "simcse-snli", f"data.train={p}", f"output_dir={tmp_path}", "--dry-run"]) == 2
    assert "t.jsonl:2: invalid JSON" in capsys.readouterr().err
    assert main(["fit", "simcse-snli", f"data.train={p}", "data.on_bad_row=skip", f"output_dir={tmp_path}",
                 "--dry-run"]) == 0
    assert f"data: {p}: 2 rows, pairs (anchor, positive); 4 bad rows skipped: " in capsys.readouterr().out
    assert main(["fit", "simcse-snli", "data.on_bad_row=sometimes", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == "error: data.on_bad_row: error or skip, not 'sometimes'"
    assert main(["fit", "simclr-digits", "data.on_bad_row=skip", "--dry-run"]) == 2
    assert "an image that does not decode is always an error" in capsys.readouterr().err
