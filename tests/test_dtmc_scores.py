"""Tests for tips_keras.dtmc.scores: TAS, path scores (TPS) and per-gate importance."""

import math
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.dtmc_graphs import CHAIN_EDGES
from tests.dtmc_graphs import CHAIN_GATE
from tests.dtmc_graphs import CHAIN_V
from tests.dtmc_graphs import PATH3_EDGES as _E
from tests.dtmc_graphs import SINK
from tests.dtmc_graphs import SOURCE
from tests.dtmc_graphs import assert_keras_style_value_error
from tests.dtmc_graphs import chain_active
from tests.dtmc_graphs import chain_adjs
from tests.dtmc_graphs import random_dags
from tests.dtmc_graphs import resnet_graph
from tips_keras.dtmc import adjacency
from tips_keras.dtmc import best_path_score_per_edge
from tips_keras.dtmc import enumerate_paths
from tips_keras.dtmc import gate_importance
from tips_keras.dtmc import hyper_adjacency
from tips_keras.dtmc import importance_from_configs
from tips_keras.dtmc import path_score
from tips_keras.dtmc import prune_to_paths
from tips_keras.dtmc import stationary_distribution
from tips_keras.dtmc import tas
from tips_keras.dtmc import tas_from_configs


# --------------------------------------------------------------------------
# TAS
# --------------------------------------------------------------------------


def test_tas_two_configs_by_hand():
    # T=2, lam=1: d(k, v) = deg_k(v) + 1.
    # copy 0 (all on):       [3,2,4,2,4,2,3] + 1 = [4,3,5,3,5,3,4]  (27)
    # copy 1 (block 2 off):  [3,2,3,0,3,2,3] + 1 = [4,3,4,1,4,3,4]  (23)
    # TAS = [8,6,9,4,9,6,8] / 50
    expected = np.array([8, 6, 9, 4, 9, 6, 8]) / 50.0
    active = chain_active((1, 1, 1), (1, 0, 1))
    np.testing.assert_allclose(
        tas_from_configs(CHAIN_V, CHAIN_EDGES, active, SOURCE, SINK, lam=1.0), expected, atol=1e-15
    )
    H = hyper_adjacency(chain_adjs(active), lam=1.0)
    assert H.shape == (14, 14)
    assert H[3, 7 + 3] == 1.0 and H[7 + 3, 3] == 1.0  # coupling of node 3 across copies
    for method in ("closed_form", "iterative"):
        pi = stationary_distribution(H, method=method)
        np.testing.assert_allclose(tas(pi, 2, CHAIN_V), expected, atol=1e-9)


def test_tas_layout_and_sum():
    pi = np.arange(6, dtype=float) / 15.0  # T=2, V=3
    out = tas(pi, 2, 3)
    np.testing.assert_allclose(out, np.array([0 + 3, 1 + 4, 2 + 5]) / 15.0)
    assert abs(out.sum() - 1.0) < 1e-15


