"""The recipe's learning-rate schedule: linear warm-up, then cosine decay to the final value."""

import math

import pytest

from tips_keras.training.schedule import (aux_weight_at, check_aux_weight, check_schedule, training_fraction,
                                         warmup_cosine)


def test_warmup_then_cosine():
    values = [warmup_cosine(s, 10, 2) for s in range(10)]
    assert values[:3] == [0.5, 1.0, 1.0]
    assert values[-1] == 0.0 and all(a >= b for a, b in zip(values[2:], values[3:]))
    assert warmup_cosine(5, 10, 2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 7)))
    assert warmup_cosine(99, 10, 2) == 0.0  # past the end: the final value
    assert warmup_cosine(9, 10, 0, final_fraction=0.1) == pytest.approx(0.1)
    assert warmup_cosine(0, 1, 5) == 1.0  # one step: no room for a warm-up


@pytest.mark.parametrize("args, fragment", [
    (("step", 0.1), "lr_schedule"),
    (("cosine", 1.0), "warmup"),
    (("cosine", -0.1), "warmup"),
    (("cosine", True), "warmup"),
])
def test_bad_arguments(args, fragment):
    with pytest.raises(ValueError, match=f"`{fragment}`.*Received"):
        check_schedule(*args)


def test_aux_weight_fades_by_a_half_cosine_over_the_training_steps():
    assert check_aux_weight(0.5) == (0.5, 0.5) and check_aux_weight([1, 0]) == (1.0, 0.0)
    values = [aux_weight_at((1.0, 0.2), training_fraction({"epochs": 2, "steps": 5}, e, b))
              for e in range(2) for b in range(5)]
    assert values[0] == 1.0 and values[-1] == pytest.approx(0.2)
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[4] + values[5] == pytest.approx(1.2, abs=0.1)  # symmetric about the middle
    assert aux_weight_at((0.5, 0.5), 0.3) == 0.5
    assert training_fraction({"epochs": 3}, 1, 0) == 0.5  # steps unknown: per epoch
    assert training_fraction({}, 0, 0) is None


@pytest.mark.parametrize("value", [1.5, -0.1, True, (1.0,), (1.0, 0.5, 0.0), "cosine", None])
def test_bad_aux_weight(value):
    with pytest.raises(ValueError, match=r"`aux_weight`.*Received: aux_weight="):
        check_aux_weight(value)
