"""Configurations: resolution, canonical form, clear errors."""

import numpy as np
import pytest

from tips_keras.supernet.configs import ConfigSpace, Configuration

SPACE = ConfigSpace(("a", "b", "c"), (0, 0, 1), num_exits=2)


def test_resolve_accepts_every_documented_form():
    expected = Configuration(1, (1, 0, 1))
    assert SPACE.resolve(expected) == expected
    assert SPACE.resolve((1, [1, 0, 1])) == expected
    assert SPACE.resolve({"exit": 1, "gates": [1, 0, 1]}) == expected
    assert SPACE.resolve({"exit": 1, "gates": {"a": 1, "c": 1}}) == expected
    assert SPACE.resolve("largest") == Configuration(1, (1, 1, 1))
    assert SPACE.resolve("smallest") == Configuration(0, (0, 0, 0))


@pytest.mark.parametrize(
    "config, fragment",
    [
        ((1, [1, 0]), "Expected 3 gate bits"),
        ({"exit": 0, "gates": {"zzz": 1}}, "unknown gate names \\['zzz'\\]"),
        ((2, [0, 0, 0]), "exit index in \\[0, 1\\]"),
        ((0, [0, 2, 0]), "bits in \\{0, 1\\}"),
        ("medium", "one of 'largest', 'smallest'"),
        ({"gates": [0, 0, 0]}, "keys 'exit' and 'gates'"),
        (42, "Expected a Configuration"),
    ],
)
def test_resolve_refuses_bad_configurations(config, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        SPACE.resolve(config)
    assert "Received" in str(info.value)


def test_canonical_zeroes_gates_after_the_exit():
    assert SPACE.canonical(Configuration(0, (1, 1, 1))) == Configuration(0, (1, 1, 0))
    vectors = SPACE.canonical_vectors(np.array([[1, 1, 1, 0], [1, 0, 1, 1]], dtype="float32"))
    np.testing.assert_array_equal(vectors, [[1, 1, 0, 0], [1, 0, 1, 1]])


def test_vector_round_trip_and_dict():
    config = Configuration(1, (0, 1, 1))
    assert Configuration.from_vector(config.to_vector()) == config
    assert config.to_dict(SPACE.gate_names) == {"exit": 1, "gates": {"a": 0, "b": 1, "c": 1}}


def test_all_vectors_enumerates_each_subnetwork_once():
    vectors = SPACE.all_vectors()
    assert len(vectors) == 4 + 8  # exit 0: gates a, b; exit 1: a, b, c
    assert len({tuple(v) for v in vectors}) == len(vectors)
    np.testing.assert_array_equal(SPACE.canonical_vectors(vectors), vectors)
    with pytest.raises(ValueError, match="more than limit=5"):
        SPACE.all_vectors(limit=5)
