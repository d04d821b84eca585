"""SimCLR through the CLI on the bundled digits: fit, kNN before/after, eval knn, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastlib.cli.main import main

BUNDLED = Path(__file__).resolve().parents[2] / "datasets" / "digits"
TRAIN, TEST = str(BUNDLED / "digits-train.npz"), str(BUNDLED / "digits-test.npz")


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    # the linear probe at a given C: choosing C ("auto", the recipe's) fits 6 probes per
    # evaluation, most of this fit's time; the choice is test_linear.py's (and its CLI test's)
    linear = f"eval.linear=[{{train: {TRAIN}, test: {TEST}, size: 16, C: 1.0}}]"
    code = main([
        "fit", "simclr-digits", f"output_dir={out}", "name=smoke", "trainer.max_epochs=2", "data.batch_size=32",
        "data.max_rows=128", "trainer.enable_progress_bar=false", "model.name=resnet10t", "model.projection=[64,32]",
        "trainer.precision=32-true", "trainer.log_every_n_steps=1", linear,
    ])
    assert code == 0
    return out / "smoke"


def test_fit_writes_encoder_and_knn_before_and_after(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    knn, linear = sorted(metrics["before"])
    assert knn.startswith("knn:") and linear.startswith("linear:") and metrics["steps"] == 8
    for when in ("before", "after"):
        for name in (knn, linear):
            assert 10 < metrics[when][name]["top1"] <= 100
    assert metrics["before"][linear]["C"] == 1.0
    assert (run_dir / "model" / "encoder.safetensors").is_file()
    # "before" is the run's initial encoder (rebuilt: the fit seeds, then builds it) and
    # "after" the saved one: weighted kNN (k 20, T 0.07) recomputed in numpy for both
    import pytorch_lightning as pl
    from omegaconf import OmegaConf

    from contrastlib.config.build import build_encoder
    from contrastlib.loading import load_encoder

    cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    pl.seed_everything(cfg["seed"], workers=True, verbose=False)
    initial, trained = build_encoder(cfg["model"]), load_encoder(run_dir)
    for stage, encoder in (("before", initial), ("after", trained)):
        assert metrics[stage][knn]["top1"] == pytest.approx(_numpy_knn_top1(encoder), abs=1e-9), stage
    # the backbone learnt what SimCLR teaches: on fresh views of training digits, two views
    # of one digit are told apart from the other digits' better than at the start (the
    # NT-Xent loss of those views dropped), and kNN on the test digits went up
    views = _views(cfg["method"]["augment"], 256)
    assert _nt_xent(trained, views) < _nt_xent(initial, views) - 0.1, (_nt_xent(initial, views), _nt_xent(trained, views))
    assert metrics["after"][knn]["top1"] >= metrics["before"][knn]["top1"] + 2, (metrics["before"], metrics["after"])


def _numpy_knn_top1(encoder) -> float:
    """Weighted kNN top-1 (k 20, T 0.07, cosine) of the encoder's backbone features, in numpy."""
    from contrastlib.data.images import read_images
    from contrastlib.evaluation.knn import embed_images

    tr, ytr = embed_images(encoder, read_images(TRAIN), size=16)
    te, yte = embed_images(encoder, read_images(TEST), size=16)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sims = unit(te.astype(np.float64)) @ unit(tr.astype(np.float64)).T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :20]
    votes = np.zeros((len(te), 10))
    np.add.at(votes, (np.repeat(np.arange(len(te)), 20), ytr[top].reshape(-1)),
              np.exp(np.take_along_axis(sims, top, axis=1) / 0.07).reshape(-1))
    return float((votes.argmax(1) == yte).mean() * 100)


def _views(augment: dict, n: int) -> torch.Tensor:
    """Two seeded views (the run's augmentation) of the first ``n`` training digits."""
    from contrastlib.data.augment import augment_config, view_transform
    from contrastlib.data.image_batches import ViewsDataset, collate_views
    from contrastlib.data.images import read_images

    ds = ViewsDataset(read_images(TRAIN).subset(n), view_transform(augment_config(augment)), n_views=2, seed=7)
    return collate_views([ds[i] for i in range(n)]).views  # [2, n, C, H, W]


def _nt_xent(encoder, views: torch.Tensor) -> float:
    """SimCLR's loss (NT-Xent, T 0.2, as the recipe) of the two views' projections,
    BatchNorm on the batch's statistics as in training."""
    from contrastlib.losses import nt_xent

    encoder.train()
    with torch.no_grad():
        return float(nt_xent(encoder(views[0]), encoder(views[1]), temperature=0.2))


