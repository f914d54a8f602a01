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

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_model_optimization") is None
    or importlib.util.find_spec("tf_keras") is None,
    reason="tensorflow-model-optimization / tf_keras not installed (optional `qat` extra)",
)

from tips_keras import qat  # noqa: E402


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
