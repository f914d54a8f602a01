"""Shared fixtures: a tiny gated supernet and a small learnable dataset."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Imported by pytest (a test process or xdist's controller), or by a child process of a test.
_UNDER_PYTEST = "_pytest.config" in sys.modules

import numpy as np
import pytest

# Grappler (TensorFlow's graph optimizer) rewrites each compiled function before its first run:
# ~3.5 s of a 14 s `fit` of the tiny supernet below (measured, stop 21), paid again by every fit
# of a fresh model, while these tests run a handful of steps. It changes speed, not results, so
# the tests run without it (as do the worker processes that import this module, and the --quick
# benchmark run); the notebooks and the QAT child run in processes of their own with TensorFlow's
# default and cover the optimized graphs end to end (the default recipe's training, the search,
# extraction, TFLite conversion, quantization-aware training). TIPS_TEST_GRAPPLER=1 runs every
# test with it.
def disable_grappler_unless_asked():
    """Turns Grappler off in this process unless ``TIPS_TEST_GRAPPLER=1`` (see above)."""
    if os.environ.get("TIPS_TEST_GRAPPLER") != "1":
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


# TensorFlow is imported where tests run, not in xdist's controller process, which only hands out
# the tests: importing it there (~5 s of CPU) delayed the start of the workers. The test processes
# (xdist workers: PYTEST_XDIST_WORKER; a plain `pytest -n 0`: `pytest_configure` below) and the
# child processes that import this module turn Grappler off as they load it.
if os.environ.get("PYTEST_XDIST_WORKER") or not _UNDER_PYTEST:
    disable_grappler_unless_asked()


def pytest_configure(config):
    """In a single pytest process (``-n 0``), which runs the tests itself: Grappler off."""
    if getattr(config.option, "dist", "no") == "no":
        disable_grappler_unless_asked()


# The suite runs on two xdist workers, one test file at a time each (`--dist loadfile`, pyproject).
# xdist hands out the files in collection order (`--no-loadscope-reorder`: its default order, by
# number of tests, put the few-test files that train in child processes last, and one worker ran
# them alone for the last ~45 s). Files marked `slow` (more than ~15 s each: several fits, or
# training in child processes) are collected first, so the many short files fill in at the end.
def pytest_collection_modifyitems(config, items):
    """Moves the tests of files marked ``slow`` first (a stable sort: files stay whole, in order)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# TensorFlow 2.21 never frees a graph in which a `tf.custom_gradient` was traced: the gradient
# function goes into a global registry under a fresh name ("CustomGradient-<uid>") and its
# closure holds the graph's tensors (tensorflow/tensorflow#97697). Keras' optimizer step traces
# one (`ReplicaContext.all_reduce` in `apply_gradients`), so every `fit` kept its training graph
# and its conditionals' branch graphs. Run alone, test_callback grew its process to 3.6 GB
# (1.5 M live objects); with this, 1.3 GB. In the whole suite the workers took so long to exit
# that xdist interrupted them (a KeyboardInterrupt traceback after the last test, ~20 s from the
# last test to the end; ~11 s with this). A test's graphs are done with once it ends (nothing
# differentiates them later), so their gradient entries go with it. A test that took the gradient
# of a function traced in an earlier test, through a custom gradient, would fail here.
def release_custom_gradients():
    """Drops TensorFlow's registered custom gradients (see above); returns how many."""
    ops = sys.modules.get("tensorflow.python.framework.ops")  # none before TensorFlow is imported
    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    names = [n for n in registry if n.startswith("CustomGradient-")] if isinstance(registry, dict) else []
    for name in names:
        del registry[name]
    return len(names)


@pytest.fixture(autouse=True)
def _release_custom_gradients():
    """After each test: drops the custom-gradient entries its traced graphs left behind."""
    yield
    release_custom_gradients()


def tiny_supernet(**kwargs):
    """2 stages x 2 gated blocks, 4 / 8 channels: 4 gates, 2 exits, builds in well under a second."""
    options = dict(input_shape=(12, 12, 1), num_classes=4, widths=(4, 8), blocks_per_stage=2)
    options.update(kwargs)
    import tips_keras as tips  # here, not at the top: see disable_grappler_unless_asked

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


def compiled_supernet():
    """`tiny_supernet` compiled with SGD, sparse cross-entropy and accuracy (for module fixtures).

    Plain SGD, not Adam: tracing Adam's per-variable update took about a fifth of a tiny ``fit``
    (1.0-1.8 s of 5-6 s with the default recipe, measured). Tests where the optimizer matters
    (masked updates, retracing, resuming, distributed training, accuracy floors) compile their own.
    """
    model = tiny_supernet()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture
def supernet():
    return compiled_supernet()


@pytest.fixture(scope="session")
def blobs():
    x, y = make_blobs(256, seed=0)
    xv, yv = make_blobs(128, seed=1)
    return x, y, xv, yv
