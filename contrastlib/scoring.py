"""``contrastlib score``: rewards for (prompt, response) rows, sharded and resumable.

Input: JSON lines ``{prompt, response[, user]}`` (any other keys are carried through).
Every row is checked before the model loads; a bad one is an error naming its line.

``OUT`` is written once, atomically, when every row is scored. Meanwhile ``OUT.parts/``
holds ``job.json`` (a fingerprint of the input, the model and the options; parts left by
a job with other settings are discarded, never mixed in), ``shard-NNNNN.jsonl``, each
committed atomically, and ``manifest.json`` with each shard's SHA-256 (a shard missing
from it or not matching is scored again). A killed job started again reuses every committed shard, so each
row is in ``OUT`` exactly once, in input order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from contrastlib.data.readers import BadRows
from contrastlib.errors import DataError
from contrastlib.utils.io import atomic_path, committed_record, write_json

FORMAT_VERSION = 1


@dataclass
class ScoreReport:
    out: Path
    rows: int
    shards: int
    shards_reused: int
    #: Malformed input rows left out under ``on_bad_row="skip"`` (not in the output).
    bad_rows_skipped: int = 0


def load_scorer(path: str | Path, **overrides: Any) -> Any:
    """The reward model saved at ``path`` (a reward run or its ``model/``)."""
    from contrastlib.models.reward import RewardModel

    return RewardModel.load(path, **overrides)


def read_score_input(path: str | Path, bad_rows: BadRows | None = None) -> list[tuple[int, dict[str, Any]]]:
    """``(line, row)`` for every row of ``path``; a bad row goes to ``bad_rows`` (default:
    a ``DataError`` naming its line)."""
    from contrastlib.data.preference import read_objects

    p = Path(path)
    if not p.is_file():
        raise DataError(p, "no such file")
    bad = bad_rows or BadRows()
    rows = []
    for line, obj in read_objects(p, bad):
        problem = next((f"'{key}' " + ("missing" if obj.get(key) is None else f"must be a string, got {type(obj[key]).__name__}")
                        for key in ("prompt", "response") if not isinstance(obj.get(key), str)), None)
        if problem is None and not obj["response"].strip():
            problem = "'response' is empty"
        if problem is None and obj.get("user") is not None and not isinstance(obj["user"], (str, int)):
            problem = "'user' must be a string or an integer"
        if problem:
            bad(DataError(p, problem, line))
            continue
        rows.append((line, obj))
    if not rows:
        raise DataError(p, f"no usable rows ({bad.summary()})")
    return rows


def _fingerprint(path: Path, model_fp: str, options: dict[str, Any]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update(model_fp.encode())
    h.update(json.dumps({**options, "v": FORMAT_VERSION}, sort_keys=True).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class ScoreJob:
    """Shards of a score job for another process: ``(shard number, its (line, row)s)``."""

    parts: Path
    source: str
    shards: list[tuple[int, list[tuple[int, dict[str, Any]]]]]


def score_shard(model: Any, source: str, parts: Path, s: int, shard: list[tuple[int, dict[str, Any]]]) -> str:
    """Score one shard's rows into ``parts/shard-s.jsonl`` (atomically); its SHA-256."""
    prompts = [r["prompt"] for _, r in shard]
    texts = model.fit_texts(prompts, [r["response"] for _, r in shard], [f"{source}:{line}" for line, _ in shard])
    if any(t is None for t in texts):
        bad = next(line for (line, _), t in zip(shard, texts, strict=True) if t is None)
        raise DataError(source, "longer than the model's window, and its window policy is 'drop'", bad)
    users = [None if r.get("user") is None else str(r["user"]) for _, r in shard]
    rewards = model.rewards(texts, users if any(users) else None)
    lines = [json.dumps({**r, "reward": value, "reward_normalized": (value - model.mean) / model.std})
             for (_, r), value in zip(shard, rewards.tolist(), strict=True)]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    with atomic_path(parts / f"shard-{s:05d}.jsonl") as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()  # of the bytes just written


def score_shards(model: Any, job: ScoreJob) -> Iterator[int]:
    """A pool process's part: each shard scored and committed with its sidecar
    (``shard-N.json``: SHA-256 and the writer's pid, written after the shard)."""
    for s, shard in job.shards:
        digest = score_shard(model, job.source, job.parts, s, shard)
        write_json(job.parts / f"shard-{s:05d}.json", {"sha256": digest, "pid": os.getpid()})
        yield s


