"""The job room: one directory per job under any launcher, markers, versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from contrastlib.jobs import JOB_DIR_ENV, Job, launch_rank


def test_new_names_and_markers(tmp_path, monkeypatch):
    monkeypatch.delenv(JOB_DIR_ENV, raising=False)
    first = Job.open(tmp_path, "x", kind="fit")
    with first.running():
        first.start("name: x\n", precision="32-true")
        assert os.environ[JOB_DIR_ENV] == str(first.dir)  # for the ranks Lightning launches
        first.finish(steps=3)
    assert JOB_DIR_ENV not in os.environ
    marker = json.loads((tmp_path / "x" / "contrastlib_run.json").read_text())
    assert marker["status"] == "finished" and marker["kind"] == "fit" and marker["steps"] == 3
    assert marker["launch"] == {"precision": "32-true"} and "python" in marker["versions"]
    assert (tmp_path / "x" / "config.yaml").read_text() == "name: x\n"
    second = Job.open(tmp_path, "x", kind="fit")
    with second.running():
        assert second.dir == (tmp_path / "x-2").resolve()


def test_a_rank_started_by_lightning_uses_rank_0s_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(JOB_DIR_ENV, str(tmp_path / "chosen"))
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.delenv("RANK", raising=False)
    assert launch_rank() == 1
    job = Job.open(tmp_path, "x", kind="fit")
    assert job.dir == tmp_path / "chosen" and not job.is_zero
    job.start("ignored")  # rank > 0 writes nothing
    assert not (tmp_path / "chosen").exists()


def test_torchrun_ranks_agree_on_one_directory(tmp_path):
    """Every rank started at once (as torchrun does): rank 0 chooses, the others wait for
    its claim, although an earlier run already holds the plain name."""
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "old").write_text("an earlier run")
    script = textwrap.dedent(
        f"""
        import sys
        from contrastlib.jobs import Job
        job = Job.open({str(tmp_path)!r}, "x", kind="fit")
        print(job.dir.resolve(), job.is_zero)
        """
    )
    procs = []
    for rank in (1, 0):  # rank 1 first: it must wait
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "test-run"}
        env.pop(JOB_DIR_ENV, None)
        procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert {o[0] for o in outs} == {str((tmp_path / "x-2").resolve())}
    assert sorted(o[1] for o in outs) == ["False", "True"]
    assert sorted(p.name for p in Path(tmp_path).iterdir() if not p.name.startswith(".")) == ["x", "x-2"]


def test_a_stale_claim_from_an_earlier_launch_is_not_used(tmp_path, monkeypatch):
    import time

    from contrastlib import jobs

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "same-id")
    monkeypatch.delenv(JOB_DIR_ENV, raising=False)
    claim = Job._claim_path(tmp_path)
    assert claim is not None
    claim.parent.mkdir(parents=True)
    claim.write_text(json.dumps({"dir": str(tmp_path / "old-run"), "time": time.time() - 3600}))
    monkeypatch.setattr(jobs, "CLAIM_WAIT_S", 1.0)
    import pytest

    with pytest.raises(jobs.ConfigError, match="rank 0 chose no run directory"):
        Job.open(tmp_path, "x", kind="fit")


def test_a_failure_on_another_rank_is_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv(JOB_DIR_ENV, raising=False)
    job = Job.open(tmp_path, "x", kind="fit")
    job.start("name: x\n")
    monkeypatch.setenv("LOCAL_RANK", "1")  # the same job seen from rank 1
    other = Job(job.dir, "fit", is_zero=False)
    try:
        with other.running():
            raise RuntimeError("out of memory on rank 1")
    except RuntimeError:
        pass
    marker = json.loads((job.dir / "contrastlib_run.json").read_text())
    assert marker["status"] == "failed" and marker["error"] == "rank 1: RuntimeError: out of memory on rank 1"
    os.environ.pop(JOB_DIR_ENV, None)
