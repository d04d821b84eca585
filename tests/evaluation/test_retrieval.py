"""Retrieval evaluation: metrics against a hand-computed case and against pytrec_eval
(what MTEB runs), the BEIR reader's errors, and the evaluator on a real SciFact slice
against an independent brute-force reference."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval
from tests_helpers import shared

from contrastlib.cli.main import main
from contrastlib.data.beir import read_beir
from contrastlib.errors import DataError
from contrastlib.evaluation.retrieval import (
    DEFAULT_KS,
    evaluate_retrieval,
    mean_metrics,
    query_metrics,
    write_trec_run,
)


def test_metrics_on_a_hand_computed_case():
    # ranking: d1 (rel 0), d2 (rel 2), d3 (not judged), d4 (rel 1); d5 (rel 1) not retrieved
    hits = [("d1", 0.9), ("d2", 0.8), ("d3", 0.7), ("d4", 0.6)]
    grades = {"d1": 0, "d2": 2, "d4": 1, "d5": 1}
    m = query_metrics(hits, grades, {"ndcg": (3,), "mrr": (1, 3), "map": (100,), "accuracy": (1, 3),
                                     "precision": (3,), "recall": (3, 100)})
    dcg3 = 2 / math.log2(3)
    idcg3 = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@3"] == pytest.approx(dcg3 / idcg3)
    assert m["mrr@1"] == 0 and m["mrr@3"] == pytest.approx(1 / 2)
    assert m["map@100"] == pytest.approx((1 / 2 + 2 / 4) / 3)  # 3 relevant documents
    assert m["accuracy@1"] == 0 and m["accuracy@3"] == 1
    assert m["precision@3"] == pytest.approx(1 / 3)
    assert m["recall@3"] == pytest.approx(1 / 3) and m["recall@100"] == pytest.approx(2 / 3)


def test_ties_break_by_descending_document_id_as_trec_eval():
    hits = [("a", 0.5), ("c", 0.5), ("b", 0.5)]
    assert query_metrics(hits, {"c": 1}, {"mrr": (1,)})["mrr@1"] == 1.0
    assert query_metrics(hits, {"a": 1}, {"mrr": (3,)})["mrr@3"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", range(3))
def test_every_metric_matches_pytrec_eval_with_heavy_ties(seed):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(60)]
    qrels, run = {}, {}
    for q in range(40):
        qrels[f"q{q}"] = {d: rng.choice([0, 1, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 8))}
        run[f"q{q}"] = {d: rng.choice([0.1, 0.2, 0.25, 0.5]) for d in rng.sample(docs, 30)}
    measures = {"ndcg_cut.1,3,5,10", "map_cut.100", "recall.1,3,5,10,100", "P.1,3,5,10", "success.1,3,5,10"}
    ref = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    ours = mean_metrics({q: list(r.items()) for q, r in run.items()}, qrels)
    kept = [q for q in ref if any(g > 0 for g in qrels[q].values())]

    def mean(name: str) -> float:
        return float(np.mean([ref[q][name] for q in kept]))

    for k in DEFAULT_KS["ndcg"]:
        assert ours[f"ndcg@{k}"] == pytest.approx(mean(f"ndcg_cut_{k}"), abs=1e-12)
    for k in DEFAULT_KS["precision"]:
        assert ours[f"precision@{k}"] == pytest.approx(mean(f"P_{k}"), abs=1e-12)
    for k in DEFAULT_KS["recall"]:
        assert ours[f"recall@{k}"] == pytest.approx(mean(f"recall_{k}"), abs=1e-12)
    for k in DEFAULT_KS["accuracy"]:
        assert ours[f"accuracy@{k}"] == pytest.approx(mean(f"success_{k}"), abs=1e-12)
    assert ours["map@100"] == pytest.approx(mean("map_cut_100"), abs=1e-12)
    # MRR@k: pytrec_eval's recip_rank is uncut; on runs cut at k it is MRR@k
    for k in DEFAULT_KS["mrr"]:
        cut = {q: dict(sorted(r.items(), key=lambda h: (h[1], h[0]), reverse=True)[:k]) for q, r in run.items()}
        rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
        assert ours[f"mrr@{k}"] == pytest.approx(float(np.mean([rr[q]["recip_rank"] for q in kept])), abs=1e-12)


# ----------------------------------------------------------------------------- BEIR input
def write_beir(root: Path, corpus, queries, qrels, split="test") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / f"{split}.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
    )
    return root


CORPUS = [{"_id": "d1", "title": "Cats", "text": "Cats purr."}, {"_id": "d2", "title": "", "text": "Dogs bark."}]
QUERIES = [{"_id": "q1", "text": "what purrs"}, {"_id": "q2", "text": "what barks"}, {"_id": "q3", "text": "unjudged"}]


def test_beir_reader_joins_title_and_text_as_mteb(tmp_path):
    data = read_beir(write_beir(tmp_path / "b", CORPUS, QUERIES, [("q1", "d1", 1), ("q2", "d2", 1), ("q2", "d1", 0)]))
    assert data.corpus_texts == ["Cats Cats purr.", "Dogs bark."]
    assert data.query_ids == ["q1", "q2"]  # q3 has no relevant document
    assert data.qrels["q2"] == {"d2": 1, "d1": 0}


@pytest.mark.parametrize(
    ("corpus", "queries", "qrels", "where", "message"),
    [
        (CORPUS, QUERIES, [("q1", "d9", 1)], "qrels/test.tsv:2", "corpus-id 'd9' is not in corpus.jsonl"),
        ([*CORPUS, {"_id": "d1", "text": "again"}], QUERIES, [("q1", "d1", 1)], "corpus.jsonl:3", "duplicate _id 'd1'"),
        (CORPUS, [*QUERIES, {"_id": "q4", "text": "  "}], [("q1", "d1", 1)], "queries.jsonl:4", "empty query"),
        (CORPUS, QUERIES, [("q1", "d1", "x")], "qrels/test.tsv:2", "not an integer"),
        (CORPUS, QUERIES, [("q7", "d1", 1)], "qrels/test.tsv:2", "query-id 'q7'"),
    ],
)
def test_bad_beir_input_is_one_line_with_file_and_line(tmp_path, capsys, corpus, queries, qrels, where, message):
    root = write_beir(tmp_path / "bad", corpus, queries, qrels)
    with pytest.raises(DataError, match=message):
        read_beir(root)
    # through the CLI: exit 2, one line, before any model loads (the model name is bogus)
    code = main(["eval", "retrieval", "--model", "no/such-model", "--data", str(root)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and where in err and message in err


def test_missing_split_names_the_splits_present(tmp_path):
    root = write_beir(tmp_path / "b", CORPUS, QUERIES, [("q1", "d1", 1)], split="dev")
    with pytest.raises(DataError, match="splits present: dev"):
        read_beir(root, "test")


# ----------------------------------------------------------------------------- real slice
@pytest.fixture(scope="module")
def scifact_slice(tmp_path_factory) -> Path:
    """20 SciFact test queries, their relevant documents and 150 others (real text)."""
    src = shared("retrieval", "scifact")
    qrels = [line.split("\t") for line in (src / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    queries = {json.loads(line)["_id"]: json.loads(line) for line in (src / "queries.jsonl").read_text().splitlines()}
    docs = [json.loads(line) for line in (src / "corpus.jsonl").read_text().splitlines()]
    keep_q = list(dict.fromkeys(q for q, _, _ in qrels))[:20]
    rel = {d for q, d, _ in qrels if q in keep_q}
    corpus = [d for d in docs if d["_id"] in rel] + [d for d in docs if d["_id"] not in rel][:150]
    return write_beir(
        tmp_path_factory.mktemp("scifact") / "slice", corpus, [queries[q] for q in keep_q],
        [(q, d, s.strip()) for q, d, s in qrels if q in keep_q],
    )


@pytest.mark.shared_data
def test_evaluator_matches_a_brute_force_pytrec_eval_reference(scifact_slice, tiny, tiny_model, tmp_path):
    """On the tiny BERT: the evaluator's arithmetic, not a figure (the published one is
    test_scifact_reproduces_mteb's)."""
    data = read_beir(scifact_slice)
    result = evaluate_retrieval(tiny, data, batch_size=64)
    # reference: the same embeddings by another route, a full score matrix, pytrec_eval
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(tiny_model, device="cpu")
    d = st.encode(data.corpus_texts, normalize_embeddings=True, batch_size=64)
    q = st.encode(data.query_texts, normalize_embeddings=True, batch_size=64)
    sims = q @ d.T
    run = {
        qid: {data.corpus_ids[j]: float(sims[i, j]) for j in np.argsort(-sims[i])[:100]}
        for i, qid in enumerate(data.query_ids)
    }
    ref = pytrec_eval.RelevanceEvaluator(data.qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    assert result.metrics["ndcg@10"] == pytest.approx(np.mean([r["ndcg_cut_10"] for r in ref.values()]), abs=5e-4)
    assert result.metrics["recall@100"] == pytest.approx(np.mean([r["recall_100"] for r in ref.values()]), abs=5e-4)
    out = write_trec_run(tmp_path / "run.trec", result.run)
    first = out.read_text().splitlines()[0].split()
    assert first[1] == "Q0" and first[3] == "1" and first[2] == result.run[first[0]][0][0]


@pytest.mark.shared_data
def test_matryoshka_sizes_from_the_cache_score_as_from_the_matrix(scifact_slice, tiny, tmp_path):
    """The cache's bounded path (indexes built a shard at a time, one size after another,
    IVF trained on the sample read row by row) scores exactly what the whole matrix does."""
    from contrastlib.index import IndexSpec
    from contrastlib.index.cache import EmbeddingCache

    data = read_beir(scifact_slice)
    cache = EmbeddingCache(tmp_path, shard_size=32)
    for spec in (IndexSpec(), IndexSpec("ivf_flat", nlist=4, nprobe=2)):
        whole = evaluate_retrieval(tiny, data, dims=(8, 16, 32), index_spec=spec,
                                   embed=cache.embedder(tiny, show_progress_bar=False))
        streamed = evaluate_retrieval(tiny, data, dims=(8, 16, 32), index_spec=spec,
                                      cached=cache.ensurer(tiny, show_progress_bar=False))
        assert whole.by_dim == streamed.by_dim and set(whole.by_dim) == {8, 16}
        assert whole.metrics == streamed.metrics and whole.run == streamed.run


@pytest.mark.shared_data
def test_cli_eval_retrieval_json_and_run_file(scifact_slice, tmp_path, capsys, tiny_model):
    run_file = tmp_path / "out.run"
    code = main(["eval", "retrieval", "-m", tiny_model, "-d", str(scifact_slice), "--run-file", str(run_file),
                 "--json", "--no-progress", "--precision", "bf16"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["n_queries"] == 20 and 0 < payload["ndcg@10"] <= 100
    assert len(run_file.read_text().splitlines()) == 20 * 100


@pytest.mark.slow
@pytest.mark.shared_data
def test_scifact_reproduces_mteb(capsys):
    """MTEB's published all-MiniLM-L6-v2 SciFact nDCG@10 is 64.51 (about 3-6 min here)."""
    code = main(["eval", "retrieval", "-m", "all-MiniLM-L6-v2", "-d", str(shared("retrieval", "scifact")),
                 "--json", "--no-progress"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["ndcg@10"] == pytest.approx(64.51, abs=0.05)


@pytest.mark.shared_data
def test_fit_scores_retrieval_before_and_after(scifact_slice, tmp_path, capsys, tiny_model):
    code = main(["fit", "simcse-snli", f"output_dir={tmp_path}", "trainer.max_steps=1", "data.batch_size=8",
                 f"model.name={tiny_model}",
                 "eval.sts=[]", f"eval.retrieval=[{scifact_slice}]", "--json"])
    assert code == 0, capsys.readouterr().err
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    before, after = payload["before"][str(scifact_slice)], payload["after"][str(scifact_slice)]
    assert 0 < before["ndcg@10"] <= 100 and 0 < after["ndcg@10"] <= 100
    assert before["n_queries"] == 20


@pytest.mark.shared_data
def test_fit_evaluates_on_other_processes_with_eval_devices(scifact_slice, tmp_path, capsys, tiny_model):
    """``eval.devices=cpu,cpu``: each round saves the model as it is and two processes
    encode the corpus through a temporary cache: the in-process figures (up to the cache's
    encode batches), before and after training; a bad value fails before any work."""
    common = ["fit", "simcse-snli", "trainer.max_steps=3", "data.batch_size=8", "optim.lr=1e-2", f"model.name={tiny_model}",
              "eval.sts=[]", f"eval.retrieval=[{scifact_slice}]"]
    figures = []
    for extra in ([], ["eval.devices=cpu,cpu"]):
        assert main([*common, f"output_dir={tmp_path / str(len(figures))}", *extra, "--json"]) == 0
        figures.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    for when in ("before", "after"):
        here, there = (f[when][str(scifact_slice)] for f in figures)
        assert {k: pytest.approx(v, abs=0.05) for k, v in here.items()} == there
    assert figures[0]["after"] != figures[0]["before"]  # (the model trained between them)
    assert main([*common, f"output_dir={tmp_path / 'bad'}", "eval.devices=tpu:0", "--dry-run", "--json"]) == 2
    assert "eval.devices: 'tpu:0' is not a device here" in capsys.readouterr().err


def test_split_spec_and_trec_run_scores_in_full(tmp_path):
    from contrastlib.data.beir import split_spec

    assert split_spec("some/dir:dev") == ("some/dir", "dev")
    assert split_spec("some/dir") == ("some/dir", "test")
    assert split_spec(r"C:\data\scifact")[1] == "test"
    with pytest.raises(DataError, match="empty split"):
        split_spec("some/dir:")
    out = write_trec_run(tmp_path / "r.trec", {"q": [("a", 0.12345678901), ("b", 0.12345678900)]})
    lines = out.read_text().splitlines()
    assert lines[0].split()[4] == repr(0.12345678901) and lines[0].split()[2] == "a"
    with pytest.raises(ValueError, match="whitespace"):
        write_trec_run(tmp_path / "bad.trec", {"q": [("a b", 1.0)]})


@pytest.mark.shared_data
def test_empty_documents_are_encoded_as_mteb_does_and_counted(tmp_path, tiny_model, capsys):
    """Real BEIR sets hold empty documents. A SciFact slice with documents blanked (one
    of them relevant, one left with its title only) scores what sentence-transformers'
    plain encode of the same texts (the empty string included) and an exact search score
    through pytrec_eval; mining on it leaves the empty ones out of the candidates."""
    src = shared("retrieval", "scifact")
    qrels = [line.split("\t") for line in (src / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    queries = {json.loads(line)["_id"]: json.loads(line) for line in (src / "queries.jsonl").read_text().splitlines()}
    docs = [json.loads(line) for line in (src / "corpus.jsonl").read_text().splitlines()]
    keep_q = list(dict.fromkeys(q for q, _, _ in qrels))[:15]
    rel = [d for q, d, _ in qrels if q in keep_q]
    corpus = [d for d in docs if d["_id"] in set(rel)] + [d for d in docs if d["_id"] not in set(rel)][:100]
    blank = {rel[0], *[d["_id"] for d in corpus[-5:]]}
    corpus = [{**d, "title": "", "text": ""} if d["_id"] in blank else d for d in corpus]
    corpus[-6] = {**corpus[-6], "text": ""}  # title only
    root = write_beir(tmp_path / "blanked", corpus, [queries[q] for q in keep_q],
                      [(q, d, s.strip()) for q, d, s in qrels if q in keep_q])
    data = read_beir(root)
    assert data.empty_documents == 6 and "" in data.corpus_texts

    capsys.readouterr()
    assert main(["eval", "retrieval", "-m", tiny_model, "-d", str(root), "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n_empty_documents"] == 6 and out["n_documents"] == len(corpus)

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(tiny_model, device="cpu")
    d = st.encode(data.corpus_texts, normalize_embeddings=True)
    q = st.encode(data.query_texts, normalize_embeddings=True)
    sims = q @ d.T
    run = {qid: {data.corpus_ids[j]: float(sims[i, j]) for j in np.argsort(-sims[i])[:100]}
           for i, qid in enumerate(data.query_ids)}
    ref = pytrec_eval.RelevanceEvaluator(data.qrels, {"ndcg_cut.10"}).evaluate(run)
    assert out["ndcg@10"] == pytest.approx(100 * np.mean([r["ndcg_cut_10"] for r in ref.values()]), abs=0.05)

    # through the embedding cache the corpus is streamed from a store, its empty documents
    # put back after the others, the index built a shard at a time (exact, and IVF with its
    # training sample read from the cache): the same figures, up to the cache's encode
    # batches (exactness on equal embeddings: test_matryoshka_sizes_from_the_cache_...)
    for index in ([], ["--index", "ivf_flat", "--nlist", "4", "--nprobe", "4"]):
        figures = []
        for extra in ([], ["--cache-dir", str(tmp_path / "cache"), "--embed-shard-size", "16"]):
            assert main(["eval", "retrieval", "-m", tiny_model, "-d", str(root), "--json", "--no-progress",
                         *index, *extra]) == 0
            figures.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
        whole, streamed = figures
        assert streamed["n_empty_documents"] == 6 and streamed["n_documents"] == whole["n_documents"]
        assert {k: pytest.approx(v, abs=0.05) for k, v in whole.items() if "@" in k} == {
            k: v for k, v in streamed.items() if "@" in k}

    assert main(["mine", "--model", tiny_model, "--data", str(root), "--out", str(tmp_path / "mined.jsonl"),
                 "--num-negatives", "2", "--no-progress"]) == 0
    assert "6 empty documents left out of the candidates" in capsys.readouterr().out
    mined = [json.loads(line) for line in (tmp_path / "mined.jsonl").read_text().splitlines()]
    assert mined and all(v.strip() for row in mined for v in row.values() if isinstance(v, str))
