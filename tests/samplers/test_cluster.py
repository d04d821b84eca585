"""cluster: global batches from one k-means cluster, topped up from the nearest; no text
twice in a global batch; exact equal lengths on every rank; reseeded per epoch; wired
through ``data.sampler_options`` and the run's encoder."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sampler_checks import (
    SNLI_DEV,
    assert_epochs_reseeded,
    assert_every_row_once,
    assert_matches_one_process,
    assert_no_repeated_text,
    assert_ranks_disjoint,
    epoch_shards,
    global_steps,
    hashed_bag_of_words,
)
from tests_helpers import shared

from contrastlib.errors import ConfigError
from contrastlib.registry import SAMPLERS
from contrastlib.samplers.cluster import ClusterBatchSampler

REPO = Path(__file__).resolve().parents[2]


def blobs(sizes: list[int], dim: int = 16, seed: int = 0, spread: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated groups: ``(embeddings [N, dim], true group of every row)``."""
    rng = np.random.default_rng(seed)
    centers = np.linalg.qr(rng.normal(size=(dim, dim)))[0][: len(sizes)]  # orthonormal
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return (centers[truth] + spread * rng.normal(size=(len(truth), dim))).astype(np.float32), truth


def test_registered_and_needs_embeddings():
    assert SAMPLERS.get("cluster") is ClusterBatchSampler
    assert ClusterBatchSampler.needs == {"embeddings"}


@pytest.mark.parametrize("world", [1, 2, 3])
def test_batches_are_cluster_pure_when_clusters_hold_whole_batches(world):
    """Groups of 2 global batches each: every global batch comes from one group."""
    batch = 4
    size = batch * world
    x, truth = blobs([2 * size] * 4, seed=world)
    rows = [(f"a{i}", f"p{i}") for i in range(len(truth))]
    make = functools.partial(ClusterBatchSampler, rows, batch, embeddings=x, clusters=4, seed=11)
    for epoch in (0, 1):
        shards = epoch_shards(make, world, epoch)
        steps = global_steps(shards)
        assert len(steps) == 8
        for b in steps:
            assert len(b) == size and len(set(truth[b])) == 1
        assert_ranks_disjoint(shards)
        assert sorted(i for b in steps for i in b) == list(range(len(truth)))


def test_a_cluster_that_runs_out_is_topped_up_from_the_nearest():
    """Four groups in two close pairs (0 near 1, 2 near 3), 12 rows each, batches of 8:
    a batch that spans two groups spans a close pair."""
    rng = np.random.default_rng(0)
    base = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    centers = np.stack([base[0], base[0] + 0.3 * base[1], base[2], base[2] + 0.3 * base[3]])
    truth = np.repeat(np.arange(4), 12)
    x = centers[truth] + 0.005 * rng.normal(size=(48, 16))
    rows = [(f"a{i}",) for i in range(48)]
    for seed in range(5):
        s = ClusterBatchSampler(rows, 8, embeddings=x, clusters=4, seed=seed, num_replicas=1, rank=0)
        assert sorted(np.bincount(s.assignment).tolist()) == [12] * 4
        for epoch in range(3):
            s.set_epoch(epoch)
            for b in s:
                groups = set(truth[b].tolist())
                assert groups in ({0}, {1}, {2}, {3}, {0, 1}, {2, 3}), (seed, epoch, groups)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 60),
    vocab=st.integers(3, 40),
    batch=st.integers(1, 6),
    world=st.integers(1, 3),
    clusters=st.one_of(st.none(), st.integers(1, 8)),
    mix=st.sampled_from([0.0, 0.25, 1.0]),
    drop_last=st.booleans(),
    epoch=st.integers(0, 2),
)
def test_invariants(n, vocab, batch, world, clusters, mix, drop_last, epoch):
    """Colliding texts, any cluster count and mix: no text twice in a global batch, exact
    equal lengths, disjoint ranks, every row once when nothing was left out."""
    rng = np.random.default_rng(n * 1000 + vocab)
    rows = [(f"t{rng.integers(vocab)}", f"t{rng.integers(vocab)}") for _ in range(n)]
    x = rng.normal(size=(n, 8)).astype(np.float32)
    make = functools.partial(
        ClusterBatchSampler, rows, batch, embeddings=x, clusters=clusters, mix=mix, drop_last=drop_last, seed=2
    )
    shards = epoch_shards(make, world, epoch)
    steps = global_steps(shards)
    assert_no_repeated_text(rows, steps)
    assert_ranks_disjoint(shards)
    one = make(num_replicas=world, rank=0)
    one.set_epoch(epoch)
    assert len(one) == len(steps)
    if world == 1:
        assert_every_row_once(one, steps, n)


