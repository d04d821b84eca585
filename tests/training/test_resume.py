"""Exact resume through the CLI: SIGKILL mid-epoch, ``resume=true``, and the run ends where
an uninterrupted one does (weights and per-step losses); a corrupt last checkpoint falls
back to the previous one; checkpoints load with ``weights_only=True``."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastlib.cli.main import main
from contrastlib.report import read_logs
from contrastlib.samplers.base import GlobalBatchSampler
from contrastlib.training.resume import (
    checkpoint_step,
    resume_checkpoint,
    rng_states,
    set_rng_states,
)

# SimCSE (dropout views: the random state matters) on the bundled SNLI triplets:
# 10 steps an epoch, 2 epochs, a checkpoint every 3 steps; on the tiny BERT (``tiny_run``):
# an exact resume is a property of the run's state, not of the weights
RUN = ["simcse-snli", "data.max_rows=80", "data.batch_size=8", "model.max_seq_length=24", "trainer.max_epochs=2",
       "trainer.checkpoint_every_n_steps=3", "trainer.keep_step_checkpoints=true", "trainer.log_every_n_steps=1",
       "trainer.enable_progress_bar=false", "eval.sts=[]", "optim.warmup_ratio=0.2"]
STEPS_PER_EPOCH = 10
_SMALL_IMAGES = ["model.name=resnet10t", "model.projection=[64,32]", "data.max_rows=96", "data.batch_size=16",
                 "method.augment.size=8",
                 "trainer.precision=32-true", "eval.knn=[]", "eval.linear=[]", "eval.every_n_epochs=null"]
_EVERY_3 = ["trainer.max_epochs=2", "trainer.checkpoint_every_n_steps=3", "trainer.keep_step_checkpoints=true",
            "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false"]
#: every method family, each with what its resume must carry: (recipe and overrides, steps an epoch)
METHODS = {
    "simcse-text": (RUN, STEPS_PER_EPOCH),
    # views drawn in 2 DataLoader workers; the online linear probe trains alongside
    "simclr-2-workers": (["simclr-digits", *_SMALL_IMAGES, "data.num_workers=2", "method.online_probe=true", *_EVERY_3], 6),
    # the queue, its pointer, the momentum encoder and its schedule
    "moco-v2-queue": (["moco-digits", *_SMALL_IMAGES, "method.version=2", "method.queue_size=40",
                       "method.key_momentum=0.9", *_EVERY_3], 6),
    # two sources (SNLI triplets with prompts, STS-B pairs under CoSENT at weight 0.5), batches
    # in a seeded proportional order: each source's sampler and the order carry over
    "simcse-two-sources": ([*RUN, "data.max_rows=40",
                            "data.train={nli: '${bundled:nli/snli-dev.tsv}', sts: {path: '${bundled:stsb/train.tsv}', "
                            "loss: {name: cosent}, weight: 0.5}}", "data.prompts='query: '"], STEPS_PER_EPOCH),
    # LoRA adapters (peft) on the tiny BERT: the adapters and their dropout state carry over
    "simcse-lora": ([*RUN, "model.lora={rank: 4, dropout: 0.1}"], STEPS_PER_EPOCH),
    # a fine-tuned encoder with dropout under a reward head, held-out normalisation at the end
    "reward-finetune": (["reward-hh", "method.frozen=false", "model.max_seq_length=32", "data.max_rows=60",
                         "data.batch_size=8", "data.on_bad_row=skip", "eval.batch_size=64", *_EVERY_3], None),
}


#: the text methods, run on the tiny BERT (``model.name`` added in the test)
TEXT_METHODS = ("simcse-text", "simcse-two-sources", "simcse-lora", "reward-finetune")


@pytest.fixture
def tiny_run(tiny_model) -> list[str]:
    return [*RUN, f"model.name={tiny_model}"]


def _losses(run: Path) -> dict[int, float]:
    """The logged loss by step, a resumed run's logs included (the report's own reader)."""
    return dict(read_logs(run)["train/loss"])


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def _fit_process(out: Path, name: str, *extra: str, run: list[str] = RUN) -> subprocess.Popen[bytes]:
    """``contrastlib fit`` in a process of its own; its stderr goes to ``out/NAME[-resume].err``
    (a file, not a pipe: nobody reads a pipe while another run is watched)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(out / f"{name}{'-resume' if extra else ''}.err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "contrastlib", "fit", *run, f"output_dir={out}", f"name={name}", *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=err,
        )


def _stderr(out: Path, name: str, resumed: bool = False) -> str:
    return (out / f"{name}{'-resume' if resumed else ''}.err").read_text(errors="replace")


