"""``report.html``: fit writes it at the end of every run (failed ones too); ``contrastlib
report`` rewrites it; a real headless Chromium renders it with every image decoded."""

from __future__ import annotations

import re
import struct

import pytest
from tests_helpers import QUICKSTART_RUN_STEPS

from contrastlib.cli.main import main
from contrastlib.report import chromium, read_logs, rendered_dom


@pytest.fixture
def run(quickstart_run):
    """The session's short fit (conftest.quickstart_run): 2 epochs on the tiny BERT, STS
    on 8 pairs in sts.tsv after every epoch; fit wrote its report.html at the end."""
    return quickstart_run


def test_fit_writes_a_self_contained_report(run):
    page = (run / "report.html").read_text()
    assert "<span class='status finished' id='status'>finished</span>" in page
    assert "sts.tsv" in page and "spearman" in page.lower()  # the evaluation table, before and after
    assert page.count("data:image/png;base64,") >= 2  # the curves and the run's eval_curve.png
    assert "plots/eval_curve.png" in page
    assert "name: smoke" in page  # the resolved config
    assert "AVX" in page or "cpu" in page  # the hardware section
    # nothing is fetched from elsewhere
    assert not re.search(r"""(src|href)=['"](https?:|//)""", page)
    logs = read_logs(run)
    assert [s for s, _ in logs["train/loss"]] == list(range(QUICKSTART_RUN_STEPS))


def test_a_failed_run_still_gets_a_report(tmp_path, monkeypatch, tiny_model):
    import contrastlib.pipeline

    def boom(*_a, **_k):
        raise RuntimeError("the loader broke")

    monkeypatch.setattr(contrastlib.pipeline, "build_loader", boom)  # after the model loads
    with pytest.raises(RuntimeError, match="the loader broke"):
        main(["fit", "simcse-snli", f"output_dir={tmp_path}", "name=f", "data.max_rows=16", "eval.sts=[]",
              f"model.name={tiny_model}"])
    page = (tmp_path / "f" / "report.html").read_text()
    assert "status failed" in page and "the loader broke" in page


def test_report_of_a_directory_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a run directory" in err


@pytest.mark.skipif(chromium() is None, reason="no Chromium on this machine (apt-get install chromium)")
def test_report_renders_in_headless_chromium(run, tmp_path):
    import shutil

    run = shutil.copytree(run, tmp_path / "run")  # `report` rewrites report.html: not the shared run's
    shot = tmp_path / "report.png"
    assert main(["report", str(run), "--screenshot", str(shot)]) == 0
    dom = rendered_dom(run / "report.html")
    assert 'data-broken-images="0"' in dom  # the load script ran and every image decoded
    assert re.search(r'data-broken-images="\d+"', dom)
    assert "Training curves" in dom and 'id="evaluation"' in dom
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (1280, 1800)
