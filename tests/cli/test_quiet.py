"""What reaches a user's terminal from ``contrastlib fit``: contrastlib's own lines, not
the frameworks' banners or their deprecation notices about each other."""

from __future__ import annotations

import os
import subprocess
import sys

BANNERS = ("GPU available", "TPU available", "HPU available", "LitLogger", "litlogger", "💡", "Tip:",
           "deprecated", "Deprecation", "FutureWarning", "Loading weights", "Writing model shards")


def test_a_fit_prints_no_framework_banner_or_third_party_deprecation(tmp_path, tiny_model):
    sts = tmp_path / "sts.tsv"
    sts.write_text("sentence1\tsentence2\tscore\n" + "".join(f"a cat {i}\ta kitten {i}\t{i % 5}\n" for i in range(8)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "contrastlib", "fit", "quickstart", f"output_dir={tmp_path}", f"model.name={tiny_model}",
         "data.max_rows=32", "data.batch_size=8", "trainer.log_every_n_steps=1", f"eval.sts=[{sts}]"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "precision:" in out and "spearman" in out  # our own lines are there
    shown = [b for b in BANNERS if b in out]
    assert not shown, (shown, out[-3000:])