#: slow (kept out of the default suite's 15 minutes), each covered there by another test:
#: SimCLR's views in workers by tests/vision/test_simclr.py; text SimCSE's mid-epoch resume
#: by test_gradient_cache_run_resumes_mid_epoch_exactly and tests/test_ddp_cli.py; the
#: fine-tuned reward model's mid-epoch resume by test_reward_run_cut_mid_epoch_resumes_exactly
#: (cut by max_steps, in-process: 3 processes' imports less); a real SIGKILL by moco-v2-queue
SLOW_METHODS = ("simclr-2-workers", "simcse-text", "simcse-two-sources", "simcse-lora", "reward-finetune")


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_METHODS else m
                                    for m in METHODS])
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, method, tiny_model):
    run, steps_per_epoch = METHODS[method]
    if method in TEXT_METHODS:
        run = [*run, f"model.name={tiny_model}"]
    # every run in a process of its own, started alike (a run in the pytest process ended
    # 2e-6 (reward) to 2e-3 (MoCo) away from one in a fresh process at the first step after
    # the kill, and the comparison is exact); the uninterrupted one beside the one killed
    whole = _fit_process(tmp_path, "whole", run=run)
    cut = _fit_process(tmp_path, "cut", run=run)
    first = tmp_path / "cut" / "checkpoints" / "step-3.ckpt"
    deadline = time.time() + 600
    while not first.exists() and cut.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    cut.send_signal(signal.SIGKILL)  # the main process only, as the OOM killer does; workers see it go
    cut.wait()
    assert cut.returncode == -signal.SIGKILL
    assert whole.wait(timeout=600) == 0, _stderr(tmp_path, "whole")[-2000:]
    a = _losses(tmp_path / "whole")
    total = max(a) + 1
    steps_per_epoch = steps_per_epoch or total // 2  # the reward split is by prompt hash: read it off the run
    assert sorted(a) == list(range(total)) and total == 2 * steps_per_epoch
    # the kill may land between the step checkpoint and last.ckpt: resume takes the newest
    killed_at = checkpoint_step(resume_checkpoint(tmp_path / "cut", warn=lambda _m: None))
    assert killed_at is not None and killed_at % steps_per_epoch != 0, killed_at  # mid-epoch
    assert '"status": "running"' in (tmp_path / "cut" / "contrastlib_run.json").read_text()

    resumed = _fit_process(tmp_path, "cut", "resume=true", run=run)
    assert resumed.wait(timeout=600) == 0, _stderr(tmp_path, "cut", resumed=True)[-2000:]
    log = _stderr(tmp_path, "cut", resumed=True)
    assert "not resumable" not in log  # Lightning's warning for a loader that restarts the epoch
    assert "weights_only" not in log  # no unsafe-load warning either

    b = _losses(tmp_path / "cut")
    after = [s for s in range(killed_at, total)]
    assert all(s in b for s in after)
    for step in after:  # the resumed steps see the same batches and dropout masks
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7), step
    wa, wb = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=0, msg=k)


