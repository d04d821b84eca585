"""Declared contracts: every combination of registered method, loss, sampler and
evaluation either trains one step on tiny data, through the pipeline's own parts and a
real Lightning Trainer, or is refused with a one-line error naming the config key before
any model loads. A new registered part joins the matrix by being registered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import contrastlib.components  # noqa: F401  (fills the registries)
from contrastlib.config import load_config
from contrastlib.errors import ConfigError
from contrastlib.registry import ENCODERS, EVALUATIONS, LOSSES, METHODS, SAMPLERS

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "datasets"
DIGITS = BUNDLED / "digits"

TRIPLETS = [
    ("A man is playing a guitar.", "A man plays the guitar.", "A woman is cooking."),
    ("A dog runs in the park.", "A dog is running outside.", "A cat sleeps indoors."),
    ("Two boys are swimming.", "Children swim in a pool.", "Two boys are sleeping."),
    ("A plane is taking off.", "An airplane is departing.", "A plane is parked."),
    ("A girl rides a horse.", "A person is on a horse.", "A girl walks a dog."),
    ("Someone is typing on a laptop.", "A person uses a computer.", "Someone reads a book."),
    ("The stock market fell today.", "Shares dropped today.", "The market rose today."),
    ("A chef is cooking pasta.", "Pasta is being cooked.", "A chef is washing dishes."),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Tiny data of every kind the methods and evaluations read."""
    root = tmp_path_factory.mktemp("contracts")
    triplets = root / "triplets.tsv"
    triplets.write_text("anchor\tpositive\tnegative\n" + "".join("\t".join(t) + "\n" for t in TRIPLETS))
    sts = root / "sts.tsv"
    sts.write_text("sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{p}\t{i % 5}\n" for i, (a, p, _) in enumerate(TRIPLETS)))
    beir = root / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": p}) + "\n"
                                               for i, (_, p, _) in enumerate(TRIPLETS)))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": a}) + "\n"
                                                for i, (a, _, _) in enumerate(TRIPLETS)))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(8)))
    prefs = root / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": f"Question {i}: {a}", "chosen": p, "rejected": n}) + "\n"
                             for i, (a, p, n) in enumerate(TRIPLETS * 2)))
    digits = {}
    for split, n in (("train", 64), ("test", 32)):  # small labelled image sets
        with np.load(DIGITS / f"digits-{split}.npz") as z:
            np.savez(root / f"digits-{split}.npz", images=z["images"][:n], labels=z["labels"][:n])
        digits[split] = str(root / f"digits-{split}.npz")
    return {"triplets": str(triplets), "sts": str(sts), "beir": str(beir), "prefs": str(prefs),
            "digits": digits["train"], "digits_test": digits["test"]}


def _method_overrides(method: str, files: dict[str, str], tiny_text: str) -> list[str]:
    image = ["model.encoder=image", "model.name=resnet10t", "model.cifar_stem=true", "model.projection=[16,8]",
             f"data.train={files['digits']}", "data.max_rows=16", "method.augment.size=8",
             "method.augment.min_scale=0.5"]
    text = ["model.encoder=text", f"model.name={tiny_text}", "model.max_seq_length=16"]
    return {
        "simcse": [*text, f"data.train={files['triplets']}"],
        "simclr": image,
        "moco": [*image, "method.queue_size=16", "method.predictor=8"],
        "reward": [*text, f"data.train={files['prefs']}", "method.heldout_fraction=0.0"],
    }[method]


def _evaluation_entry(name: str, files: dict[str, str]) -> str:
    entry = {
        "sts": files["sts"], "retrieval": files["beir"], "reward": files["prefs"],
        "knn": f"{{train: {files['digits']}, test: {files['digits_test']}, k: 3}}",
        "linear": f"{{train: {files['digits']}, test: {files['digits_test']}, C: 1.0, max_iter: 20}}",
    }
    return f"eval.{name}=[{entry[name]}]"