@pytest.mark.parametrize("lam", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tas_from_configs_matches_hyper_route(lam, seed):
    rng = np.random.default_rng(seed)
    num_configs = int(rng.integers(2, 6))
    active = rng.random((num_configs, len(CHAIN_EDGES))) < 0.7  # raw edge masks, unpruned
    fast = tas_from_configs(CHAIN_V, CHAIN_EDGES, active, SOURCE, SINK, lam=lam)
    pruned = prune_to_paths(CHAIN_V, CHAIN_EDGES, active, SOURCE, SINK)
    H = hyper_adjacency(chain_adjs(pruned), lam=lam)
    slow = tas(stationary_distribution(H), num_configs, CHAIN_V)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-10)
    assert abs(fast.sum() - 1.0) < 1e-12
    unpruned = tas_from_configs(CHAIN_V, CHAIN_EDGES, active, SOURCE, SINK, lam=lam, prune=False)
    H2 = hyper_adjacency(chain_adjs(active), lam=lam)
    np.testing.assert_allclose(unpruned, tas(stationary_distribution(H2), num_configs, CHAIN_V),
                               atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_weighted_tas_matches_the_weighted_hyper_adjacency(seed):
    # Scaling copy k's block by w_k keeps H symmetric: the closed form must still be exact.
    rng = np.random.default_rng(seed)
    active = prune_to_paths(CHAIN_V, CHAIN_EDGES, rng.random((4, len(CHAIN_EDGES))) < 0.7, SOURCE, SINK)
    weights = rng.uniform(0.2, 3.0, 4)
    fast = tas_from_configs(CHAIN_V, CHAIN_EDGES, active, SOURCE, SINK, lam=0.5, weights=weights)
    scaled = weights / weights.mean()  # only ratios matter
    H = hyper_adjacency([w * a for w, a in zip(scaled, chain_adjs(active))], lam=0.5)
    for method in ("closed_form", "iterative"):
        slow = tas(stationary_distribution(H, method=method), 4, CHAIN_V)
        np.testing.assert_allclose(fast, slow, atol=1e-9)
    plain = tas_from_configs(CHAIN_V, CHAIN_EDGES, active, SOURCE, SINK, lam=0.5)
    np.testing.assert_allclose(
        tas_from_configs(CHAIN_V, CHAIN_EDGES, active, SOURCE, SINK, lam=0.5, weights=[7.0] * 4), plain
    )
    assert not np.allclose(fast, plain)


def test_weights_shift_importance_towards_the_heavier_configuration():
    # Two sub-networks of the 3-block chain, each dropping a different block: the one weighted
    # up keeps its blocks' nodes busier, so the block it drops loses importance.
    active = chain_active((0, 1, 1), (1, 1, 0))
    imp_a, _ = importance_from_configs(CHAIN_V, CHAIN_EDGES, CHAIN_GATE, 3, active, SOURCE, SINK,
                                       weights=[4.0, 1.0])
    imp_b, _ = importance_from_configs(CHAIN_V, CHAIN_EDGES, CHAIN_GATE, 3, active, SOURCE, SINK,
                                       weights=[1.0, 4.0])
    assert imp_a[2] > imp_a[0] and imp_b[0] > imp_b[2]


@pytest.mark.parametrize("weights", [[1.0], [1.0, 0.0], [1.0, np.nan], [1.0, -2.0]])
def test_bad_weights_are_refused(weights):
    with pytest.raises(ValueError, match="`weights`") as info:
        tas_from_configs(CHAIN_V, CHAIN_EDGES, chain_active((1, 1, 1), (1, 0, 1)), SOURCE, SINK,
                         weights=weights)
    assert "Received" in str(info.value)


def test_tas_from_configs_single_config_and_parallel_edges():
    edges = [[0, 1], [0, 1], [1, 2]]
    out = tas_from_configs(3, edges, [[True, True, True]], 0, 2)
    np.testing.assert_allclose(out, [2 / 6, 2 / 6, 2 / 6])
    H = hyper_adjacency([adjacency(3, edges, [True] * 3, 0, 2)], lam=1.0)
    np.testing.assert_allclose(tas(stationary_distribution(H), 1, 3), out, atol=1e-12)


# --------------------------------------------------------------------------
# Path scores
# --------------------------------------------------------------------------


def test_path_score_log_vs_sum():
    t = np.array([0.4, 0.1, 0.3, 0.2])
    assert path_score(t, [0, 2, 3], mode="sum") == pytest.approx(0.9)
    assert path_score(t, [0, 2, 3], mode="log") == pytest.approx(math.log(0.4 * 0.3 * 0.2))
    assert path_score(t, [0, 2, 3]) == path_score(t, [0, 2, 3], mode="log")
    # log mode ranks by product, sum mode by sum: they can disagree.
    u = np.array([0.5, 0.55, 0.05, 0.0, 0.25, 0.25])
    assert path_score(u, [1, 2], "sum") > path_score(u, [4, 5], "sum")
    assert path_score(u, [1, 2], "log") < path_score(u, [4, 5], "log")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert path_score(u, [0, 3], mode="log") == -np.inf


def _brute_best(n, edges, tas_values, source, sink, mode):
    paths = enumerate_paths(n, edges, source, sink)
    best = np.full(len(edges), -np.inf)
    for p in paths:
        score = path_score(tas_values, p, mode=mode)
        pairs = set(zip(p[:-1], p[1:]))
        for e, (u, v) in enumerate(edges):
            if (int(u), int(v)) in pairs:
                best[e] = max(best[e], score)
    return best


@settings(max_examples=30, deadline=None)
@given(dag=random_dags(), data=st.data(), mode=st.sampled_from(["log", "sum"]))
def test_best_path_score_per_edge_matches_brute_force(dag, data, mode):
    n, edges, source, sink = dag
    values = np.array(data.draw(st.lists(
        st.one_of(st.just(0.0), st.floats(1e-6, 1.0)), min_size=n, max_size=n
    )))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = best_path_score_per_edge(n, edges, values, source, sink, mode=mode)
    expected = _brute_best(n, edges, values, source, sink, mode)
    assert not np.any(np.isnan(got))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-12, atol=1e-12)