def test_every_row_once_per_epoch_matches_one_process_and_is_reseeded():
    x, _ = blobs([13, 29, 7, 21], seed=3, spread=0.3)
    rows = [(f"a{i}", f"p{i}") for i in range(len(x))]

    def make_at(batch):
        return functools.partial(ClusterBatchSampler, rows, batch, embeddings=x, clusters=4, seed=5)

    for world in (1, 2, 3):
        assert_matches_one_process(make_at, 4, world)
        assert_epochs_reseeded(make_at(4), world)
    s = make_at(5)(num_replicas=1, rank=0)
    steps = list(s)
    assert_every_row_once(s, steps, len(x))
    assert sorted(i for b in steps for i in b) == list(range(len(x)))


def test_mix_draws_part_of_each_batch_at_random():
    """mix=0.5: the first half of each batch comes from the seed cluster (or, once random
    draws used it up, from its nearest), the second half from anywhere."""
    from collections import Counter

    x, truth = blobs([64] * 8)
    rows = [(f"a{i}",) for i in range(len(truth))]
    pure = ClusterBatchSampler(rows, 16, embeddings=x, clusters=8, seed=0, num_replicas=1, rank=0)
    assert all(len(set(truth[b])) == 1 for b in pure)
    mixed = ClusterBatchSampler(rows, 16, embeddings=x, clusters=8, mix=0.5, seed=0, num_replicas=1, rank=0)
    batches = list(mixed)

    def majority(part):
        return Counter(truth[part].tolist()).most_common(1)[0][1] / len(part)

    assert np.mean([majority(b[:8]) for b in batches]) > 0.85
    assert np.mean([majority(b[8:]) for b in batches]) < 0.6
    assert sorted(i for b in batches for i in b) == list(range(len(truth)))
    everything = ClusterBatchSampler(rows, 16, embeddings=x, clusters=8, mix=1.0, seed=0, num_replicas=1, rank=0)
    assert sorted(i for b in everything for i in b) == list(range(len(truth)))


def test_kmeans_is_seeded_and_leaves_the_embeddings_alone():
    x, _ = blobs([20] * 5, spread=0.2)
    copy = x.copy()
    rows = [(f"a{i}",) for i in range(100)]
    a = ClusterBatchSampler(rows, 8, embeddings=x, clusters=5, seed=1)
    b = ClusterBatchSampler(rows, 8, embeddings=x, clusters=5, seed=1)
    np.testing.assert_array_equal(a.assignment, b.assignment)
    np.testing.assert_array_equal(x, copy)
    # default k: one cluster per per-device batch
    assert len(ClusterBatchSampler(rows, 8, embeddings=x).centroids) == math.ceil(100 / 8)
    assert len(ClusterBatchSampler(rows[:3], 8, embeddings=x[:3], clusters=10).centroids) == 3


def test_bad_arguments():
    rows = [(f"a{i}",) for i in range(10)]
    x = np.ones((10, 4), np.float32)
    for kwargs, match in [
        ({"clusters": 0}, "^clusters: must be an integer >= 1"),
        ({"mix": 1.5}, r"^mix: must be a number in \[0, 1\]"),
        ({"iterations": 0}, "^iterations:"),
    ]:
        with pytest.raises(ValueError, match=match):
            ClusterBatchSampler(rows, 4, embeddings=x, **kwargs)
    with pytest.raises(ValueError, match="^embeddings: expected"):
        ClusterBatchSampler(rows, 4, embeddings=x[:5])
    with pytest.raises(ValueError, match="^embeddings: NaN"):
        ClusterBatchSampler(rows, 4, embeddings=np.full((10, 4), np.nan))


