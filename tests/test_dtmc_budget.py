"""The important path of each FLOPs budget: exact knapsack by enumeration, greedy beyond it."""

import itertools

import numpy as np
import pytest

from tips_keras import dtmc


def _brute_force(base_value, gate_value, base_cost, gate_cost, min_exit, budget):
    best = None
    for e in range(len(base_value)):
        reach = [g for g in range(len(gate_value)) if min_exit[g] <= e]
        for bits in itertools.product([0, 1], repeat=len(reach)):
            on = [g for g, b in zip(reach, bits) if b]
            cost = base_cost[e] + sum(gate_cost[g] for g in on)
            value = base_value[e] + sum(gate_value[g] for g in on)
            if cost <= budget and (best is None or (value, -cost, e) > best[:3]):
                best = (value, -cost, e, tuple(int(g in on) for g in range(len(gate_value))))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_enumeration_finds_the_best_configuration_of_every_budget(seed):
    rng = np.random.default_rng(seed)
    g, e = 6, 3
    base_value, gate_value = rng.random(e).cumsum(), rng.random(g)
    base_cost, gate_cost = rng.integers(1, 5, e).cumsum().astype(float), rng.integers(1, 6, g).astype(float)
    min_exit = np.sort(rng.integers(0, e, g))
    budgets = [float(b) for b in rng.integers(2, 30, 4)]
    found = dtmc.best_configurations(base_value, gate_value, base_cost, gate_cost, min_exit, budgets)
    for budget, got in zip(budgets, found):
        want = _brute_force(base_value, gate_value, base_cost, gate_cost, min_exit, budget)
        if want is None:
            assert got is None
        else:
            assert got[0] == want[2] and got[1] == want[3]
            assert got[2] == pytest.approx(want[0]) and got[3] == pytest.approx(-want[1])


def test_greedy_beyond_the_enumeration_limit_fits_the_budget_and_prefers_value_per_flop():
    gate_value, gate_cost = np.array([1.0, 1.0, 3.0, 0.1]), np.array([1.0, 2.0, 2.0, 1.0])
    exit_, bits, tps, flops = dtmc.best_configurations([0.0], gate_value, [0.0], gate_cost, [0, 0, 0, 0],
                                                        [3.0], limit=2)[0]
    assert bits == (1, 0, 1, 0) and tps == 4.0 and flops == 3.0


def test_importance_is_the_share_of_budgets_and_a_budget_below_everything_has_no_path():
    found = dtmc.best_configurations([1.0], [1.0, 2.0], [10.0], [5.0, 5.0], [0, 0], [5.0, 15.0, 20.0])
    assert found[0] is None and found[1][1] == (0, 1) and found[2][1] == (1, 1)
    np.testing.assert_allclose(dtmc.budget_importance(found, 2), [0.5, 1.0])
    np.testing.assert_allclose(dtmc.budget_importance([None], 2), [0.0, 0.0])


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(gate_value=[1.0, np.nan]), "gate_value"),
    (dict(base_cost=[1.0, 2.0]), "base_cost"),
    (dict(gate_min_exit=[0.5, 0]), "gate_min_exit"),
    (dict(budgets=[-1.0]), "budgets"),
    (dict(budgets=[True]), "budgets"),
])
def test_bad_arguments_are_refused(kwargs, fragment):
    args = dict(base_value=[1.0], gate_value=[1.0, 1.0], base_cost=[1.0], gate_cost=[1.0, 1.0],
                gate_min_exit=[0, 0], budgets=[3.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"`{fragment}`.*Received"):
        dtmc.best_configurations(**args)
