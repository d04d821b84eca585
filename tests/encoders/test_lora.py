"""LoRA through ``peft`` (``model.lora``): through ``contrastlib fit`` on the tiny BERT, only
the adapters (and a reward head) change; the merged export and the adapter export load in
sentence-transformers and embed as the trained, unmerged model does; a LoRA reward model
scores the same after export and reload; bad settings are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastlib.cli.main import main
from contrastlib.config.load import load_config
from contrastlib.errors import ContrastlibError
from contrastlib.loading import load_encoder_from_checkpoint

pytest.importorskip("peft")

TEXTS = ["A man is playing a guitar.", "Two dogs run on the beach.", "query: what is LoRA?", "a"]


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in after if k in before and not torch.equal(before[k], after[k])}


def _state(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("cache", [False, True], ids=["plain", "gradcache"])
def test_only_adapters_train_and_both_exports_embed_as_the_unmerged_model(tmp_path, tiny_model, cache):
    from sentence_transformers import SentenceTransformer

    common = ["fit", "simcse-snli", f"model.name={tiny_model}", "model.max_seq_length=24", "data.max_rows=32",
              "data.batch_size=8", "trainer.max_steps=3", "trainer.checkpoint_every_n_steps=1",
              "trainer.keep_step_checkpoints=true", "trainer.enable_progress_bar=false", "eval.sts=[]",
              "trainer.precision=32-true", "optim.lr=1e-2", f"output_dir={tmp_path}",
              "model.lora={rank: 4, alpha: 8, target_modules: [query, key, value]}",
              *(["gradcache.chunk_size=4"] if cache else [])]
    assert main([*common, "name=merged"]) == 0
    assert main([*common, "name=adapter", "model.lora.export=adapter"]) == 0
    run = tmp_path / "merged"
    first, last = _state(run / "checkpoints" / "step-1.ckpt"), _state(run / "checkpoints" / "last.ckpt")
    changed = _changed(first, last)
    assert changed and all(".lora_A." in k or ".lora_B." in k for k in changed), sorted(changed)[:5]
    assert len([k for k in last if "lora_" in k]) == 2 * 3 * 2  # A and B, 3 targets, 2 layers

    trained = load_encoder_from_checkpoint(run / "checkpoints" / "last.ckpt")  # the unmerged model
    assert type(trained.model).__name__ == "PeftModel"
    expected = trained.encode(TEXTS, precision="fp32")
    assert not (run / "model" / "adapter_config.json").exists()  # a plain sentence-transformers dir
    assert (tmp_path / "adapter" / "model" / "adapter_config.json").is_file()
    for name in ("merged", "adapter"):
        got = SentenceTransformer(str(tmp_path / name / "model"), device="cpu").encode(TEXTS)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_lora_reward_model_scores_the_same_after_export_and_reload(tmp_path, tiny_model):
    from contrastlib.models.reward import RewardModel
    from contrastlib.pipeline import plan_fit

    args = ["reward-hh", f"model.name={tiny_model}", "method.frozen=false", "model.lora={rank: 4}",
            "model.max_seq_length=32", "data.max_rows=60", "data.batch_size=8", "data.on_bad_row=skip",
            "trainer.max_epochs=1", "trainer.precision=32-true", "eval.precision=fp32", "optim.lr=1e-2",
            "trainer.enable_progress_bar=false", "trainer.checkpoint_every_n_steps=1", "trainer.keep_step_checkpoints=true",
            f"output_dir={tmp_path}", "name=r"]
    assert main(["fit", *args]) == 0
    run = tmp_path / "r"
    changed = _changed(_state(run / "checkpoints" / "step-1.ckpt"), _state(run / "checkpoints" / "last.ckpt"))
    assert any(k.startswith("head.") for k in changed)  # the head trains beside the adapters
    assert all(k.startswith("head.") or "lora_" in k for k in changed), sorted(changed)[:5]
    after = json.loads((run / "metrics.json").read_text())["after"]["heldout"]  # the unmerged model in the run
    evaluator = plan_fit(load_config(args[0], args[1:])).evaluators[0]
    reloaded = evaluator(RewardModel.load(run, precision="fp32"))  # the head and the merged encoder
    for key in ("accuracy", "ece", "mean_prob_chosen", "length_corr"):
        assert reloaded[key] == pytest.approx(after[key], abs=1e-5), key


@pytest.mark.parametrize(("value", "message"), [
    ("{rank: 0}", "model.lora.rank: a number > 0"),
    ("{rnak: 4}", "model.lora.rnak: not a LoRA setting"),
    ("{export: both}", "model.lora.export: one of merged, adapter"),
    ("{dropout: 1.5}", "model.lora.dropout: in [0, 1)"),
])
def test_bad_lora_settings_are_one_line_errors_before_any_model_loads(value, message):
    from contrastlib.pipeline import plan_fit

    with pytest.raises(ContrastlibError) as err:
        plan_fit(load_config("simcse-snli", [f"model.lora={value}", "model.name=no/such-model-here"]))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_lora_on_a_frozen_reward_encoder_is_refused():
    from contrastlib.pipeline import plan_fit

    with pytest.raises(ContrastlibError, match="model.lora: a frozen encoder trains no adapters"):
        plan_fit(load_config("reward-hh", ["model.lora={rank: 4}", "data.on_bad_row=skip", "data.max_rows=40"]))


@pytest.mark.slow
def test_lora_under_ddp_equals_one_process_at_twice_the_batch(tmp_path, tiny_model):
    """2 gloo ranks through the CLI (Lightning's DDP over a PeftModel whose base is frozen)
    against one process at twice the per-device batch, dropout off: the same loss at every
    step and the same adapters at the end."""
    from tests_helpers import ddp_beside_one, train_losses

    lines = (Path(__file__).resolve().parents[2] / "datasets" / "nli" / "snli-dev.tsv").read_text().splitlines()
    train = tmp_path / "train.tsv"
    train.write_text("\n".join(lines[:33]) + "\n")  # 32 rows: 4 global batches of 8

    def args(out: Path, batch: int) -> list[str]:
        out.mkdir()
        return ["fit", "simcse-snli", f"model.name={tiny_model}", f"data.train={train}", f"data.batch_size={batch}",
                "data.sampler=random", "model.dropout=0.0", "model.max_seq_length=32", "model.lora={rank: 4}",
                "optim.lr=1e-2", "trainer.precision=32-true", "trainer.max_epochs=1", "trainer.log_every_n_steps=1",
                "trainer.enable_progress_bar=false", "eval.sts=[]", "trainer.accelerator=cpu",
                f"output_dir={out}", "name=x"]

    ddp, one = ddp_beside_one(args(tmp_path / "ddp", 4), tmp_path / "ddp", args(tmp_path / "one", 8))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = train_losses(tmp_path / "ddp" / "x"), train_losses(tmp_path / "one" / "x")
    assert len(a) == len(b) == 4 and a == pytest.approx(b, abs=1e-5)
    wa, wb = (_state(tmp_path / r / "x" / "checkpoints" / "last.ckpt") for r in ("ddp", "one"))
    lora = [k for k in wb if "lora_" in k]
    assert lora
    for k in lora:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0, msg=k)
