"""The linear probe against an independent softmax regression; how C is chosen; the
evaluator and ``contrastlib eval linear`` on the bundled digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastlib.evaluation.linear import C_GRID, LinearEvaluator, linear_probe

BUNDLED = Path(__file__).resolve().parents[2] / "contrastlib" / "datasets" / "digits"


def _blobs(seed: int, n_train: int = 300, n_test: int = 120, dim: int = 16, classes: int = 5):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 1.5
    ytr, yte = rng.integers(0, classes, n_train), rng.integers(0, classes, n_test)
    scale = rng.uniform(0.5, 4.0, size=dim)  # unequal feature scales: standardisation matters
    xtr = (centers[ytr] + rng.normal(scale=1.5, size=(n_train, dim))) * scale + 3.0
    xte = (centers[yte] + rng.normal(scale=1.5, size=(n_test, dim))) * scale + 3.0
    return xtr, ytr, xte, yte


def torch_softmax_regression(xtr, ytr, xte, C):
    """The same objective written out: standardise with the training statistics, then
    minimise ``C * sum_i CE(W x_i + b, y_i) + ||W||^2 / 2`` (no penalty on b) by L-BFGS."""
    x = torch.tensor(xtr, dtype=torch.float64)
    mean, std = x.mean(0), x.std(0, unbiased=False)
    x = (x - mean) / std
    xt = (torch.tensor(xte, dtype=torch.float64) - mean) / std
    y = torch.tensor(ytr)
    k = int(y.max()) + 1
    w = torch.zeros(x.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=5000, tolerance_grad=1e-12, tolerance_change=1e-15,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = C * torch.nn.functional.cross_entropy(x @ w + b, y, reduction="sum") + 0.5 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return torch.softmax(xt @ w + b, dim=1).numpy()


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_probe_matches_an_independent_softmax_regression(C):
    xtr, ytr, xte, yte = _blobs(int(C * 100))
    r = linear_probe(xtr, ytr, xte, yte, C=C, max_iter=5000)
    proba = torch_softmax_regression(xtr, ytr, xte, C)
    ref = proba.argmax(1)
    assert (r.predictions == ref).mean() >= 0.99
    assert r.top1 == pytest.approx(100 * np.mean(ref == yte), abs=1.0)
    assert 30 < r.top1 < 100  # neither trivial nor perfect: the comparison means something
    assert r.C == C and r.search == {}


def test_auto_C_is_chosen_without_looking_at_the_test_labels():
    xtr, ytr, xte, yte = _blobs(3)
    a = linear_probe(xtr, ytr, xte, yte, C="auto")
    shuffled = np.random.default_rng(0).permutation(yte)
    b = linear_probe(xtr, ytr, xte, shuffled, C="auto")
    assert a.C == b.C and a.search == b.search
    assert set(a.search) == set(C_GRID)
    assert a.search[a.C] == max(a.search.values())
    assert (a.predictions == b.predictions).all()  # the fit never saw the test labels


def test_bad_inputs_are_refused():
    xtr, ytr, xte, yte = _blobs(4)
    with pytest.raises(ValueError, match="C must be"):
        linear_probe(xtr, ytr, xte, yte, C=0)
    with pytest.raises(ValueError, match="two classes"):
        linear_probe(xtr, np.zeros_like(ytr), xte, yte)
    bad = xtr.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        linear_probe(bad, ytr, xte, yte)
    with pytest.raises(ValueError, match="differ in length"):
        linear_probe(xtr, ytr[:-1], xte, yte)


def test_evaluator_on_the_bundled_digits_pixels():
    spec = {"train": str(BUNDLED / "digits-train.npz"), "test": str(BUNDLED / "digits-test.npz"), "size": 8,
            "channels": 1, "C": 1.0}
    ev = LinearEvaluator.from_spec(spec, batch_size=512, precision="fp32")
    from contrastlib.evaluation.knn import PixelEncoder

    m = ev(PixelEncoder())
    # sklearn's own logistic regression on the 8x8 digits is ~96-97%
    assert 93 < m["top1"] <= 100 and m["C"] == 1.0
    assert ev.last_test[0].shape == (355, 64)


def test_evaluator_spec_errors_name_the_key():
    from contrastlib.errors import ConfigError

    base = {"train": str(BUNDLED / "digits-train.npz"), "test": str(BUNDLED / "digits-test.npz")}
    with pytest.raises(ConfigError, match="eval.linear.C"):
        LinearEvaluator.from_spec({**base, "C": -1}, batch_size=8, precision="fp32")
    with pytest.raises(ConfigError, match="eval.linear.preset: unknown key"):
        LinearEvaluator.from_spec({**base, "preset": "lightly"}, batch_size=8, precision="fp32")


def test_cli_eval_linear_pixels_and_a_bad_file(tmp_path, capsys):
    """In-process (a process of its own adds nothing here: the real exit path of a one-line
    error is tests/cli/test_cli.py::test_bad_config_key_is_one_line_exit_2_in_a_real_process)."""
    from contrastlib.cli.main import main

    train, test = str(BUNDLED / "digits-train.npz"), str(BUNDLED / "digits-test.npz")
    assert main(["eval", "linear", "--model", "pixels", "--train", train, "--test", test, "--size", "8",
                 "--channels", "1", "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["task"] == "linear" and out["top1"] > 93 and out["C"] in C_GRID
    bad = tmp_path / "bad"
    (bad / "cat").mkdir(parents=True)
    (bad / "cat" / "0.png").write_bytes(b"not a png at all")
    (bad / "dog").mkdir()
    assert main(["eval", "linear", "--model", "pixels", "--train", str(bad), "--test", test, "--no-progress"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "0.png" in lines[0] and "Traceback" not in err, err
    assert main(["eval", "linear", "--model", "pixels", "--train", train, "--test", test, "--C", "zero"]) == 2
    assert "--C" in capsys.readouterr().err


def test_knn_and_linear_on_one_set_embed_it_once_per_round():
    from contrastlib.evaluation import KNNEvaluator, run_evaluations
    from contrastlib.evaluation.knn import PixelEncoder

    class Counting(PixelEncoder):
        rows = 0

        def features(self, x):
            Counting.rows += len(x)
            return super().features(x)

    spec = {"train": str(BUNDLED / "digits-train.npz"), "test": str(BUNDLED / "digits-test.npz"), "size": 8,
            "channels": 1}
    knn = KNNEvaluator.from_spec({**spec, "preset": "solo-learn"}, batch_size=512, precision="fp32")
    lin = LinearEvaluator.from_spec({**spec, "C": 1.0}, batch_size=512, precision="fp32")
    shared = run_evaluations([knn, lin], Counting())
    assert Counting.rows == 1442 + 355  # each set once, not once per evaluator
    alone = {e.name: e(PixelEncoder()) for e in (knn, lin)}
    assert shared == alone  # the same figures as separate calls
