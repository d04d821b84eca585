"""scripts/bench_index_scale.py at a small scale: exact search matches numpy, HNSW and IVF
reach high recall on the clustered corpus with near queries, and the memory-bound check
passes under the stated bound and fails above it."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_index_scale.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_index_scale", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


bench = _load()
# 200 vectors a cluster, clusters apart (spread 1.5): the top-10 of a near query lies in its
# cluster. One thread: steady timing on a shared machine.
SMALL = bench.Config(n=20_000, dim=128, nq=200, clusters=100, spread=1.5, kinds=("flat", "hnsw", "ivf_flat"),
                     check_queries=200, threads=1)


@pytest.fixture(scope="module")
def report():
    return bench.run_benchmark(SMALL, log=lambda _msg: None)


def test_recall_at_small_scale(report):
    rows = {(r["kind"], r["params"]): r for r in report["rows"]}
    flat = rows[("flat", "exact")]
    assert flat["recall_at_k"] == 1.0
    assert flat["numpy_check_queries"] == 200 and flat["numpy_check_recall"] == 1.0
    assert flat["numpy_check_max_score_diff"] < 1e-5
    assert flat["source_is_top1"] > 0.99  # near queries: their source vector is the nearest
    hnsw = [r for r in report["rows"] if r["kind"] == "hnsw"]
    assert [r["params"].split("efSearch=")[1] for r in hnsw] == ["32", "64", "128"]
    assert max(r["recall_at_k"] for r in hnsw) >= 0.9
    ivf = [r for r in report["rows"] if r["kind"] == "ivf_flat"]
    assert ivf[-1]["params"].endswith("nprobe=128") and ivf[-1]["recall_at_k"] >= 0.9
    # a built index is measured, its size close to the estimate known before building
    for r in (flat, hnsw[0], ivf[0]):
        est = bench.estimate_index_bytes(r["kind"], dataclasses.replace(SMALL, nlist=report["config"]["nlist"]))
        assert 0.8 * est <= r["index_bytes"] <= 1.05 * est
        assert r["build_s"] is not None and r["search_s"] > 0 and r["qps"] > 0


def test_memory_bound_holds_and_is_checked(report):
    bound = report["bound"]
    assert bound["total"] == sum(v for k, v in bound.items() if k != "total")
    assert bound["corpus n x d x 4"] == SMALL.n * SMALL.dim * 4
    assert 0 < report["process_peak_bytes"] <= bound["total"]
    assert report["memory_ok"] and report["bound_checked"] == bound["total"]
    assert all(r["peak_rss_bytes"] <= report["process_peak_bytes"] for r in report["rows"])
    assert bench.memory_ok(100, 100) and not bench.memory_ok(101, 100)
    # the bound grows with the largest index: hnsw adds its links to the vectors
    flat_only = bench.memory_bound(dataclasses.replace(SMALL, kinds=("flat",)), 0)
    with_hnsw = bench.memory_bound(dataclasses.replace(SMALL, kinds=("flat", "hnsw")), 0)
    assert with_hnsw["total"] > flat_only["total"]


def test_cli_exits_nonzero_above_the_bound(tmp_path, capsys):
    argv = ["--n", "3000", "--dim", "32", "--nq", "50", "--kinds", "flat,ivf_pq", "--pq-bytes", "8",
            "--check-queries", "50", "--threads", "1", "--json", str(tmp_path / "r.json")]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "| ivf_pq | nlist=256, 8 B/vector, nprobe=32 |" in out and "HELD" in out
    assert bench.main(["--render", str(tmp_path / "r.json")]) == 0  # the same tables from the report
    assert capsys.readouterr().out.strip() == out.strip()
    argv[argv.index("flat,ivf_pq")] = "flat"
    assert bench.main([*argv, "--bound-gb", "0.001"]) == 1
    assert "EXCEEDED" in capsys.readouterr().out


def test_data_is_seeded_unit_and_chunked():
    cfg = bench.Config(n=bench.CHUNK + 7, dim=16, nq=30, clusters=10)
    x = bench.make_corpus(cfg)
    assert x.dtype == np.float32 and x.shape == (cfg.n, 16)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(x, bench.make_corpus(cfg))
    q, src = bench.make_queries(cfg, x)
    assert q.shape == (30, 16) and len(set(src)) == 30
    assert (np.einsum("ij,ij->i", q, x[src]) > 0.7).all()  # near: close to their source
    q_rand, none = bench.make_queries(dataclasses.replace(cfg, queries="random"), x)
    assert none is None and np.abs(np.linalg.norm(q_rand, axis=1) - 1).max() < 1e-5
    assert bench.recall_at_k(np.array([[1, 2, -1]]), np.array([[2, 1, 3]])) == pytest.approx(2 / 3)
