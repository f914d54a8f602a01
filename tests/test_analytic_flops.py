"""Analytic FLOPs per layer and per configuration."""

import keras
import pytest

import tips_keras as tips
from tips_keras.supernet import analytic_flops as flops_lib
from tests.conftest import tiny_supernet


def test_conv2d_and_dense_by_hand():
    inputs = keras.Input((10, 10, 3))
    conv = keras.layers.Conv2D(8, 3, strides=2, padding="same")
    x = conv(inputs)  # out 5 x 5 x 8
    dense = keras.layers.Dense(7)
    y = dense(keras.layers.Flatten()(x))  # 200 -> 7
    keras.Model(inputs, y)
    assert flops_lib.module_macs(conv) == 5 * 5 * 8 * (3 * 3 * 3)
    assert flops_lib.module_macs(dense) == 200 * 7


def test_einsum_transpose_conv3d_layernorm_embedding_by_hand():
    tokens = keras.Input((5,), dtype="int32")
    embed = keras.layers.Embedding(50, 6)
    einsum = keras.layers.EinsumDense("abc,cd->abd", output_shape=(5, 4))
    norm = keras.layers.LayerNormalization()
    ellipsis = keras.layers.EinsumDense("...b,bc->...c", output_shape=3)
    keras.Model(tokens, ellipsis(norm(einsum(embed(tokens)))))
    assert flops_lib.module_macs(embed) == 0
    assert flops_lib.module_macs(einsum) == 5 * 4 * 6  # 5 x 4 outputs, each a sum over c = 6
    assert flops_lib.module_macs(norm) == 5 * 4
    assert flops_lib.module_macs(ellipsis) == 5 * 3 * 4
    volume = keras.Input((4, 4, 4, 2))
    conv3d = keras.layers.Conv3D(3, 3, padding="same")
    image = keras.Input((4, 4, 2))
    transpose = keras.layers.Conv2DTranspose(5, 3, strides=2, padding="same")  # 4x4x2 -> 8x8x5
    keras.Model([volume, image], [conv3d(volume), transpose(image)])
    assert flops_lib.module_macs(conv3d) == 4 * 4 * 4 * 3 * (27 * 2)
    assert flops_lib.module_macs(transpose) == 4 * 4 * 2 * 9 * 5


def test_depthwise_batchnorm_pool_add_by_hand():
    inputs = keras.Input((6, 6, 4))
    dw = keras.layers.DepthwiseConv2D(3, padding="same")
    bn = keras.layers.BatchNormalization()
    pool = keras.layers.MaxPooling2D(2)
    add = keras.layers.Add()
    a = dw(inputs)
    b = bn(a)
    c = pool(add([a, b]))
    gap = keras.layers.GlobalAveragePooling2D()
    model = keras.Model(inputs, gap(c))
    assert flops_lib.module_macs(dw) == 6 * 6 * 4 * 9
    assert flops_lib.module_macs(bn) == 6 * 6 * 4
    assert flops_lib.module_macs(pool) == 3 * 3 * 4 * 4
    assert flops_lib.module_macs(add) == 6 * 6 * 4
    assert flops_lib.module_macs(gap) == 3 * 3 * 4
    assert flops_lib.module_macs(model) == 6 * 6 * 4 * 9 + 144 + 144 + 144 + 36


def test_configuration_flops_follow_the_gates():
    model = tiny_supernet()
    largest, smallest = tips.flops(model, "largest"), tips.flops(model, "smallest")
    assert 0 < smallest < largest
    branch = flops_lib.module_macs(model.get_layer("stage0_block1").layer)
    add = 12 * 12 * 4
    full_exit0 = tips.flops(model, (0, [1, 1, 0, 0]))
    assert full_exit0 - tips.flops(model, (0, [1, 0, 0, 0])) == branch + add
    # Gates after the exit cost nothing.
    assert tips.flops(model, (0, [1, 1, 1, 1])) == full_exit0
    # The largest configuration counts every layer once, except the heads of earlier exits.
    assert largest == sum(
        flops_lib.module_macs(layer)
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer) and layer.name != "exit0"
    )


def test_params_per_configuration():
    model = tiny_supernet()
    _, params_small = tips.cost(model, "smallest")
    _, params_large = tips.cost(model, "largest")
    assert params_small < params_large
    unused = model.controller.count_params() + model.get_layer("exit0").count_params()
    assert params_large == model.count_params() - unused


def _new_layer_class():
    """A fresh layer type with one weight and no counting rule (rules are global, per class)."""

    class Scale(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(1,))

        def call(self, x):
            return x * self.w

    return Scale


def test_unknown_layer_with_weights_needs_a_rule():
    Mystery = _new_layer_class()
    inputs = keras.Input((3,))
    layer = Mystery()
    keras.Model(inputs, layer(inputs))
    with pytest.raises(ValueError, match="register_flops"):
        flops_lib.module_macs(layer)
    flops_lib.register_flops(Mystery, lambda layer, ins, out: 3)
    assert flops_lib.module_macs(layer) == 3


def test_registering_a_rule_refreshes_cached_costs():
    Scale = _new_layer_class()
    flops_lib.register_flops(Scale, lambda layer, ins, out: 0)
    model = tips.anytime(_gated_model(Scale))
    before = tips.flops(model, "largest")
    flops_lib.register_flops(Scale, lambda layer, ins, out: 1000)
    assert tips.flops(model, "largest") == before + 1000


def _gated_model(layer_class):
    """Dense -> residual block whose branch ends in ``layer_class`` -> softmax."""
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4)(inputs)
    branch = layer_class()(keras.layers.Dense(4)(x))
    y = keras.layers.Add()([x, branch])
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(y))