def test_fit_monitors_each_epoch_and_plots(run_dir):
    """eval.every_n_epochs=1: epochs 0 (before), 1 and 2 in eval_curve.csv and the logs;
    the last epoch's evaluation is the run's "after"; the online probe logs each step."""
    import csv

    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = list(csv.DictReader((run_dir / "eval_curve.csv").read_text().splitlines()))
    for name in metrics["before"]:
        top1 = {int(r["epoch"]): float(r["value"]) for r in rows if r["name"] == name and r["metric"] == "top1"}
        assert sorted(top1) == [0, 1, 2]
        assert top1[0] == pytest.approx(metrics["before"][name]["top1"])
        assert top1[2] == pytest.approx(metrics["after"][name]["top1"])
    logged = list(csv.DictReader((run_dir / "logs" / "metrics.csv").read_text().splitlines()))
    knn = next(n for n in metrics["before"] if n.startswith("knn:"))
    at = [int(r["step"]) for r in logged if r.get(f"eval/{knn}/top1")]
    assert at == [4, 8]  # logged at the optimizer steps taken: after epoch 1 (4 steps) and epoch 2 (8)
    probe_loss = [float(r["probe/loss"]) for r in logged if r.get("probe/loss")]
    probe_top1 = [float(r["probe/top1"]) for r in logged if r.get("probe/top1")]
    assert len(probe_loss) == 8 and len(probe_top1) == 2 and all(0 <= a <= 100 for a in probe_top1)
    for png in ("eval_curve.png", "projection-digits-test.npz.png"):
        assert (run_dir / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    callbacks = state["callbacks"]
    assert any(k.startswith("EvalMonitor") for k in callbacks)  # the curve continues after a resume
    probe = next(v for k, v in callbacks.items() if k.startswith("OnlineProbe"))
    assert probe["head"]["weight"].shape == (10, 512)  # resnet10t features -> 10 digit classes


def test_eval_knn_reads_the_run_and_the_floors(run_dir, capsys):
    assert main(["eval", "knn", "-m", str(run_dir), "--train", TRAIN, "--test", TEST, "--size", "16",
                 "--preset", "solo-learn", "--no-progress", "--json"]) == 0
    ours = last_json(capsys)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert ours["top1"] == pytest.approx(next(iter(metrics["after"].values()))["top1"])  # same protocol, same figure
    assert main(["eval", "knn", "-m", "pixels", "--train", TRAIN, "--test", TEST, "--size", "8", "--channels", "1",
                 "--preset", "solo-learn", "--no-progress", "--json"]) == 0
    assert last_json(capsys)["top1"] > 90
    assert main(["eval", "knn", "-m", "timm:resnet10t", "--cifar-stem", "--train", TRAIN, "--test", TEST, "--size", "16",
                 "--no-progress", "--json"]) == 0
    assert 10 < last_json(capsys)["top1"] <= 100


def test_eval_knn_bad_file_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "set" / "cat" / "x.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["eval", "knn", "-m", "pixels", "--train", str(tmp_path / "set"), "--test", TEST]) == 2
    err = capsys.readouterr().err.strip()
    assert str(bad) in err and len(err.splitlines()) == 1


def test_three_views_need_a_multi_view_loss(tmp_path, capsys):
    code = main(["fit", "simclr-digits", f"output_dir={tmp_path}", "method.views=3", "--dry-run"])
    assert code == 2 and "need a multi-view loss" in capsys.readouterr().err
    code = main(["fit", "simclr-digits", f"output_dir={tmp_path}", "method.views=3", "loss.name=mv_info_nce",
                 "loss.temperature=0.2", "--dry-run"])
    assert code == 0


def test_views_differ_and_run_in_workers():
    from contrastlib.data.augment import augment_config, view_transform
    from contrastlib.data.image_batches import ViewsDataset, collate_views
    from contrastlib.data.images import read_images

    ds = ViewsDataset(read_images(TRAIN), view_transform(augment_config({"size": 16})), n_views=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate_views)
    batch = next(iter(loader))
    assert batch.views.shape == (2, 8, 3, 16, 16) and batch.labels.tolist() == [ds.images.labels[i] for i in range(8)]
    assert not torch.equal(batch.views[0], batch.views[1])


def test_a_bad_model_key_fails_before_the_run_directory_exists(tmp_path, capsys):
    for override, expected in (("model.name=resnet1888", "did you mean resnet18"),
                               ("model.projection=[512,0]", "model.projection"),
                               ("model.weights=/nonexistent.safetensors", "model.weights: no such file")):
        code = main(["fit", "simclr-digits", f"output_dir={tmp_path}", override])
        err = capsys.readouterr().err.strip()
        assert code == 2 and expected in err and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


def test_seeded_views_are_the_same_in_any_worker_and_differ_by_epoch():
    from contrastlib.data.augment import augment_config, view_transform
    from contrastlib.data.image_batches import ViewsDataset, collate_views
    from contrastlib.data.images import read_images
    from contrastlib.samplers.random import RandomBatchSampler

    images = read_images(TRAIN).subset(32)
    ds = ViewsDataset(images, view_transform(augment_config({"size": 16})), n_views=2, seed=5)

    def epoch_views(epoch: int, workers: int) -> torch.Tensor:
        sampler = RandomBatchSampler(images.names, 8, seed=1, num_replicas=1, rank=0)
        sampler.tag_epoch = True
        sampler.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=collate_views)
        torch.manual_seed(workers)  # the process's own random state plays no part
        return torch.cat([b.views for b in loader], dim=1)

    one = epoch_views(1, 0)
    torch.testing.assert_close(epoch_views(1, 2), one, rtol=0, atol=0)
    assert not torch.equal(epoch_views(2, 0), one)
