"""Parquet files, Arrow folders (``save_to_disk``), ``.arrow`` files and ``datasets.Dataset``
objects train like the same rows in a TSV file, memory-mapped; ``data.columns`` picks
columns by name in any format; bad tables are one-line errors naming file and row."""

from __future__ import annotations

import csv
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

import contrastlib
from contrastlib.cli.main import main
from contrastlib.data import read_scored_pairs, read_tuples
from contrastlib.data.readers import BadRows
from contrastlib.data.tables import TextTable
from contrastlib.errors import DataError


def _stsb_rows(n: int) -> list[tuple[str, str, float]]:
    from contrastlib.config.load import bundled

    path = bundled("stsb/train.tsv")
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        i1, i2, i3 = header.index("sentence1"), header.index("sentence2"), header.index("score")
        return [(r[i1], r[i2], float(r[i3])) for _, r in zip(range(n), reader, strict=False)]


def _sources(tmp_path, rows):
    """The same scored pairs as TSV, Parquet, an Arrow folder and a datasets.Dataset."""
    tsv = tmp_path / "train.tsv"
    tsv.write_text("sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows), encoding="utf-8")
    columns = {"sentence1": [r[0] for r in rows], "sentence2": [r[1] for r in rows], "score": [r[2] for r in rows]}
    parquet = tmp_path / "train.parquet"
    pq.write_table(pa.table(columns), parquet, row_group_size=16)  # several row groups
    dataset = datasets.Dataset.from_dict(columns)
    folder = tmp_path / "train-arrow"
    dataset.save_to_disk(str(folder))
    return tsv, parquet, folder, dataset


def _weights(run):
    return load_file(str(next((run / "model").rglob("model.safetensors"))))


QUICKSTART = ["trainer.max_steps=3", "trainer.precision=32-true", "eval.sts=[]", "data.batch_size=8",
              "model.max_seq_length=32", "trainer.enable_progress_bar=false", "optim.warmup_ratio=0.0"]


def test_parquet_arrow_and_a_dataset_train_the_quickstart_to_the_tsv_weights(tmp_path, tiny_model):
    tsv, parquet, folder, dataset = _sources(tmp_path, _stsb_rows(64))
    common = [f"output_dir={tmp_path / 'runs'}", f"model.name={tiny_model}", *QUICKSTART]
    for name, source in [("tsv", tsv), ("parquet", parquet), ("arrow", folder)]:
        assert main(["fit", "quickstart", f"name={name}", f"data.train={source}", *common]) == 0
    contrastlib.fit("quickstart", name="dataset", output_dir=str(tmp_path / "runs"), data={"train": dataset, "batch_size": 8},
                    model={"name": tiny_model, "max_seq_length": 32}, eval={"sts": []}, optim={"warmup_ratio": 0.0},
                    trainer={"max_steps": 3, "precision": "32-true", "enable_progress_bar": False}, log=lambda _m: None)
    want = _weights(tmp_path / "runs" / "tsv")
    for name in ("parquet", "arrow", "dataset"):
        got = _weights(tmp_path / "runs" / name)
        assert got.keys() == want.keys()
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=f"{name}: {k}")
    assert next((tmp_path / "runs" / ".datasets").iterdir()).joinpath("state.json").is_file()
    # and the weights did move: three steps at lr 1e-4 change the encoder
    start = load_file(str(next(Path(tiny_model).rglob("model.safetensors"))))
    assert any(not torch.equal(start[k], want[k]) for k in want if k in start)


