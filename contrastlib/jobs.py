"""Job bookkeeping for every verb that writes a directory (``fit`` now; ``mine``, ``embed``
and ``score`` later): the run directory, its status marker, the resolved config, the
versions and git commit it ran with.

Run directory layout (``fit``)::

    contrastlib_run.json   marker: kind, status (running / finished / failed + error),
                           times, versions, git commit, hardware, launch (precision)
    config.yaml            the resolved config
    checkpoints/last.ckpt  for resuming
    logs/ tensorboard/     CSV and TensorBoard logs
    model/                 the trained encoder (a sentence-transformers dir for text)
    metrics.json           evaluations before and after training
    report.html            the run on one page (contrastlib.report), written at the end

**One directory per job, also under DDP.** The process that is global rank 0 at launch
chooses the directory (``NAME``, or ``NAME-2``, ... when ``NAME`` holds an earlier run)
and every other rank must use the same one:

* Lightning's own launcher (``trainer.devices=N`` from one command) starts ranks 1..N-1
  as copies of the command *after* rank 0 has chosen; they inherit the choice through the
  environment variable :data:`JOB_DIR_ENV`.
* External launchers (``torchrun``, SLURM ``srun``) start every rank at once. Rank 0
  writes its choice to ``OUTPUT_DIR/.launch/<launch id>.json`` (the launch id comes from
  ``TORCHELASTIC_RUN_ID``, ``SLURM_JOB_ID``/``SLURM_STEP_ID`` or ``MASTER_ADDR:PORT``);
  the others wait for it. ``OUTPUT_DIR`` must be on a file system every node sees.

Only rank 0 writes the marker, the config and the results.

What a run left is read back by :mod:`contrastlib.loading`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contrastlib import __version__
from contrastlib.environment import git_commit, hardware, versions
from contrastlib.errors import ConfigError
from contrastlib.utils.io import atomic_path, write_json

#: The marker file that makes a directory a contrastlib run dir.
RUN_MARKER = "contrastlib_run.json"
#: Set by rank 0 before Lightning starts the other ranks: the job's directory.
JOB_DIR_ENV = "CONTRASTLIB_JOB_DIR"
#: How long a rank > 0 of an externally launched job waits for rank 0's choice.
CLAIM_WAIT_S = 600.0
#: A claim older than this when a rank starts waiting is an earlier launch's (ranks of
#: one launch start within seconds of each other).
CLAIM_MAX_AGE_S = 120.0


def launch_rank() -> int:
    """This process's global rank as the launcher set it, before any process group exists.

    ``RANK`` (torchrun, Lightning's launcher after start), ``SLURM_PROCID`` (srun with
    several tasks), else ``LOCAL_RANK`` on node ``NODE_RANK`` (Lightning's own launcher;
    only "is it zero" matters here).
    """
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"])
    local, node = int(env.get("LOCAL_RANK", "0")), int(env.get("NODE_RANK", "0"))
    return local if node == 0 else node * 1_000_000 + local  # nonzero off node 0


def _external_launch_id() -> str | None:
    """An id shared by every rank of an externally launched job, or None (single process)."""
    env = os.environ
    if int(env.get("WORLD_SIZE", "1")) <= 1 and int(env.get("SLURM_NTASKS", "1")) <= 1:
        return None
    restart = env.get("TORCHELASTIC_RESTART_COUNT", env.get("SLURM_RESTART_COUNT", "0"))
    if env.get("TORCHELASTIC_RUN_ID", "none") != "none":
        return f"torchelastic-{env['TORCHELASTIC_RUN_ID']}-r{restart}"
    if "SLURM_JOB_ID" in env:
        return f"slurm-{env['SLURM_JOB_ID']}-{env.get('SLURM_STEP_ID', '0')}-r{restart}"
    if "MASTER_ADDR" in env and "MASTER_PORT" in env:
        return f"master-{env['MASTER_ADDR']}-{env['MASTER_PORT']}-r{restart}"
    return None


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / RUN_MARKER).is_file()


def _claim_fresh_dir(base: Path) -> Path:
    """``base`` if absent or empty, else the first free ``base-N``, created atomically
    (two jobs started at once with the same name get different directories)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    if base.is_dir() and not any(base.iterdir()):
        return base
    n = 1
    while True:
        path = base if n == 1 else base.parent / f"{base.name}-{n}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


