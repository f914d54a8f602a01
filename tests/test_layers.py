"""Gated layers: serialization, skipping, error messages."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tips_keras as tips
from tests.conftest import tiny_supernet


@keras.saving.register_keras_serializable(package="tips_keras_tests")
class CountingIdentity(keras.layers.Layer):
    """Identity that counts how often it actually runs (a variable increment inside the graph)."""

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

    def call(self, x):
        self.calls.assign_add(1.0)
        return x


def _gated_counter():
    inputs = keras.Input((3,))
    control = tips.SubnetController(1, 1)(inputs)
    counter = CountingIdentity()
    branch = tips.PathGate(counter, gate_index=0)([inputs, control])
    added = keras.layers.Add()([inputs, branch])
    head = tips.ExitHead(keras.layers.Dense(2), exit_index=0)([added, control])
    out = tips.ExitSelector()([head, control])
    return tips.AnytimeModel(inputs, out), counter


def test_switched_off_branch_is_not_computed():
    model, counter = _gated_counter()
    step = tf.function(lambda x: model(x, training=False))
    x = np.ones((2, 3), "float32")
    model.set_config((0, [0]))
    step(x)
    step(x)
    assert float(counter.calls.numpy()) == 0.0
    model.set_config((0, [1]))
    step(x)
    assert float(counter.calls.numpy()) == 1.0


def test_keras_round_trip_keeps_outputs_for_each_config(tmp_path, blobs):
    model = tiny_supernet()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(blobs[0][:64], blobs[1][:64], epochs=1, verbose=0)
    path = tmp_path / "supernet.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, tips.AnytimeModel)
    x = blobs[2][:8]
    for config in ["largest", "smallest", (1, [1, 0, 0, 1]), (0, [0, 1, 1, 1])]:
        model.set_config(config)
        loaded.set_config(config)
        np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_configurations_change_the_output_and_irrelevant_gates_do_not(supernet, blobs):
    x = blobs[0][:4]
    supernet.set_config((0, [1, 1, 0, 0]))
    a = supernet.predict(x, verbose=0)
    supernet.set_config((0, [1, 1, 1, 1]))  # Gates of stage 1 do not matter for exit 0.
    np.testing.assert_array_equal(a, supernet.predict(x, verbose=0))
    supernet.set_config((0, [0, 1, 0, 0]))
    assert np.abs(a - supernet.predict(x, verbose=0)).max() > 1e-6
    supernet.set_config((1, [1, 1, 0, 0]))
    assert np.abs(a - supernet.predict(x, verbose=0)).max() > 1e-6


def test_layer_configs_round_trip():
    gate = tips.PathGate(keras.layers.Dense(3), gate_index=2, min_exit=1, name="g")
    config = gate.get_config()
    assert config["gate_index"] == 2 and config["min_exit"] == 1
    clone = tips.PathGate.from_config(config)
    assert (clone.gate_index, clone.min_exit) == (2, 1)
    head = tips.ExitHead.from_config(tips.ExitHead(keras.layers.Dense(3), exit_index=1).get_config())
    assert head.exit_index == 1
    controller = tips.SubnetController.from_config(tips.SubnetController(3, 2).get_config())
    assert (controller.num_gates, controller.num_exits) == (3, 2)


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: tips.PathGate(keras.layers.Dense(2), gate_index=-1), "gate_index"),
        (lambda: tips.PathGate(keras.layers.Dense(2), gate_index=0, min_exit=-2), "min_exit"),
        (lambda: tips.ExitHead(keras.layers.Dense(2), exit_index="a"), "exit_index"),
        (lambda: tips.SubnetController(0, 1), "num_gates"),
        (lambda: tips.SubnetController(2, 0), "num_exits"),
    ],
)
def test_bad_layer_arguments_are_refused(make, argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*Received"):
        make()
