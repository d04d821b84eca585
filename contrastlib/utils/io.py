"""Atomic writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600; the renamed file reads like any other
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out a matplotlib ``Figure`` and write it as a PNG, atomically."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def committed_record(path: Path, sha256: str | None, sidecar: Path) -> dict[str, Any] | None:
    """A file written once by some process, checked by its checksum: ``{"sha256": ...}`` when
    its bytes match ``sha256`` (the caller's manifest), else its sidecar's record (``sidecar``:
    JSON with ``sha256``, written after the file) when they match that; None if neither
    vouches for it (missing, damaged, or rewritten since)."""
    try:
        actual = sha256_file(path)
    except OSError:
        return None
    if sha256 is not None and actual == sha256:
        return {"sha256": sha256}
    try:
        record = json.loads(sidecar.read_text())
        return record if isinstance(record, dict) and record.get("sha256") == actual else None
    except (OSError, ValueError):
        return None


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def cache_root() -> Path:
    """``$CONTRASTLIB_CACHE`` or ``~/.cache/contrastlib``: what runs reuse (embeddings,
    Parquet files converted to Arrow)."""
    return Path(os.environ.get("CONTRASTLIB_CACHE") or Path.home() / ".cache" / "contrastlib")


def release_freed_memory() -> None:
    """Hand the C heap's freed pages back to the system (glibc's ``malloc_trim``; nothing
    elsewhere). Arrays of a few MB freed by numpy can stay in the heap and count as
    resident; one call before a large allocation keeps them out of its peak."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # (not glibc)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
