"""precision: weighted layers in bfloat16 while a layer call is traced, the user's policies kept."""

import keras
import numpy as np
import pytest

from tips_keras.search.precision import check_compute_dtype, compute_in


def _block():
    block = keras.Sequential([keras.layers.Conv2D(4, 3, padding="same"), keras.layers.BatchNormalization(),
                              keras.layers.ReLU(), keras.layers.Conv2D(4, 1, dtype="float16")])
    block.build((None, 6, 6, 2))
    return block


def test_weighted_layers_compute_in_bfloat16_and_get_their_policies_back():
    block = _block()
    conv, bn, _, half = block.layers
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype("float32")
    with compute_in(block, "bfloat16"):
        assert conv.dtype_policy.name == "mixed_bfloat16"  # variables float32, compute bfloat16
        assert bn.dtype_policy.name == "float32"  # statistics stay float32
        assert half.dtype_policy.name == "float16"  # a user's own precision is left alone
        y = conv(x)
        assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
        assert keras.backend.standardize_dtype(bn(y, training=True).dtype) == "float32"
    assert [layer.dtype_policy.name for layer in block.layers] == ["float32", "float32", "float32", "float16"]
    assert keras.backend.standardize_dtype(conv.kernel.dtype) == "float32"
    assert keras.backend.standardize_dtype(conv(x).dtype) == "float32"
    # bfloat16 keeps about 3 significant digits: the same convolution, rounded.
    with compute_in(conv, "bfloat16"):
        rounded = keras.ops.convert_to_numpy(keras.ops.cast(conv(x), "float32"))
    np.testing.assert_allclose(rounded, keras.ops.convert_to_numpy(conv(x)), rtol=0.05, atol=0.05)


def test_float32_changes_nothing_and_an_error_restores_the_policies():
    block = _block()
    with compute_in(block, "float32"):
        assert block.layers[0].dtype_policy.name == "float32"
    with pytest.raises(RuntimeError, match="boom"):
        with compute_in(block, "bfloat16"):
            raise RuntimeError("boom")
    assert block.layers[0].dtype_policy.name == "float32"


@pytest.mark.parametrize("value", ["float16", "bf16", None, 32])
def test_unknown_compute_dtypes_are_refused(value):
    with pytest.raises(ValueError, match=r"argument `compute_dtype`.*Received: compute_dtype="):
        check_compute_dtype(value)
    with pytest.raises(ValueError, match=r"argument `compute_dtype`"):
        with compute_in(_block(), value):
            pass
