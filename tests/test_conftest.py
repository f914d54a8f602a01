"""The suite's own fixtures (tests/conftest.py): releasing the graphs TensorFlow keeps."""

import gc
import weakref

import keras
import numpy as np
from tensorflow.python.framework import func_graph

from tests.conftest import release_custom_gradients


def _graphs():
    gc.collect()
    return [g for g in gc.get_objects() if isinstance(g, func_graph.FuncGraph)]


def test_a_finished_training_graph_is_freed_once_its_custom_gradients_are_released():
    release_custom_gradients()
    before = weakref.WeakSet(_graphs())  # weak: by identity, without keeping them alive
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    model.train_on_batch(np.ones((4, 3), "float32"), np.zeros((4, 2), "float32"))
    del model
    kept = [weakref.ref(g) for g in _graphs() if g not in before]
    # TensorFlow 2.21 keeps the training step's graph after its model died (tensorflow#97697).
    # When this fails, TensorFlow frees such graphs itself and the fixture can go.
    assert kept, "no graph was kept after the model died"
    assert release_custom_gradients() >= 1  # Keras' optimizer step registered one
    gc.collect()
    assert [ref for ref in kept if ref() is not None] == []
