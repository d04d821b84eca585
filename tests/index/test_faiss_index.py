"""The FAISS index layer: exact search against a brute-force reference, approximate kinds
against exact search, batched search, atomic save/load, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contrastlib.index import IndexSpec, VectorIndex

DIM = 32


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(corpus: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = torch.from_numpy(queries) @ torch.from_numpy(corpus).T
    top = scores.topk(k, dim=1)
    return top.values.numpy(), top.indices.numpy()


def recall_at_k(ids: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, exact, strict=True)]))


def test_flat_equals_brute_force_in_batches():
    corpus, queries = unit(2_000, 0), unit(300, 1)
    index = VectorIndex(DIM, IndexSpec("flat"), use_gpu=False)
    index.add(corpus, batch_size=700)  # several add batches
    scores, ids = index.search(queries, 10, batch_size=64)  # several search batches
    ref_scores, ref_ids = brute_force(corpus, queries, 10)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert recall_at_k(ids, ref_ids) == 1.0
    assert index.ntotal == 2_000


def test_ivf_with_every_cell_probed_is_exact():
    corpus, queries = unit(3_000, 2), unit(100, 3)
    index = VectorIndex(DIM, IndexSpec("ivf_flat", nlist=16, nprobe=16), use_gpu=False)
    index.train(corpus)
    index.add(corpus)
    _, ids = index.search(queries, 10)
    assert recall_at_k(ids, brute_force(corpus, queries, 10)[1]) == 1.0


@pytest.mark.parametrize(
    "spec,floor",
    [
        (IndexSpec("ivf_flat", nlist=32, nprobe=8), 0.6),
        (IndexSpec("hnsw", m=16, ef_search=128), 0.9),
        (IndexSpec("ivf_pq", nlist=16, nprobe=16, pq_bytes=8), 0.3),
    ],
)
def test_approximate_kinds_recall_against_exact(spec, floor):
    corpus, queries = unit(4_000, 4), unit(200, 5)
    index = VectorIndex(DIM, spec, use_gpu=False)
    index.train(corpus)
    index.add(corpus)
    _, ids = index.search(queries, 10)
    recall = recall_at_k(ids, brute_force(corpus, queries, 10)[1])
    assert floor <= recall <= 1.0, recall


def test_training_uses_a_seeded_sample():
    corpus = unit(2_000, 6)
    spec = IndexSpec("ivf_flat", nlist=8, nprobe=2, train_size=500, seed=3)
    a, b = VectorIndex(DIM, spec, use_gpu=False), VectorIndex(DIM, spec, use_gpu=False)
    for index in (a, b):
        index.train(corpus)
        index.add(corpus)
    queries = unit(50, 7)
    assert np.array_equal(a.search(queries, 5)[1], b.search(queries, 5)[1])


def test_save_load_round_trip(tmp_path):
    corpus, queries = unit(1_500, 8), unit(40, 9)
    index = VectorIndex(DIM, IndexSpec("ivf_flat", nlist=8, nprobe=3), use_gpu=False)
    index.train(corpus)
    index.add(corpus)
    path = index.save(tmp_path / "corpus.faiss")
    loaded = VectorIndex.load(path, use_gpu=False)
    assert loaded.spec == index.spec and loaded.ntotal == 1_500
    for x, y in zip(loaded.search(queries, 7), index.search(queries, 7), strict=True):
        np.testing.assert_array_equal(x, y)  # nprobe restored from the spec


def test_a_failed_save_leaves_the_previous_file(tmp_path, monkeypatch):
    index = VectorIndex(DIM, use_gpu=False)
    index.add(unit(100, 10))
    path = index.save(tmp_path / "i.faiss")
    before = path.read_bytes()
    import faiss

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", broken)
    index.add(unit(10, 11))
    with pytest.raises(OSError, match="disk full"):
        index.save(path)
    assert path.read_bytes() == before
    assert {p.name for p in tmp_path.iterdir()} == {"i.faiss", "i.faiss.json"}  # no temp file left


def test_clear_errors():
    with pytest.raises(ValueError, match="unknown index kind 'ivf'; valid: flat, ivf_flat, hnsw, ivf_pq"):
        IndexSpec("ivf")
    with pytest.raises(ValueError, match="nprobe must be >= 1"):
        IndexSpec("ivf_flat", nprobe=0)
    index = VectorIndex(DIM, IndexSpec("ivf_flat", nlist=8), use_gpu=False)
    with pytest.raises(RuntimeError, match="call train"):
        index.add(unit(10, 0))
    with pytest.raises(ValueError, match="need at least nlist"):
        index.train(unit(4, 0))
    flat = VectorIndex(DIM, use_gpu=False)
    with pytest.raises(ValueError, match=r"vectors must be \[n, 32\], got \(3, 5\)"):
        flat.add(np.zeros((3, 5)))
    bad = unit(3, 0)
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        flat.add(bad)
    with pytest.raises(ValueError, match="multiple of pq_bytes"):
        VectorIndex(30, IndexSpec("ivf_pq", pq_bytes=8), use_gpu=False)
    with pytest.raises(FileNotFoundError, match="no saved index"):
        VectorIndex.load("/nonexistent/x.faiss")


def test_fewer_vectors_than_k_pads_with_minus_one():
    index = VectorIndex(DIM, use_gpu=False)
    index.add(unit(3, 12))
    _, ids = index.search(unit(2, 13), 5)
    assert (ids[:, 3:] == -1).all() and (ids[:, :3] >= 0).all()


# ---------------------------------------------------------------------------- GPU check
def test_probe_gpu_runs_the_search_in_a_child_and_names_why_it_failed():
    """The real child process: on a machine without faiss-gpu it fails and says why; on one
    where faiss-gpu works it succeeds (the H200 with the cu12 wheel aborted, see docs)."""
    from contrastlib.index.gpu import gpu_available, probe_gpu

    works, why = probe_gpu()
    if gpu_available():
        pytest.skip(f"faiss-gpu present: probe says {works}, {why}")
    assert not works and why.startswith("faiss-gpu cannot run on this GPU: ")
    assert "GpuIndexFlatIP" in why or "StandardGpuResources" in why


def test_auto_falls_back_to_cpu_with_a_warning_when_the_gpu_check_fails(monkeypatch):
    """A faiss-gpu build that aborts on this GPU: ``auto`` stays on the CPU and says so once;
    ``use_gpu=True`` is a clear error instead of an abort."""
    from contrastlib.index import gpu as faiss_gpu

    monkeypatch.setattr(faiss_gpu, "gpu_available", lambda: True)
    monkeypatch.setattr(faiss_gpu, "probe_gpu",
                        lambda: (False, "faiss-gpu cannot run on this GPU: CUDA error 209 no kernel image"))
    faiss_gpu.gpu_usable.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="stays on the CPU: faiss-gpu cannot run on this GPU: CUDA error 209"):
            index = VectorIndex(DIM, IndexSpec("flat"))
        assert not index.on_gpu
        index.add(unit(100, 0))
        assert index.search(unit(3, 1), 2)[1].shape == (3, 2)
        with pytest.raises(RuntimeError, match="use_gpu=True, but faiss-gpu cannot run on this GPU"):
            VectorIndex(DIM, IndexSpec("flat"), use_gpu=True)
    finally:
        faiss_gpu.gpu_usable.cache_clear()


def test_exact_search_is_faiss_flat_exactly_and_sized_once():
    """Exact CPU search keeps its vectors in one array and runs FAISS's knn: the ids and
    scores of IndexFlatIP, bit for bit, k past the corpus included; reserved, the index is
    exactly n x dim x 4 bytes."""
    import faiss

    corpus, queries = unit(1_500, 3), unit(70, 4)
    ref = faiss.IndexFlatIP(DIM)
    ref.add(corpus)
    index = VectorIndex(DIM, IndexSpec("flat"), use_gpu=False)
    index.reserve(len(corpus))
    for part in np.array_split(np.arange(len(corpus)), 7):
        index.add(corpus[part])
    for k in (1, 25, 2_000):
        got, want = index.search(queries, k), ref.search(queries, k)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
    assert index.nbytes == 1_500 * DIM * 4 and index.exact
    np.testing.assert_array_equal(index.vectors([4, 0]), corpus[[4, 0]])


@pytest.mark.parametrize("spec", [IndexSpec("flat"), IndexSpec("flat", search_device="cpu"),
                                  IndexSpec("ivf_flat", nlist=8, nprobe=8), IndexSpec("hnsw", m=8)],
                         ids=["flat", "torch", "ivf_flat", "hnsw"])
def test_vectors_added_in_any_order_under_their_ids(spec):
    """Shards come in the cache's length order; each vector is added under its row number,
    and searches return row numbers (exact kinds: what adding in row order returns)."""
    corpus, queries = unit(600, 5), unit(40, 6)
    order = np.random.default_rng(0).permutation(len(corpus))
    in_order = VectorIndex(DIM, spec, use_gpu=False)
    shuffled = VectorIndex(DIM, spec, use_gpu=False)
    for ix in (in_order, shuffled):
        ix.train(corpus)
    in_order.add(corpus)
    for part in np.array_split(order, 5):
        shuffled.add(corpus[part], ids=part)
    assert shuffled.ntotal == len(corpus)
    s_scores, s_ids = shuffled.search(queries, 10)
    if spec.kind in ("flat", "ivf_flat"):  # (an IVF probing every list is exact too)
        o_scores, o_ids = in_order.search(queries, 10)
        np.testing.assert_array_equal(s_ids, o_ids)
        np.testing.assert_allclose(s_scores, o_scores, atol=1e-6)
    _, self_ids = shuffled.search(corpus[:50], 1)  # each vector finds itself, under its own id
    assert (self_ids[:, 0] == np.arange(50)).mean() >= (0.9 if spec.kind == "hnsw" else 1.0)


def test_exact_search_with_ids_missing_is_refused():
    index = VectorIndex(DIM, IndexSpec("flat"), use_gpu=False)
    index.add(unit(3, 7), ids=[0, 1, 5])
    with pytest.raises(RuntimeError, match="every id below the highest must be added"):
        index.search(unit(1, 8), 2)