def score_file(
    model: Any,
    input_path: str | Path,
    out: str | Path,
    *,
    model_fp: str,
    shard_size: int = 1000,
    show_progress_bar: bool = True,
    after_shard: Callable[[int], None] | None = None,
    on_bad_row: str = "error",
    read: tuple[list[tuple[int, dict[str, Any]]], BadRows] | None = None,
    pool: Callable[[ScoreJob], None] | None = None,
) -> ScoreReport:
    """Score every row of ``input_path`` with ``model`` (a :class:`RewardModel`) into
    ``out`` (see the module docstring). Rows get ``reward`` and ``reward_normalized``
    (``(reward - mean) / std`` with the model's held-out statistics). ``on_bad_row="skip"``:
    malformed input rows are left out of the output and counted in the report.
    ``read``: the rows :func:`read_score_input` already read from ``input_path`` and its
    bad-row account (the CLI checks the input before loading the model), so the file is
    not read twice. ``pool``: scores the missing shards on other processes first
    (``--devices``, contrastlib/pool.py); the output is the one-process output."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if not model.scalar:
        raise DataError(out, "this head compares pairs and has no scalar reward to score rows with (e.g. gpm)")
    src, dst = Path(input_path), Path(out)
    if read is None:
        skipped = BadRows(on_bad_row, key="--on-bad-row")
        rows = read_score_input(src, skipped)
    else:
        rows, skipped = read
        on_bad_row = skipped.policy
    parts = dst.with_name(dst.name + ".parts")
    fp = _fingerprint(src, model_fp, {"shard_size": shard_size, "on_bad_row": on_bad_row})
    job_file = parts / "job.json"
    if parts.exists():
        try:
            same = json.loads(job_file.read_text()).get("fingerprint") == fp
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    if not job_file.is_file():
        with atomic_path(job_file) as tmp:
            tmp.write_text(json.dumps({"fingerprint": fp, "input": str(src), "rows": len(rows)}))

    n_shards = -(-len(rows) // shard_size)
    manifest_path = parts / "manifest.json"
    try:
        checksums: dict[str, str] = dict(json.loads(manifest_path.read_text())["shards"])
    except (OSError, ValueError, KeyError, TypeError):
        checksums = {}

    def done(s: int) -> bool:
        """Shard ``s`` is committed: as the manifest lists it, else as its sidecar vouches
        for it (a pool's process; the manifest then records it)."""
        found = committed_record(parts / f"shard-{s:05d}.jsonl", checksums.get(str(s)), parts / f"shard-{s:05d}.json")
        if found is not None:
            checksums[str(s)] = found["sha256"]
        return found is not None

    missing = [s for s in range(n_shards) if not done(s)]
    reused = n_shards - len(missing)
    if missing and pool is not None:  # other processes score them; their shards are then adopted
        pool(ScoreJob(parts, str(src), [(s, rows[s * shard_size : (s + 1) * shard_size]) for s in missing]))
        missing = [s for s in missing if not done(s)]
    write_json(manifest_path, {"shards": checksums})
    with tqdm(total=len(rows), desc="score", unit="row", disable=not show_progress_bar) as bar:
        bar.update(len(rows) - sum(len(rows[s * shard_size : (s + 1) * shard_size]) for s in missing))
        for s in missing:
            shard = rows[s * shard_size : (s + 1) * shard_size]
            checksums[str(s)] = score_shard(model, str(src), parts, s, shard)
            write_json(manifest_path, {"shards": checksums})
            bar.update(len(shard))
            if after_shard is not None:
                after_shard(s)

    with atomic_path(dst) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for s in range(n_shards):
            f.write((parts / f"shard-{s:05d}.jsonl").read_text(encoding="utf-8"))
    shutil.rmtree(parts)
    return ScoreReport(dst, len(rows), n_shards, reused, skipped.count)


class ScorePool:
    """``score``'s pool: a score job's shards dealt out to ``devices``, each process
    loading the reward model at ``model`` with ``overrides`` (precision, batch size)."""

    def __init__(self, model: str, devices: Sequence[str], overrides: Mapping[str, Any] | None = None) -> None:
        self.model, self.devices, self.overrides = str(model), list(devices), dict(overrides or {})

    def __call__(self, job: Any) -> None:
        from contrastlib.pool import deal, run_processes

        shares = [dataclasses.replace(job, shards=share) if share else None
                  for share in deal(job.shards, len(self.devices))]
        run_processes(self.devices, _score_work, shares, self.model, self.overrides)


def _score_work(model: str, overrides: dict[str, Any], device: str, threads: int, job: Any, parent: int) -> None:
    from contrastlib.pool import start_worker

    start_worker(threads)
    scorer = load_scorer(model, **overrides)
    scorer.encoder.to(device)
    scorer.head.to(device)
    for _ in score_shards(scorer, job):
        if os.getppid() != parent:
            return
