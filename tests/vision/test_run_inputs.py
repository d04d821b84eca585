"""A run carries its input contract: ``eval knn`` / ``eval linear`` on an image run read
images at the size and channels the run trained at, unless told otherwise."""

from __future__ import annotations

import json
from pathlib import Path

from contrastlib.cli.main import main

DIGITS = Path(__file__).resolve().parents[2] / "datasets" / "digits"


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _subset(src: Path, out: Path, n: int) -> str:
    import numpy as np

    with np.load(src) as z:
        np.savez(out, **{k: z[k][:n] for k in z.files})
    return str(out)


def test_knn_and_linear_use_the_size_the_run_trained_at(tmp_path, capsys):
    train = _subset(DIGITS / "digits-train.npz", tmp_path / "train.npz", 200)
    test = _subset(DIGITS / "digits-test.npz", tmp_path / "test.npz", 100)
    assert main(["fit", "simclr-digits", f"output_dir={tmp_path}", "name=r16", "model.name=resnet10t",
                 "model.projection=[16,8]", f"data.train={train}", "data.max_rows=64", "data.batch_size=16", "trainer.max_steps=2",
                 "trainer.enable_progress_bar=false", "method.online_probe=false", "method.augment.size=16",
                 "eval.knn=[]", "eval.linear=[]", "eval.projection=none"]) == 0
    run = str(tmp_path / "r16")
    saved = json.loads((tmp_path / "r16" / "model" / "encoder.json").read_text())
    assert saved["extras"] == {"input_size": 16, "input_channels": 3}
    common = ["--train", train, "--test", test, "--json", "--no-progress"]
    for task, extra in (("knn", ["--preset", "solo-learn"]), ("linear", ["--C", "1.0", "--max-iter", "50"])):
        assert main(["eval", task, "--model", run, *common, *extra]) == 0
        default = _json(capsys)
        assert main(["eval", task, "--model", run, "--size", "16", *common, *extra]) == 0
        assert _json(capsys)["top1"] == default["top1"]  # the run's own 16 px
        assert main(["eval", task, "--model", run, "--size", "32", *common, *extra]) == 0
        assert _json(capsys)["top1"] != default["top1"]  # told otherwise: other images, other figures
