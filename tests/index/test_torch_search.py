"""Exact search in torch (contrastlib/index/torch_search.py) against FAISS's flat index:
the same ids up to exact ties and the same scores, chunked or not, fp32 or bf16 with a
float32 re-score; through the index layer, save and load; through ``eval retrieval`` and
``mine`` (``--search-device cpu``), the same outputs as FAISS."""

from __future__ import annotations

import json

import numpy as np
import pytest

from contrastlib.index import IndexSpec, VectorIndex, l2_normalise
from contrastlib.index.torch_search import TorchExactSearch


def _data(n: int = 3000, q: int = 150, d: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return l2_normalise(rng.normal(size=(n, d))), l2_normalise(rng.normal(size=(q, d)))


def _faiss(docs: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = VectorIndex(docs.shape[1], IndexSpec("flat", search_device="faiss"), use_gpu=False)
    index.add(docs)
    return index.search(queries, k)


def _same_up_to_ties(ids_a: np.ndarray, ids_b: np.ndarray, scores: np.ndarray) -> None:
    """The same id at every rank whose score is not tied with a neighbour's."""
    tied = np.zeros_like(scores, dtype=bool)
    tied[:, 1:] |= np.isclose(scores[:, 1:], scores[:, :-1], rtol=0, atol=1e-6)
    tied[:, :-1] |= tied[:, 1:].copy()
    assert (ids_a[~tied] == ids_b[~tied]).all()


@pytest.mark.parametrize("chunk_rows", [65_536, 701])
def test_fp32_search_equals_faiss_flat(chunk_rows):
    docs, queries = _data()
    search = TorchExactSearch(docs.shape[1], device="cpu", chunk_rows=chunk_rows)
    search.add(docs[:1000])
    search.add(docs[1000:])  # added in two parts, as the index layer adds in batches
    s, i = search.search(queries, 10)
    fs, fi = _faiss(docs, queries, 10)
    np.testing.assert_allclose(s, fs, atol=1e-5)
    _same_up_to_ties(i, fi, fs)


def test_bf16_scores_are_rescored_in_float32_and_find_the_same_neighbours():
    docs, queries = _data(seed=1)
    search = TorchExactSearch(docs.shape[1], device="cpu", score_dtype="bf16", chunk_rows=997)
    search.add(docs)
    s, i = search.search(queries, 10)
    np.testing.assert_allclose(s, np.einsum("nd,nkd->nk", queries, docs[i]), atol=1e-5)  # float32 scores
    _, fi = _faiss(docs, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i, fi, strict=True)])
    assert recall >= 0.99


def test_ties_go_to_the_lower_id_and_a_short_index_pads_with_minus_one():
    base = l2_normalise(np.eye(4, 8))
    docs = np.concatenate([base, base])  # rows 4..7 repeat rows 0..3
    search = TorchExactSearch(8, device="cpu", chunk_rows=3)
    search.add(docs)
    s, i = search.search(base[:2], 3)
    assert i[:, :2].tolist() == [[0, 4], [1, 5]] and np.allclose(s[:, :2], 1.0)
    small = TorchExactSearch(8, device="cpu")
    small.add(base[:2])
    s, i = small.search(base[:1], 4)
    assert i.tolist() == [[0, 1, -1, -1]] and np.isneginf(s[0, 2:]).all()


def test_the_index_layer_searches_saves_and_loads_in_torch(tmp_path):
    docs, queries = _data(n=500, seed=2)
    index = VectorIndex(32, IndexSpec("flat", search_device="cpu"))
    assert index.backend == "torch-cpu-fp32"
    index.add(docs)
    s, i = index.search(queries, 5)
    index.save(tmp_path / "ix.faiss")
    loaded = VectorIndex.load(tmp_path / "ix.faiss")
    assert loaded.backend == "torch-cpu-fp32" and loaded.ntotal == 500
    ls, li = loaded.search(queries, 5)
    np.testing.assert_array_equal(li, i)
    np.testing.assert_allclose(ls, s, atol=1e-6)
    assert VectorIndex(32, IndexSpec("flat", search_device="auto"), use_gpu=False).backend == "faiss-cpu"
    with pytest.raises(ValueError, match="torch searches exactly"):
        IndexSpec("hnsw", search_device="cpu")
    with pytest.raises(ValueError, match="search device: auto, faiss, cpu or cuda"):
        IndexSpec("flat", search_device="cudax")


def test_eval_retrieval_and_mine_through_torch_equal_faiss(tmp_path, tiny_model, capsys):
    from contrastlib.cli.main import main

    words = ["cats", "dogs", "rain", "stocks", "bread", "music", "trains", "rivers"]
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": "", "text": f"a note {i} on {w} and {words[(i * 3) % 8]}"}) + "\n"
        for i, w in enumerate(words * 5)))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"about {w}"}) + "\n"
                                                for i, w in enumerate(words)))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\td{i}\t1\nq{i}\td{i + 8}\t1\n" for i in range(8)))
    outs = {}
    for device in ("faiss", "cpu"):
        capsys.readouterr()
        assert main(["eval", "retrieval", "-m", tiny_model, "-d", str(root), "--json", "--no-progress",
                     "--search-device", device]) == 0
        outs[device] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert main(["mine", "--model", tiny_model, "--data", str(root), "--out", str(tmp_path / f"{device}.jsonl"),
                     "--num-negatives", "3", "--no-progress", "--search-device", device]) == 0
    assert outs["faiss"]["index_backend"] == "faiss-cpu" and outs["cpu"]["index_backend"] == "torch-cpu-fp32"
    assert outs["cpu"]["ndcg@10"] == pytest.approx(outs["faiss"]["ndcg@10"], abs=1e-9)
    assert (tmp_path / "cpu.jsonl").read_text() == (tmp_path / "faiss.jsonl").read_text()
    summary = json.loads((tmp_path / "cpu.jsonl.summary.json").read_text())
    assert summary["index_backend"] == "torch-cpu-fp32"


@pytest.mark.parametrize("parts", [2, 3])
def test_a_corpus_split_over_devices_searches_as_one(parts):
    """``search_device="cpu,cpu"``: row i on device i % P; every device searched and the
    lists merged: FAISS flat's ids (fp32), vectors added in any order under their ids, k
    past a device's share included."""
    import faiss

    rng = np.random.default_rng(parts)
    corpus = rng.standard_normal((301, 24)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = corpus[:40] + 0.1 * rng.standard_normal((40, 24)).astype(np.float32)
    ref = faiss.IndexFlatIP(24)
    ref.add(corpus)
    index = VectorIndex(24, IndexSpec("flat", search_device=",".join(["cpu"] * parts)))
    index.reserve(len(corpus))
    order = rng.permutation(len(corpus))
    for chunk in np.array_split(order, 4):
        index.add(corpus[chunk], ids=chunk)
    assert index.backend == f"torch-cpu-fp32-x{parts}" and index.ntotal == 301
    for k in (1, 10, 200, 400):
        got, want = index.search(queries, k), ref.search(queries, k)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[0][got[1] >= 0], want[0][want[1] >= 0], atol=1e-6)
    np.testing.assert_array_equal(index.vectors([300, 7, 0]), corpus[[300, 7, 0]])
    assert index.nbytes == 301 * 24 * 4  # (each device reserved its share exactly)
