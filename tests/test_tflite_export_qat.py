"""Quantization-aware fine-tuning of an extracted sub-network (tf_keras + tfmot in a subprocess).

Skipped only when tf_keras / tensorflow-model-optimization are not installed (the optional
``qat`` extra).
"""

import importlib.util
import os
import sys

import keras
import numpy as np
import pytest

import tips_keras as tips
from tips_keras import extraction as export

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("tensorflow_model_optimization") is None
        or importlib.util.find_spec("tf_keras") is None,
        reason="tensorflow-model-optimization / tf_keras not installed (optional `qat` extra)",
    ),
    pytest.mark.slow,  # scheduled first: see tests/conftest.py
]

from tflite_export import qat  # noqa: E402


@pytest.fixture(scope="module")
def trained_sub():
    """A sub-network of a supernet trained briefly with path sampling on a Fashion-MNIST subset:
    like every extracted sub-network, it was never trained alone, so fine-tuning helps."""
    from tips_keras import data

    d = data.load("fashion_mnist", train_size=2000, val_size=500, test_size=600)  # setup.sh installs it
    keras.utils.set_random_seed(0)
    model = tips.zoo.anytime_resnet((28, 28, 1), 10, widths=(8, 16), blocks_per_stage=1)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(d.x_train, d.y_train, batch_size=64, epochs=2, verbose=0,
              callbacks=[tips.TIPSCallback(sampler="uniform")])
    sub = export.extract(model, (1, [0, 1]), recalibrate_data=d.x_train[:1024])
    return sub, d


def test_qat_int8_is_at_least_as_accurate_as_post_training_quantization(trained_sub):
    sub, d = trained_sub
    result = qat.quantization_aware_finetune(
        sub, d.x_train, d.y_train, epochs=2, validation_data=(d.x_test, d.y_test),
        representative_data=d.x_train[:300], learning_rate=1e-3)
    r = result.report
    print({k: v for k, v in r.items() if k != "history"})
    assert r["tf_keras_max_abs_diff"] < 1e-4  # the tf_keras rebuild computes the same function
    assert r["qat_int8_accuracy"] >= r["ptq_int8_accuracy"]
    assert r["qat_int8_accuracy"] > 0.5  # well above chance (10 classes)
    from tflite_export import inspect_model

    info = inspect_model(result.tflite)
    assert info["inputs"][0]["dtype"] == "int8" and info["outputs"][0]["dtype"] == "int8"
    assert info["signatures"] == {"serving_default": {"inputs": ["image"],
                                                      "outputs": ["probabilities"]}}
    assert r["size_bytes"] <= 1.2 * r["ptq_size_bytes"]
    # The caller's Keras is still Keras 3 (tfmot ran in the child process).
    assert os.environ.get("TF_USE_LEGACY_KERAS") in (None, "0", "")
    assert "tensorflow_model_optimization" not in sys.modules
    assert keras.__version__.startswith("3.")


def test_qat_rejects_models_that_are_not_plain(trained_sub):
    sub, d = trained_sub
    supernet = tips.zoo.anytime_resnet((28, 28, 1), 10, widths=(4,), blocks_per_stage=1)
    with pytest.raises(ValueError, match="not a built-in Keras layer"):
        qat.quantization_aware_finetune(supernet, d.x_train[:8], d.y_train[:8])
    with pytest.raises(ValueError, match="x_train"):
        qat.quantization_aware_finetune(sub, d.x_train[:8, :10], d.y_train[:8])
    with pytest.raises(ValueError, match="epochs"):
        qat.quantization_aware_finetune(sub, d.x_train[:8], d.y_train[:8], epochs=0)


def test_model_spec_round_trips_the_graph(trained_sub):
    sub, _ = trained_sub
    spec, weights = qat.model_spec(sub)
    assert spec["output"] == "probabilities" and spec["input_shape"] == [28, 28, 1]
    adds = [layer for layer in spec["layers"] if layer["class_name"] == "Add"]
    assert adds and all(layer["list_input"] and len(layer["inbound"]) == 2 for layer in adds)
    assert sum(np.prod(w.shape) for w in weights.values()) == sub.count_params()


# -- issue 16: models users bring ----------------------------------------------------------------
def _default_named_resnet():
    """A wrapped plain ResNet with SeparableConv2D and Keras' default layer names (conv2d, ...)."""
    L = keras.layers
    inputs = keras.Input((12, 12, 1))
    x = L.Conv2D(8, 3, padding="same")(inputs)
    for _ in range(2):
        y = L.SeparableConv2D(8, 3, padding="same")(x)
        y = L.BatchNormalization()(y)
        y = L.ReLU()(y)
        y = L.Conv2D(8, 3, padding="same")(y)
        x = L.Add()([x, y])
    return tips.anytime(keras.Model(inputs, L.Dense(4, activation="softmax")(L.GlobalAveragePooling2D()(x))))


def test_qat_of_a_wrapped_model_with_separable_convolutions_and_default_names():
    from tests.conftest import make_blobs

    x, y = make_blobs(256, seed=0)
    sub = export.extract(_default_named_resnet(), (0, [1, 0]), recalibrate_data=x)
    assert not any(isinstance(layer, keras.layers.Identity) for layer in sub.layers)  # anytime's exit
    assert qat.unsupported_layers(sub) == []
    result = qat.quantization_aware_finetune(sub, x, y, epochs=1, validation_data=(x[:64], y[:64]))
    assert result.report["tf_keras_max_abs_diff"] < 1e-4
    assert abs(result.report["qat_int8_accuracy"] - result.report["float_accuracy"]) <= 0.1


def test_layers_tfmot_cannot_quantize_are_refused_before_the_child_starts(monkeypatch):
    L = keras.layers
    inputs = keras.Input((12, 12, 1))
    x = L.Rescaling(1 / 255, name="scale")(inputs)
    x = L.Dense(4, activation="relu6", name="dense_relu6")(L.Flatten()(x))
    model = keras.Model(inputs, L.Dense(4, activation="softmax", name="out")(x))
    assert qat.unsupported_layers(model) == ["scale (Rescaling)", "dense_relu6 (Dense, activation='relu6')"]

    def no_child(*args, **kwargs):
        raise AssertionError("the child process must not start")

    monkeypatch.setattr(qat.subprocess, "run", no_child)
    x = np.zeros((8, 12, 12, 1), "float32")
    with pytest.raises(ValueError, match=r"2 unsupported layer\(s\): scale \(Rescaling\), dense_relu6"):
        qat.quantization_aware_finetune(model, x, np.zeros(8, "int32"))


def test_a_child_failure_puts_its_cause_first():
    stderr = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
              + "noise\n" * 300 + "RuntimeError: Layer probabilities: Identity is not supported\n")
    cause, tail = qat._child_error(stderr)
    assert cause == "RuntimeError: Layer probabilities: Identity is not supported"
    assert len(tail.splitlines()) <= 25
