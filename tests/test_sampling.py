"""Samplers: distributions, reproducibility, errors."""

import numpy as np
import pytest

from tips_keras.training import sampling
from tips_keras.supernet.configs import ConfigSpace

SPACE = ConfigSpace(tuple(f"g{i}" for i in range(6)), (0, 0, 1, 1, 2, 2), num_exits=3)


def _many(sampler, n=4000, seed=0):
    return np.concatenate([sampler.sample(np.random.default_rng([seed, i])) for i in range(n)])


@pytest.mark.parametrize("name", sampling.SAMPLERS)
def test_same_seed_same_paths(name):
    a = sampling.get_sampler(name, SPACE).sample(np.random.default_rng([7, 1, 2]))
    b = sampling.get_sampler(name, SPACE).sample(np.random.default_rng([7, 1, 2]))
    np.testing.assert_array_equal(a, b)


def test_uniform_gates_half_on_and_exits_uniform():
    draws = _many(sampling.get_sampler("uniform", SPACE))
    exits = draws[:, -1].astype(int)
    np.testing.assert_allclose(np.bincount(exits) / len(draws), [1 / 3] * 3, atol=0.03)
    # Gate 0 matters for every exit: on half the time.
    assert abs(draws[:, 0].mean() - 0.5) < 0.03
    # Gates after the exit are canonicalised to 0.
    assert np.all(draws[exits == 0][:, 2:6] == 0)


def test_sandwich_largest_smallest_then_random():
    sampler = sampling.get_sampler("sandwich", SPACE, n_random=3)
    paths = sampler.sample(np.random.default_rng(0))
    assert paths.shape == (5, 7)
    np.testing.assert_array_equal(paths[0], SPACE.largest().to_vector())
    np.testing.assert_array_equal(paths[1], SPACE.smallest().to_vector())
    assert sampling.get_sampler("sandwich", SPACE, paths_per_step=4).paths_per_step == 4


def test_stochastic_depth_survival_decays_linearly():
    sampler = sampling.get_sampler("stochastic_depth", SPACE, final_survival=0.5)
    np.testing.assert_allclose(sampler.gate_probs, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
    draws = _many(sampler)
    last = draws[draws[:, -1] == 2]
    assert abs(last[:, 5].mean() - 0.5) < 0.05 and last[:, 0].mean() == 1.0


def test_tips_maps_importance_to_probabilities():
    sampler = sampling.get_sampler("tips", SPACE, p_min=0.1, p_max=0.9)
    np.testing.assert_allclose(sampler.gate_probs, 0.5)
    sampler.update(np.array([1.0, 0.5, 0.0, 0.25, 1.0, 0.0]))
    np.testing.assert_allclose(sampler.gate_probs, [0.9, 0.5, 0.1, 0.3, 0.9, 0.1])
    draws = _many(sampler)
    assert abs(draws[:, 0].mean() - 0.9) < 0.03
    smooth = sampling.get_sampler("tips", SPACE, p_min=0.0, p_max=1.0, smoothing=0.5)
    smooth.update(np.ones(6))
    np.testing.assert_allclose(smooth.gate_probs, 0.75)


def test_tips_include_largest():
    sampler = sampling.get_sampler("tips", SPACE, paths_per_step=3, include_largest=True)
    paths = sampler.sample(np.random.default_rng(0))
    np.testing.assert_array_equal(paths[0], SPACE.largest().to_vector())
    assert paths.shape == (3, 7)


def test_tips_largest_prob_replaces_that_share_of_the_drawn_paths():
    largest = SPACE.largest().to_vector()
    sampler = sampling.get_sampler("tips", SPACE, largest_prob=0.25)
    paths = _many(sampler, n=4000)
    share = np.mean(np.all(paths == largest, axis=1))
    # 0.25 replaced + the drawn paths that happen to be the largest (0.5**6 / 3 of the rest).
    assert abs(share - (0.25 + 0.75 * 0.5**6 / 3)) < 0.025
    # Off by default, and then the draws are those of a sampler without the option.
    plain, zero = sampling.get_sampler("tips", SPACE), sampling.get_sampler("tips", SPACE, largest_prob=0.0)
    np.testing.assert_array_equal(_many(plain, n=50), _many(zero, n=50))
    # Fixed paths stay in place: only the drawn ones are replaced.
    mixed = sampling.get_sampler("tips", SPACE, paths_per_step=2, include_smallest=True, largest_prob=1.0)
    out = mixed.sample(np.random.default_rng(0))
    np.testing.assert_array_equal(out[0], SPACE.smallest().to_vector())
    np.testing.assert_array_equal(out[1], largest)


def test_tips_sandwich_draws_the_middle_paths_by_importance():
    sampler = sampling.get_sampler("tips", SPACE, paths_per_step=4, include_largest=True,
                                   include_smallest=True, p_min=0.0, p_max=1.0)
    sampler.update(np.array([1, 1, 1, 0, 0, 0], float))
    for seed in range(5):
        paths = sampler.sample(np.random.default_rng(seed))
        assert paths.shape == (4, 7)
        np.testing.assert_array_equal(paths[0], SPACE.largest().to_vector())
        np.testing.assert_array_equal(paths[1], SPACE.smallest().to_vector())
        for path in paths[2:]:  # importance 1 -> on, 0 -> off (gates past the exit canonically off)
            expected = SPACE.canonical_vectors([[1, 1, 1, 0, 0, 0, path[-1]]])[0]
            np.testing.assert_array_equal(path, expected)
    with pytest.raises(ValueError, match="Expected at least 2.*paths_per_step=1"):
        sampling.get_sampler("tips", SPACE, paths_per_step=1, include_largest=True, include_smallest=True)
    fixed_only = sampling.get_sampler("uniform", SPACE, paths_per_step=2, include_largest=True,
                                      include_smallest=True)  # the sandwich's two ends, nothing drawn
    np.testing.assert_array_equal(fixed_only.sample(np.random.default_rng(0)),
                                  [SPACE.largest().to_vector(), SPACE.smallest().to_vector()])


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(name="random"), "sampler"),
        (dict(name="tips", p_min=0.9, p_max=0.1), "p_min <= p_max"),
        (dict(name="tips", p_min=1.5), "p_min"),
        (dict(name="tips", largest_prob=-0.1), "largest_prob"),
        (dict(name="uniform", paths_per_step=0), "paths_per_step"),
        (dict(name="sandwich", paths_per_step=1), "paths_per_step"),
        (dict(name="stochastic_depth", final_survival=2.0), "final_survival"),
        (dict(name="uniform", bogus=1), "Invalid options"),
    ],
)
def test_bad_sampler_arguments(kwargs, fragment):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=fragment) as info:
        sampling.get_sampler(name, SPACE, **kwargs)
    assert "Received" in str(info.value)


