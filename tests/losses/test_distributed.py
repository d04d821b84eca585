"""Cross-device negatives under real DDP: 2 gloo CPU processes with batch B each give the
same loss and the same encoder gradients as one process with batch 2B."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from ddp_cases import CASES, GLOBAL_BATCH, make_data, make_encoder

WORLD = 2


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        data = make_data()
        b = GLOBAL_BATCH // WORLD
        s = slice(rank * b, (rank + 1) * b)
        results = {}
        for name, case in CASES.items():
            enc = torch.nn.parallel.DistributedDataParallel(make_encoder())
            loss = case(enc, data, s)
            loss.backward()
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)
            results[name] = {
                "loss": mean_loss / WORLD,
                "grads": [p.grad.detach().clone() for p in enc.module.parameters()],
            }
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(out / "init"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_ddp_equals_single_process(ddp_results, name):
    enc = make_encoder()
    loss = CASES[name](enc, make_data(), slice(0, GLOBAL_BATCH))
    loss.backward()
    for rank in range(WORLD):
        got = ddp_results[rank][name]
        assert got["loss"].item() == pytest.approx(loss.item(), abs=1e-5, rel=1e-5), f"rank {rank}"
        for p, g in zip(enc.parameters(), got["grads"], strict=True):
            torch.testing.assert_close(g, p.grad, atol=1e-5, rtol=1e-5)
