"""Several sources in one run (``data.train`` a mapping): through ``contrastlib fit`` on the
tiny BERT. Every batch is one source's; each source trains with its own prompts and its own
loss, weighted, and is logged on its own; the export names the prompts; a mapping of one
source is the plain run; bad sources are one-line errors naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from contrastlib.cli.main import main
from contrastlib.config.load import load_config
from contrastlib.errors import ConfigError, ContrastlibError
from contrastlib.pipeline import plan_fit
from contrastlib.report import read_logs

REPO = Path(__file__).resolve().parents[1]
NLI = str(REPO / "datasets" / "nli" / "snli-dev.tsv")
STS = str(REPO / "datasets" / "stsb" / "train.tsv")
PROMPTS = {"anchor": "query: ", "positive": "passage: ", "negative": "passage: "}


def _config(tmp: Path, model: str, **data) -> dict:
    return {
        "name": "two", "output_dir": str(tmp / "runs"),
        "model": {"encoder": "text", "name": model, "max_seq_length": 32, "dropout": 0.0},
        "data": {"train": {"nli": {"path": NLI, "prompts": PROMPTS},
                           "sts": {"path": STS, "loss": {"name": "cosent", "temperature": 0.1}, "weight": 0.5}},
                 "batch_size": 8, "max_rows": 40, **data},
        "method": {"name": "simcse", "mode": "supervised"},
        "loss": {"name": "info_nce", "temperature": 0.05},
        # plain SGD at lr 1e-12: every step's loss is the initial model's (to 1e-12), so
        # each can be computed by hand
        "optim": {"name": "sgd", "lr": 1e-12, "momentum": 0.0, "weight_decay": 0.0, "warmup_ratio": 0.0},
        "trainer": {"max_epochs": 1, "log_every_n_steps": 1, "enable_progress_bar": False, "precision": "32-true"},
    }


def _write(tmp: Path, cfg: dict) -> Path:
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def _info_nce_by_hand(cols: list[torch.Tensor], temperature: float) -> float:
    """Anchor i against every positive and negative of the batch; its own positive is right."""
    logits = _cos(cols[0], torch.cat(cols[1:])) / temperature
    return float(F.cross_entropy(logits, torch.arange(len(cols[0]))))


def _cosent_by_hand(cols: list[torch.Tensor], scores: np.ndarray, temperature: float) -> float:
    """log(1 + sum over pairs (i, j) with score_i > score_j of exp((cos_j - cos_i) / t))."""
    cos = (F.normalize(cols[0], dim=-1) * F.normalize(cols[1], dim=-1)).sum(-1)
    terms = [0.0] + [float((cos[j] - cos[i]) / temperature) for i in range(len(cos)) for j in range(len(cos))
                     if scores[i] > scores[j]]
    return float(torch.logsumexp(torch.tensor(terms, dtype=torch.float64), 0))


def test_each_source_trains_with_its_prompts_loss_and_weight_and_is_logged_on_its_own(tmp_path, tiny_model):
    from contrastlib.encoders import TextEncoder
    from contrastlib.pipeline import _build_module, build_loader

    path = _write(tmp_path, _config(tmp_path, tiny_model))
    assert main(["fit", str(path)]) == 0
    run = tmp_path / "runs" / "two"
    logs = read_logs(run)
    total, per = dict(logs["train/loss"]), {s: dict(logs[f"train/loss/{s}"]) for s in ("nli", "sts")}
    assert sorted(total) == list(range(10))  # 5 batches of each source's 40 rows
    assert set(per["nli"]).isdisjoint(per["sts"]) and sorted({*per["nli"], *per["sts"]}) == sorted(total)

    # the same batches, as the run's own loader forms them, computed by hand on the model
    plan = plan_fit(load_config(str(path)))
    encoder = TextEncoder(tiny_model, max_seq_length=32, dropout=0.0).eval()
    loader = build_loader(plan, _build_module(plan, encoder))
    parts = plan.data.parts
    starts = np.cumsum([0] + [len(p.data.rows) for p in parts])
    for step, batch in enumerate(loader):
        name = parts[batch.source].name
        ids = batch.batch.ids.numpy() - starts[batch.source]
        assert ((ids >= 0) & (ids < len(parts[batch.source].data.rows))).all()  # one source's rows
        rows = [parts[batch.source].data.rows[int(i)] for i in ids]
        prompts = parts[batch.source].data.prompts or ("",) * len(rows[0])
        with torch.no_grad():
            cols = [torch.as_tensor(encoder.encode([prompts[c] + r[c] for r in rows], precision="fp32"))
                    for c in range(len(rows[0]))]
        if name == "nli":  # the run's loss, and the prompts written before the texts
            expected = _info_nce_by_hand(cols, 0.05)
            assert total[step] == pytest.approx(expected, abs=1e-5)
        else:  # its own loss (CoSENT at its own temperature) on its scores, weighted 0.5
            expected = _cosent_by_hand(cols, parts[1].data.scores[ids], 0.1)
            assert total[step] == pytest.approx(0.5 * expected, abs=1e-5)
        assert per[name][step] == pytest.approx(expected, abs=1e-5)
    assert step == 9

    st = json.loads((run / "model" / "config_sentence_transformers.json").read_text())
    assert st["prompts"] == {"query": "query: ", "document": "passage: "}


def test_a_mapping_of_one_source_is_the_plain_run(tmp_path, tiny_model):
    cfg = _config(tmp_path, tiny_model)
    cfg["optim"] = {"lr": 1e-3, "name": "adamw"}
    cfg["data"]["train"] = {"nli": {"path": NLI}}
    one = _write(tmp_path, cfg)
    assert main(["fit", str(one), "name=mapped"]) == 0
    assert main(["fit", str(one), "name=plain", f"data.train={NLI}"]) == 0
    a = torch.load(tmp_path / "runs" / "mapped" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "runs" / "plain" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for k in b:
        if k.startswith("encoder."):
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_round_robin_and_differing_prompts_are_exported_per_source(tmp_path, tiny_model):
    cfg = _config(tmp_path, tiny_model, composition="round_robin", max_rows=None)
    cfg["data"]["train"]["sts"]["prompts"] = "sentence: "
    cfg["trainer"]["max_steps"] = 6
    assert main(["fit", str(_write(tmp_path, cfg))]) == 0
    logs = read_logs(tmp_path / "runs" / "two")
    assert [s for s, _ in logs["train/loss/nli"]] == [0, 2, 4] and [s for s, _ in logs["train/loss/sts"]] == [1, 3, 5]
    st = json.loads((tmp_path / "runs" / "two" / "model" / "config_sentence_transformers.json").read_text())
    assert st["prompts"] == {"query": "query: ", "nli_query": "query: ", "sts_query": "sentence: ",
                             "document": "passage: ", "nli_document": "passage: ", "sts_document": "sentence: "}


@pytest.mark.parametrize(("change", "message"), [
    ({"train": {"nli": {"path": NLI, "wieght": 2}}}, "data.train.nli.wieght: not a source key"),
    ({"train": {"nli": {"path": NLI, "weight": -1}}}, "data.train.nli.weight: a number > 0"),
    ({"train": {"nli": {"columns": ["a"]}}}, "data.train.nli.path: missing"),
    ({"composition": "mixed"}, "data.composition: one of proportional, round_robin"),
    ({"train": {"nli": NLI, "sts": {"path": STS, "loss": {"scal": 2}}}}, "data.train.sts.loss"),
    ({"train": {"nli": NLI, "sts": {"path": STS, "columns": ["sentence1", "nope"]}}},
     "data.train.sts.columns: no column 'nope'"),
    ({"train": {"nli": {"path": NLI, "columns": "anchor"}}}, "data.train.nli.columns: a list of column names"),
    # a source too small for one batch with drop_last would never train
    ({"train": {"nli": NLI, "sts": STS}, "max_rows": 6, "drop_last": True},
     "data.train.nli: 6 rows make no global batch of 8 x 1 device(s) with data.drop_last"),
    # a source's own loss is checked against that source's rows (triplets: hard negatives)
    ({"train": {"nli": {"path": NLI, "loss": {"name": "align_uniform"}}, "sts": STS}},
     "data.train.nli.loss.name: loss 'align_uniform' takes two views"),
])
def test_a_bad_source_is_a_one_line_error_naming_its_key(tmp_path, tiny_model, change, message):
    cfg = _config(tmp_path, tiny_model)
    cfg["data"].update(change)
    with pytest.raises(ContrastlibError) as err:
        plan_fit(load_config(str(_write(tmp_path, cfg))))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_method_that_trains_on_one_source_refuses_several(tmp_path):
    with pytest.raises(ConfigError, match="data.train: method 'simclr' trains on one source"):
        plan_fit(load_config("simclr-digits", ["data.train={a: x.npz, b: y.npz}"]))


def test_a_mapping_of_one_source_named_train_keeps_its_settings(tmp_path, tiny_model):
    cfg = _config(tmp_path, tiny_model)
    cfg["data"]["train"] = {"train": {"path": NLI, "weight": 3}}
    plan = plan_fit(load_config(str(_write(tmp_path, cfg))))
    assert [(p.name, p.weight) for p in plan.data.parts] == [("train", 3.0)]


def test_a_source_s_idle_learnable_temperature_still_gets_a_gradient():
    """Under DDP (find_unused_parameters off) every trainable parameter must take part in
    every step: a learnable temperature of one source's loss gets a zero gradient on the
    other source's steps (found in review)."""
    from contrastlib.losses import InfoNCELoss
    from contrastlib.losses.graded import CoSENTLoss
    from contrastlib.losses.sources import SourceLosses

    learnable = InfoNCELoss(0.05, learnable_temperature=True)
    losses = SourceLosses([learnable, CoSENTLoss()], [0, 1], [1.0, 1.0], ["nli", "sts"])
    losses.use_source(1)
    a, b = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    losses(a, b, scores=torch.tensor([1.0, 2.0, 3.0, 4.0])).backward()
    params = [p for p in learnable.parameters() if p.requires_grad]
    assert params and all(p.grad is not None and float(p.grad.abs().sum()) == 0 for p in params)
