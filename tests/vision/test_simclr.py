"""SimCLR through the CLI on the bundled digits: fit, kNN before/after, eval knn, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from contrastlib.cli.main import main

BUNDLED = Path(__file__).resolve().parents[2] / "contrastlib" / "datasets" / "digits"
TRAIN, TEST = str(BUNDLED / "digits-train.npz"), str(BUNDLED / "digits-test.npz")


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    code = main([
        "fit", "simclr-digits", f"output_dir={out}", "name=smoke", "trainer.max_steps=4", "data.batch_size=32",
        "data.max_rows=256", "trainer.enable_progress_bar=false", "model.name=resnet10t", "model.projection=[64,32]",
        "trainer.precision=32-true",
    ])
    assert code == 0
    return out / "smoke"


def test_fit_writes_encoder_and_knn_before_and_after(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (name,) = metrics["before"]
    assert name.startswith("knn:") and metrics["steps"] == 4
    for when in ("before", "after"):
        assert 10 < metrics[when][name]["top1"] <= 100
    assert metrics["before"][name] != metrics["after"][name]  # the backbone was trained
    assert (run_dir / "model" / "encoder.safetensors").is_file()


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
    from contrastlib.data.images import ViewsDataset, collate_views, read_images

    ds = ViewsDataset(read_images(TRAIN), view_transform(augment_config({"size": 16})), n_views=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate_views)
    batch = next(iter(loader))
    assert batch.views.shape == (2, 8, 3, 16, 16) and batch.labels.tolist() == [ds.images.labels[i] for i in range(8)]
    assert not torch.equal(batch.views[0], batch.views[1])
