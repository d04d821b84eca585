"""The online probe under a real Lightning Trainer, and the evaluation monitor's curve."""

from __future__ import annotations

import csv
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from contrastlib.data.augment import eval_transform
from contrastlib.data.image_batches import ViewsDataset, collate_views
from contrastlib.data.images import read_images
from contrastlib.training.monitor import EvalMonitor, OnlineProbe

BUNDLED = Path(__file__).resolve().parents[2] / "datasets" / "digits"


class _PixelEncoder(nn.Module):
    """``backbone``: flattened 8x8 grey pixels (linearly separable digits); no parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Flatten()
        self.feature_dim = 64
        self.input_size, self.input_channels = 8, 1
        self.w = nn.Parameter(torch.zeros(()))


class _Module(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = _PixelEncoder()

    def evaluation_model(self):
        return self.encoder

    def training_step(self, batch, batch_idx):
        # both views through the backbone, as SimCLR does; the probe must read view 0's rows
        a = self.encoder.backbone(batch.views[0])
        b = self.encoder.backbone(batch.views[1].flip(0))  # other rows: misread, the probe learns nothing
        return (a.sum() + b.sum()) * 0 + self.encoder.w ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_online_probe_learns_from_the_first_view_of_each_batch(tmp_path):
    images = read_images(BUNDLED / "digits-train.npz")
    data = ViewsDataset(images, eval_transform(8, channels=1), 2)
    loader = DataLoader(data, batch_size=64, shuffle=True, collate_fn=collate_views,
                        generator=torch.Generator().manual_seed(0))
    probe = OnlineProbe(10, lr=1e-2)
    trainer = pl.Trainer(max_epochs=4, logger=pl.loggers.CSVLogger(tmp_path, name="l"), callbacks=[probe],
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                         log_every_n_steps=1, accelerator="cpu")
    trainer.fit(_Module(), loader)
    rows = list(csv.DictReader((tmp_path / "l" / "version_0" / "metrics.csv").read_text().splitlines()))
    top1 = [float(r["probe/top1"]) for r in rows if r.get("probe/top1")]
    assert len(top1) == 4
    # pixels of 8x8 digits: a linear classifier reaches ~95%; view 1's rows (flipped) would give ~10%
    assert top1[-1] > 85 and top1[-1] > top1[0]
    state = probe.state_dict()
    restored = OnlineProbe(10, lr=1e-2)
    restored.setup(trainer, _Module(), "fit")  # Lightning's order: setup, then the checkpoint's state
    restored.load_state_dict(state)
    assert torch.equal(restored.head.weight, probe.head.weight)


def test_eval_monitor_curve_survives_a_resume(tmp_path):
    class Ev:
        name, main_metric = "knn:test", "top1"

        def __init__(self):
            self.calls = 0

        def __call__(self, encoder, cache=None):
            self.calls += 1
            return {"top1": 10.0 * self.calls}

    ev = Ev()
    m = EvalMonitor([ev], 2, tmp_path, initial={"knn:test": {"top1": 1.0}})

    class T:
        current_epoch, max_epochs, sanity_checking, is_global_zero, loggers, global_step = 0, 6, False, True, [], 0

    class M:
        @staticmethod
        def evaluation_model():
            return None

    for epoch in range(3):  # epochs 1, 2, 3: only epoch 2 evaluates
        T.current_epoch, T.global_step = epoch, 5 * (epoch + 1)
        m.on_train_epoch_end(T, M)
    assert ev.calls == 1 and m.last_step == 10
    resumed = EvalMonitor([ev], 2, tmp_path)
    resumed.load_state_dict(m.state_dict())
    for epoch in range(3, 6):  # epochs 4, 5, 6: 4 and 6 (the last) evaluate
        T.current_epoch, T.global_step = epoch, 5 * (epoch + 1)
        resumed.on_train_epoch_end(T, M)
    rows = list(csv.DictReader((tmp_path / "eval_curve.csv").read_text().splitlines()))
    assert [(int(r["epoch"]), float(r["value"])) for r in rows] == [(0, 1.0), (2, 10.0), (4, 20.0), (6, 30.0)]
    assert (tmp_path / "plots" / "eval_curve.png").stat().st_size > 1000
