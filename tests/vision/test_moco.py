"""MoCo: momentum update and queue order by hand, no current keys in the queue when the
loss runs, v2 / v3 fits through the CLI, and exact continuation after a resume."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import nn

from contrastlib.cli.main import main
from contrastlib.encoders import ImageEncoder
from contrastlib.losses import InfoNCELoss
from contrastlib.methods.moco import MoCo, ema_update, momentum_at

# no evaluations: the linear probe's choice of C (the recipe's) was most of a fit's time;
# evaluation during a fit is test_simclr.py's
SMALL = ["model.name=resnet10t", "model.projection=[64,32]", "data.max_rows=64", "data.batch_size=16",
         "trainer.precision=32-true", "trainer.enable_progress_bar=false", "eval.knn=[]", "eval.linear=[]",
         "trainer.log_every_n_steps=1"]


def test_momentum_update_and_schedule_by_hand():
    t, s = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        t.weight.fill_(1.0)
        s.weight.fill_(3.0)
    ema_update(t, s, 0.9)
    assert t.weight.item() == pytest.approx(0.9 * 1 + 0.1 * 3)
    assert momentum_at(0, 100, 0.99, 1.0) == pytest.approx(0.99)
    assert momentum_at(50, 100, 0.99, 1.0) == pytest.approx(0.995)
    assert momentum_at(100, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert momentum_at(25, 100, 0.99, 1.0) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    assert momentum_at(70, 100, 0.999, None) == 0.999


def test_queue_order_and_wrap_around_by_hand():
    enc = ImageEncoder("resnet10t", projection=[16, 4])
    m = MoCo(enc, InfoNCELoss(0.2), version=2, queue_size=5)
    k = [torch.full((1, 4), float(i)) for i in range(8)]
    m.enqueue(torch.cat(k[0:2]))  # rows 0, 1
    m.enqueue(torch.cat(k[2:5]))  # rows 2, 3, 4
    m.enqueue(torch.cat(k[5:8]))  # rows 0, 1, 2 again, oldest first
    assert m.queue[:, 0].tolist() == [5, 6, 7, 3, 4] and int(m.queue_ptr) == 3
    m.enqueue(torch.cat([k[1]] * 7))  # more keys than the queue: the newest 5 fill it
    assert m.queue[:, 0].tolist() == [1] * 5


class _Spy(MoCo):
    """Records, each time the loss runs, whether any current key is already queued."""

    leaks: ClassVar[list[bool]] = []

    def contrast(self, embeddings, batch):
        k = self.keys(batch.views[1])
        _Spy.leaks.append(bool((torch.cdist(self.queue, k).min() < 1e-6).item()))
        return super().contrast(embeddings, batch)


def test_the_queue_never_holds_the_current_keys_when_the_loss_runs():
    _Spy.leaks = []
    m = _Spy(ImageEncoder("resnet10t", projection=[16, 8]), InfoNCELoss(0.2), version=2, queue_size=64)
    import pytorch_lightning as pl

    from contrastlib.data.augment import augment_config, view_transform
    from contrastlib.data.image_batches import ViewsDataset, collate_views
    from contrastlib.data.images import read_images

    images = read_images(Path(__file__).resolve().parents[2] / "datasets/digits/digits-train.npz").subset(64)
    loader = torch.utils.data.DataLoader(ViewsDataset(images, view_transform(augment_config({"size": 16}))), batch_size=16,
                                         collate_fn=collate_views)
    trainer = pl.Trainer(max_epochs=2, accumulate_grad_batches=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(m, loader)
    assert len(_Spy.leaks) == 8 and not any(_Spy.leaks)
    # and the queue did fill: 8 batches of 16 keys, enqueued at the 4 optimizer steps
    assert int(m.queue_ptr) == (8 * 16) % 64 and trainer.global_step == 4


# v2 through the CLI is also fitted by test_resume.py's moco-v2-queue and the DDP vision test
@pytest.mark.parametrize("version", [pytest.param(2, marks=pytest.mark.slow), 3])
def test_fit_through_the_cli(tmp_path, version):
    extra = ["method.key_momentum_end=1.0"] if version == 3 else ["method.queue_size=48"]
    assert main(["fit", "moco-digits", f"output_dir={tmp_path}", "name=r", f"method.version={version}",
                 "trainer.max_steps=3", *SMALL, *extra]) == 0
    assert (tmp_path / "r" / "model" / "encoder.safetensors").is_file()


def _losses(run: Path) -> dict[int, float]:
    out = {}
    for path in sorted(run.glob("logs/**/metrics.csv")):
        with open(path) as fh:
            for row in csv.DictReader(fh):
                if row.get("train/loss"):
                    out[int(row["step"])] = float(row["train/loss"])
    return out


@pytest.mark.slow  # the default suite has the stronger case: test_resume.py's moco-v2-queue, killed mid-epoch
def test_resume_continues_exactly_queue_and_momentum_encoder_included(tmp_path):
    steady = ["augment.min_scale=1.0", "augment.hflip=0.0", "augment.jitter_prob=0.0", "augment.grayscale=0.0"]
    # a constant learning rate and key momentum: the first, one-epoch run then follows the
    # same schedule as the two-epoch one (a schedule's length is part of its config)
    common = ["moco-digits", f"output_dir={tmp_path}", *SMALL, "method.queue_size=40", "method.key_momentum=0.9",
              "optim.scheduler=constant", "optim.warmup_ratio=0", *[f"method.{s}" for s in steady]]
    assert main(["fit", *common, "name=whole", "trainer.max_epochs=2"]) == 0
    assert main(["fit", *common, "name=cut", "trainer.max_epochs=1"]) == 0
    assert main(["fit", *common, "name=cut", "trainer.max_epochs=2", "resume=true"]) == 0
    whole, cut = _losses(tmp_path / "whole"), _losses(tmp_path / "cut")
    assert len(whole) == 8 and sorted(cut) == sorted(whole)
    for step in whole:
        assert cut[step] == pytest.approx(whole[step], rel=1e-5, abs=1e-6), step
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key in ("queue", "queue_ptr", "momentum_encoder.head.0.weight"):
        torch.testing.assert_close(a[key], b[key])


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).train()


def _images() -> torch.Tensor:
    return torch.randn(8, 5, generator=torch.Generator().manual_seed(1))


def _shuffle_rank(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from contrastlib.methods.moco import shuffled_forward

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        mine = _images()[rank * 4 : (rank + 1) * 4]
        torch.save(shuffled_forward(_bn_net(), mine, seed=7), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_shuffle_bn_normalises_keys_with_a_shuffled_slice_and_puts_them_back(tmp_path):
    """Two gloo ranks: each rank's keys are those of its own images, computed in a
    BatchNorm batch drawn by the shared permutation from both ranks' images (by hand
    below); on one process the function is the plain forward."""
    import torch.multiprocessing as mp

    from contrastlib.methods.moco import shuffled_forward

    mp.spawn(_shuffle_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    got = torch.cat([torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)])
    x, net = _images(), _bn_net()
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(7))
    expected = torch.empty(8, 3)
    for r in range(2):
        rows = perm[r * 4 : (r + 1) * 4]
        expected[rows] = net(x[rows]).detach()
    torch.testing.assert_close(got, expected)
    unshuffled = torch.cat([net(x[:4]), net(x[4:])]).detach()  # each rank's own BatchNorm batch
    assert not torch.allclose(got, unshuffled, atol=1e-3), "the permutation kept the ranks' batches: no check"
    torch.testing.assert_close(shuffled_forward(net, x, seed=7), net(x))


def test_shuffle_bn_auto_follows_batch_norm():
    enc = ImageEncoder("resnet10t", cifar_stem=True, projection=[64, 32])
    assert MoCo(enc, InfoNCELoss(0.2), queue_size=8).shuffle_bn
    assert not MoCo(enc, InfoNCELoss(0.2), queue_size=8, shuffle_bn=False).shuffle_bn
    with pytest.raises(ValueError, match="shuffle_bn"):
        MoCo(enc, InfoNCELoss(0.2), shuffle_bn="sometimes")
