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


@pytest.mark.parametrize(
    "kwargs, argument",
    [(dict(widths=()), "widths"), (dict(widths=(4, 0)), "widths"), (dict(blocks_per_stage=0), "blocks_per_stage"),
     (dict(blocks_per_stage=True), "blocks_per_stage"),
     (dict(num_classes=1), "num_classes")],
)
def test_bad_builder_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*Received"):
        tips.zoo.anytime_resnet(**kwargs)
