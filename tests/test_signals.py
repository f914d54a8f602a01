"""Tests for tips_keras.signals: training signals as per-sub-network DTMC weights."""

import numpy as np
import pytest

from tips_keras import signals


def test_weights_are_relative_to_the_paths_of_the_same_exit():
    vectors = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=float)  # exits 0, 0, 1, 1
    weights = signals.exit_normalized_weights(vectors, np.array([3.0, 1.0, 0.2, 0.6]))
    np.testing.assert_allclose(weights, [1.5, 0.5, 0.5, 1.5])
    # A constant offset between exits (early exits have a higher loss) does not matter.
    shifted = signals.exit_normalized_weights(vectors, np.array([30.0, 10.0, 0.2, 0.6]))
    np.testing.assert_allclose(shifted, weights)


def test_missing_or_unusable_signals_get_weight_one():
    vectors = np.array([[1, 0], [0, 0], [1, 1], [0, 1]], dtype=float)
    weights = signals.exit_normalized_weights(vectors, np.array([np.nan, 2.0, 0.0, np.inf]))
    np.testing.assert_allclose(weights, [1.0, 1.0, 1.0, 1.0])
    assert np.all(weights > 0)


def test_signal_column_and_validation():
    table = np.array([[2.0, 5.0], [1.0, 3.0]])
    assert signals.signal_column(table, "loss").tolist() == [2.0, 1.0]
    assert signals.check_signal(None) is None
    with pytest.raises(ValueError, match="`signal`.*Received: signal='gradient'"):
        signals.check_signal("gradient")
    with pytest.raises(ValueError, match="Received: shapes"):
        signals.exit_normalized_weights(np.zeros((3, 2)), np.zeros(2))
