"""Tests for tips_keras.dtmc.graph: topological order, pruning, path enumeration."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.dtmc_graphs import CHAIN_EDGES
from tests.dtmc_graphs import CHAIN_V
from tests.dtmc_graphs import PATH3_EDGES as _E
from tests.dtmc_graphs import SINK
from tests.dtmc_graphs import SOURCE
from tests.dtmc_graphs import assert_keras_style_value_error
from tests.dtmc_graphs import chain_active
from tests.dtmc_graphs import random_dags
from tips_keras.dtmc import enumerate_paths
from tips_keras.dtmc import prune_to_paths
from tips_keras.dtmc import topological_order


# --------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------


def test_prune_removes_dangling_branch():
    # 0 -> 1 -> 3 (sink); 0 -> 2 dead end; 2 -> 4 dead end.
    edges = [[0, 1], [1, 3], [0, 2], [2, 4]]
    out = prune_to_paths(5, edges, np.ones((1, 4), bool), 0, 3)
    np.testing.assert_array_equal(out, [[True, True, False, False]])


def test_prune_removes_edges_after_unreachable_node():
    # Block 1 conv branch: in -> mid1 off, mid1 -> out1 on: mid1 -> out1 is unreachable.
    active = chain_active((1, 1, 1))
    active[0, 0] = False
    out = prune_to_paths(CHAIN_V, CHAIN_EDGES, active, SOURCE, SINK)
    expected = active.copy()
    expected[0, 1] = False
    np.testing.assert_array_equal(out, expected)
    # A chain cut in the middle: nothing reaches the sink, everything goes.
    cut = prune_to_paths(4, [[0, 1], [1, 2], [2, 3]], [[1, 0, 1], [1, 1, 1]], 0, 3)
    np.testing.assert_array_equal(cut, [[False, False, False], [True, True, True]])


def test_prune_is_vectorised_over_configs_and_idempotent():
    rng = np.random.default_rng(3)
    active = rng.random((50, len(CHAIN_EDGES))) < 0.6
    out = prune_to_paths(CHAIN_V, CHAIN_EDGES, active, SOURCE, SINK)
    for t in range(50):
        np.testing.assert_array_equal(
            out[t], prune_to_paths(CHAIN_V, CHAIN_EDGES, active[t:t + 1], SOURCE, SINK)[0]
        )
    np.testing.assert_array_equal(prune_to_paths(CHAIN_V, CHAIN_EDGES, out, SOURCE, SINK), out)
    assert not np.any(out & ~active)


def _on_path_pairs(paths):
    return {(p[i], p[i + 1]) for p in paths for i in range(len(p) - 1)}


@settings(max_examples=30, deadline=None)
@given(dag=random_dags(), data=st.data())
def test_prune_matches_brute_force(dag, data):
    n, edges, source, sink = dag
    active = np.array(data.draw(st.lists(
        st.lists(st.booleans(), min_size=len(edges), max_size=len(edges)), min_size=1, max_size=4
    )))
    out = prune_to_paths(n, edges, active, source, sink)
    for t, row in enumerate(active):
        pairs = _on_path_pairs(enumerate_paths(n, edges, source, sink, edge_mask=row))
        expected = [bool(row[e]) and (int(u), int(v)) in pairs for e, (u, v) in enumerate(edges)]
        np.testing.assert_array_equal(out[t], expected)


def test_enumerate_paths_and_topological_order():
    assert enumerate_paths(CHAIN_V, CHAIN_EDGES, SOURCE, SINK) == [
        [0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 6], [0, 1, 2, 4, 5, 6], [0, 1, 2, 4, 6],
        [0, 2, 3, 4, 5, 6], [0, 2, 3, 4, 6], [0, 2, 4, 5, 6], [0, 2, 4, 6],
    ]
    mask = chain_active((0, 1, 0))[0]
    assert enumerate_paths(CHAIN_V, CHAIN_EDGES, SOURCE, SINK, edge_mask=mask) == [
        [0, 2, 3, 4, 6], [0, 2, 4, 6]
    ]
    order = topological_order(4, [[3, 1], [1, 0], [2, 0]]).tolist()
    assert order.index(3) < order.index(1) < order.index(0) and order.index(2) < order.index(0)


# --------------------------------------------------------------------------
# Errors (Keras-style messages)
# --------------------------------------------------------------------------

ERROR_CASES = {
    "active_1d": lambda: prune_to_paths(3, _E, [1, 1], 0, 2),
    "active_non_boolean": lambda: prune_to_paths(3, _E, [[2, 1]], 0, 2),
    "edge_out_of_range": lambda: prune_to_paths(3, [[0, 1], [1, 5]], [[1, 1]], 0, 2),
    "edges_bad_shape": lambda: enumerate_paths(3, [[0, 1, 2]], 0, 2),
    "source_out_of_range": lambda: prune_to_paths(3, _E, [[1, 1]], 3, 2),
    "sink_equals_source": lambda: prune_to_paths(3, _E, [[1, 1]], 1, 1),
    "num_nodes": lambda: topological_order(0, []),
    "cycle": lambda: prune_to_paths(3, [[0, 1], [1, 2], [2, 1]], [[1, 1, 1]], 0, 2),
    "self_loop_edge": lambda: topological_order(2, [[1, 1]]),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_value_errors_are_keras_style(case):
    assert_keras_style_value_error(ERROR_CASES[case])
