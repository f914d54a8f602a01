"""Tests for tips_keras.training.signals: training signals as per-sub-network DTMC weights."""

import numpy as np
import pytest

from tips_keras.training import signals


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


def test_marginal_importance_ranks_gates_by_their_measured_effect():
    # Gate 0 lowers the loss by 1 when on, gate 1 by 0.5, gate 2 does nothing; one exit.
    rng = np.random.default_rng(0)
    gates = rng.integers(0, 2, size=(400, 3)).astype(float)
    loss = 3.0 - gates[:, 0] - 0.5 * gates[:, 1] + rng.normal(0, 0.05, 400)
    vectors = np.concatenate([gates, np.zeros((400, 1))], axis=1)
    importance = signals.marginal_importance(vectors, loss, (0, 0, 0))
    assert importance[0] == 1.0 and importance[2] == 0.0 and 0.3 < importance[1] < 0.7
    # A gradient norm is better when higher: the same numbers rank the other way round.
    flipped = signals.marginal_importance(vectors, loss, (0, 0, 0), signal="grad_norm")
    assert flipped[0] == 0.0 and flipped[2] == 1.0


def test_marginal_importance_ignores_draws_that_exit_before_the_gate():
    # Gate 1 sits after exit 0: only the exit-1 draws (rows 2, 3) tell what it does.
    vectors = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 1], [0, 1, 1], [0, 0, 1]], float)
    loss = np.array([5.0, 1.0, 1.0, 2.0, 1.5, 2.5])
    importance = signals.marginal_importance(vectors, loss, (0, 1))
    assert importance.tolist() == [0.0, 1.0]  # gate 1 on: loss lower; gate 0 on: loss not lower
    # Not seen both on and off (gate 0 always on), or nothing recorded: neutral 0.5.
    assert signals.marginal_importance(vectors[:4], loss[:4], (0, 1)).tolist() == [0.5, 0.5]
    assert signals.marginal_importance(vectors, np.full(6, np.nan), (0, 1)).tolist() == [0.5, 0.5]


def test_marginal_importance_validation():
    with pytest.raises(ValueError, match=r"`vectors`.*G = 3 gates.*\(2, 3\)"):
        signals.marginal_importance(np.zeros((2, 3)), np.zeros(2), (0, 0, 0))
    with pytest.raises(ValueError, match="`signal`.*signal=None"):
        signals.marginal_importance(np.zeros((2, 4)), np.zeros(2), (0, 0, 0), signal=None)