def test_large_batches_are_built_quickly():
    """A complexity guard: 100k rows in batches of 8,192 and of 64."""
    import time

    rng = np.random.default_rng(0)
    rows = [(f"q{i}", f"p{i % 50_000}") for i in range(100_000)]
    x = rng.normal(size=(100_000, 8)).astype(np.float32)
    for batch in (8192, 64):
        s = ClusterBatchSampler(rows, batch, embeddings=x, clusters=64, seed=0, num_replicas=1, rank=0)
        start = time.perf_counter()
        assert len(s) == s.steps_per_epoch(1)
        assert time.perf_counter() - start < 30


@pytest.mark.shared_data
def test_snli_dev_slice():
    """Real NLI rows (word-count embeddings of the anchors): no text twice in a global
    batch, exact equal lengths, disjoint ranks; batches are closer to their own cluster
    than random batches are."""
    from contrastlib.data.readers import read_tuples

    rows, _ = read_tuples(shared(*SNLI_DEV))
    rows = rows[:800]
    x = hashed_bag_of_words([r[0] for r in rows])
    for world in (1, 2, 3):
        make = functools.partial(ClusterBatchSampler, rows, 16, embeddings=x, clusters=20, seed=0)
        shards = epoch_shards(make, world)
        steps = global_steps(shards)
        assert_no_repeated_text(rows, steps)
        assert_ranks_disjoint(shards)
    s = ClusterBatchSampler(rows, 16, embeddings=x, clusters=20, seed=0, num_replicas=1, rank=0)
    steps = list(s)
    assert_every_row_once(s, steps, len(rows))

    def mean_similarity(batches):
        return float(np.mean([(x[b] @ x[b].T)[np.triu_indices(len(b), 1)].mean() for b in batches if len(b) > 1]))

    order = np.random.default_rng(0).permutation(len(rows))
    random_batches = [order[i : i + 16] for i in range(0, len(rows), 16)]
    assert mean_similarity(steps) > mean_similarity(random_batches) + 0.05


# ----------------------------------------------------------------------------- pipeline and CLI
def _quickstart(tmp_path: Path, *overrides: str):
    from contrastlib.config import load_config

    return load_config(
        "simcse-snli",
        [f"output_dir={tmp_path}", "name=x", "data.max_rows=48", "data.batch_size=8", "trainer.max_steps=2",
         "trainer.enable_progress_bar=false", "eval.sts=[]", "model.max_seq_length=32", *overrides],
    )


def test_pipeline_passes_options_and_run_embeddings(tmp_path, tiny_model):
    from contrastlib.encoders import TextEncoder
    from contrastlib.pipeline import _build_module, build_loader, describe, fit, plan_fit

    cfg = _quickstart(tmp_path, "data.sampler=cluster", f"model.name={tiny_model}")
    encoder = TextEncoder(tiny_model, max_seq_length=32)
    cfg.data.sampler_options = {"clusters": 4, "mix": None}
    plan = plan_fit(cfg)
    assert plan.sampler_options == {"clusters": 4}
    assert "sampler: cluster (clusters=4), batch 8 per device" in describe(plan)
    loader = build_loader(plan, _build_module(plan, encoder))
    sampler = loader.batch_sampler
    assert isinstance(sampler, ClusterBatchSampler) and len(sampler.centroids) == 4
    # the clusters are those of the run's encoder on the anchors
    anchors = [r[0] for r in plan.data.rows]
    again = ClusterBatchSampler(plan.data.rows, 8, embeddings=encoder.encode(anchors), clusters=4, seed=cfg.seed)
    np.testing.assert_array_equal(sampler.assignment, again.assignment)

    result = fit(cfg, log=lambda m: None, plan=plan)
    assert result.steps == 2
    assert json.loads((tmp_path / "x" / "metrics.json").read_text())["steps"] == 2


