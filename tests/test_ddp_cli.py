"""DDP through the command users run: ``contrastlib fit ... trainer.devices=2`` with
Lightning's own DDP strategy (2 gloo processes on CPU), against ``contrastlib fit`` in one
process at twice the per-device batch.

What must hold (issue: "DDP through the CLI"):

* exactly one run directory, marked finished, written by rank 0;
* with dropout off, every step's global batch is the 1-process run's batch, so the loss
  at every such step and the gradient at the first step agree within 1e-5, with the
  no-duplicates sampler and with plain shuffling. That is steps 1-3 here: the 4th global
  batch differs by design (3 rows in one process, cut to 2 so both ranks get one);
* after 3 steps the weights agree (tolerance below);
* a dataset whose size is not a multiple of the global batch trains without error (the
  data here has 27 rows: 3 full global batches of 8, then 3 rows cut to 2, one per rank).

The model is the tiny BERT (``tiny_model``, MiniLM's architecture type and tokenizer):
the equivalence holds or fails whatever the weights.

The optimizer is plain SGD (no momentum, no decay, constant lr), so a checkpoint after
step 1 gives the first-step gradient exactly: ``g1 = (w0 - w1) / lr``.

Tolerance after 3 steps: with SGD, ``w3 = w0 - lr * (g1 + g2 + g3)``, so weight differences
are ``lr`` times the summed gradient differences plus the drift those cause through the
loss curvature over two small steps. With gradients equal to 1e-5 (checked at step 1; the
losses, checked at every step, pin the trajectory) and lr = 0.1, three steps move the runs
apart by at most ~3 * 0.1 * 1e-5 = 3e-6 per weight, plus float32 rounding of weights of
size ~0.1 (ulp ~7e-9). We assert 1e-5, about 3x that bound; a run that saw a different
batch at any step differs by ~lr * |g| ~ 1e-3 on many weights, so the check discriminates.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from tests_helpers import run_cli, start_cli, train_losses, wait_cli

REPO = Path(__file__).resolve().parents[1]
PER_DEVICE, WORLD, ROWS, LR = 4, 2, 27, 0.1


def _data(tmp: Path) -> Path:
    lines = (REPO / "datasets" / "nli" / "snli-dev.tsv").read_text().splitlines()
    path = tmp / "train.tsv"
    path.write_text("\n".join(lines[: ROWS + 1]) + "\n")
    return path


def _args(out: Path, name: str, train: Path, sampler: str, model: str, *, batch: int) -> list[str]:
    return [
        "fit", "simcse-snli", f"model.name={model}",
        f"output_dir={out}", f"name={name}", f"data.train={train}", f"data.sampler={sampler}",
        f"data.batch_size={batch}", "model.dropout=0.0", "model.max_seq_length=32",
        "optim.name=sgd", f"optim.lr={LR}", "optim.momentum=0.0", "optim.weight_decay=0.0",
        "optim.warmup_ratio=0.0", "optim.scheduler=constant", "trainer.precision=32-true",
        "trainer.max_epochs=1", "trainer.log_every_n_steps=1", "trainer.checkpoint_every_n_steps=1",
        "trainer.keep_step_checkpoints=true", "trainer.enable_progress_bar=false", "eval.sts=[]",
        "trainer.accelerator=cpu",
    ]


def _encoder_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("encoder.") and v.is_floating_point()}


@pytest.fixture(scope="module")
def base_weights(tiny_model) -> dict[str, torch.Tensor]:
    from contrastlib.encoders import TextEncoder

    enc = TextEncoder(tiny_model)
    return {f"encoder.{k}": v.detach().clone() for k, v in enc.state_dict().items() if v.is_floating_point()}


# random: with -m slow. The default suite runs the same DDP-against-one-process comparison
# with data.sampler=random through the CLI in
# tests/mining/test_remining.py::test_ddp_ranks_train_on_the_rows_rank_0_remined (losses at
# every step), and the strategy's gradients and weights with no_duplicates here; the two
# samplers share the rank split (GlobalBatchSampler.local_batches)
# With -m slow, both: text under DDP equals one process at twice the batch in
# tests/mining/test_remining.py (re-mined rows, the random sampler), the no-duplicates
# sampler's split across ranks is checked in tests/test_samplers.py, and a DDP run with it,
# cut mid-epoch and resumed, below.
@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["no_duplicates", "random"])
def test_ddp_cli_equals_one_process_at_twice_the_batch(tmp_path, sampler, base_weights, tiny_model):
    train = _data(tmp_path)
    ddp_out, one_out = tmp_path / "ddp", tmp_path / "one"
    ddp_out.mkdir()
    one_out.mkdir()
    # the DDP run in its processes, the one-process run here while they start
    started = start_cli(_args(ddp_out, "x", train, sampler, tiny_model, batch=PER_DEVICE), ddp_out, devices=WORLD)
    one = run_cli(_args(one_out, "x", train, sampler, tiny_model, batch=WORLD * PER_DEVICE), one_out, in_process=True)
    ddp = wait_cli(started)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert one.returncode == 0, one.stderr[-3000:]

    # one run directory, finished, holding the result
    runs = [p for p in ddp_out.iterdir() if not p.name.startswith(".")]
    assert [p.name for p in runs] == ["x"], runs
    marker = json.loads((ddp_out / "x" / "contrastlib_run.json").read_text())
    assert marker["status"] == "finished" and marker["launch"]["precision"] == "32-true"
    metrics = json.loads((ddp_out / "x" / "metrics.json").read_text())
    # 27 rows, global batch 8: 3 full steps and a last one of 2 rows (one per rank)
    assert metrics["steps"] == 4
    assert "run: " in ddp.stdout and ddp.stdout.count("run: ") == 1, "only rank 0 reports"

    # the loss at every step (sync_dist: the mean over ranks = the global batch's loss)
    ddp_losses, one_losses = train_losses(ddp_out / "x"), train_losses(one_out / "x")
    assert len(ddp_losses) == len(one_losses) == 4
    for step, (a, b) in enumerate(zip(ddp_losses[:3], one_losses[:3], strict=True), start=1):
        assert a == pytest.approx(b, abs=1e-5), f"step {step}: {a} vs {b}"

    # the first step's gradient: g1 = (w0 - w1) / lr
    ckpts = ddp_out / "x" / "checkpoints", one_out / "x" / "checkpoints"
    w1_ddp, w1_one = (_encoder_weights(c / "step-1.ckpt") for c in ckpts)
    moved = 0
    for k, w0 in base_weights.items():
        if k not in w1_ddp:
            continue
        g_ddp, g_one = (w0 - w1_ddp[k]) / LR, (w0 - w1_one[k]) / LR
        torch.testing.assert_close(g_ddp, g_one, atol=1e-5, rtol=0, msg=lambda m, k=k: f"{k}: {m}")
        moved += int(g_one.abs().max() > 1e-4)
    trainable = [k for k in base_weights if k in w1_ddp and ".pooler." not in k]
    assert moved > len(trainable) // 2, "the first step changed almost nothing: the comparison would be empty"

    # after 3 steps the weights agree (see the module docstring for the tolerance)
    w3_ddp, w3_one = (_encoder_weights(c / "step-3.ckpt") for c in ckpts)
    for k in w3_one:
        torch.testing.assert_close(w3_ddp[k], w3_one[k], atol=1e-5, rtol=0, msg=lambda m, k=k: f"{k}: {m}")


def test_ddp_run_cut_mid_epoch_and_resumed_equals_the_uninterrupted_one(tmp_path, tiny_model):
    """Two gloo ranks through the CLI, dropout on: cut by max_steps in the middle of the
    first epoch, resumed with ``resume=true``, the run logs the same losses and ends at
    the same weights as an uninterrupted one: each rank restores the saved position in
    the epoch and its own random state (restoring rank 0's on both diverged at step 2)."""
    train = _data(tmp_path)

    def start(name: str, *extra: str) -> subprocess.Popen[str]:
        return start_cli([
            "fit", "simcse-snli", f"output_dir={tmp_path}", f"name={name}", f"model.name={tiny_model}",
            f"data.train={train}", f"data.batch_size={PER_DEVICE}", "model.max_seq_length=32",
            "optim.scheduler=constant", "optim.warmup_ratio=0.0", "trainer.precision=32-true",
            "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
            "eval.sts=[]", "trainer.accelerator=cpu", *extra,
        ], tmp_path, devices=WORLD)

    # the uninterrupted run and the cut one side by side (independent runs), then the resume
    runs = [start("whole"), start("cut", "trainer.max_steps=2")]
    for done in [wait_cli(p) for p in runs] + [wait_cli(start("cut", "resume=true"))]:
        assert done.returncode == 0, done.stderr[-3000:]
    assert "not resumable" not in done.stderr

    from contrastlib.report import read_logs  # every logs/**/metrics.csv, resumes included

    whole, cut = (dict(read_logs(tmp_path / name)["train/loss"]) for name in ("whole", "cut"))
    assert sorted(whole) == sorted(cut) == list(range(8))  # 4 global batches an epoch, 2 epochs
    for step in whole:
        assert cut[step] == pytest.approx(whole[step], abs=1e-6), step
    a = _encoder_weights(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    b = _encoder_weights(tmp_path / "cut" / "checkpoints" / "last.ckpt")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
