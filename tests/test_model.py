"""AnytimeModel: no re-tracing, multi-path gradient accumulation, distillation."""

import keras
import numpy as np
import pytest

import tips_keras as tips
from tests.conftest import tiny_supernet

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py


def test_changing_subnetworks_does_not_retrace(blobs):
    traces, seen = [], []

    @keras.saving.register_keras_serializable(package="tips_keras_tests")
    class CountingModel(tips.AnytimeModel):
        def train_step(self, data):
            traces.append(1)  # Python runs only while tracing.
            return super().train_step(data)

    class TraceProbe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(len(traces))

    base = tiny_supernet()
    model = CountingModel(base.inputs, base.outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    callback = tips.TIPSCallback(sampler="uniform", seed=3)
    x, y = blobs[0][:200], blobs[1][:200]
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[callback, TraceProbe()], verbose=0)  # 50 steps
    sampled = {tuple(v) for v in callback._record.vectors()}
    assert len(callback._record.steps) == 50
    assert len(sampled) > 5, "the subnetwork must change between steps"
    # Metrics and optimizer are built before the first trace (AnytimeModel._maybe_symbolic_build):
    # a first trace that created variables would make tf.function trace the whole step again.
    assert seen[0] == 1, f"traced {seen[0]} times in the first step"
    assert seen[-1] == seen[0], f"re-traced after the first step: traces per step {seen}"


def test_exits_model_outputs_every_reached_exit(supernet, blobs):
    x = blobs[0][:8]
    view = supernet.exits_model()
    assert view is supernet.exits_model()  # cached
    assert len(view.weights) == len(supernet.weights)  # the same weights, no copy
    supernet.set_config((1, [1, 0, 1, 1]))
    p0, p1 = (np.asarray(o) for o in view(x, training=False))
    np.testing.assert_allclose(p1, supernet.predict(x, verbose=0), atol=1e-6)
    supernet.set_config((0, [1, 0, 0, 0]))
    q0, q1 = (np.asarray(o) for o in view(x, training=False))
    np.testing.assert_allclose(q0, p0, atol=1e-6)  # exit 0 of the same trunk
    np.testing.assert_allclose(q0, supernet.predict(x, verbose=0), atol=1e-6)
    assert not q1.any()  # exit 1 is not reached: zeros, not computed


def test_set_training_step_delegates_and_refuses_objects_without_train_step(supernet, blobs):
    calls = []

    class Probe:
        def train_step(self, data):
            calls.append(1)
            return {"probe": 1.0}

    supernet.set_training_step(Probe())
    logs = supernet.train_on_batch(blobs[0][:8], blobs[1][:8], return_dict=True)
    assert calls and logs == {"probe": 1.0}
    supernet.set_training_step(None)
    assert supernet.training_step is None
    assert "loss" in supernet.train_on_batch(blobs[0][:8], blobs[1][:8], return_dict=True)
    with pytest.raises(ValueError, match="train_step.*Received: step of type int"):
        supernet.set_training_step(3)


def test_fit_hands_its_arguments_to_callbacks_that_ask(supernet, blobs):
    seen = {}

    class Listener(keras.callbacks.Callback):
        def set_fit_arguments(self, arguments):
            seen.update(arguments)

    x, y, xv, yv = blobs
    supernet.fit(x[:32], y[:32], 16, 1, 0, [Listener()], validation_data=(xv[:8], yv[:8]))
    assert seen["x"] is x[:32].base or np.shares_memory(seen["x"], x) and seen["batch_size"] == 16
    assert seen["validation_data"][0].shape == (8, 12, 12, 1) and seen["epochs"] == 1


def test_set_config_and_get_active_config(supernet):
    resolved = supernet.set_config({"exit": 1, "gates": {"stage0_block1": 1}})
    assert resolved == tips.Configuration(1, (0, 1, 0, 0))
    assert supernet.get_active_config() == resolved