def test_tips_update_refuses_nan():
    with pytest.raises(ValueError, match="finite"):
        sampling.get_sampler("tips", SPACE).update(np.full(6, np.nan))


@pytest.mark.parametrize("gate_probs, exit_probs", [(np.full(6, 0.5), np.zeros(3)),
                                                    (np.full(6, 1.5), np.ones(3)),
                                                    (np.full(6, 0.5), [1.0, np.nan, 1.0])])
def test_set_state_refuses_a_distribution_it_cannot_sample(gate_probs, exit_probs):
    sampler = sampling.get_sampler("tips", SPACE)
    with pytest.raises(ValueError, match="Invalid sampler state.*Received: gate_probs="):
        sampler.set_state(gate_probs, exit_probs)


def test_tips_focus_draws_the_important_paths():
    sampler = sampling.get_sampler("tips", SPACE, paths_per_step=4, include_largest=True,
                                   include_smallest=True, focus=0.5)
    plain = sampling.get_sampler("uniform", SPACE, paths_per_step=4, include_largest=True, include_smallest=True)
    for seed in range(3):  # no important paths yet: exactly the uniform sampler's draws
        rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
        np.testing.assert_array_equal(sampler.sample(rng_a), plain.sample(rng_b))
    important = SPACE.canonical_vectors([[1, 0, 1, 0, 0, 0, 2], [0, 1, 0, 0, 0, 0, 0]])
    padded = np.concatenate([important, -np.ones((3, 7), np.float32)])  # the controller's padding
    sampler.update(np.full(6, 0.5), padded)
    np.testing.assert_array_equal(sampler.important, important)
    drawn = np.concatenate([sampler.sample(np.random.default_rng(s))[2:] for s in range(400)])
    hits = [np.mean(np.all(drawn == row, axis=1)) for row in important]
    assert all(0.2 < h < 0.3 for h in hits), hits  # focus 0.5 split over 2 paths (+ rare chance hits)
    sampler.update(np.full(6, 0.5))  # no new paths: the old ones stay
    np.testing.assert_array_equal(sampler.important, important)
    restored = sampling.get_sampler("tips", SPACE, paths_per_step=4, include_largest=True, include_smallest=True)
    restored.set_state(sampler.gate_probs, sampler.exit_probs, padded)
    np.testing.assert_array_equal(restored.sample(np.random.default_rng(9)), sampler.sample(np.random.default_rng(9)))
    with pytest.raises(ValueError, match="`focus`.*Received"):
        sampling.get_sampler("tips", SPACE, focus=1.5)


def test_a_factory_builds_the_user_s_sampler_or_is_refused():
    own = sampling.UniformSampler(SPACE, paths_per_step=3)
    assert sampling.get_sampler(lambda space: own, SPACE, paths_per_step=1, p_min=0.2) is own  # options unused
    with pytest.raises(ValueError, match="callable must return .*Received: dict"):
        sampling.get_sampler(lambda space: {}, SPACE)