def test_corrupt_last_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, tiny_run):
    common = [*tiny_run, f"output_dir={tmp_path}", "name=r", "trainer.checkpoint_every_n_steps=2",
              "trainer.keep_step_checkpoints=false"]
    assert main(["fit", *common, "trainer.max_steps=4"]) == 0
    ckpts = tmp_path / "r" / "checkpoints"
    assert checkpoint_step(ckpts / "last.ckpt") == 4 and checkpoint_step(ckpts / "previous.ckpt") == 4
    # last.ckpt was re-saved at the end of fit: the previous one holds the same step.
    data = (ckpts / "last.ckpt").read_bytes()
    (ckpts / "last.ckpt").write_bytes(data[: len(data) // 2])  # truncated, as by a full disk
    capsys.readouterr()
    assert main(["fit", *common, "trainer.max_steps=6", "resume=true"]) == 0
    err = capsys.readouterr()
    assert "last.ckpt is truncated or corrupt; resuming from previous.ckpt (step 4)" in err.out + err.err
    assert checkpoint_step(ckpts / "last.ckpt") == 6


def test_resume_checkpoint_picks_the_newest_that_loads(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for step in (2, 4):
        torch.save({"global_step": step, "w": torch.full((64,), 7.0)}, ckpts / f"step-{step}.ckpt")
    (ckpts / "last.ckpt").write_bytes(b"PK\x03\x04 not a checkpoint")
    seen = []
    assert resume_checkpoint(tmp_path, warn=seen.append) == ckpts / "step-4.ckpt"
    assert "truncated or corrupt" in seen[0] and "step-4.ckpt (step 4)" in seen[0]
    # a flipped byte inside the data fails the zip checksum, not only a truncation
    raw = bytearray((ckpts / "step-4.ckpt").read_bytes())
    i = raw.find(torch.full((64,), 7.0).numpy().tobytes())
    assert i > 0
    raw[i + 100] ^= 0x01  # one bit of one weight
    (ckpts / "step-4.ckpt").write_bytes(bytes(raw))
    assert resume_checkpoint(tmp_path, warn=seen.append) == ckpts / "step-2.ckpt"
    for p in ckpts.iterdir():
        p.unlink()
    from contrastlib.errors import ConfigError

    with pytest.raises(ConfigError, match="no earlier checkpoint"):
        resume_checkpoint(tmp_path)


def test_random_state_round_trips_through_a_weights_only_load(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    torch.save({"rng": rng_states()}, tmp_path / "s.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_states(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[2] == expected[2]


def test_sampler_resumes_inside_its_epoch_once():
    class Ordered(GlobalBatchSampler):
        def global_batches(self, epoch, size):
            order = torch.randperm(self.num_rows, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
            return [order[i : i + size] for i in range(0, self.num_rows, size)]

    s = Ordered(list(range(40)), 4, seed=1, num_replicas=1, rank=0)
    s.set_epoch(3)
    full = list(s)
    s.resume_at(3, 4)
    assert list(s) == full[4:]
    assert list(s) == full  # only the first iteration skips
    s.resume_at(2, 4)  # a position in an epoch that ended: nothing skipped in the next
    assert list(s) == full


def test_gradient_cache_run_resumes_mid_epoch_exactly(tmp_path, tiny_run):
    # a constant schedule: a run cut by max_steps follows the uninterrupted one's schedule
    common = [*tiny_run, f"output_dir={tmp_path}", "gradcache.chunk_size=4",
              "trainer.accumulate_grad_batches=2", "optim.scheduler=constant", "optim.warmup_ratio=0",
              "trainer.max_epochs=3", "trainer.checkpoint_every_n_steps=1000", "trainer.keep_step_checkpoints=false"]
    assert main(["fit", *common, "name=whole"]) == 0
    assert main(["fit", *common, "name=cut", "trainer.max_steps=7"]) == 0  # 14 of 40 batches: mid-epoch 2
    assert main(["fit", *common, "name=cut", "resume=true"]) == 0
    a, b = _losses(tmp_path / "whole"), _losses(tmp_path / "cut")
    assert sorted(a) == sorted(b) and len(a) == 30  # logged per batch under the gradient cache
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7), step
    wa, wb = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=0, msg=k)


def test_reward_run_cut_mid_epoch_resumes_exactly(tmp_path, tiny_model):
    """The fine-tuned reward model (encoder and head): cut by max_steps in the middle of
    its first epoch and resumed, the run logs the losses of an uninterrupted one and ends
    with its weights (a constant learning rate: a run cut by max_steps follows the
    uninterrupted one's schedule)."""
    run, _ = METHODS["reward-finetune"]
    common = [*run, f"model.name={tiny_model}", f"output_dir={tmp_path}", "optim.scheduler=constant",
              "optim.warmup_ratio=0", "trainer.checkpoint_every_n_steps=1000", "trainer.keep_step_checkpoints=false"]
    assert main(["fit", *common, "name=whole"]) == 0
    a = _losses(tmp_path / "whole")
    total = max(a) + 1
    cut_at = total // 2 - 1  # mid-epoch: 2 epochs, cut one step before the first one ends
    assert main(["fit", *common, "name=cut", f"trainer.max_steps={cut_at}"]) == 0
    assert main(["fit", *common, "name=cut", "resume=true"]) == 0
    b = _losses(tmp_path / "cut")
    assert sorted(a) == sorted(b) == list(range(total)) and 0 < cut_at < total // 2
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7), step
    wa, wb = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert any(k.startswith("head.") for k in wa) and any(k.startswith("encoder.") for k in wa)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=0, msg=k)


def test_the_same_seed_repeats_a_cpu_run_exactly_and_another_seed_does_not(tmp_path, tiny_run):
    """Determinism: two runs with ``seed=7`` end with identical weights (dropout on, shuffled
    batches); ``seed=8`` differs."""
    tiny = [*tiny_run, "data.max_rows=24", "trainer.max_epochs=1", f"output_dir={tmp_path}", "trainer.checkpoint_every_n_steps=100"]
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        assert main(["fit", *tiny, f"name={name}", f"seed={seed}"]) == 0
    a, b, c = (_weights(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
