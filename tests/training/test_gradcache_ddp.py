"""Gradient cache under real DDP (2 gloo processes, the tiny BERT with dropout on: an
equivalence of gradients, which no particular weights make stronger).

On every rank the cached gradients equal those of the same chunked forwards kept in one
graph (cross-device negatives included), and DDP all-reduces once per step: a comm hook
counts the bucket reductions, which must equal those of a single plain backward.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
TEXTS = [f"sentence number {i} about {w}" for i, w in enumerate(
    ["cats", "dogs", "rain", "music", "cooking", "soccer", "trains", "rivers", "mountains", "coffee", "books", "birds"]
)]


def _worker(rank: int, init_file: str, out_dir: str, model: str) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        from torch.nn.parallel import DistributedDataParallel as DDP

        from contrastlib.data import TextBatch
        from contrastlib.encoders import TextEncoder
        from contrastlib.losses import InfoNCELoss
        from contrastlib.methods import SimCSE
        from contrastlib.training.gradcache import GradCache, embed_in_chunks, split_rows

        torch.manual_seed(0)
        enc = TextEncoder(model, max_seq_length=16)
        enc.train()
        calls = {"n": 0}

        def counting_allreduce(state, bucket):
            calls["n"] += 1
            fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
            return fut.then(lambda f: f.value()[0] / WORLD)

        ddp = DDP(enc)
        ddp.register_comm_hook(None, counting_allreduce)
        method = SimCSE(enc, InfoNCELoss(0.05), mode="supervised")
        b = len(TEXTS) // WORLD
        local = TEXTS[rank * b : (rank + 1) * b]
        batch = TextBatch([enc.tokenize(local), enc.tokenize(local[::-1])], torch.arange(b))
        views = method.views(batch)

        # warm-up: DDP rebuilds its buckets after the first backward; count after that
        method.contrast([ddp(v) for v in views], batch).backward()
        enc.zero_grad()
        calls["n"] = 0

        # reference: chunked forwards through DDP in one graph, one backward
        torch.manual_seed(100 + rank)
        embs = [embed_in_chunks(ddp, split_rows(v, 2, None)) for v in views]
        ref_loss = method.contrast(embs, batch)
        ref_loss.backward()
        ref = [p.grad.detach().clone() for p in enc.parameters() if p.requires_grad]
        ref_calls = calls["n"]
        enc.zero_grad()
        calls["n"] = 0

        torch.manual_seed(100 + rank)
        cache = GradCache(2, record=True)
        loss = cache.step(ddp, views, lambda e: method.contrast(e, batch), no_sync=ddp.no_sync)
        got = [p.grad.detach().clone() for p in enc.parameters() if p.requires_grad]
        same_embeddings = all(
            torch.equal(x, y)
            for a, c in zip(cache.last_stats.first_pass, cache.last_stats.second_pass, strict=True)
            for x, y in zip(a, c, strict=True)
        )
        torch.save(
            {"ref": ref, "got": got, "ref_loss": ref_loss.detach(), "loss": loss, "ref_calls": ref_calls,
             "calls": calls["n"], "same_embeddings": same_embeddings, "chunks": sum(cache.last_stats.chunks_per_view)},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("gc_ddp")
    mp.spawn(_worker, args=(str(out / "init"), str(out), tiny_model), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("rank", range(WORLD))
def test_cached_gradients_equal_full_graph_under_ddp(results, rank):
    r = results[rank]
    assert r["loss"].item() == pytest.approx(r["ref_loss"].item(), abs=1e-6)
    for a, b in zip(r["got"], r["ref"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert r["same_embeddings"]


@pytest.mark.parametrize("rank", range(WORLD))
def test_ddp_all_reduces_once_per_step(results, rank):
    r = results[rank]
    assert r["chunks"] > 2, "the test needs several chunks to mean anything"
    assert r["calls"] == r["ref_calls"] > 0


def test_ranks_agree(results):
    for a, b in zip(results[0]["got"], results[1]["got"], strict=True):
        torch.testing.assert_close(a, b)


