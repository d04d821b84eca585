"""Re-mining during training: consistent with ``contrastlib mine``, drift logged through a
real ``fit``, bad configs refused before work. On the tiny BERT (``tiny_model``): the
mining model and the trained one are the same weights either way."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tests_helpers import ddp_beside_one

from contrastlib.cli.main import main
from contrastlib.data.readers import read_tuples
from contrastlib.mining import MineOptions
from contrastlib.training.remining import ReMiningCallback

REPO = Path(__file__).resolve().parents[2]
SNLI = REPO / "datasets" / "nli" / "snli-dev.tsv"


@pytest.fixture(scope="module")
def ntuples(tmp_path_factory, tiny_model) -> Path:
    rows, _ = read_tuples(SNLI)
    folder = tmp_path_factory.mktemp("remine")
    pairs = folder / "pairs.tsv"
    pairs.write_text("anchor\tpositive\n" + "".join(f"{a}\t{p}\n" for a, p, _ in rows[:64]))
    out = folder / "mined.jsonl"
    code = main(["mine", "-m", tiny_model, "-d", str(pairs), "-o", str(out), "--output-format", "n-tuple",
                 "--num-negatives", "2", "--precision", "fp32", "--cache-dir", str(folder / "cache"), "--no-progress"])
    assert code == 0
    return out


def test_a_round_with_the_mining_model_reproduces_the_mined_file(ntuples, tiny):
    rows, _ = read_tuples(ntuples)
    rows = list(rows)
    before = list(rows)
    cb = ReMiningCallback(rows, every_n_steps=1, options=MineOptions(), batch_size=64)
    negatives, drift = cb.mine(tiny)
    cb.apply(negatives)
    assert rows == before  # same model, same rules, same corpus: the same negatives
    assert drift["remine/changed"] == 0.0 and drift["remine/short_rows"] == 0
    _, drift2 = cb.mine(tiny)
    assert drift2["remine/overlap@10"] == 1.0


def test_fit_remines_and_logs_drift(ntuples, tmp_path, capsys, tiny_model):
    code = main(["fit", "simcse-snli", f"output_dir={tmp_path}", f"data.train={ntuples}", "data.batch_size=8",
                 f"model.name={tiny_model}",
                 "trainer.max_steps=4", "eval.sts=[]", "remine.every_n_steps=2", "optim.lr=1e-4", "--json"])
    assert code == 0, capsys.readouterr().err
    run = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    with open(run / "logs" / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("remine/changed")]
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert 0 <= float(rows[1]["remine/changed"]) <= 1
    assert 0 <= float(rows[1]["remine/overlap@10"]) <= 1
    assert json.loads((run / "contrastlib_run.json").read_text())["status"] == "finished"


def test_remining_refuses_pairs_and_workers_before_work(ntuples, tmp_path, capsys, monkeypatch):
    """Refused before any model loads (a load here fails the test) and before anything is
    written: a scored-pair file, plain pairs (no negatives to re-mine), and DataLoader
    workers (they hold copies of the rows that re-mining changes in place)."""
    from contrastlib.encoders.text import TextEncoder

    def no_load(*_a, **_k):
        raise AssertionError("a model was loaded before the config was refused")

    monkeypatch.setattr(TextEncoder, "__init__", no_load)
    out = tmp_path / "runs"
    assert main(["fit", "simcse-snli", f"output_dir={out}", "remine.every_n_steps=2",
                 f"data.train={REPO / 'datasets' / 'stsb' / 'test.tsv'}"]) == 2
    err = capsys.readouterr().err
    assert "remine" in err or "column" in err
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("anchor\tpositive\n" + "".join(f"a{i}\tp{i}\n" for i in range(8)))
    assert main(["fit", "simcse-snli", f"output_dir={out}", "remine.every_n_steps=2", f"data.train={pairs}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "re-mining needs training rows (anchor, positive, negative_1..k)" in err, err
    # rows that re-mining takes (the n-tuples mined above), but with workers: refused too
    assert main(["fit", "simcse-snli", f"output_dir={out}", "remine.every_n_steps=2", f"data.train={ntuples}",
                 "data.num_workers=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "set data.num_workers: 0" in err, err
    assert main(["fit", "simcse-snli", f"output_dir={out}", "remine.every_n_steps=2", f"data.train={ntuples}",
                 "--dry-run"]) == 0  # the same rows without workers are accepted
    assert not out.exists()


def _remine_args(out: Path, train: Path, model: str, *, batch: int) -> list[str]:
    return [
        "fit", "simcse-snli", f"output_dir={out}", "name=x", f"model.name={model}",
        f"data.train={train}", f"data.batch_size={batch}", "model.dropout=0.0", "model.max_seq_length=32",
        # a small step: at 0.05 two steps move the tiny BERT so far that re-mining hardly
        # changes a row (remine/changed 0.008; the check below)
        "optim.name=sgd", "optim.lr=0.001", "optim.momentum=0.0", "optim.weight_decay=0.0",
        "optim.warmup_ratio=0.0", "optim.scheduler=constant", "trainer.precision=32-true",
        "trainer.max_steps=4", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
        "trainer.accelerator=cpu", "eval.sts=[]", "eval.precision=fp32", "remine.every_n_steps=2",
        "remine.range_min=3",  # not the file's rule: the first round changes the rows whatever training did
        # random batches: 64 rows are always 8 full global batches. The no-duplicates
        # sampler leaves a batch partial where texts collide (as the tiny BERT's mined
        # negatives do), and a partial batch of odd size is cut to a multiple of the world
        # size under DDP only (contrastlib/samplers/base.py), after which the two runs no
        # longer train on the same rows; that is tests/test_ddp_cli.py's no_duplicates case
        "data.sampler=random",
    ]


def test_ddp_ranks_train_on_the_rows_rank_0_remined(ntuples, tmp_path, tiny_model):
    """2 gloo ranks through the CLI against one process at twice the batch: the losses
    after each re-mining round agree only if every rank received rank 0's new rows."""
    runs = {}
    for name in ("ddp", "one"):
        (tmp_path / name).mkdir()
    done = dict(zip(("ddp", "one"), ddp_beside_one(
        _remine_args(tmp_path / "ddp", ntuples, tiny_model, batch=4), tmp_path / "ddp",
        _remine_args(tmp_path / "one", ntuples, tiny_model, batch=8)), strict=True))
    for name in ("ddp", "one"):
        assert done[name].returncode == 0, done[name].stderr[-3000:]
        with open(tmp_path / name / "x" / "logs" / "metrics.csv") as fh:
            runs[name] = list(csv.DictReader(fh))
    losses = {k: [float(r["train/loss"]) for r in v if r.get("train/loss")] for k, v in runs.items()}
    changed = {k: [float(r["remine/changed"]) for r in v if r.get("remine/changed")] for k, v in runs.items()}
    assert len(losses["ddp"]) == len(losses["one"]) == 4
    assert losses["ddp"] == pytest.approx(losses["one"], abs=1e-4)
    assert changed["ddp"] == pytest.approx(changed["one"], abs=1e-9) and len(changed["ddp"]) == 2
    assert changed["one"][0] > 0.5, "the rows did not change: the check would be empty"
    assert all(float(r["remine/short_rows"]) == 0 for r in runs["one"] if r.get("remine/short_rows"))
    # each rank encoded half the texts: the same embeddings, gathered
    encoded = {k: {float(r["remine/encoded_per_rank"]) for r in v if r.get("remine/encoded_per_rank")} for k, v in runs.items()}
    (total,) = encoded["one"]
    assert encoded["ddp"] == {float(-(-total // 2))}, encoded