def test_best_path_score_per_edge_off_path_edges():
    # 0 -> 1 -> 2 (sink), 0 -> 3 dead end, 4 -> 2 from an unreachable node.
    edges = [[0, 1], [1, 2], [0, 3], [4, 2]]
    t = np.array([0.25, 0.25, 0.25, 0.125, 0.125])
    got = best_path_score_per_edge(5, edges, t, 0, 2, mode="sum")
    np.testing.assert_array_equal(got, [0.75, 0.75, -np.inf, -np.inf])


# --------------------------------------------------------------------------
# Gate importance
# --------------------------------------------------------------------------


def test_gate_importance_rule():
    # gate 0: max(-3, -2) = -2; gate 1: -1; gate 2: -5; fixed edge ignored (score 9).
    scores = np.array([-3.0, -2.0, -1.0, -5.0, 9.0])
    gates = np.array([0, 0, 1, 2, -1])
    np.testing.assert_allclose(gate_importance(scores, gates, 3), [0.75, 1.0, 0.0])


def test_gate_importance_ties_and_neg_inf():
    # Tie for the best -> both 1; -inf gate -> 0.
    got = gate_importance(np.array([-1.0, -1.0, -4.0, -np.inf]), [0, 1, 2, 3], 4)
    np.testing.assert_array_equal(got, [1.0, 1.0, 0.0, 0.0])
    # All finite scores equal -> all those gates 1, -inf gates still 0.
    got = gate_importance(np.array([-2.0, -2.0 + 1e-14, -np.inf]), [0, 1, 2], 3)
    np.testing.assert_array_equal(got, [1.0, 1.0, 0.0])
    # All -inf -> zeros.
    np.testing.assert_array_equal(gate_importance(np.full(2, -np.inf), [0, 1], 2), [0.0, 0.0])
    # No gates at all.
    assert gate_importance(np.array([1.0]), [-1], 0).shape == (0,)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.just(-np.inf), st.floats(-1e6, 1e6)), min_size=1, max_size=10))
def test_gate_importance_never_nan(scores):
    scores = np.array(scores)
    out = gate_importance(scores, np.arange(len(scores)), len(scores))
    assert not np.any(np.isnan(out))
    assert np.all((out >= 0) & (out <= 1))
    assert np.all(out[np.isneginf(scores)] == 0)
    if np.isfinite(scores).any():
        assert out[np.argmax(scores)] == 1.0


def test_importance_from_configs_chain():
    rng = np.random.default_rng(5)
    active = chain_active(*rng.integers(0, 2, size=(40, 3)))
    imp, t = importance_from_configs(
        CHAIN_V, CHAIN_EDGES, CHAIN_GATE, 3, active, SOURCE, SINK, lam=1.0
    )
    assert imp.shape == (3,) and t.shape == (CHAIN_V,)
    assert abs(t.sum() - 1.0) < 1e-12
    assert np.all((imp >= 0) & (imp <= 1)) and imp.max() == 1.0
    np.testing.assert_allclose(t, tas_from_configs(CHAIN_V, CHAIN_EDGES, active, SOURCE, SINK))
    scores = best_path_score_per_edge(CHAIN_V, CHAIN_EDGES, t, SOURCE, SINK)
    np.testing.assert_array_equal(imp, gate_importance(scores, CHAIN_GATE, 3))
    # A block that was never sampled has less TAS on its mid node -> lower importance.
    never_block2 = chain_active(*[(1, 0, 1)] * 5, *[(1, 1, 1)] * 1)
    imp2, _ = importance_from_configs(
        CHAIN_V, CHAIN_EDGES, CHAIN_GATE, 3, never_block2, SOURCE, SINK
    )
    assert imp2[1] < imp2[0] and imp2[1] < imp2[2]


