"""Several sources under Lightning's DDP through the CLI (``trainer.devices=2``, 2 gloo
processes), beside the same run in one process at twice the per-device batch: over a whole
epoch no global batch mixes sources, the two ranks' halves of each step are the one-process
run's batch at that step, and every row of every source is trained on once. A loss of the
test's own, imported by the run (``imports``), records the dataset rows of each batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests_helpers import start_cli, wait_cli

REPO = Path(__file__).resolve().parents[1]

RECORDER = '''
"""InfoNCE that writes each batch's dataset rows to $RECORD_DIR/<run>-<rank>.jsonl."""
import dataclasses, json, os

import torch.distributed as dist

from contrastlib.losses.info_nce_loss import InfoNCELoss
from contrastlib.registry import LOSSES


@LOSSES.register("recorded_info_nce", summary="InfoNCE recording its rows (a test plugin)")
class RecordedInfoNCE(InfoNCELoss):
    accepts = InfoNCELoss.accepts | {"ids"}

    def compute(self, x):
        rank = dist.get_rank() if dist.is_initialized() else 0
        path = os.path.join(os.environ["RECORD_DIR"], f"{os.environ['RECORD_RUN']}-{rank}.jsonl")
        with open(path, "a") as fh:
            fh.write(json.dumps(x.ids.tolist()) + "\\n")
        return super().compute(dataclasses.replace(x, ids=None) if "ids" not in InfoNCELoss.accepts else x)
'''
SIZES = {"nli": 44, "sts": 28}  # rows: 6 global batches of 8 (1 partial: 4), 4 (1 partial: 4)


@pytest.mark.slow
def test_ddp_batches_are_one_source_each_and_the_one_process_runs_batches(tmp_path, tiny_model):
    import os

    (tmp_path / "recorder.py").write_text(RECORDER)
    nli = tmp_path / "nli.tsv"
    nli.write_text("\n".join((REPO / "datasets" / "nli" / "snli-dev.tsv").read_text().splitlines()[: SIZES["nli"] + 1]) + "\n")
    sts = tmp_path / "sts.tsv"
    sts.write_text("\n".join((REPO / "datasets" / "stsb" / "train.tsv").read_text().splitlines()[: SIZES["sts"] + 1]) + "\n")
    common = ["fit", "simcse-snli", f"model.name={tiny_model}", f"imports=[{tmp_path / 'recorder.py'}]",
              f"data.train={{nli: {nli}, sts: {sts}}}", "loss.name=recorded_info_nce", "model.max_seq_length=24",
              "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "eval.sts=[]", "trainer.accelerator=cpu",
              f"output_dir={tmp_path}"]
    os.environ.update(RECORD_DIR=str(tmp_path), RECORD_RUN="ddp")
    ddp = start_cli([*common, "name=ddp", "data.batch_size=4"], tmp_path, devices=2)
    os.environ["RECORD_RUN"] = "one"
    one = start_cli([*common, "name=one", "data.batch_size=8"], tmp_path)
    for proc in (wait_cli(ddp), wait_cli(one)):
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir() if (p / "contrastlib_run.json").exists()) == ["ddp", "one"]

    def batches(name: str) -> list[list[int]]:
        return [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]

    rank0, rank1, single = batches("ddp-0"), batches("ddp-1"), batches("one-0")
    steps = [a + b for a, b in zip(rank0, rank1, strict=True)]
    assert len(steps) == len(single) == 6 + 4
    bound = SIZES["nli"]
    for k, (global_batch, one_batch) in enumerate(zip(steps, single, strict=True)):
        assert len({i < bound for i in global_batch}) == 1, (k, global_batch)  # one source
        assert global_batch == one_batch, k  # rank 0's half, then rank 1's: the same batch
    rows = np.sort(np.concatenate(steps))
    assert rows.tolist() == list(range(SIZES["nli"] + SIZES["sts"]))  # every row once
