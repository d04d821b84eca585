"""Faults that every writing command must survive: SIGKILL in the middle of ``embed``, and a
disk that fills up while an output is written (the previous output stays whole, no
temporary file is left, the CLI says so in one line)."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from contrastlib.cli.main import main
from contrastlib.utils.io import atomic_dir, atomic_path, write_json

REPO = Path(__file__).resolve().parents[2]
WIKI = REPO / "datasets" / "wiki" / "wiki-sentences-3k.txt"


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "CONTRASTLIB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def test_embed_killed_halfway_resumes_from_its_shards(tmp_path, tiny_model, capsys, monkeypatch):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(WIKI.read_text().splitlines()[:600]) + "\n")
    common = ["embed", "-m", tiny_model, "-i", str(texts), "--shard-size", "50", "--no-progress",
              "--batch-size", "25"]
    out = tmp_path / "emb.npy"
    # the real CLI in its own process (a SIGKILL needs one), each shard's encode slowed
    # down so that the kill lands between shards on any machine
    slow = (
        "import sys, time; from contrastlib.encoders.text import TextEncoder; f = TextEncoder.encode\n"
        "def slow(*a, **k):\n    time.sleep(0.3); return f(*a, **k)\n"
        "TextEncoder.encode = slow\nfrom contrastlib.cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.Popen([sys.executable, "-c", slow, *common, "-o", str(out)], env=_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    done: dict[str, object] = {}
    while len(done) < 2:
        assert proc.poll() is None, "embed ended before it could be killed"
        assert time.time() < deadline
        for manifest in (tmp_path / "cache").rglob("manifest.json"):
            with contextlib.suppress(OSError, ValueError):
                done = json.loads(manifest.read_text())["shards"]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    # resumed and fresh runs in-process: what they read is what the killed process left
    monkeypatch.setenv("CONTRASTLIB_CACHE", str(tmp_path / "cache"))
    capsys.readouterr()
    assert main([*common, "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 2 <= summary["reused"] < summary["shards"] == 12
    fresh = tmp_path / "fresh.npy"
    assert main([*common, "-o", str(fresh), "--cache-dir", str(tmp_path / "other")]) == 0
    np.testing.assert_array_equal(np.load(out), np.load(fresh))


# ----------------------------------------------------------------------------- disk full
class _DiskFull:
    """Writes through ``open`` fail with ENOSPC once ``budget`` bytes are written."""

    def __init__(self, budget: int) -> None:
        self.budget = budget

    def wrap(self, fh):
        limiter = self
        write = fh.write

        def limited(data):
            limiter.budget -= len(data)
            if limiter.budget < 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), getattr(fh, "name", None))
            return write(data)

        fh.write = limited
        return fh


def test_a_full_disk_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    import builtins

    target = tmp_path / "metrics.json"
    write_json(target, {"old": True})
    disk = _DiskFull(budget=10)
    real_open = builtins.open

    def full_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        return disk.wrap(fh) if "w" in mode else fh

    monkeypatch.setattr(builtins, "open", full_open)
    monkeypatch.setattr(io, "open", full_open)  # pathlib's write_text opens through io.open
    with pytest.raises(OSError) as info:
        write_json(target, {"new": "x" * 1000})
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]

    # a directory output (export): the old directory stays
    model = tmp_path / "model"
    with atomic_dir(model) as d:
        (d / "weights").write_text("old")
    with pytest.raises(OSError), atomic_dir(model) as d:
        (d / "weights").write_text("new")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (model / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "model"]


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_cli_hit_by_a_real_write_limit_keeps_the_previous_output(tmp_path, tiny_model):
    """The operating system refuses writes past 64 KiB (RLIMIT_FSIZE: what a full disk
    looks like to the writer, in any library's code, C++ included). ``embed`` of 1,500
    texts (192 KB of embeddings from the 32-wide tiny BERT) fails with one line, exit 1,
    and the earlier output is untouched."""
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(WIKI.read_text().splitlines()[:1500]) + "\n")
    out = tmp_path / "emb.npy"
    np.save(out, np.arange(6, dtype=np.float32))
    before = out.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "contrastlib", "embed", "-m", tiny_model, "-i", str(texts), "-o", str(out),
         "--no-progress", "--cache-dir", str(tmp_path / "cache"), "--shard-size", "5000"],
        env=_env(tmp_path), capture_output=True, text=True, preexec_fn=_limit_file_size(64 * 1024),
    )
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr[-2000:]
    assert err and err[-1].startswith("error: ") and "File too large" in err[-1], err[-3:]
    assert "Traceback" not in done.stderr
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_atomic_path_removes_its_temporary_on_any_failure(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    main_code = main(["report", str(tmp_path)])  # and a missing run is a usage error, not a crash
    assert main_code == 2


def test_a_model_with_its_own_code_is_not_run_unless_asked(tmp_path, tiny_model):
    """A model directory whose config points at custom code: loading it without
    ``trust_remote_code`` is a one-line refusal, and the code never runs."""
    import shutil

    from tests_helpers import TINY_DIM

    from contrastlib.encoders import TextEncoder
    from contrastlib.errors import ModelLoadError

    base = Path(tiny_model)
    src = next(p for p in [base, *base.iterdir()] if (p / "config.json").is_file())
    model = tmp_path / "custom"
    shutil.copytree(src, model)
    marker = tmp_path / "code-ran"
    (model / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    (model / "configuration_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(config))
    # a known architecture: the standard BERT code loads it, the shipped code is ignored
    assert TextEncoder(str(model)).dim == TINY_DIM
    assert not marker.exists()
    # an architecture only its own code knows: refused in one line
    config["model_type"] = "evil-arch"
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="trust_remote_code=true") as info:
        TextEncoder(str(model))
    assert "\n" not in str(info.value)
    assert not marker.exists()
