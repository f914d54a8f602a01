"""Oracles: budgets enforced in populate_space, canonical unique proposals, guidance, state.

The oracles are driven directly (create_trial / update_trial / end_trial) with a synthetic
accuracy, so these tests evaluate no model.
"""

import numpy as np
import pytest
from keras_tuner.engine import trial as trial_module

from tips_keras.search import RandomOracle, SearchSpace, TIPSOracle, get_oracle
from tests.conftest import tiny_supernet

IMPORTANCE = [1.0, 0.0, 0.8, 0.2]


@pytest.fixture(scope="module")
def space():
    return SearchSpace(tiny_supernet(), importance=IMPORTANCE)


def fake_accuracy(space, vector):
    """Deeper exits and important gates help: a smooth landscape the oracles can climb."""
    return float(0.3 + 0.2 * vector[-1] + 0.1 * np.dot(vector[:-1], space.importance))


def drive(oracle, space, directory, trials=100):
    oracle._set_project_dir(str(directory), "project")
    created = []
    for _ in range(trials):
        trial = oracle.create_trial("tuner0")
        if trial.status == trial_module.TrialStatus.STOPPED:
            break
        vector = space.from_values(trial.hyperparameters.values)
        oracle.update_trial(trial.trial_id, {"accuracy": fake_accuracy(space, vector)})
        trial.status = trial_module.TrialStatus.COMPLETED
        oracle.end_trial(trial)
        created.append(trial)
    return created


@pytest.mark.parametrize("kind", ["tips", "random"])
def test_every_trial_fits_its_budget_and_every_budget_is_covered(space, tmp_path, kind):
    budgets = [0.3, 0.6]
    oracle = get_oracle(kind, space, budgets, max_trials=12, seed=3)
    trials = drive(oracle, space, tmp_path)
    assert len(trials) == len(oracle.trials) == 12
    largest = space.resolve_budgets(budgets)[-1]
    targets = []
    for t in oracle.trials.values():
        flops = space.cost(space.from_values(t.hyperparameters.values))[0][0]
        proposal = oracle.proposals[t.trial_id]
        assert flops <= proposal["budget"] <= largest
        if proposal["origin"] != "enumeration":
            assert proposal["budget"] == proposal["target"]
        targets.append(proposal["target"])
    assert sorted(set(targets)) == list(space.resolve_budgets(budgets))  # round robin
    assert targets.count(targets[0]) == 6


@pytest.mark.parametrize("kind", ["tips", "random"])
def test_proposals_are_canonical_and_never_repeated_until_the_space_is_exhausted(space, tmp_path, kind):
    oracle = get_oracle(kind, space, [1.0], max_trials=50, seed=0)
    trials = drive(oracle, space, tmp_path)
    keys = []
    for t in trials:
        values = t.hyperparameters.values
        vector = space.from_values(values)
        assert values == space.to_values(vector)  # canonical: no bit set after the exit
        keys.append(space.key(vector))
    assert len(keys) == len(set(keys)) == space.size == 20  # all 20 sub-networks, once each
    assert oracle.create_trial("tuner0").status == trial_module.TrialStatus.STOPPED


def test_tips_seeds_switch_on_gates_by_importance(space):
    oracle = TIPSOracle(space, [1.0], max_trials=5)
    # Room for the deepest exit plus its two most important gates (0 and 2), not a third one.
    target = space.cost(np.array([[1, 0, 1, 0, 1]], np.float32))[0][0]
    seeds = oracle.seeds(target)
    np.testing.assert_array_equal(seeds[0], [1, 0, 1, 0, 1])
    assert seeds[1][-1] == 0 and seeds[1][0] == 1  # exit 0 seed: most important stage-0 gate on


def test_tips_mutations_follow_importance(space):
    oracle = TIPSOracle(space, [1.0], max_trials=5, candidates=2000, fill_rate=0.0, exit_rate=0.0)
    parents = np.array([[0, 0, 0, 0, 1], [1, 1, 1, 1, 1]], np.float32)
    rng = np.random.default_rng(0)
    from_empty = oracle.mutants(parents[:1], np.array([0.5]), space.full_flops, rng)
    on_rate = from_empty[:, :-1].mean(axis=0)
    assert on_rate[0] > 2.5 * on_rate[1] and on_rate[2] > 1.5 * on_rate[3], on_rate
    from_full = oracle.mutants(parents[1:], np.array([0.5]), space.full_flops, rng)
    off_rate = 1.0 - from_full[:, :-1].mean(axis=0)
    assert off_rate[1] > 2.5 * off_rate[0] and off_rate[3] > 1.5 * off_rate[2], off_rate
    assert not (from_empty == parents[0]).all(axis=1).any()  # every child differs


