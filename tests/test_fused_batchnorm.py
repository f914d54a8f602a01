"""fused_batchnorm: Keras' BatchNorm results through FusedBatchNormV3 while a function is traced."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tips_keras.search.fused_batchnorm import fusable, fused_in


def _block(**bn_options):
    block = keras.Sequential([keras.layers.Conv2D(6, 3, padding="same"),
                              keras.layers.BatchNormalization(**bn_options), keras.layers.ReLU()])
    block.build((None, 7, 7, 3))
    bn = block.layers[1]
    rng = np.random.default_rng(0)
    size = bn.moving_mean.shape  # (6,): channels; (7,) with axis=1
    for variable in (bn.moving_mean, bn.gamma, bn.beta):  # away from the initial 0 / 1
        variable.assign(rng.normal(size=size).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=size).astype("float32"))
    return block


def _x(n=16, seed=1):
    return tf.constant(np.random.default_rng(seed).normal(size=(n, 7, 7, 3)).astype("float32") * 2 + 1)


def _ops(concrete):
    return {op.type for op in concrete.graph.get_operations()}


def _stats(bn):
    return bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()


@pytest.mark.parametrize("momentum", [0.9, "variable"])
def test_training_and_inference_match_keras_through_the_fused_kernel(momentum):
    x = _x()
    reference, fused = _block(), _block()
    fused.set_weights(reference.get_weights())
    if momentum == "variable":  # as the recalibration traces it: momentum read from a variable
        for block in (reference, fused):
            block.layers[1].momentum = tf.Variable(0.25)
    expected_train = reference(x, training=True).numpy()
    expected_stats = _stats(reference.layers[1])
    expected_infer = reference(x, training=False).numpy()
    with fused_in(fused) as swapped:
        assert swapped == [fused.layers[1]]
        train = tf.function(lambda v: fused(v, training=True)).get_concrete_function(x)
        infer = tf.function(lambda v: fused(v, training=False)).get_concrete_function(x)
    assert "FusedBatchNormV3" in _ops(train) and "FusedBatchNormV3" in _ops(infer)
    assert "SquaredDifference" not in _ops(train)  # no elementary moments
    np.testing.assert_allclose(train(x).numpy(), expected_train, rtol=1e-4, atol=1e-4)
    for got, want in zip(_stats(fused.layers[1]), expected_stats):  # biased variance, as Keras
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(infer(x).numpy(), expected_infer, rtol=1e-4, atol=1e-4)


def test_the_layer_gets_its_own_call_back_also_after_an_error():
    block = _block()
    bn = block.layers[1]
    with pytest.raises(RuntimeError, match="boom"):
        with fused_in(block):
            assert "call" in bn.__dict__
            raise RuntimeError("boom")
    assert "call" not in bn.__dict__
    plain = tf.function(lambda v: block(v, training=False)).get_concrete_function(_x())
    assert "FusedBatchNormV3" not in _ops(plain)


@pytest.mark.parametrize("options", [dict(renorm=True), dict(epsilon=1e-6), dict(axis=1), dict(synchronized=True)])
def test_layers_the_kernel_would_change_keep_the_keras_computation(options):
    block = _block(**options)
    bn = block.layers[1]
    assert not fusable(bn)
    x = _x()
    expected = block(x, training=False).numpy()
    with fused_in(block) as swapped:
        assert swapped == []
        infer = tf.function(lambda v: block(v, training=False)).get_concrete_function(x)
    assert "FusedBatchNormV3" not in _ops(infer)
    np.testing.assert_allclose(infer(x).numpy(), expected, rtol=1e-6)


def test_a_frozen_layer_stays_in_inference_mode_unless_made_trainable():
    x = _x()
    block = _block()
    bn = block.layers[1]
    bn.trainable = False  # Keras: inference mode even under training=True
    before = _stats(bn)
    expected = block(x, training=False).numpy()
    with fused_in(block):
        out = tf.function(lambda v: block(v, training=True))(x)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-4)
    for got, want in zip(_stats(bn), before):
        np.testing.assert_array_equal(got, want)


class _Shifted(keras.layers.BatchNormalization):
    """A user's subclass with a call of its own: it must keep it."""

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=training, mask=mask) + 1.0


def test_a_subclass_or_an_instance_with_its_own_call_keeps_it():
    bn = _Shifted()
    bn.build((None, 7, 7, 3))
    assert not fusable(bn)
    with fused_in(bn) as swapped:
        assert swapped == []
    block = _block()
    inner = block.layers[1]
    with fused_in(block):
        patched = inner.__dict__["call"]
        with fused_in(block) as nested:  # an outer swap is kept, not undone by the inner one
            assert nested == []
        assert inner.__dict__["call"] is patched
    assert "call" not in inner.__dict__
