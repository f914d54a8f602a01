"""The sampler state in the SubnetController: stored, counted per update, restored."""

import keras
import numpy as np

from tests.conftest import tiny_supernet
from tips_keras.training import sampling
from tips_keras.training import state as state_lib


def read(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable))


def test_an_update_is_stored_counted_and_restored_into_a_fresh_sampler():
    model = tiny_supernet()
    space = model.config_space
    sampler = sampling.get_sampler("tips", space, 4, include_largest=True, include_smallest=True)
    fresh = sampling.get_sampler("tips", space, 4, include_largest=True, include_smallest=True)
    assert state_lib.load_state(fresh, model.controller) is None  # nothing stored yet
    importance = np.array([1.0, 0.5, 0.25, 0.0])
    sampler.update(importance, np.stack([space.largest().to_vector()]))
    state_lib.record_update(sampler, model.controller, importance)
    state_lib.record_update(sampler, model.controller, importance)
    assert float(read(model.controller.updates)) == 2.0
    restored = state_lib.load_state(fresh, model.controller)
    np.testing.assert_allclose(restored, importance)
    np.testing.assert_allclose(fresh.gate_probs, sampler.gate_probs, rtol=1e-6)
    for i in range(3):
        np.testing.assert_array_equal(fresh.sample(np.random.default_rng(i)), sampler.sample(np.random.default_rng(i)))
