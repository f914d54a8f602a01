"""Shared by the tflite_export tests: a tiny plain CNN trained on a Fashion-MNIST subset, and
untrained 8x8 nets (one pure int8, one with a LayerNormalization left in float) for the TFLite
Micro and int8-purity tests.

Import the fixtures into a test module (``from tests.tflite_fixtures import data, model``);
pytest then finds them there. The CNN is trained once per test session (~10 s), however many
of its files use it (no test changes it or its data); the 8x8 nets convert in about a second each.
"""

import functools
import os

import keras
import numpy as np
import pytest

from tips_keras import data as data_lib

QUANTS = ("float32", "float16", "dynamic", "int8")
LABELS = ["tshirt", "trouser", "pullover", "dress", "coat",
          "sandal", "shirt", "sneaker", "bag", "boot"]


# --------------------------------------------------------------------------- data
def _synthetic(n, seed):
    """10 classes = 10 fixed blurred templates + noise (learnable structure)."""
    rng = np.random.default_rng(0)
    templates = rng.random((10, 7, 7)).repeat(4, 1).repeat(4, 2)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = templates[y] + 0.3 * rng.standard_normal((n, 28, 28))
    return np.clip(x, 0, 1).astype("float32")[..., None], y.astype("int64")


def load_data(n_train=4000, n_test=1000):
    """Fashion-MNIST through `tips_keras.data` (synthetic templates where it is not installed)."""
    try:
        s = data_lib.load("fashion_mnist", val_size=0, train_size=n_train, test_size=n_test)
    except FileNotFoundError:
        return _synthetic(n_train, 1) + _synthetic(n_test, 2)
    return s.x_train, s.y_train.astype("int64"), s.x_test, s.y_test.astype("int64")


def build_cnn():
    L = keras.layers

    def cbr(x, ch, stride=1, relu=True):
        x = L.Conv2D(ch, 3, strides=stride, padding="same", use_bias=False)(x)
        x = L.BatchNormalization(momentum=0.9)(x)  # few steps: fast-moving stats
        return L.ReLU()(x) if relu else x

    inp = keras.Input((28, 28, 1))
    x = cbr(inp, 24, 2)
    y = cbr(cbr(x, 24), 24, relu=False)
    x = L.ReLU()(L.Add()([x, y]))
    x = cbr(cbr(x, 48, 2), 48, 2)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(10, activation="softmax")(x), name="tiny_cnn")


@functools.lru_cache(maxsize=None)
def _cached_data():
    """`load_data`, once per process (no test changes the arrays)."""
    return load_data()


@functools.lru_cache(maxsize=None)
def _trained_cnn(directory):
    """The CNN trained on `_cached_data`, once per test session (no test changes it).

    The first process to need it trains it and saves it to ``directory`` (a temporary name, then
    a rename); the other xdist worker loads that file instead of training again (~10 s). Two
    workers that ask at the same moment both train it, the same way (seed 0).
    """
    path = directory / "tflite_fixtures_cnn.keras"
    if path.exists():
        return keras.models.load_model(path)
    xtr, ytr, _, _ = _cached_data()
    keras.utils.set_random_seed(0)
    m = build_cnn()
    m.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    m.fit(xtr, ytr, epochs=2, batch_size=64, verbose=0)
    partial = directory / f"tflite_fixtures_cnn.{os.getpid()}.partial.keras"
    m.save(partial)
    os.replace(partial, path)
    return m


def _session_directory(tmp_path_factory):
    """A folder every process of this test session sees (xdist workers: their common parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="module")
def data():
    return _cached_data()


@pytest.fixture(scope="module")
def model(data, tmp_path_factory):
    return _trained_cnn(_session_directory(tmp_path_factory))


# ------------------------------------------------------------ tiny 8x8 models (TFLM, purity)
def build_tiny_net(layer_norm=False):
    """8x8x1 -> 3 classes, a few hundred parameters. ``layer_norm=True`` adds the
    LayerNormalization whose int8 conversion keeps a float NEG between DEQUANTIZE and QUANTIZE."""
    L = keras.layers
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, padding="same", activation=None if layer_norm else "relu")(inp)
    if layer_norm:
        x = L.LayerNormalization()(x)
    x = L.GlobalAveragePooling2D()(x)
    name = "tiny_layernorm" if layer_norm else "tiny_pure"
    return keras.Model(inp, L.Dense(3, activation="softmax")(x), name=name)


def tiny_data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 1)).astype("float32"), rng.integers(0, 3, n).astype("int64")


@pytest.fixture(scope="module")
def tiny_models():
    """Untrained tiny nets and their int8 conversions: ``{"pure"|"layernorm": (model, bytes)}``,
    plus ``"dynamic"``: dynamic-range bytes (hybrid FULLY_CONNECTED, which TFLM cannot run)."""
    from tflite_export import convert_model

    keras.utils.set_random_seed(0)
    x, _ = tiny_data()
    out = {}
    for key, ln in (("pure", False), ("layernorm", True)):
        m = build_tiny_net(ln)
        out[key] = (m, convert_model(m, "int8", representative_data=x[:30]))
    L = keras.layers
    inp = keras.Input((8, 8, 1))
    dense = keras.Model(inp, L.Dense(3, activation="softmax")(
        L.Dense(32, activation="relu")(L.Flatten()(inp))))
    out["dynamic"] = (dense, convert_model(dense, "dynamic"))
    return out