def test_tips_reaches_an_importance_aligned_optimum_within_its_seeds(space, tmp_path):
    budget = space.cost(np.array([[1, 0, 1, 0, 1]], np.float32))[0][0]
    found = {}
    for kind in ("tips", "random"):
        oracle = get_oracle(kind, space, [budget], max_trials=4, seed=1)
        trials = drive(oracle, space, tmp_path / kind)
        found[kind] = max(t.score for t in trials)
    optimum = fake_accuracy(space, np.array([1, 0, 1, 0, 1], np.float32))
    assert found["tips"] == pytest.approx(optimum)
    assert found["random"] <= found["tips"]


def test_state_round_trip_and_fingerprint_check(space, tmp_path):
    oracle = TIPSOracle(space, [0.5, 1.0], max_trials=6, seed=4)
    drive(oracle, space, tmp_path, trials=3)
    state = oracle.get_state()
    twin = TIPSOracle(space, [0.5, 1.0], max_trials=6, seed=4)
    twin.trials = dict(oracle.trials)
    twin.set_state(state)
    assert twin.proposals == oracle.proposals and twin._tried_so_far == oracle._tried_so_far
    other = TIPSOracle(space, [0.4, 1.0], max_trials=6, seed=4)
    other.trials = dict(oracle.trials)
    with pytest.raises(ValueError, match="Cannot resume.*overwrite=True"):
        other.set_state(state)
    random_one = RandomOracle(space, [0.5, 1.0], max_trials=6, seed=4)
    random_one.trials = dict(oracle.trials)
    with pytest.raises(ValueError, match="Cannot resume"):
        random_one.set_state(state)


def test_bad_arguments(space):
    with pytest.raises(ValueError, match="`oracle`.*Received: oracle='bayes'"):
        get_oracle("bayes", space, [1.0])
    with pytest.raises(ValueError, match="`max_trials`.*Received"):
        TIPSOracle(space, [1.0], max_trials=0)
    with pytest.raises(ValueError, match="`guidance`.*Received"):
        TIPSOracle(space, [1.0], guidance=2.0)
    with pytest.raises(ValueError, match="`space`"):
        TIPSOracle(tiny_supernet(), [1.0])
    mine = RandomOracle(space, [0.5], max_trials=3)
    assert get_oracle(mine, space, [1.0]) is mine  # an instance keeps its own budgets
    other = SearchSpace(tiny_supernet(blocks_per_stage=1))
    with pytest.raises(ValueError, match="another supernet.*Received"):
        get_oracle(RandomOracle(other, [1.0]), space, [1.0])
    with pytest.raises(ValueError, match="smallest configuration has"):
        RandomOracle(space, [10], max_trials=3)


def test_tips_oracle_starts_from_the_important_paths_stored_by_training():
    model = tiny_supernet()
    rows = np.full((8, 5), -1.0, np.float32)
    rows[:2] = [[1, 0, 1, 0, 1], [0, 1, 0, 0, 0]]  # an exit-1 path and an exit-0 path
    model.controller.important_paths.assign(rows)
    space = SearchSpace(model, importance=IMPORTANCE)
    np.testing.assert_array_equal(space.important_paths, rows[:2])
    flops = space.cost(rows[:2])[0]
    oracle = TIPSOracle(space, budgets=[1.0], max_trials=5)
    seeds = oracle.seeds(float(flops.max()))
    np.testing.assert_array_equal(seeds[:2], rows[:2])  # most FLOPs first, then the greedy fills
    only_small = oracle.seeds(float(flops.min()))
    np.testing.assert_array_equal(only_small[0], rows[1])
    assert not any(np.array_equal(r, rows[0]) for r in only_small)  # over that budget: not proposed
    assert len(SearchSpace(tiny_supernet()).important_paths) == 0  # untrained: none
