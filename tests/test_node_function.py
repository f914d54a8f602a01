"""NodeFunction: a node's calibration passes and validation batches in one compiled call."""

import keras
import numpy as np
import pytest

from tips_keras.search.node_function import NodeFunction
from tips_keras.training.batchnorm import Recalibrator
from tests.conftest import tiny_supernet


@pytest.fixture
def stem(blobs):
    keras.utils.set_random_seed(0)
    model = tiny_supernet()
    recal = Recalibrator(model, blobs[0][:96], batch_size=32, batches=3)
    features = keras.Model(model.inputs[0], model.get_layer("stem_conv").output)
    return model, recal, model.get_layer("stem_bn"), features


def test_calibration_passes_then_validation_in_one_call(stem, blobs):
    model, recal, bn, features = stem
    with recal.applied("largest"):  # the whole-model recalibration's statistics
        expected_stats = bn.moving_mean.numpy().copy()
        expected_val = bn(features(blobs[2]), training=False).numpy()
    shared = bn.moving_mean.numpy().copy()
    cal = [features(recal.batches[i]) for i in range(3)]
    val = [features(blobs[2][:64]), features(blobs[2][64:])]
    fn = NodeFunction(bn, lambda v, training: bn(v[0], training=training), 1, recal)
    recal.save()
    try:
        with recal.calibrating([bn]):
            outs = fn(*cal, *val)
        assert len(outs) == 5  # 3 calibration batches, then 2 validation batches
        np.testing.assert_allclose(bn.moving_mean.numpy(), expected_stats, rtol=1e-4, atol=1e-5)
        assert not np.allclose(expected_stats, shared)
        # the inference passes of the same call read the statistics the passes left
        np.testing.assert_allclose(np.concatenate([outs[3], outs[4]]), expected_val, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(outs[0].numpy(), bn(cal[0], training=True).numpy(), rtol=1e-4, atol=1e-4)
        with recal.calibrating([bn]):
            fn(*cal, *val)
        assert fn.trace_count == 1  # called again: no re-trace
    finally:
        recal.restore()
    np.testing.assert_array_equal(bn.moving_mean.numpy(), shared)


def test_without_a_recalibrator_only_the_inference_passes_run(stem, blobs):
    _, _, bn, features = stem
    before = bn.moving_mean.numpy().copy()
    val = [features(blobs[2][:64]), features(blobs[2][64:])]
    fn = NodeFunction(bn, lambda v, training: bn(v[0], training=training), 1)
    outs = fn(*val)
    assert len(outs) == 2 and fn.num_calibration == 0
    np.testing.assert_allclose(outs[1].numpy(), bn(val[1], training=False).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)


def test_bfloat16_outputs_come_back_as_float32(stem, blobs):
    _, _, bn, features = stem
    conv = keras.layers.Conv2D(3, 3, padding="same")
    conv.build((None, 12, 12, 4))
    fn = NodeFunction(conv, lambda v, training: conv(v[0]), 1, compute_dtype="bfloat16")
    x = features(blobs[2][:8])
    out = fn(x)[0]
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(out.numpy(), conv(x).numpy(), rtol=0.05, atol=0.05)
    assert not np.array_equal(out.numpy(), conv(x).numpy())  # really rounded through bfloat16
    with pytest.raises(ValueError, match="compute_dtype"):
        NodeFunction(conv, lambda v, training: conv(v[0]), 1, compute_dtype="float16")
