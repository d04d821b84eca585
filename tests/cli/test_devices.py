"""``--devices 2`` on the CPU (contrastlib/pool.py): two processes encode the embedding
cache's shards and the output is the one-process output, bitwise in fp32; a worker or
the parent killed with SIGKILL mid-run, then a restart, still ends with every row once
(the output equals the uninterrupted one-process output, and the restart reuses what the
killed run finished)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORDS = ["cats", "dogs", "rain", "the sea", "bread", "music", "trains", "rivers"]


def _texts(path: Path, n: int) -> Path:
    path.write_text("".join(f"sentence {i} about {WORDS[i % 8]} " + "and more words " * (i % 9) + "\n"
                            for i in range(n)))
    return path


def _embed(tmp: Path, model: str, name: str, *extra: str, cache: str = "c") -> subprocess.Popen[str]:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        [sys.executable, "-m", "contrastlib", "embed", "-m", model, "-i", str(tmp / "texts.txt"), "-o",
         str(tmp / f"{name}.npy"), "--cache-dir", str(tmp / cache), "--shard-size", "20", "--no-progress",
         "--json", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc: no procps needed)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def _sidecars(cache: Path) -> int:
    return len(list(cache.rglob("shard-*.json")))


def test_embed_on_two_processes_is_the_one_process_output_bitwise(tmp_path, tiny_model):
    from contrastlib.cli.main import main

    _texts(tmp_path / "texts.txt", 300)
    two = _embed(tmp_path, tiny_model, "two", "--devices", "2")
    # the one-process side here while the pool's processes start (no import of its own)
    assert main(["embed", "-m", tiny_model, "-i", str(tmp_path / "texts.txt"), "-o", str(tmp_path / "one.npy"),
                 "--cache-dir", str(tmp_path / "c1"), "--shard-size", "20", "--no-progress"]) == 0
    out, err = two.communicate(timeout=600)
    assert two.returncode == 0, err[-2000:]
    a, b = np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy")
    assert a.shape == (300, 32) and np.array_equal(a, b)
    assert json.loads(out.strip().splitlines()[-1])["encoded"] == 15  # 300 texts in shards of 20
    # two processes other than the command's own wrote them (each shard's sidecar names its writer)
    writers = {json.loads(p.read_text())["pid"] for p in (tmp_path / "c").rglob("shard-*.json")}
    assert len(writers) == 2 and two.pid not in writers


@pytest.mark.parametrize(("value", "message"), [
    ("0", "a count >= 1"), ("meta,meta", "'meta' is not a device here"), ("cuda:3", "not present here"),
    ("cpu:1", "'cpu:1' is not a device here"), (",", "a count or a list"),
])
def test_bad_devices_are_one_line_errors(value, message):
    from contrastlib.errors import ContrastlibError
    from contrastlib.pool import parse_devices

    with pytest.raises(ContrastlibError, match=message):
        parse_devices(value)


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["worker", "parent"])
def test_a_sigkill_mid_run_then_a_restart_gives_every_row_once(tmp_path, tiny_model, victim):
    _texts(tmp_path / "texts.txt", 1200)  # 60 shards
    whole = _embed(tmp_path, tiny_model, "whole", cache="c1")
    assert whole.wait(timeout=600) == 0
    cut = _embed(tmp_path, tiny_model, "cut", "--devices", "2")
    deadline = time.time() + 300
    while _sidecars(tmp_path / "c") < 6 and cut.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = _children(cut.pid)
    assert len(workers) >= 2, workers  # spawn's resource tracker and the two workers
    if victim == "worker":
        os.kill(workers[-1], signal.SIGKILL)
        out, err = cut.communicate(timeout=600)
        assert cut.returncode == 2 and "a restart keeps every shard already written" in err, err[-2000:]
    else:
        cut.send_signal(signal.SIGKILL)
        cut.wait()
        for pid in workers:  # each stops after its current shard
            for _ in range(600):
                if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
                    break
                time.sleep(0.1)
    done_before = _sidecars(tmp_path / "c")
    assert 0 < done_before < 60
    again = _embed(tmp_path, tiny_model, "cut", "--devices", "2")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["reused"] >= done_before - 2  # (a shard may be mid-write)
    assert np.array_equal(np.load(tmp_path / "cut.npy"), np.load(tmp_path / "whole.npy"))


@pytest.mark.slow
@pytest.mark.shared_data
def test_mine_and_eval_retrieval_on_two_processes_equal_one_on_scifact(tmp_path, tiny_model, capsys):
    """A SciFact slice (real text): the same triplets and the same nDCG@10 with ``--devices 2``."""
    from tests_helpers import shared

    from contrastlib.cli.main import main

    src = shared("retrieval", "scifact")
    qrels = [line.split("\t") for line in (src / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    keep = list(dict.fromkeys(q for q, _, _ in qrels))[:30]
    rel = {d for q, d, _ in qrels if q in keep}
    docs = [json.loads(line) for line in (src / "corpus.jsonl").read_text().splitlines()]
    corpus = [d for d in docs if d["_id"] in rel] + [d for d in docs if d["_id"] not in rel][:300]
    root = tmp_path / "slice"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    queries = [json.loads(line) for line in (src / "queries.jsonl").read_text().splitlines()]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries if q["_id"] in keep))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{s.strip()}\n" for q, d, s in qrels if q in keep))
    scores = {}
    for name, extra in (("one", []), ("two", ["--devices", "2"])):
        common = ["-m", tiny_model, "--cache-dir", str(tmp_path / f"cache-{name}"), "--no-progress",
                  "--embed-shard-size", "40"]  # 9 corpus shards, dealt out to the two processes
        capsys.readouterr()
        assert main(["eval", "retrieval", "-d", str(root), "--json", *common, *extra]) == 0
        scores[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ndcg@10"]
        assert main(["mine", "--data", str(root), "--out", str(tmp_path / f"{name}.jsonl"), "--num-negatives", "3",
                     "--shard-size", "32", *common, *extra]) == 0
    assert scores["one"] == scores["two"]
    assert (tmp_path / "one.jsonl").read_text() == (tmp_path / "two.jsonl").read_text()
    # other processes wrote the corpus shards (each sidecar names its writer): two for eval
    # retrieval's corpus, two for mine's (bf16 here: another cache entry); the queries, one
    # shard, were encoded here
    writers = {json.loads(p.read_text())["pid"] for p in (tmp_path / "cache-two").rglob("shard-*.json")}
    assert len(writers - {os.getpid()}) >= 4


def _reward_model(tmp: Path, tiny_model: str) -> Path:
    import torch

    from contrastlib.encoders.text import TextEncoder
    from contrastlib.heads import BradleyTerryHead
    from contrastlib.models.reward import RewardModel

    torch.manual_seed(0)
    encoder = TextEncoder(tiny_model, max_seq_length=16)
    model = RewardModel(encoder, BradleyTerryHead(encoder.dim), std=2.0)
    return model.save(tmp / "reward", head_name="bradley_terry", head_kwargs={})


def test_score_devices_2_is_the_one_process_output_and_a_restart_adopts_the_workers_shards(tmp_path, tiny_model, capsys):
    """``score --devices cpu,cpu``: the one-process output byte for byte. Shards the
    workers finished before a kill (on disk with their sidecars, not yet in the parent's
    manifest) are adopted by a restart, not scored again."""
    from contrastlib.cli.main import main
    from contrastlib.scoring import ScoreJob, ScorePool, read_score_input

    model = _reward_model(tmp_path, tiny_model)
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps({"id": i, "prompt": "Q:", "response": f"answer {i} " + "more " * (i % 7)}) + "\n"
                           for i in range(600)))
    common = ["score", "--model", str(model), "--input", str(src), "--shard-size", "100", "--no-progress",
              "--precision", "fp32", "--json"]
    assert main([*common, "--out", str(tmp_path / "one.jsonl")]) == 0
    assert main([*common, "--out", str(tmp_path / "two.jsonl"), "--devices", "cpu,cpu"]) == 0
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()

    # a killed pooled run: the workers finished shards 1 and 4, the parent recorded none
    out = tmp_path / "restarted.jsonl"
    rows = read_score_input(src)
    parts = out.with_name(out.name + ".parts")
    capsys.readouterr()
    import contrastlib.scoring as scoring

    real = scoring.score_shard
    scored: list[int] = []

    def stop_after_pool(model_, source, parts_, s, shard):  # the parent scores nothing: it was "killed"
        scored.append(s)
        return real(model_, source, parts_, s, shard)

    job_rows = {s: rows[s * 100 : (s + 1) * 100] for s in (1, 4)}
    # the job folder as the restarted run will find it: its job.json, two workers' shards
    scoring.score_shard = stop_after_pool
    try:
        parts.mkdir()
        from contrastlib.models.reward import RewardModel
        from contrastlib.scoring import _fingerprint

        fp = _fingerprint(src, RewardModel.load(model, precision="fp32", batch_size=128).fingerprint(),
                          {"shard_size": 100, "on_bad_row": "error"})
        (parts / "job.json").write_text(json.dumps({"fingerprint": fp, "input": str(src), "rows": 600}))
        ScorePool(str(model), ["cpu"], {"precision": "fp32", "batch_size": 128})(
            ScoreJob(parts, str(src), list(job_rows.items())))
        sidecars = {p.name: json.loads(p.read_text())["pid"] for p in parts.glob("shard-*.json")}
        assert set(sidecars) == {"shard-00001.json", "shard-00004.json"} and os.getpid() not in sidecars.values()
        assert main([*common, "--out", str(out)]) == 0
    finally:
        scoring.score_shard = real
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["shards_reused"] == 2 and sorted(scored) == [0, 2, 3, 5]
    assert out.read_bytes() == (tmp_path / "one.jsonl").read_bytes()


def test_a_workers_own_error_is_the_one_line_the_parent_raises(tmp_path):
    from contrastlib.errors import ContrastlibError
    from contrastlib.index.cache import ShardJob
    from contrastlib.pool import EncodePool

    job = ShardJob(tmp_path, ["a text"], [0], "", 8, "fp32", {}, 4)
    with pytest.raises(ContrastlibError) as caught:
        EncodePool(str(tmp_path / "no-model"), ["cpu"])(job)
    assert "no-model" in str(caught.value) and "\n" not in str(caught.value)
    assert "a restart" not in str(caught.value)