@dataclass
class Job:
    """A job's directory and its marker. Build with :meth:`open`."""

    dir: Path
    kind: str
    is_zero: bool
    #: This process exported JOB_DIR_ENV (for ranks it launches) and must clear it after.
    exported: bool = False

    # ------------------------------------------------------------------ choosing
    @classmethod
    def open(cls, output_dir: str | Path, name: str, *, kind: str, resume: bool = False) -> Job:
        """The job directory for this process (see the module docstring for DDP)."""
        zero = launch_rank() == 0
        inherited = os.environ.get(JOB_DIR_ENV)
        if inherited:  # a rank started by Lightning's launcher: rank 0 chose already
            return cls(Path(inherited), kind, zero)
        base = Path(output_dir) / name
        if resume:
            if not any((base / "checkpoints").glob("*.ckpt")):
                raise ConfigError(f"resume: {base}/checkpoints holds no checkpoint to resume from")
            run_dir = base
        elif zero:
            run_dir = _claim_fresh_dir(base)
        else:
            run_dir = cls._wait_for_claim(Path(output_dir))
        if zero:
            run_dir.mkdir(parents=True, exist_ok=True)
            os.environ[JOB_DIR_ENV] = str(run_dir.resolve())
            cls._claim(Path(output_dir), run_dir)
            return cls(run_dir.resolve(), kind, True, exported=True)
        return cls(run_dir, kind, False)

    @staticmethod
    def _claim_path(output_dir: Path) -> Path | None:
        launch = _external_launch_id()
        if launch is None:
            return None
        return output_dir / ".launch" / (re.sub(r"[^A-Za-z0-9_.-]", "_", launch) + ".json")

    @classmethod
    def _claim(cls, output_dir: Path, run_dir: Path) -> None:
        path = cls._claim_path(output_dir)
        if path is not None:
            write_json(path, {"dir": str(run_dir.resolve()), "time": time.time()})

    @classmethod
    def _wait_for_claim(cls, output_dir: Path) -> Path:
        path = cls._claim_path(output_dir)
        if path is None:
            raise ConfigError(
                f"rank {launch_rank()}: cannot tell which run directory rank 0 chose "
                f"(no {JOB_DIR_ENV}, no launcher id); set {JOB_DIR_ENV} or resume=true"
            )
        started = time.time()
        while time.time() - started < CLAIM_WAIT_S:
            with contextlib.suppress(OSError, ValueError):
                claim = json.loads(path.read_text())
                if claim["time"] >= started - CLAIM_MAX_AGE_S:  # not a claim left by an older launch
                    return Path(claim["dir"])
            time.sleep(0.5)
        raise ConfigError(f"rank {launch_rank()}: rank 0 chose no run directory within {CLAIM_WAIT_S:.0f} s ({path})")

    # ------------------------------------------------------------------ writing (rank 0)
    @property
    def marker_path(self) -> Path:
        return self.dir / RUN_MARKER

    def marker(self) -> dict[str, Any]:
        try:
            out: dict[str, Any] = json.loads(self.marker_path.read_text())
            return out
        except (OSError, ValueError):
            return {}

    def update(self, *, any_rank: bool = False, **fields: Any) -> None:
        """Merge ``fields`` into the marker (rank 0 only, unless ``any_rank``)."""
        if not (self.is_zero or any_rank):
            return
        marker = self.marker()
        marker.update(fields, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_json(self.marker_path, marker)

    def start(self, config_yaml: str, **launch: Any) -> None:
        """Write the resolved config and a ``running`` marker with versions and commit."""
        if not self.is_zero:
            return
        with atomic_path(self.dir / "config.yaml") as tmp:
            tmp.write_text(config_yaml)
        history = self.marker().get("starts", [])
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.update(
            contrastlib_version=__version__, kind=self.kind, status="running", error=None, started=now,
            starts=[*history, now], versions=versions(), git_commit=git_commit(), hardware=hardware(), launch=launch,
        )

    def finish(self, **fields: Any) -> None:
        self.update(status="finished", **fields)

    def fail(self, error: BaseException) -> None:
        """Record a failure. Any rank writes it: when a rank > 0 dies, Lightning's launcher
        kills rank 0, which then cannot."""
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        message = f"{type(error).__name__}: {first}" if first else type(error).__name__
        rank = launch_rank()
        self.update(any_rank=True, status="failed", error=message if rank == 0 else f"rank {rank}: {message}")

    @contextlib.contextmanager
    def running(self, *, report: bool = False) -> Iterator[Job]:
        """Mark the job failed (with the error) if the block raises or is interrupted;
        with ``report``, write ``report.html`` (rank 0) when it ends either way."""
        try:
            yield self
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self.fail(exc)
            raise
        finally:
            if self.exported:  # a later job in this process must choose its own directory
                os.environ.pop(JOB_DIR_ENV, None)
            if report and self.is_zero:
                self._write_report()

    def _write_report(self) -> None:
        from contrastlib.report import write_report

        try:
            write_report(self.dir)
        except Exception as exc:  # a report must never turn a finished run into a failed one
            import warnings

            warnings.warn(f"{self.dir}: report.html not written ({type(exc).__name__}: {exc})", stacklevel=2)

    def write_json(self, name: str, obj: Any) -> None:
        if self.is_zero:
            write_json(self.dir / name, obj)