@pytest.mark.parametrize(
    "sampler,options,needle",
    [
        ("cluster", {"clusterz": 4}, "data.sampler_options.clusterz: not a parameter of sampler 'cluster' "
         "(did you mean 'clusters'?); it takes: clusters, mix, iterations"),
        ("cluster", {"embeddings": 4}, "data.sampler_options.embeddings: not a parameter of sampler 'cluster'"),
        ("cluster", {"mix": 2}, r"data.sampler_options.mix: must be a number in [0, 1], got 2"),
        ("m_per_class", {"m": 3}, "data.sampler_options.m: must divide the per-device batch size 8, got 3"),
        ("no_duplicates", {"m": 2}, "data.sampler_options.m: not a parameter of sampler 'no_duplicates'; it takes: (nothing)"),
    ],
)
def test_bad_sampler_options_fail_before_any_model_loads(tmp_path, sampler, options, needle):
    from contrastlib.pipeline import plan_fit

    cfg = _quickstart(tmp_path, f"data.sampler={sampler}")
    cfg.data.sampler_options = options
    with pytest.raises(ConfigError) as info:
        plan_fit(cfg)
    assert needle in str(info.value)
    assert not any(tmp_path.iterdir())



def test_cli_fit_dry_run_with_cluster_sampler(tmp_path, capsys):
    """The override reaches the plan (the fit itself is test_pipeline_passes_options_and_run_embeddings)."""
    from contrastlib.cli.main import main

    code = main(
        ["fit", "simcse-snli", f"output_dir={tmp_path}", "data.max_rows=48", "data.batch_size=8",
         "trainer.max_steps=2", "eval.sts=[]", "data.sampler=cluster", "data.sampler_options.clusters=4", "--dry-run"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "sampler: cluster (clusters=4), batch 8 per device" in out
    assert not any(tmp_path.iterdir())


def test_cli_bad_sampler_option_is_one_line_exit_2(tmp_path, capsys):
    from contrastlib.cli.main import main

    code = main(["fit", "simcse-snli", f"output_dir={tmp_path}", "data.sampler=cluster", "data.sampler_options.clusterz=4"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "Traceback" not in err
    assert "data.sampler_options.clusterz: not a parameter of sampler 'cluster'" in err
    assert "it takes: clusters, mix, iterations" in err
    assert not any(tmp_path.iterdir())


def _cluster_rank(rank: int, init_file: str, out_dir: str) -> None:
    """One gloo rank: embeddings that differ per rank (another machine's rounding, taken
    to the extreme), then what Lightning does: ``set_epoch`` on every rank, then iterate."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        x, _ = blobs([11, 9, 14, 6], seed=rank, spread=0.5)
        rows = [(f"a{i}", f"p{i}") for i in range(len(x))]
        sampler = ClusterBatchSampler(rows, 3, embeddings=x, clusters=4, seed=1)
        assert len(sampler) == 7  # Lightning asks before the first epoch
        batches = {}
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            batches[epoch] = list(sampler)
        torch.save({"batches": batches, "assignment": sampler.assignment.tolist()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_use_rank_0s_clusters(tmp_path):
    """Two real gloo ranks whose embeddings disagree: each epoch still covers every row
    exactly once across the ranks, with rank 0's clusters (before the fix each rank
    split its own clustering's batches: rows repeated and rows lost)."""
    import torch
    import torch.multiprocessing as mp

    mp.spawn(_cluster_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    x0, _ = blobs([11, 9, 14, 6], seed=0, spread=0.5)
    one = ClusterBatchSampler([(f"a{i}", f"p{i}") for i in range(len(x0))], 3, embeddings=x0, clusters=4, seed=1,
                              num_replicas=2, rank=0)
    assert got[1]["assignment"] == got[0]["assignment"] == one.assignment.tolist()
    for epoch in (0, 1):
        one.set_epoch(epoch)
        shared_batches = one._shared()
        b0, b1 = got[0]["batches"][epoch], got[1]["batches"][epoch]
        assert len(b0) == len(b1) == len(shared_batches)
        assert [a + b for a, b in zip(b0, b1, strict=True)] == shared_batches
        assert sorted(i for b in b0 + b1 for i in b) == list(range(40))
