"""Zoo builders."""

import numpy as np
import pytest

import tips_keras as tips


def test_resnet_layout():
    model = tips.zoo.anytime_resnet((16, 16, 1), 5, widths=(4, 8, 16), blocks_per_stage=3)
    space = model.config_space
    assert space.num_gates == 9 and space.num_exits == 3
    assert space.gate_min_exit == (0, 0, 0, 1, 1, 1, 2, 2, 2)
    assert model.output_shape == (None, 5)


def test_mobilenet_layout_and_forward():
    model = tips.zoo.anytime_mobilenet((16, 16, 3), 4, widths=(8, 12), blocks_per_stage=2)
    assert model.config_space.num_gates == 4
    x = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    for config in ("largest", "smallest"):
        model.set_config(config)
        probs = model.predict(x, verbose=0)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert tips.flops(model, "smallest") < tips.flops(model, "largest")


@pytest.mark.parametrize("builder", [tips.zoo.anytime_resnet, tips.zoo.anytime_mobilenet])
def test_stride_2_stem_halves_every_stage_and_quarters_its_macs(builder):
    plain = builder((16, 16, 3), 4, widths=(8, 12), blocks_per_stage=1)
    strided = builder((16, 16, 3), 4, widths=(8, 12), blocks_per_stage=1, stem_stride=2)
    assert plain.get_layer("stem_conv").output.shape[1:3] == (16, 16)
    assert strided.get_layer("stem_conv").output.shape[1:3] == (8, 8)
    assert strided.get_layer("exit1").output.shape == plain.get_layer("exit1").output.shape
    # Every convolution after the stem sees a quarter of the positions; the heads' dense
    # layers (after global pooling) cost the same.
    for config in ("largest", "smallest"):
        assert tips.flops(strided, config) < 0.3 * tips.flops(plain, config)
    x = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    np.testing.assert_allclose(strided.predict(x, verbose=0).sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, argument",
    [(dict(widths=()), "widths"), (dict(widths=(4, 0)), "widths"), (dict(blocks_per_stage=0), "blocks_per_stage"),
     (dict(blocks_per_stage=True), "blocks_per_stage"),
     (dict(num_classes=1), "num_classes"), (dict(stem_stride=3), "stem_stride"),
     (dict(stem_stride=True), "stem_stride")],
)
def test_bad_builder_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*Received"):
        tips.zoo.anytime_resnet(**kwargs)
