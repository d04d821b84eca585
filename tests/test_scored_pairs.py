"""SimCSE on scored pairs (``method.mode: scored``): the loss receives each pair's gold
score and must take it (CoSENT); a loss that would treat every pair as a positive is
refused before any model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from contrastlib.config import load_config
from contrastlib.errors import ConfigError
from contrastlib.pipeline import plan_fit

REPO = Path(__file__).resolve().parents[1]
STSB_DEV = REPO / "datasets" / "stsb" / "dev.tsv"


def _cfg(*overrides: str):
    return load_config("quickstart", [f"data.train={STSB_DEV}", "method.mode=scored", "data.max_rows=32", *overrides])


def test_a_loss_that_cannot_take_scores_is_refused_before_a_model_loads():
    with pytest.raises(ConfigError, match=r"^loss.name: .* passes scores to its loss, which loss 'info_nce' does not take"):
        plan_fit(_cfg("loss.name=info_nce"))


def test_the_first_step_is_cosent_of_the_pairs_and_their_scores(tmp_path):
    from contrastlib.config.build import build_encoder
    from contrastlib.losses import cosent
    from contrastlib.pipeline import _build_module, build_loader

    cfg = _cfg("loss.name=cosent", "loss.temperature=0.05", "data.batch_size=8", f"output_dir={tmp_path}",
               "model.dropout=0.0", "model.max_seq_length=32", "trainer.precision=32-true")
    plan = plan_fit(cfg)
    encoder = build_encoder(cfg.model)
    module = _build_module(plan, encoder)
    batch = next(iter(build_loader(plan, module)))
    loss = module.contrast(module.embed_views(module.views(batch)), batch)
    ids = batch.ids.tolist()
    a = encoder.encode([plan.data.rows[i][0] for i in ids], convert_to_numpy=False)
    b = encoder.encode([plan.data.rows[i][1] for i in ids], convert_to_numpy=False)
    gold = torch.tensor([plan.data.scores[i] for i in ids])
    assert float(loss) == pytest.approx(float(cosent(a, b, gold, temperature=0.05)), abs=1e-4)
