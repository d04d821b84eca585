"""Image readers: folder, zip in place, npy/npz, IDX; one-line errors naming the file."""

from __future__ import annotations

import gzip
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contrastlib.data.images import read_images
from contrastlib.errors import DataError

BUNDLED = Path(__file__).resolve().parents[2] / "datasets" / "digits"
CIFAR_ZIP = Path(__file__).resolve().parents[3] / "shared" / "data" / "images" / "cifar10" / "cifar10-jpeg.zip"


def _png(path: Path, value: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (6, 5), value if mode == "L" else (value, 0, 255 - value)).save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for cls, n in (("cat", 2), ("dog", 3)):
        for i in range(n):
            _png(tmp_path / "set" / "train" / cls / f"{i}.png", 40 * i)
    return tmp_path / "set"


def test_folder_classes_in_sorted_order_and_split(folder):
    s = read_images(f"{folder}:train")
    assert len(s) == 5 and s.classes == ["cat", "dog"] and s.labels == [0, 0, 1, 1, 1]
    img = s.image(3)
    assert img.size == (6, 5) and img.mode == "RGB"


def test_zip_is_read_in_place_and_matches_the_folder(folder, tmp_path):
    z = tmp_path / "set.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(folder.rglob("*.png")):
            zf.write(p, p.relative_to(folder).as_posix())
    from_zip, from_dir = read_images(f"{z}:train"), read_images(f"{folder}:train")
    assert from_zip.labels == from_dir.labels and from_zip.classes == from_dir.classes
    for i in range(len(from_dir)):
        assert np.array_equal(np.asarray(from_zip.image(i)), np.asarray(from_dir.image(i)))
    with pytest.raises(DataError, match="no folder 'val' in the zip"):
        read_images(f"{z}:val")


def test_zip_member_with_dot_dot_or_absolute_path_is_refused(tmp_path):
    for bad in ("../evil.png", "/abs.png", "a/../../b.png"):
        z = tmp_path / "bad.zip"
        with zipfile.ZipFile(z, "w") as zf:
            zf.writestr("ok/1.png", b"x")
            zf.writestr(bad, b"x")
        with pytest.raises(DataError, match="absolute path or '..' refused"):
            read_images(z)


def test_an_undecodable_file_is_named_before_training(folder):
    bad = folder / "train" / "dog" / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError) as err:
        read_images(f"{folder}:train")
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_a_truncated_image_fails_on_decode_with_its_name(folder):
    good = folder / "train" / "dog" / "0.png"
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(good)
    good.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    s = read_images(f"{folder}:train", verify="header")  # the header is intact
    i = s.names.index(str(good))
    with pytest.raises(DataError, match="not a decodable image") as err:
        s.image(i)
    assert str(good) in str(err.value)
    with pytest.raises(DataError, match=str(good)):
        read_images(f"{folder}:train", verify="decode")


def test_npz_npy_layouts_and_bad_arrays(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(4, 3, 5, 6), dtype=np.uint8)  # NCHW
    np.savez(tmp_path / "a.npz", x=x, y=np.array([0, 1, 1, 2]))
    s = read_images(tmp_path / "a.npz")
    assert s.labels == [0, 1, 1, 2] and np.array_equal(np.asarray(s.image(2)), x[2].transpose(1, 2, 0))
    np.save(tmp_path / "f.npy", x.transpose(0, 2, 3, 1).astype(np.float32) / 255)
    s = read_images(tmp_path / "f.npy")
    assert s.labels is None and np.array_equal(np.asarray(s.image(1)), x[1].transpose(1, 2, 0))
    np.save(tmp_path / "nan.npy", np.full((2, 4, 4), np.nan, dtype=np.float32))
    with pytest.raises(DataError, match="nan.npy: image array holds NaN"):
        read_images(tmp_path / "nan.npy")
    np.savez(tmp_path / "nolab.npz", pixels=x)
    with pytest.raises(DataError, match="no image array; expected one of images, x, data"):
        read_images(tmp_path / "nolab.npz")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.npy: not a readable numpy file"):
        read_images(tmp_path / "junk.npy")


def _idx(path: Path, a: np.ndarray, gz: bool = False) -> None:
    raw = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def test_idx_images_with_their_labels_gzipped_or_not(tmp_path):
    x = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    for gz in (False, True):
        suffix = ".gz" if gz else ""
        _idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", x, gz)
        _idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.array([7, 1, 7]), gz)
        s = read_images(tmp_path / f"t10k-images-idx3-ubyte{suffix}")
        assert s.labels == [7, 1, 7] and np.array_equal(np.asarray(s.image(1)), x[1])
    (tmp_path / "bad-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 10, 4, 5) + b"\0" * 7)
    with pytest.raises(DataError, match="IDX data holds 7 bytes, its header says 200"):
        read_images(tmp_path / "bad-images-idx3-ubyte")
    (tmp_path / "magic-images-idx3-ubyte").write_bytes(b"\x12\x34\x08\x03")
    with pytest.raises(DataError, match="bad magic"):
        read_images(tmp_path / "magic-images-idx3-ubyte")


def test_an_idx_folder_reads_like_its_files(tmp_path):
    """MNIST's layout (the original distribution's and torchvision's raw/ folder): the
    folder reads as its one IDX pair, or as the pair ``:PREFIX`` names."""
    x, y = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4), np.array([3, 5])
    one = tmp_path / "one"
    one.mkdir()
    _idx(one / "train-images-idx3-ubyte.gz", x, True)
    _idx(one / "train-labels-idx1-ubyte.gz", y, True)
    by_file = read_images(one / "train-images-idx3-ubyte.gz")
    by_folder = read_images(one)
    assert by_folder.labels == by_file.labels == [3, 5]
    assert np.array_equal(np.asarray(by_folder.image(1)), np.asarray(by_file.image(1)))
    _idx(one / "t10k-images-idx3-ubyte.gz", x[:1], True)
    _idx(one / "t10k-labels-idx1-ubyte.gz", y[:1], True)
    assert len(read_images(f"{one}:t10k")) == 1 and len(read_images(f"{one}:train")) == 2
    with pytest.raises(DataError, match=r"several IDX image files .*PREFIX one of t10k, train"):
        read_images(one)


def test_bundled_digits():
    s = read_images(BUNDLED / "digits-train.npz")
    assert len(s) == 1442 and sorted(set(s.labels)) == list(range(10))
    assert s.image(0).size == (8, 8) and s.image(0).mode == "L"


@pytest.mark.skipif(not CIFAR_ZIP.is_file(), reason="../shared/data is only on CI and dev machines")
def test_cifar10_zip_split_in_place():
    s = read_images(f"{CIFAR_ZIP}:test", verify="none")
    assert len(s) == 10_000 and len(s.classes) == 10 and s.classes[0] == "airplane"
    assert s.image(0).size == (32, 32) and s.labels.count(3) == 1000


def test_unknown_path_and_format(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_images(tmp_path / "missing")
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(DataError, match="not an image set"):
        read_images(tmp_path / "x.csv")