def test_a_table_is_memory_mapped_and_read_on_access(tmp_path):
    rows = [(f"anchor {i}", f"positive {i}", f"negative {i}") for i in range(100)]
    table = pa.table({"anchor": [r[0] for r in rows], "positive": [r[1] for r in rows], "negative": [r[2] for r in rows]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=7)
    got, roles = read_tuples(tmp_path / "t.parquet")
    assert isinstance(got, TextTable) and roles == ["anchor", "positive", "negative"]
    assert len(got) == 100 and got[0] == rows[0] and got[-1] == rows[-1]
    assert got.take([5, 99, 0]) == [rows[5], rows[99], rows[0]]
    assert got[10:13].take([0, 2]) == [rows[10], rows[12]]
    assert list(got.column(1)[:3]) == [r[1] for r in rows[:3]]
    # the columns are Arrow buffers mapped from the cache file datasets wrote, not Python objects
    assert all(isinstance(c, pa.ChunkedArray) for c in got.columns)
    assert got.dataset.files and pa.total_allocated_bytes() < 1_000_000


def test_columns_pick_by_name_in_any_format(tmp_path):
    (tmp_path / "q.tsv").write_text("id\tquestion\tanswer\n1\twhat is x\tx is y\n", encoding="utf-8")
    pq.write_table(pa.table({"id": [1], "question": ["what is x"], "answer": ["x is y"]}), tmp_path / "q.parquet")
    for f in ("q.tsv", "q.parquet"):
        rows, roles = read_tuples(tmp_path / f, columns=["answer", "question"])
        assert list(rows) == [("x is y", "what is x")] and roles == ["anchor", "positive"]
        with pytest.raises(DataError, match=r"q\.(tsv|parquet).*data.columns: no column 'query'; found columns: id, question, answer"):
            read_tuples(tmp_path / f, columns=["query", "answer"])


def test_bad_tables_are_one_line_errors_naming_file_and_row(tmp_path):
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"anchor": ["a", "b", "  ", "d"], "positive": ["w", None, "y", "z"]}), p)
    with pytest.raises(DataError, match=r"t\.parquet:2: missing field 'positive'"):
        read_tuples(p)
    bad = BadRows("skip")
    rows, _ = read_tuples(p, bad_rows=bad)
    assert list(rows) == [("a", "w"), ("d", "z")] and bad.count == 2
    assert "empty text in column 'anchor'" in bad.summary()

    pq.write_table(pa.table({"anchor": ["a"], "positive": [3]}), p)
    with pytest.raises(DataError, match="column 'positive' holds int64, expected text"):
        read_tuples(p)
    pq.write_table(pa.table({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "score": [1.0, float("nan")]}), p)
    with pytest.raises(DataError, match=r"t\.parquet:2: score nan is not finite"):
        read_scored_pairs(p)
    (tmp_path / "fake.parquet").write_text("not parquet at all\n")
    with pytest.raises(DataError, match=r"fake\.parquet: cannot read as a table"):
        read_tuples(tmp_path / "fake.parquet")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"anchor": ["a"], "positive": ["b"]}),
                               "test": datasets.Dataset.from_dict({"anchor": ["a"], "positive": ["b"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"dd: holds the splits test, train; name one folder"):
        read_tuples(tmp_path / "dd")
    rows, _ = read_tuples(tmp_path / "dd" / "train")
    assert list(rows) == [("a", "b")]


def test_a_bad_table_through_the_cli_is_one_line_before_any_model_loads(tmp_path, capsys):
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"sentence1": ["a"], "sentence2": ["b"], "score": ["high"]}), p)
    code = main(["fit", "quickstart", f"data.train={p}", "model.name=/nonexistent/model", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "t.parquet: column 'score' holds string, expected numbers" in err[0]


def test_a_file_that_is_not_parquet_through_the_cli_is_one_line(tmp_path, capsys):
    p = tmp_path / "broken.parquet"
    p.write_bytes(b"PAR1 this is not a parquet file at all")
    code = main(["fit", "quickstart", f"data.train={p}", "model.name=/nonexistent/model", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "broken.parquet: cannot read as a table" in err[0], err


def test_a_batch_is_gathered_without_joining_the_columns(tmp_path):
    """``ChunkedArray.take`` joins every chunk of a column into one array first: at 10M
    rows, 2 GB allocated (and every page of the file read) for a batch of 32 rows."""
    n = 200_000
    texts = [f"row {i} " + "x" * 90 for i in range(n)]
    pq.write_table(pa.table({"anchor": texts, "positive": texts[::-1]}), tmp_path / "t.parquet", row_group_size=10_000)
    rows, _ = read_tuples(tmp_path / "t.parquet")
    assert len(rows.columns[0].chunks) >= 20  # one chunk per record batch of the converted file
    proxy, default = pa.proxy_memory_pool(pa.default_memory_pool()), pa.default_memory_pool()
    pa.set_memory_pool(proxy)
    try:
        batch = rows.take([5, 199_999, 100_000, 7])
    finally:
        pa.set_memory_pool(default)
    assert batch == [(texts[5], texts[-6]), (texts[-1], texts[0]), (texts[100_000], texts[99_999]), (texts[7], texts[-8])]
    assert proxy.max_memory() < 1_000_000, proxy.max_memory()  # a column is ~20 MB


def test_a_clean_table_is_checked_once(tmp_path, monkeypatch):
    from contrastlib.data import table_checks

    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"anchor": ["a", "b"], "positive": ["c", "d"]}), p)
    read_tuples(p)  # the pass over every row, recorded as clean
    monkeypatch.setattr(table_checks, "_batches", lambda *a: (_ for _ in ()).throw(AssertionError("read again")))
    assert list(read_tuples(p)[0]) == [("a", "c"), ("b", "d")]
    # a file with a bad row is checked every time (its error must come back), and a new
    # version of the file is a new table
    pq.write_table(pa.table({"anchor": ["a", ""], "positive": ["c", "d"]}), p)
    with pytest.raises(AssertionError, match="read again"):
        read_tuples(p)


def test_arrow_files_in_both_ipc_formats_and_no_datasets_import_for_parquet(tmp_path):
    import subprocess
    import sys

    import pyarrow.feather as feather

    table = pa.table({"anchor": ["a", "b"], "positive": ["c", "d"]})
    feather.write_feather(table, tmp_path / "file-format.arrow", compression="uncompressed")  # IPC file (Feather v2)
    with pa.OSFile(str(tmp_path / "stream.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)  # IPC stream (what datasets writes)
    for name in ("file-format.arrow", "stream.arrow"):
        assert list(read_tuples(tmp_path / name)[0]) == [("a", "c"), ("b", "d")], name
    pq.write_table(table, tmp_path / "t.parquet")
    code = ("import sys; from contrastlib.data.readers import read_tuples; "
            f"rows, _ = read_tuples({str(tmp_path / 't.parquet')!r}); assert len(rows) == 2; "
            "print('datasets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # Parquet is read without importing the datasets library


def test_review_findings_on_tables(tmp_path, capsys):
    """A file replaced under the same name is mapped anew; a column named twice is a
    one-line error; re-mining refuses a memory-mapped source before any model loads."""
    p = tmp_path / "t.arrow"
    for texts in (["a", "b"], ["c", "d", "e"]):
        with pa.OSFile(str(tmp_path / "new.arrow"), "wb") as sink, pa.ipc.new_stream(sink, pa.schema([("anchor", pa.string()), ("positive", pa.string())])) as w:
            w.write_table(pa.table({"anchor": texts, "positive": texts}))
        (tmp_path / "new.arrow").replace(p)
        assert [r[0] for r in read_tuples(p)[0]] == texts
    from contrastlib.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.columns: 'anchor' is named twice"):
        read_tuples(p, columns=["anchor", "anchor"])
    triplets = tmp_path / "t3.parquet"
    pq.write_table(pa.table({"anchor": ["a"], "positive": ["b"], "negative_1": ["c"]}), triplets)
    code = main(["fit", "simcse-snli", f"data.train={triplets}", "remine.every_n_steps=5", "model.name=/nonexistent", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "re-mining rewrites the rows in memory; a Parquet or Arrow source" in err[0], err
