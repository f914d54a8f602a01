"""Shared fixtures: a tiny gated supernet and a small learnable dataset."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

import tips_keras as tips


def tiny_supernet(**kwargs):
    """2 stages x 2 gated blocks, 4 / 8 channels: 4 gates, 2 exits, builds in well under a second."""
    options = dict(input_shape=(12, 12, 1), num_classes=4, widths=(4, 8), blocks_per_stage=2)
    options.update(kwargs)
    return tips.zoo.anytime_resnet(**options)


def make_blobs(n, seed=0, size=12, classes=4):
    """Noisy images of 4 local textures (horizontal / vertical stripes, checkerboard, solid patch)
    at a random place: learnable by shallow exits with global pooling in a few dozen steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0.0, 0.15, (n, size, size, 1)).astype("float32")
    rows, cols = np.mgrid[0:6, 0:6]
    patterns = [rows % 2, cols % 2, (rows + cols) % 2, np.ones((6, 6))]
    for i, label in enumerate(y):
        r, c = rng.integers(0, size - 6, 2)
        x[i, r : r + 6, c : c + 6, 0] += patterns[int(label) % 4]
    return x, y.astype("int32")


@pytest.fixture
def supernet():
    model = tiny_supernet()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="session")
def blobs():
    x, y = make_blobs(256, seed=0)
    xv, yv = make_blobs(128, seed=1)
    return x, y, xv, yv