# --------------------------------------------------------------------------
# Errors (Keras-style messages)
# --------------------------------------------------------------------------

ERROR_CASES = {
    "tas_from_configs_lam": lambda: tas_from_configs(3, _E, [[1, 1]], 0, 2, lam=-1.0),
    "importance_lam": lambda: importance_from_configs(3, _E, [0, -1], 1, [[1, 1]], 0, 2, lam=-2),
    "active_wrong_width": lambda: tas_from_configs(3, _E, [[1, 1, 1]], 0, 2),
    "active_empty": lambda: tas_from_configs(3, _E, np.zeros((0, 2), bool), 0, 2),
    "importance_active_empty": lambda: importance_from_configs(
        3, _E, [0, -1], 1, np.zeros((0, 2), bool), 0, 2),
    "tas_wrong_size": lambda: tas(np.ones(5) / 5, 2, 3),
    "path_score_mode": lambda: path_score(np.ones(3) / 3, [0, 1], mode="prod"),
    "path_score_node": lambda: path_score(np.ones(3) / 3, [0, 7]),
    "path_score_empty": lambda: path_score(np.ones(3) / 3, []),
    "best_mode": lambda: best_path_score_per_edge(3, _E, np.ones(3) / 3, 0, 2, mode="max"),
    "best_tas_length": lambda: best_path_score_per_edge(3, _E, np.ones(4) / 4, 0, 2),
    "best_tas_negative": lambda: best_path_score_per_edge(3, _E, [0.5, -0.1, 0.6], 0, 2),
    "best_tas_nan": lambda: best_path_score_per_edge(3, _E, [0.5, np.nan, 0.5], 0, 2),
    "gate_without_edges": lambda: gate_importance(np.array([-1.0, -2.0]), [0, 0], 2),
    "gate_score_nan": lambda: gate_importance(np.array([np.nan, -2.0]), [0, 1], 2),
    "gate_index_range": lambda: gate_importance(np.array([-1.0, -2.0]), [0, 2], 2),
    "gate_shape": lambda: gate_importance(np.array([-1.0, -2.0]), [0], 1),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_value_errors_are_keras_style(case):
    assert_keras_style_value_error(ERROR_CASES[case])


def test_error_messages_exact():
    with pytest.raises(ValueError, match="Received: active with 0 configurations"):
        tas_from_configs(3, _E, np.zeros((0, 2), bool), 0, 2)
    with pytest.raises(ValueError, match=r"\('log', 'sum'\). Received: mode='prod'"):
        path_score(np.ones(3) / 3, [0, 1], mode="prod")
    with pytest.raises(ValueError, match=r"no edge for gates \[1\]"):
        gate_importance(np.array([-1.0, -2.0]), [0, 0], 2)


# --------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------


def test_tas_from_configs_speed_t2000_v40():
    num_nodes, edges, gates, num_gates = resnet_graph()
    assert num_nodes == 40 and len(edges) == 58
    rng = np.random.default_rng(0)
    bits = rng.random((2000, num_gates)) < 0.5
    active = np.ones((2000, len(edges)), bool)
    active[:, gates >= 0] = bits[:, gates[gates >= 0]]
    tas_from_configs(num_nodes, edges, active, 0, num_nodes - 1)  # warm-up
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        out = tas_from_configs(num_nodes, edges, active, 0, num_nodes - 1)
        timings.append(time.perf_counter() - start)
    start = time.perf_counter()
    imp, _ = importance_from_configs(num_nodes, edges, gates, num_gates, active, 0, num_nodes - 1)
    full = time.perf_counter() - start
    print(f"\ntas_from_configs T=2000 V=40 E=58: best {min(timings) * 1e3:.2f} ms; "
          f"importance_from_configs: {full * 1e3:.2f} ms")
    assert abs(out.sum() - 1.0) < 1e-12
    assert imp.shape == (num_gates,)
    assert min(timings) < 1.0
    assert full < 1.0
