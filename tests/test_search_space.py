"""SearchSpace: budgets, exact FLOPs, canonical values, repair and fill."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tips_keras as tips
from tips_keras.search.space import SearchSpace, budget_to_flops
from tests.conftest import tiny_supernet


@pytest.fixture(scope="module")
def space():
    return SearchSpace(tiny_supernet(), importance=[0.9, 0.1, 0.7, 0.3])


def test_costs_match_the_analytic_flops(space):
    vectors = space.all_vectors()
    assert len(vectors) == space.size == 4 + 16
    flops, params = space.cost(vectors)
    for v, f, p in zip(vectors[::3], flops[::3], params[::3]):
        assert (f, p) == tips.cost(space.model, space.to_config(v))
    assert space.full_flops == tips.flops(space.model, "largest")
    assert space.smallest_flops == tips.flops(space.model, "smallest") == flops.min()


def test_budgets_fraction_or_absolute():
    assert budget_to_flops(0.5, 1000) == 500 and budget_to_flops(1, 1000) == 1000
    assert budget_to_flops(1500, 1000) == 1500 and budget_to_flops(2.5e3, 1000) == 2500
    for bad in (0, -0.5, float("nan"), float("inf"), "0.5", True, None):
        with pytest.raises(ValueError, match="`budget`.*Received"):
            budget_to_flops(bad, 1000)


def test_resolve_budgets_sorts_and_deduplicates(space):
    full = space.full_flops
    out = space.resolve_budgets([1.0, 0.5, full // 2, full])
    np.testing.assert_array_equal(out, [full // 2, full])


def test_budget_below_the_smallest_configuration_is_a_clear_error(space):
    with pytest.raises(ValueError) as info:
        space.resolve_budgets([0.01, 0.5])
    message = str(info.value)
    assert message.startswith("Invalid value for argument `budgets`")
    assert f"smallest configuration has {space.smallest_flops} FLOPs" in message
    assert "Received: budgets=[0.01, 0.5]" in message
    for bad in ([], [0.5, -1], ["a"]):
        with pytest.raises(ValueError, match="`budgets`"):
            space.resolve_budgets(bad)


def test_values_round_trip_and_are_canonical(space):
    hp = space.hyperparameters()
    assert [p.name for p in hp.space] == ["exit"] + list(space.gate_names)
    values = space.to_values(np.array([1, 1, 1, 1, 0], np.float32))  # exit 0: stage-1 gates off
    assert values == {"exit": 0, space.gate_names[0]: True, space.gate_names[1]: True,
                      space.gate_names[2]: False, space.gate_names[3]: False}
    np.testing.assert_array_equal(space.from_values(values), [1, 1, 0, 0, 0])


def test_zero_importance_means_uniform():
    model = tiny_supernet()
    assert not model.controller.importance.numpy().any()
    space = SearchSpace(model)
    assert not space.importance_given
    np.testing.assert_array_equal(space.importance, [0.5] * 4)
    with pytest.raises(ValueError, match="`importance`.*Received"):
        SearchSpace(model, importance=[1.0, 0.5])


@settings(max_examples=25, deadline=None)
@given(bits=st.lists(st.integers(0, 1), min_size=4, max_size=4), exit_index=st.integers(0, 1),
       fraction=st.floats(0.04, 1.0))
def test_repair_fits_and_fill_is_maximal(space, bits, exit_index, fraction):
    budget = max(int(fraction * space.full_flops), space.smallest_flops)
    vector = np.array(bits + [exit_index], np.float32)
    repaired = space.repair(vector[None], budget)
    assert space.cost(repaired)[0][0] <= budget
    np.testing.assert_array_equal(space.canonical(repaired), repaired)
    if space.cost(space.canonical(vector[None]))[0][0] <= budget:  # fitting vectors are kept
        np.testing.assert_array_equal(repaired, space.canonical(vector[None]))
    rng = np.random.default_rng(bits + [exit_index])
    assert space.cost(space.repair(vector[None], budget, rng=rng, weights=[1, 2, 3, 4]))[0][0] <= budget
    assert space.cost(space.fill(repaired, budget, rng=rng))[0][0] <= budget
    filled = space.fill(repaired, budget)[0]
    assert space.cost(filled[None])[0][0] <= budget
    assert np.all(filled[:-1] >= repaired[0][:-1])  # fill only switches gates on
    for g in np.flatnonzero(space.relevant(filled[None])[0] & (filled[:-1] < 0.5)):
        more = filled.copy()
        more[g] = 1.0
        assert space.cost(more[None])[0][0] > budget  # no off-gate could still be switched on


def test_repair_switches_off_the_least_important_gate_first(space):
    largest = np.array([[1, 1, 1, 1, 1]], np.float32)
    without_least = largest.copy()
    without_least[0, 1] = 0  # importance 0.1: the least important gate
    budget = space.cost(without_least)[0][0]
    np.testing.assert_array_equal(space.repair(largest, budget), without_least)
