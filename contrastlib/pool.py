"""Encoding on several processes or devices: ``--devices`` for ``embed``, ``mine`` and
``eval retrieval``.

The embedding cache's missing shards (contrastlib/index/cache.py) are dealt out round
robin, one list per device, and each device's process loads the model named on the
command line and encodes whole shards, each written once and atomically with its own
record (a sidecar). Nothing is shared but the files. The parent then reads every shard as
it reads its own, so the output is the one-process output: the same shards, made of the
same texts in the same batches: bitwise in fp32 on the CPU where the BLAS library gives
the same bits at any thread count (it does on the development machine; tested).

A process that dies (killed, out of memory) stops the job with a one-line error once the
others are done; a restart reuses every shard that was finished, by anyone, and encodes
the rest. A worker whose parent is gone stops after its current shard.

Devices: ``N`` (N processes: ``cuda:0..N-1`` where CUDA has that many GPUs, else the
CPU), or a list (``cpu,cpu``, ``cuda:0,cuda:1``). On the CPU the threads are shared out
(``torch.get_num_threads() // N`` each, at least one).
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from contrastlib.errors import ContrastlibError
from contrastlib.index.cache import ShardJob, encode_shards, shard_texts


def parse_devices(spec: str | None) -> list[str]:
    """``--devices`` as a list of torch devices (empty: one process, as without it)."""
    if spec is None or spec in ("", "1"):
        return []
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec.isdigit():
        n = int(spec)
        if n < 1:
            raise ContrastlibError(f"--devices: a count >= 1 or a list of devices, got {spec!r}")
        if 0 < gpus < n:
            raise ContrastlibError(f"--devices {n}: this machine has {gpus} GPU(s); name the devices "
                                   "(cuda:0,cuda:1 or cpu,cpu)")
        return [f"cuda:{i}" for i in range(n)] if gpus else ["cpu"] * n
    devices = [d.strip() for d in spec.split(",") if d.strip()]
    if not devices:
        raise ContrastlibError(f"--devices: a count or a list of devices, got {spec!r}")
    for d in devices:
        try:
            device = torch.device(d)
        except RuntimeError:
            device = None
        if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
            raise ContrastlibError(f"--devices: {d!r} is not a device here (cpu, cuda, cuda:1)")
        if device.type == "cuda" and (device.index or 0) >= gpus:
            raise ContrastlibError(f"--devices: {d} is not present here ({gpus} GPU(s))")
    return ["cpu" if d.startswith("cpu") else d for d in devices]


def _threads(devices: Sequence[str]) -> int:
    """Threads for each CPU process: the machine's shared out (at least one)."""
    import torch

    cpus = sum(d == "cpu" for d in devices)
    return max(1, torch.get_num_threads() // cpus) if cpus else 1


def deal(items: Sequence[Any], n: int) -> list[list[Any]]:
    """``items`` dealt round robin into ``n`` shares (a device's share: every n-th)."""
    return [list(items[k::n]) for k in range(n)]


def run_processes(devices: Sequence[str], target: Any, shares: Sequence[Any], *args: Any) -> None:
    """``target(*args, device, threads, share, parent pid)`` in one spawned process per
    device with a non-empty share; a process that stops is a one-line error once the others
    are done."""
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = []
    threads = _threads(devices)
    for n, (device, share) in enumerate(zip(devices, shares, strict=True)):
        if share:
            p = ctx.Process(target=_guarded, args=(errors, target, *args, device, threads, share, os.getpid()),
                            name=f"contrastlib-{n}")
            p.start()
            procs.append((device, p))
    failed = []
    for device, p in procs:
        p.join()
        if p.exitcode != 0:
            failed.append(f"{device} (exit code {p.exitcode})")
    if not errors.empty():  # a worker's own one-line error (bad data, a model that does not load)
        raise ContrastlibError(errors.get())
    if failed:
        raise ContrastlibError(f"--devices: the process on {', '.join(failed)} stopped; a restart keeps every "
                               "shard already written and does the rest")


def _guarded(errors: Any, target: Any, *args: Any) -> None:
    """A worker: ``target(*args)``, its one-line error sent to the parent."""
    try:
        target(*args)
    except ContrastlibError as exc:
        errors.put(str(exc))
        errors.close()
        errors.join_thread()
        sys.exit(3)


class EncodePool:
    """The cache's ``pool``: encodes a job's shards on ``devices``, one process each, with
    the model ``model`` (what ``load_encoder`` takes) and its ``overrides``."""

    def __init__(self, model: str, devices: Sequence[str], overrides: Mapping[str, Any] | None = None) -> None:
        self.model, self.devices, self.overrides = str(model), list(devices), dict(overrides or {})

    def __call__(self, job: ShardJob) -> None:
        # each process is sent its own shards' texts only (a store: the store, read there)
        stored = not isinstance(job.texts, list)  # (a store, or a view of one: sent as it is)
        chunks = {} if stored else dict(zip(job.shard_ids, shard_texts(job), strict=True))
        shares = [None if not share else
                  dataclasses.replace(job, shard_ids=share) if stored else
                  dataclasses.replace(job, texts=[], shard_ids=share, chunks=[chunks[i] for i in share], order=None)
                  for share in deal(job.shard_ids, len(self.devices))]
        run_processes(self.devices, _encode_work, shares, self.model, self.overrides)


def start_worker(threads: int) -> None:
    """What a pool's process does first: third-party chatter off, its share of the threads."""
    import torch

    from contrastlib.utils.quiet import quiet_third_party

    quiet_third_party()
    torch.set_num_threads(threads)


def _encode_work(model: str, overrides: dict[str, Any], device: str, threads: int, job: ShardJob, parent: int) -> None:
    """One device's process: its shards, one at a time, until done or the parent is gone."""
    from contrastlib.loading import load_encoder

    start_worker(threads)
    encoder: Any = load_encoder(model, **overrides)
    encoder.to(device)
    for _ in encode_shards(encoder, job):
        if os.getppid() != parent:  # the parent was killed: stop (what is written is kept)
            return