def _one_step(overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """``("refused", message)`` when the pipeline's plan refuses the config, else
    ``("trained", loss)`` after one optimizer step of the module the pipeline builds."""
    import pytorch_lightning as pl

    from contrastlib.config.build import build_encoder
    from contrastlib.pipeline import _build_module, build_loader, plan_fit
    from contrastlib.utils.precision import encode_precision

    cfg = load_config(None, [f"output_dir={tmp_path}", "trainer.max_steps=1", "data.batch_size=4",
                             "trainer.precision=32-true", "eval.projection=none", *overrides])
    def no_model(self: Any, *args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"{type(self).__name__} built while the plan was checked")

    with monkeypatch.context() as m:  # no encoder may be built while the plan is checked
        for e in ENCODERS.entries():
            m.setattr(e.obj, "__init__", no_model)
        try:
            plan = plan_fit(cfg)
        except ConfigError as exc:
            return "refused", str(exc)
    encoder = build_encoder(cfg.model)
    plan.method_cls.prepare_train_data(plan.data, encoder, plan.method_config, cache_dir=tmp_path / "cache",
                                       precision=encode_precision(cfg.eval.precision, plan.precision),
                                       batch_size=cfg.eval.batch_size, log=lambda _m: None)
    module = _build_module(plan, encoder)
    from contrastlib.evaluation.base import run_evaluations

    run_evaluations(plan.evaluators, module.evaluation_model())  # every evaluation runs on what the method gives
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1, precision="32-true",
                         num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=build_loader(plan, module))
    assert trainer.global_step == 1
    return "trained", trainer.callback_metrics.get("train/loss")


def _assert_refusal(message: str, key: str) -> None:
    assert "\n" not in message and message.startswith(f"{key}:"), message


@pytest.mark.parametrize("method", METHODS.names())
@pytest.mark.parametrize("loss", LOSSES.names())
def test_every_method_and_loss_trains_or_is_refused_before_a_model_loads(method, loss, files, tiny_model, tmp_path, monkeypatch):
    outcome, detail = _one_step([f"method.name={method}", f"loss.name={loss}",
                                 *_method_overrides(method, files, tiny_model)], tmp_path, monkeypatch)
    if outcome == "refused":
        _assert_refusal(detail, "loss.name")
    else:
        assert detail is not None and bool(detail.isfinite())


@pytest.mark.parametrize("method", METHODS.names())
@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_every_method_and_sampler_trains_or_is_refused_before_a_model_loads(method, sampler, files, tiny_model,
                                                                           tmp_path, monkeypatch):
    loss = {"simclr": "nt_xent", "moco": "info_nce"}.get(method, "info_nce")
    options = ["data.sampler_options.m=2"] if sampler == "m_per_class" else []
    outcome, detail = _one_step([f"method.name={method}", f"loss.name={loss}", f"data.sampler={sampler}", *options,
                                 *_method_overrides(method, files, tiny_model)], tmp_path, monkeypatch)
    if outcome == "refused":
        _assert_refusal(detail, "data.sampler")
    else:
        assert detail is not None and bool(detail.isfinite())


@pytest.mark.parametrize("method", METHODS.names())
@pytest.mark.parametrize("evaluation", EVALUATIONS.names())
def test_every_evaluation_runs_on_every_method_or_is_refused_before_a_model_loads(method, evaluation, files,
                                                                                 tiny_model, tmp_path, monkeypatch):
    loss = {"simclr": "nt_xent"}.get(method, "info_nce")
    outcome, detail = _one_step([f"method.name={method}", f"loss.name={loss}", _evaluation_entry(evaluation, files),
                                 *_method_overrides(method, files, tiny_model)], tmp_path, monkeypatch)
    if outcome == "refused":
        _assert_refusal(detail, f"eval.{evaluation}")
    else:
        assert detail is not None


@pytest.mark.parametrize(("overrides", "key"), [
    (["loss.name=ati"], "loss.name"),  # SimCLR gives ATI the dataset ids it needs: it trains
    (["data.sampler=cluster"], "data.sampler"),  # the image encoder encodes the anchors: it trains
])
def test_the_combinations_that_once_died_at_step_one_now_train(overrides, key, files, tiny_model, tmp_path, monkeypatch):
    outcome, detail = _one_step(["method.name=simclr", "loss.name=nt_xent", *_method_overrides("simclr", files, ""),
                                 *overrides], tmp_path, monkeypatch)
    assert outcome == "trained", detail


def test_a_refusal_through_the_cli_is_one_line_and_exit_2(files, capsys):
    from contrastlib.cli.main import main

    code = main(["fit", "simclr-digits", f"data.train={files['digits']}", "method.views=3", "loss.name=info_nce"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: loss.name:") and err.count("\n") == 1, err
