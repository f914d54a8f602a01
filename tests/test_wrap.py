"""anytime(model): gating the residual blocks of a user's functional model."""

import keras
import numpy as np
import pytest

import tips_keras as tips
from tips_keras.supernet.wrap import anytime

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py


def _resnet_like():
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(6, 3, padding="same", name="stem")(inputs)
    for i in range(3):
        y = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name=f"b{i}_conv1")(x)
        y = keras.layers.BatchNormalization(name=f"b{i}_bn")(y)
        y = keras.layers.Conv2D(6, 3, padding="same", name=f"b{i}_conv2")(y)
        x = keras.layers.Add(name=f"b{i}_add")([x, y])
        x = keras.layers.ReLU(name=f"b{i}_relu")(x)
    # A projection block: both Add inputs are computed -> stays fixed.
    p = keras.layers.Conv2D(8, 1, strides=2, name="proj")(x)
    q = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="down")(x)
    x = keras.layers.Add(name="down_add")([p, q])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="head")(x), name="resnetlike")


def test_hand_built_resnet_gets_one_gate_per_identity_block(blobs):
    base = _resnet_like()
    wrapped = anytime(base)
    assert isinstance(wrapped, tips.AnytimeModel)
    assert wrapped.config_space.gate_names == ("b0_add_gate", "b1_add_gate", "b2_add_gate")
    x = blobs[0][:8]
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), base.predict(x, verbose=0), atol=1e-6)
    wrapped.set_config((0, [1, 0, 1]))
    assert np.abs(wrapped.predict(x, verbose=0) - base.predict(x, verbose=0)).max() > 1e-6
    assert tips.flops(wrapped, (0, [0, 0, 0])) < tips.flops(wrapped, "largest")
    wrapped.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    callback = tips.TIPSCallback(sampler="tips")
    wrapped.fit(blobs[0][:64], blobs[1][:64], batch_size=32, epochs=1, callbacks=[callback], verbose=0)
    assert set(callback.importance) == set(wrapped.config_space.gate_names)


def test_mobilenetv2_inverted_residuals_are_gated(tmp_path):
    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=5, alpha=0.35)
    adds = [layer for layer in base.layers if isinstance(layer, keras.layers.Add)]
    wrapped = anytime(base)
    assert wrapped.config_space.num_gates == len(adds) == 10
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), base.predict(x, verbose=0), atol=1e-5)
    # One eager step: the default recipe's 4-path step through MobileNetV2 costs more to trace
    # than to run (graph mode and more steps are covered by the zoo supernets' tests).
    wrapped.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    wrapped.fit(x, np.arange(4) % 5, batch_size=4, epochs=1, callbacks=[tips.TIPSCallback()], verbose=0)
    path = tmp_path / "wrapped.keras"
    wrapped.save(path)
    loaded = keras.models.load_model(path)
    loaded.set_config((0, [1, 0] * 5))
    wrapped.set_config((0, [1, 0] * 5))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), wrapped.predict(x, verbose=0), atol=1e-6)


def test_refuses_models_without_residual_blocks_and_other_kinds():
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(4)(inputs)))
    with pytest.raises(ValueError, match="no residual blocks"):
        anytime(plain)
    with pytest.raises(ValueError, match="Sequential"):
        anytime(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        anytime(Subclassed())
    with pytest.raises(ValueError, match="already an anytime"):
        anytime(tips.zoo.anytime_resnet((12, 12, 1), 4, widths=(4,), blocks_per_stage=1))
