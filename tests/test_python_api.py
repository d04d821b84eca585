"""The Python API as Lightning users expect it: ``contrastlib.fit`` runs what the CLI
runs, and every method is a LightningModule built from Python objects, trained in a
``pl.Trainer`` of one's own on the ``LightningDataModule`` the method provides."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from tests_helpers import train_losses

import contrastlib
from contrastlib.cli.main import main

REPO = Path(__file__).resolve().parents[1]
SNLI = REPO / "datasets" / "nli" / "snli-dev.tsv"
DIGITS = REPO / "datasets" / "digits" / "digits-train.npz"


def _text_overrides(tmp_path: Path, model: str, name: str) -> dict[str, object]:
    return {"output_dir": str(tmp_path), "name": name, "model": {"name": model, "dropout": 0.0, "max_seq_length": 32},
            "data": {"max_rows": 24, "batch_size": 8}, "trainer.max_steps": 3, "trainer.precision": "32-true",
            "trainer.log_every_n_steps": 1, "trainer.enable_progress_bar": False, "eval": {"sts": []}}


def test_fit_from_python_runs_what_the_cli_runs(tmp_path, tiny_model):
    result = contrastlib.fit("simcse-snli", log=lambda _m: None, **_text_overrides(tmp_path, tiny_model, "python"))
    cli = ["fit", "simcse-snli", f"output_dir={tmp_path}", "name=cli", f"model.name={tiny_model}", "model.dropout=0.0",
           "model.max_seq_length=32", "data.max_rows=24", "data.batch_size=8", "trainer.max_steps=3",
           "trainer.precision=32-true", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "eval.sts=[]"]
    assert main(cli) == 0
    assert result.steps == 3 and result.run_dir.name == "python"
    assert train_losses(result.run_dir) == train_losses(tmp_path / "cli")  # the same run, step by step
    assert len(train_losses(result.run_dir)) == 3


def test_simcse_is_a_lightning_module_of_python_objects_in_ones_own_trainer(tmp_path, tiny_model):
    from contrastlib.encoders import TextEncoder
    from contrastlib.losses import InfoNCELoss
    from contrastlib.methods.simcse import SimCSE, SimCSEConfig

    pl.seed_everything(42, verbose=False)
    encoder = TextEncoder(tiny_model, dropout=0.0, max_seq_length=32)
    config = SimCSEConfig()
    data = SimCSE.datamodule(str(SNLI), config, batch_size=8, max_rows=24)
    model = SimCSE.from_config(encoder, InfoNCELoss(0.05), config, lr=2e-5)
    assert isinstance(model, pl.LightningModule) and isinstance(data, pl.LightningDataModule)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", precision="32-true")
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 3
    assert any(not torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # it trained
    # the first step's loss is the pipeline's: the same data, batches, weights and loss
    result = contrastlib.fit("simcse-snli", log=lambda _m: None, **_text_overrides(tmp_path, tiny_model, "run"))
    first = float(InfoNCELoss(0.05)(*_first_batch_embeddings(data, TextEncoder(tiny_model, dropout=0.0,
                                                                                 max_seq_length=32))))
    assert first == pytest.approx(train_losses(result.run_dir)[0], abs=1e-5)


def _first_batch_embeddings(data, encoder) -> tuple[torch.Tensor, torch.Tensor]:
    """The first batch the data module gives, through ``encoder``: ``(anchors, candidates)``."""
    from contrastlib.methods.simcse import SimCSE
    from contrastlib.training.loader import build_loader

    module = SimCSE(encoder, torch.nn.Identity(), mode="supervised")  # type: ignore[arg-type]
    loader = build_loader(data.data, collator=module.collator, encoder=encoder, batch_size=data.batch_size, sampler=data.sampler,
                          sampler_options=data.sampler_options, seed=data.seed)
    batch = next(iter(loader))
    with torch.no_grad():
        return module.pair([encoder(v) for v in module.views(batch)])


def test_simclr_is_a_lightning_module_of_python_objects_in_ones_own_trainer(tmp_path):
    from contrastlib.encoders import ImageEncoder
    from contrastlib.losses import NTXentLoss
    from contrastlib.methods.simclr import SimCLR, SimCLRConfig

    pl.seed_everything(0, verbose=False)
    encoder = ImageEncoder("resnet10t", cifar_stem=True, projection=[16, 8])
    config = SimCLRConfig(augment={"recipe": "simclr", "size": 8})
    data = SimCLR.datamodule(str(DIGITS), config, batch_size=8, max_rows=32)
    model = SimCLR.from_config(encoder, NTXentLoss(0.2), config, lr=1e-3)
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", precision="32-true")
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 2 and bool(torch.isfinite(trainer.callback_metrics["train/loss"]))
    result = contrastlib.fit("simclr-digits", log=lambda _m: None, output_dir=str(tmp_path), name="digits",
                             model={"name": "resnet10t", "projection": [16, 8]}, data={"max_rows": 32, "batch_size": 8},
                             method={"augment": {"size": 8}, "online_probe": False},
                             trainer={"max_steps": 2, "enable_progress_bar": False},
                             eval={"knn": [], "linear": [], "every_n_epochs": None, "projection": "none"})
    assert result.steps == 2 and (result.run_dir / "model" / "encoder.safetensors").is_file()
