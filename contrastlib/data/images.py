"""Image sets: a folder, a zip read in place, numpy arrays, or IDX files, all as one
:class:`ImageSet` of lazily decoded PIL images with optional class labels.

``PATH[:SUB]`` names a set; ``SUB`` picks a sub-folder (of a folder or inside a zip),
e.g. ``cifar10-jpeg.zip:train``.

* a folder or a zip: ``<class>/<image>`` below the root (or ``SUB``) gives labelled images,
  classes numbered in sorted order; images directly in the root are unlabelled;
* ``.npz``: an image array under ``images`` / ``x`` / ``data`` and optional labels under
  ``labels`` / ``y`` / ``targets``; ``.npy``: an image array alone;
  arrays are ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]`` (C in 1, 3), uint8 or
  floats in [0, 1];
* IDX (the MNIST family's format, optionally gzipped): ``...-images-idx3-ubyte[.gz]``,
  with labels read from the matching ``...-labels-idx1-ubyte[.gz]`` when it exists.

Zip members with an absolute path or ``..`` are refused. Every image's header is read up
front (:func:`read_images`), so a file that is not an image fails before training with
its name; ``verify="decode"`` decodes every pixel too.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from contrastlib.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
ARRAY_KEYS = ("images", "x", "data")
LABEL_KEYS = ("labels", "y", "targets")
Verify = Literal["none", "header", "decode"]
#: What PIL raises for bytes that are not (or not wholly) an image.
DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError)


@dataclass
class ImageSet:
    """``len(s)`` images; ``s.image(i)`` a PIL image (RGB or L); ``s.labels[i]`` its class."""

    source: str
    labels: list[int] | None
    classes: list[str] | None
    #: Where each image lives: a file path, a zip member, or an array index.
    names: list[str]
    _reader: _Reader = field(repr=False)

    def __len__(self) -> int:
        return len(self.names)

    def image(self, i: int) -> Image.Image:
        try:
            img = self._reader.read(i)
            img.load()
        except DECODE_ERRORS as exc:
            raise DataError(self._reader.where(i), f"not a decodable image ({_short(exc)})") from None
        return img if img.mode in ("RGB", "L") else img.convert("RGB")

    def subset(self, n: int) -> ImageSet:
        """The first ``n`` images (a smoke run, a benchmark slice)."""
        labels = self.labels[:n] if self.labels is not None else None
        return ImageSet(self.source, labels, self.classes, self.names[:n], self._reader)


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__


class _Reader:
    def read(self, i: int) -> Image.Image:
        raise NotImplementedError

    def where(self, i: int) -> str:
        raise NotImplementedError


class _FileReader(_Reader):
    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def read(self, i: int) -> Image.Image:
        return Image.open(self.paths[i])

    def where(self, i: int) -> str:
        return self.paths[i]


class _ZipReader(_Reader):
    """Members of one zip, read in place. Each process opens its own handle (DataLoader
    workers are forked; a shared file position would mix their reads)."""

    def __init__(self, path: str, members: Sequence[str]) -> None:
        self.path, self.members = path, list(members)
        self._handle: zipfile.ZipFile | None = None
        self._pid = -1

    def _zip(self) -> zipfile.ZipFile:
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return self._handle

    def read(self, i: int) -> Image.Image:
        return Image.open(io.BytesIO(self._zip().read(self.members[i])))

    def where(self, i: int) -> str:
        return f"{self.path}:{self.members[i]}"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "members": self.members, "_handle": None, "_pid": -1}


class _ArrayReader(_Reader):
    def __init__(self, path: str, array: np.ndarray) -> None:
        self.path, self.array = path, array

    def read(self, i: int) -> Image.Image:
        a = self.array[i]
        return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)

    def where(self, i: int) -> str:
        return f"{self.path}[{i}]"


def split_image_spec(spec: str | Path) -> tuple[Path, str]:
    """``PATH[:SUB]`` -> (path, sub); a path that exists as written wins over the split."""
    text = str(spec)
    if Path(text).exists() or ":" not in text:
        return Path(text), ""
    head, _, sub = text.rpartition(":")
    return Path(head), sub.strip("/")


def read_images(spec: str | Path, *, verify: Verify = "header") -> ImageSet:
    """The image set at ``spec`` (see the module docs); errors name the file or member."""
    path, sub = split_image_spec(spec)
    if not path.exists():
        raise DataError(path, "no such file or directory")
    name = path.name.lower()
    if path.is_dir() and _idx_files(path):
        images = _read_idx_images(_pick_idx(path, sub))
    elif path.is_dir():
        images = _read_folder(path, sub)
    elif name.endswith(".zip"):
        images = _read_zip(path, sub)
    elif sub:
        raise DataError(path, f"':{sub}' picks a sub-folder, which only a folder or a zip has")
    elif name.endswith((".npy", ".npz")):
        images = _read_numpy(path)
    elif "idx3-ubyte" in name:
        images = _read_idx_images(path)
    else:
        raise DataError(path, "not an image set (a folder, .zip, .npy, .npz or IDX '-images-idx3-ubyte' file)")
    if len(images) == 0:
        raise DataError(f"{path}{':' + sub if sub else ''}", "holds no images")
    if verify != "none" and not isinstance(images._reader, _ArrayReader):
        for i in range(len(images)):
            _check_image(images, i, full=verify == "decode")
    return images


def _check_image(images: ImageSet, i: int, *, full: bool) -> None:
    if full:
        images.image(i)
        return
    try:
        images._reader.read(i)  # PIL reads the header only
    except DECODE_ERRORS as exc:
        raise DataError(images._reader.where(i), f"not an image ({_short(exc)})") from None


def _labelled(entries: list[tuple[str, str]]) -> tuple[list[str], list[int] | None, list[str] | None]:
    """``(class or '', location)`` -> locations, labels, classes (labels need every image
    in a class folder)."""
    entries.sort(key=lambda e: (e[0], e[1]))
    has_class = {bool(c) for c, _ in entries}
    if has_class == {True}:
        classes = sorted({c for c, _ in entries})
        index = {c: k for k, c in enumerate(classes)}
        return [loc for _, loc in entries], [index[c] for c, _ in entries], classes
    return [loc for _, loc in entries], None, None


def _read_folder(path: Path, sub: str) -> ImageSet:
    root = path / sub if sub else path
    if not root.is_dir():
        raise DataError(path, f"no sub-folder {sub!r}")
    entries: list[tuple[str, str]] = []
    for p in root.rglob("*"):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            rel = p.relative_to(root)
            entries.append((rel.parts[0] if len(rel.parts) > 1 else "", str(p)))
    paths, labels, classes = _labelled(entries)
    return ImageSet(str(root), labels, classes, paths, _FileReader(paths))


def _read_zip(path: Path, sub: str) -> ImageSet:
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(path, f"not a readable zip ({_short(exc)})") from None
    prefix = f"{sub}/" if sub else ""
    entries: list[tuple[str, str]] = []
    for info in infos:
        member = info.filename
        parts = PurePosixPath(member).parts
        if member.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise DataError(f"{path}:{member}", "zip member with an absolute path or '..' refused")
        if info.is_dir() or not member.startswith(prefix) or PurePosixPath(member).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        rel = PurePosixPath(member[len(prefix) :]).parts
        entries.append((rel[0] if len(rel) > 1 else "", member))
    if sub and not entries and not any(i.filename.startswith(prefix) for i in infos):
        tops = sorted({PurePosixPath(i.filename).parts[0] for i in infos if PurePosixPath(i.filename).parts})
        raise DataError(path, f"no folder {sub!r} in the zip (top-level: {', '.join(tops[:10])})")
    members, labels, classes = _labelled(entries)
    return ImageSet(f"{path}{':' + sub if sub else ''}", labels, classes, members, _ZipReader(str(path), members))


def _as_images(path: Path, a: np.ndarray) -> np.ndarray:
    """``[N, H, W(, C)]`` uint8 from any accepted layout; errors name the file."""
    if a.ndim == 4 and a.shape[1] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(0, 2, 3, 1)  # NCHW -> NHWC
    if a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[-1] not in (1, 3)):
        raise DataError(path, f"image array of shape {a.shape}; expected [N, H, W], [N, H, W, C] or [N, C, H, W], C in 1, 3")
    if a.size == 0:
        raise DataError(path, f"image array of shape {a.shape} holds no pixels")
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise DataError(path, "image array holds NaN or infinite values")
        if a.min() < 0 or a.max() > 1:
            raise DataError(path, f"float image values must lie in [0, 1], found [{a.min():.3g}, {a.max():.3g}]")
        return np.round(a * 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        if a.min() < 0 or a.max() > 255:
            raise DataError(path, f"integer image values must lie in [0, 255], found [{a.min()}, {a.max()}]")
        return a.astype(np.uint8)
    raise DataError(path, f"image array of dtype {a.dtype}")


def _labels(path: Path, y: Any, n: int) -> list[int]:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(path, f"labels of shape {y.shape} for {n} images")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(path, f"labels must be integers, got dtype {y.dtype}")
    return [int(v) for v in y]


def _read_numpy(path: Path) -> ImageSet:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(path, f"not a readable numpy file ({_short(exc)})") from None
    labels = None
    if isinstance(loaded, np.ndarray):
        array = loaded
    else:
        with loaded:
            key = next((k for k in ARRAY_KEYS if k in loaded.files), None)
            if key is None:
                raise DataError(path, f"no image array; expected one of {', '.join(ARRAY_KEYS)}, found {', '.join(loaded.files)}")
            array = loaded[key]
            label_key = next((k for k in LABEL_KEYS if k in loaded.files), None)
            if label_key is not None:
                labels = _labels(path, loaded[label_key], len(array))
    return _array_set(path, _as_images(path, array), labels)


def _array_set(path: Path, array: np.ndarray, labels: list[int] | None) -> ImageSet:
    """An in-memory ``[N, H, W(, C)]`` uint8 array as an ImageSet (labels as given)."""
    classes = [str(c) for c in sorted(set(labels))] if labels is not None else None
    names = [f"{path}[{i}]" for i in range(len(array))]
    return ImageSet(str(path), labels, classes, names, _ArrayReader(str(path), array))


def _read_idx(path: Path) -> np.ndarray:
    """An IDX array (LeCun's format: zero bytes, a type byte, the dimension count, then
    big-endian uint32 sizes and the data)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(path, f"not readable ({_short(exc)})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(path, "not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DataError(path, f"IDX data type 0x{raw[2]:02x}; only unsigned bytes (0x08) are images or labels")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(path, "IDX header truncated")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    size = int(np.prod(shape)) if shape else 0
    data = raw[4 + 4 * ndim :]
    if len(data) != size:
        raise DataError(path, f"IDX data holds {len(data)} bytes, its header says {size} ({'x'.join(map(str, shape))})")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _idx_files(folder: Path) -> list[Path]:
    """The IDX image files of a folder that holds no image files (MNIST's layout, as the
    original distribution and torchvision keep it)."""
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir()):
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and "idx3-ubyte" in p.name)


def _pick_idx(folder: Path, sub: str) -> Path:
    """The folder's one IDX image file, or the one whose name starts with ``sub``
    (``DIR:train``, ``DIR:t10k``)."""
    found = _idx_files(folder)
    chosen = [p for p in found if p.name.startswith(sub)] if sub else found
    if len(chosen) == 1:
        return chosen[0]
    names = ", ".join(p.name for p in found)
    if not chosen:
        raise DataError(folder, f"no IDX image file starts with {sub!r} (it holds {names})")
    prefixes = ", ".join(sorted({p.name.split("-")[0] for p in chosen}))
    raise DataError(folder, f"holds several IDX image files ({names}): pick one with {folder}:PREFIX, PREFIX one of {prefixes}")


def _read_idx_images(path: Path) -> ImageSet:
    array = _read_idx(path)
    if array.ndim != 3:
        raise DataError(path, f"IDX images must be [N, H, W], got {array.shape}")
    labels = None
    label_path = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
    if label_path.is_file():
        y = _read_idx(label_path)
        labels = _labels(label_path, y, len(array))
    return _array_set(path, array, labels)
