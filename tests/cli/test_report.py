"""``report.html``: fit writes it at the end of every run (failed ones too); ``contrastlib
report`` rewrites it; a real headless Chromium renders it with every image decoded."""

from __future__ import annotations

import re
import struct

import pytest

from contrastlib.cli.main import main
from contrastlib.report import chromium, read_logs, rendered_dom

STS = "sentence1\tsentence2\tscore\n" + "".join(
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


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    sts = out / "sts.tsv"
    sts.write_text(STS)
    code = main(["fit", "quickstart", f"output_dir={out}", "name=r", "data.max_rows=48", "data.batch_size=8",
                 "model.max_seq_length=24", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
                 "trainer.enable_progress_bar=false", f"eval.sts=[{sts}]", "eval.every_n_epochs=1"])
    assert code == 0
    return out / "r"


def test_fit_writes_a_self_contained_report(run):
    page = (run / "report.html").read_text()
    assert "<span class='status finished' id='status'>finished</span>" in page
    assert "sts.tsv" in page and "spearman" in page.lower()  # the evaluation table, before and after
    assert page.count("data:image/png;base64,") >= 2  # the curves and the run's eval_curve.png
    assert "plots/eval_curve.png" in page
    assert "name: r" in page  # the resolved config
    assert "AVX" in page or "cpu" in page  # the hardware section
    # nothing is fetched from elsewhere
    assert not re.search(r"""(src|href)=['"](https?:|//)""", page)
    logs = read_logs(run)
    assert [s for s, _ in logs["train/loss"]] == list(range(12))


def test_a_failed_run_still_gets_a_report(tmp_path, monkeypatch):
    import contrastlib.pipeline

    def boom(*_a, **_k):
        raise RuntimeError("the loader broke")

    monkeypatch.setattr(contrastlib.pipeline, "build_loader", boom)  # after the model loads
    with pytest.raises(RuntimeError, match="the loader broke"):
        main(["fit", "quickstart", f"output_dir={tmp_path}", "name=f", "data.max_rows=16", "eval.sts=[]"])
    page = (tmp_path / "f" / "report.html").read_text()
    assert "status failed" in page and "the loader broke" in page


def test_report_of_a_directory_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a run directory" in err


@pytest.mark.skipif(chromium() is None, reason="no Chromium on this machine (apt-get install chromium)")
def test_report_renders_in_headless_chromium(run, tmp_path):
    shot = tmp_path / "report.png"
    assert main(["report", str(run), "--screenshot", str(shot)]) == 0
    dom = rendered_dom(run / "report.html")
    assert 'data-broken-images="0"' in dom  # the load script ran and every image decoded
    assert re.search(r'data-broken-images="\d+"', dom)
    assert "Training curves" in dom and 'id="evaluation"' in dom
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (1280, 1800)
