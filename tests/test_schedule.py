"""The recipe's learning-rate schedule: linear warm-up, then cosine decay to the final value."""

import math

import pytest

from tips_keras.training.schedule import check_schedule, warmup_cosine


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
