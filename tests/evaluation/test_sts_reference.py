"""`contrastlib eval sts` reproduces MTEB's published figures for all-MiniLM-L6-v2.

MTEB (and ../shared/data/README.md): STS-B test 82.03, SICK-R (train+dev+test, 9,927
pairs) 77.58, SICK-R test alone 77.15. Ours must be within 0.05.
"""

from __future__ import annotations

import json

import pytest
from tests_helpers import shared

from contrastlib.cli.main import main


@pytest.mark.parametrize(
    "parts,expected,n_pairs",
    [
        (("sts", "stsb", "test.tsv"), 82.03, 1379),
        (("sts", "sickr"), 77.58, 9927),
        (("sts", "sickr", "test.tsv"), 77.15, 4927),
    ],
)
def test_eval_sts_reproduces_mteb(capsys, parts, expected, n_pairs):
    data = shared(*parts)
    assert main(["eval", "sts", "--model", "all-MiniLM-L6-v2", "--data", str(data), "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n_pairs"] == n_pairs
    assert out["spearman"] == pytest.approx(expected, abs=0.05)


def test_sickr_as_three_files_equals_directory(capsys):
    d = shared("sts", "sickr")
    files = [str(d / f"{s}.tsv") for s in ("train", "dev", "test")]
    args = ["eval", "sts", "-m", "all-MiniLM-L6-v2", "--json", "--no-progress"]
    data_args = [arg for f in files for arg in ("--data", f)]
    assert main([*args, *data_args]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n_pairs"] == 9927 and out["spearman"] == pytest.approx(77.58, abs=0.05)
