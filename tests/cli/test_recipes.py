"""Recipes travel with the package; every check runs before any work; a crash is recorded;
``precision: auto`` says what it chose (issue: "Errors after work", "Recipes that travel")."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from contrastlib.cli.main import main


def test_a_loss_that_cannot_take_the_data_fails_before_any_work(tmp_path, capsys):
    """nt_xent on triplets used to load the model, evaluate STS, then die in a traceback.
    (In-process: the real process's exit path for a config error is
    tests/cli/test_cli.py::test_bad_config_key_is_one_line_exit_2_in_a_real_process.)"""
    assert main(["fit", "simcse-snli", f"output_dir={tmp_path / 'runs'}", "loss.name=nt_xent"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert err.startswith("error: loss.name: loss 'nt_xent' takes two views") and "triplets" in err
    assert not (tmp_path / "runs").exists(), "nothing may be written before the inputs are valid"


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["loss.name=ati", "loss.temperature=0.005"], "loss 'ati': need temperature > min_temperature"),
        (["model.encoder=image", "model.name=resnet18", "model.max_seq_length=null"], "model.encoder: method 'simcse' trains a text encoder"),
        (["trainer.max_epochs=-1", "trainer.max_steps=-1"], "set at least one of them"),
        (["trainer.pad_to_multiple_of=0"], "trainer.pad_to_multiple_of: must be >= 1, got 0"),
    ],
)
def test_bad_settings_fail_before_any_work(tmp_path, capsys, overrides, needle):
    assert main(["fit", "simcse-snli", f"output_dir={tmp_path / 'runs'}", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err, err
    assert not (tmp_path / "runs").exists()


def test_recipe_by_name_from_any_directory_dry_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # in-process: the recipe is found by name from any directory
    assert main(["fit", "simcse-snli", "--dry-run", "--json"]) == 0
    out = capsys.readouterr().out
    assert "train: " in out and "datasets/nli/snli-dev.tsv" in out  # resolved
    assert "2943 rows, triplets (anchor, positive, negative)" in out
    assert json.loads(out.strip().splitlines()[-1])["rows"] == 2943
    assert not any(tmp_path.iterdir()), "a dry run writes nothing"


def test_list_shows_the_recipes(capsys):
    assert main(["list", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = {r["name"] for r in payload["recipes"]}
    assert {"quickstart", "simcse-unsup-wiki"} <= names
    for r in payload["recipes"]:
        assert Path(r["path"]).is_file() and r["summary"]


def test_unknown_recipe_suggests_the_closest(tmp_path, capsys):
    assert main(["fit", "quickstar"]) == 2
    assert "did you mean recipe 'quickstart'" in capsys.readouterr().err


def test_a_crash_marks_the_run_failed_with_its_error(tmp_path, monkeypatch, capsys, tiny_model):
    from contrastlib.methods import SimCSE

    def boom(self, embeddings, batch):
        raise RuntimeError("boom in the loss")

    monkeypatch.setattr(SimCSE, "contrast", boom)
    with pytest.raises(RuntimeError, match="boom"):
        main([
            "fit", "simcse-snli", f"output_dir={tmp_path}", "name=crash", f"model.name={tiny_model}",
            "data.max_rows=16", "data.batch_size=8",
            "trainer.max_steps=1", "trainer.enable_progress_bar=false", "eval.sts=[]",
        ])
    marker = json.loads((tmp_path / "crash" / "contrastlib_run.json").read_text())
    assert marker["status"] == "failed"
    assert marker["error"] == "RuntimeError: boom in the loss"
    assert marker["versions"]["torch"] and "git_commit" in marker
    assert os.environ.get("CONTRASTLIB_JOB_DIR") is None


@pytest.mark.parametrize("native,expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_precision_auto_follows_the_hardware(monkeypatch, native, expected):
    from contrastlib.utils import precision

    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: (native, "AMX" if native else "no native bf16"))
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    chosen, why = precision.resolve_precision("auto", "auto")
    assert chosen == expected and why.startswith("auto: CPU with")
    assert precision.resolve_precision("32-true", "auto")[0] == "32-true"
    assert precision.encode_precision("auto", chosen) == ("bf16" if native else "fp32")


def test_the_two_sources_recipe_reads_both_bundled_sources_from_any_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "two-sources", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "data: 8692 rows from 2 sources, proportional" in out
    assert "nli: " in out and "2943 rows, triplets (anchor, positive, negative)" in out
    assert "sts: " in out and "5749 rows, scored pairs (sentence1, sentence2, score), weight 0.5" in out
    assert "dims:" in out and "query: " in out
    assert "loss: info_nce (nli), cosent (sts) in loss.matryoshka" in out
    assert not any(tmp_path.iterdir())
