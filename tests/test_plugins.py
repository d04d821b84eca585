"""A new part is one file: a loss, a sampler and an evaluation written in a package of the
user's own, registered by being imported (``imports`` in the config), train and evaluate
through ``contrastlib fit`` without touching any file of contrastlib. The same real
process shows what reaches a user's terminal: no framework banner or third-party
deprecation notice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

LOSS = '''
"""A loss of the user's own: InfoNCE with a different temperature convention."""
import os

from contrastlib.losses.base import LossInputs, ScaledLoss, pair_form
from contrastlib.losses.functional import info_nce
from contrastlib.registry import LOSSES


@LOSSES.register("halved_info_nce", summary="InfoNCE, halved (a test plugin)")
class HalvedInfoNCE(ScaledLoss):
    def compute(self, x: LossInputs):
        anchors, candidates = pair_form(x, "halved_info_nce")
        with open(os.environ["PLUGIN_LOG"], "a") as fh:
            fh.write("loss\\n")
        return info_nce(anchors, candidates, temperature=self.temperature()) / 2
'''

SAMPLER = '''
"""A sampler of the user's own: rows in reverse order."""
import os

from contrastlib.registry import SAMPLERS
from contrastlib.samplers.base import GlobalBatchSampler


@SAMPLERS.register("reversed", summary="rows in reverse order (a test plugin)")
class ReversedSampler(GlobalBatchSampler):
    def global_batches(self, epoch, global_batch_size):
        with open(os.environ["PLUGIN_LOG"], "a") as fh:
            fh.write("sampler\\n")
        order = list(range(self.num_rows))[::-1]
        return [order[i : i + global_batch_size] for i in range(0, len(order), global_batch_size)]
'''

EVALUATION = '''
"""An evaluation of the user's own: the mean cosine of each line's two halves."""
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from contrastlib.evaluation.base import Evaluation
from contrastlib.registry import EVALUATIONS


@EVALUATIONS.register("halves", summary="mean cosine of each line's two halves (a test plugin)")
@dataclass
class Halves(Evaluation):
    takes: ClassVar[str] = "strings"
    main_metric: ClassVar[str] = "cosine"
    name: str
    pairs: list

    @classmethod
    def from_entry(cls, entry, *, batch_size, precision):
        lines = [line.split("|") for line in open(entry).read().splitlines() if line]
        return cls(f"halves:{entry}", lines)

    def __call__(self, encoder, cache=None):
        a = encoder.encode([p[0] for p in self.pairs])
        b = encoder.encode([p[1] for p in self.pairs])
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return {"cosine": float((a * b).sum(axis=1).mean() * 100), "pairs": float(len(self.pairs))}
'''


#: Lines a framework prints that a user of contrastlib should not see.
BANNERS = ("GPU available", "TPU available", "HPU available", "LitLogger", "litlogger", "💡", "Tip:",
           "deprecated", "Deprecation", "FutureWarning", "Loading weights", "Writing model shards")


def test_a_loss_a_sampler_and_an_evaluation_of_ones_own_train_through_the_cli(tmp_path, tiny_model):
    package = tmp_path / "plugins" / "myparts"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, source in (("myloss", LOSS), ("mysampler", SAMPLER), ("myeval", EVALUATION)):
        (package / f"{name}.py").write_text(textwrap.dedent(source))
    data = tmp_path / "pairs.tsv"
    data.write_text("anchor\tpositive\n" + "".join(f"sentence number {i}\tthe {i}-th sentence\n" for i in range(12)))
    halves = tmp_path / "halves.txt"
    halves.write_text("".join(f"a cat {i}|a kitten {i}\n" for i in range(5)))
    log = tmp_path / "plugin.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "plugins"), os.environ.get("PYTHONPATH", "")]),
           "PLUGIN_LOG": str(log), "OMP_NUM_THREADS": "1"}
    env.pop("CONTRASTLIB_JOB_DIR", None)
    args = ["fit", "simcse-snli", f"output_dir={tmp_path / 'runs'}", "name=plugged", f"model.name={tiny_model}",
            f"data.train={data}", "data.batch_size=4", "trainer.max_steps=3", "trainer.enable_progress_bar=false",
            "imports=[myparts.myloss,myparts.mysampler,myparts.myeval]", "loss.name=halved_info_nce",
            "data.sampler=reversed", "eval.sts=[]", f"eval.halves=[{halves}]", "--json"]
    proc = subprocess.run([sys.executable, "-m", "contrastlib", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["steps"] == 3
    name = f"halves:{halves}"
    assert set(result["before"]) == {name} and result["after"][name]["pairs"] == 5
    calls = log.read_text().split()
    assert calls.count("loss") == 3 and "sampler" in calls
    # what reached the terminal: contrastlib's own lines, no framework banner or
    # third-party deprecation notice (utils/quiet.py)
    out = proc.stdout + proc.stderr
    assert "precision:" in out and "cosine" in out
    shown = [b for b in BANNERS if b in out]
    assert not shown, (shown, out[-3000:])


def test_an_import_that_fails_is_a_one_line_error(tmp_path, capsys):
    from contrastlib.cli.main import main

    assert main(["fit", "simcse-snli", "imports=[no_such_module_here]", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: imports: no_such_module_here: ModuleNotFoundError") and err.count("\n") == 1
