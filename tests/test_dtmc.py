"""Tests for tips_keras.dtmc: the DTMC / TAS / TPS / importance maths."""

import ast
import math
import pathlib
import time
import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from hypothesis import given, settings
from hypothesis import strategies as st

from tips_keras.dtmc import (
    HyperAdjacencyOperator,
    adjacency,
    best_path_score_per_edge,
    enumerate_paths,
    gate_importance,
    hyper_adjacency,
    importance_from_configs,
    path_score,
    prune_to_paths,
    stationary_distribution,
    tas,
    tas_from_configs,
    topological_order,
    transition_matrix,
)

# --------------------------------------------------------------------------
# Fixtures: a chain of 3 residual blocks
#   nodes: 0 in, 1 mid1, 2 out1, 3 mid2, 4 out2, 5 mid3, 6 out3
# --------------------------------------------------------------------------

CHAIN_V = 7
CHAIN_EDGES = np.array(
    [
        [0, 1], [1, 2], [0, 2],  # block 1: conv branch (gate 0) + shortcut
        [2, 3], [3, 4], [2, 4],  # block 2: gate 1
        [4, 5], [5, 6], [4, 6],  # block 3: gate 2
    ]
)
CHAIN_GATE = np.array([0, 0, -1, 1, 1, -1, 2, 2, -1])
SOURCE, SINK = 0, 6


def chain_active(*bit_rows):
    """(T, E) mask from gate bits: fixed edges always on."""
    bits = np.asarray(bit_rows, dtype=bool)
    on = np.ones((bits.shape[0], len(CHAIN_GATE)), dtype=bool)
    gated = CHAIN_GATE >= 0
    on[:, gated] = bits[:, CHAIN_GATE[gated]]
    return on


def chain_adjs(active):
    return [adjacency(CHAIN_V, CHAIN_EDGES, row, SOURCE, SINK) for row in active]


# --------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------


def test_adjacency_residual_chain_by_hand():
    # Blocks 1 and 3 on, block 2 skipped (only its shortcut 2 -> 4 remains).
    row = chain_active((1, 0, 1))[0]
    expected = np.array(
        [
            # 0  1  2  3  4  5  6
            [1, 1, 1, 0, 0, 0, 0],  # 0: self-loop, mid1, out1
            [1, 0, 1, 0, 0, 0, 0],  # 1
            [1, 1, 0, 0, 1, 0, 0],  # 2: in, mid1, shortcut to out2
            [0, 0, 0, 0, 0, 0, 0],  # 3: mid2 is unused
            [0, 0, 1, 0, 0, 1, 1],  # 4
            [0, 0, 0, 0, 1, 0, 1],  # 5
            [0, 0, 0, 0, 1, 1, 1],  # 6: self-loop
        ],
        dtype=float,
    )
    A = adjacency(CHAIN_V, CHAIN_EDGES, row, SOURCE, SINK)
    assert isinstance(A, sp.csr_matrix)
    np.testing.assert_array_equal(A.toarray(), expected)
    no_loops = adjacency(CHAIN_V, CHAIN_EDGES, row, SOURCE, SINK, self_loops=False)
    np.testing.assert_array_equal(no_loops.toarray(), expected - np.diag([1, 0, 0, 0, 0, 0, 1]))


def test_adjacency_parallel_edges_give_one():
    A = adjacency(3, [[0, 1], [0, 1], [1, 2]], [True, True, True], 0, 2)
    np.testing.assert_array_equal(A.toarray(), [[1, 1, 0], [1, 0, 1], [0, 1, 1]])


def test_stationary_single_config_by_hand():
    # All blocks on. Degrees: 0: self+1+2 = 3, 1: 2, 2: 0,1,3,4 = 4, 3: 2,
    # 4: 2,3,5,6 = 4, 5: 2, 6: 4,5,self = 3. Total 20.
    A = adjacency(CHAIN_V, CHAIN_EDGES, chain_active((1, 1, 1))[0], SOURCE, SINK)
    expected = np.array([3, 2, 4, 2, 4, 2, 3]) / 20.0
    for method in ("closed_form", "auto"):
        np.testing.assert_allclose(stationary_distribution(A, method=method), expected, atol=1e-15)
    for method in ("iterative", "power"):
        np.testing.assert_allclose(stationary_distribution(A, method=method), expected, atol=1e-9)


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


def test_hyper_adjacency_structure():
    A = sp.csr_matrix(np.array([[1.0, 1.0], [1.0, 0.0]]))
    B = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 1.0]]))
    H = hyper_adjacency([A, B, A], lam=0.5).toarray()
    I = 0.5 * np.eye(2)
    Z = np.zeros((2, 2))
    expected = np.block([[A.toarray(), I, I], [I, B.toarray(), I], [I, I, A.toarray()]])
    np.testing.assert_array_equal(H, expected)
    np.testing.assert_array_equal(hyper_adjacency([A, B], lam=0.0).toarray(),
                                  np.block([[A.toarray(), Z], [Z, B.toarray()]]))


def test_transition_matrix_by_hand():
    H = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 2.0], [0.0, 1.0, 2.0]])
    M = transition_matrix(H)
    assert sp.issparse(M)
    expected = H / np.array([2.0, 2.0, 4.0])
    np.testing.assert_allclose(M.toarray(), expected)
    np.testing.assert_allclose(np.asarray(M.sum(axis=0)).ravel(), 1.0)


def test_transition_matrix_zero_column_names_node():
    A = adjacency(CHAIN_V, CHAIN_EDGES, chain_active((1, 0, 1))[0], SOURCE, SINK)
    with pytest.raises(ValueError, match=r"Received: .*node index \[3\]"):
        transition_matrix(A)
    with pytest.raises(ValueError, match="Received"):
        stationary_distribution(A)


# --------------------------------------------------------------------------
# Closed form vs iterative
# --------------------------------------------------------------------------


@pytest.mark.parametrize("num_configs,lam", [(3, 1.0), (4, 0.5), (5, 2.0)])
def test_closed_form_matches_iterative_on_hyper(num_configs, lam):
    rng = np.random.default_rng(num_configs)
    bits = rng.integers(0, 2, size=(num_configs, 3))
    active = prune_to_paths(CHAIN_V, CHAIN_EDGES, chain_active(*bits), SOURCE, SINK)
    active[0] = True  # copy 0 uses every node -> the hyper-graph is connected
    H = hyper_adjacency(chain_adjs(active), lam=lam)
    closed = stationary_distribution(H, method="closed_form")
    for method in ("iterative", "power"):
        np.testing.assert_allclose(stationary_distribution(H, method=method), closed, atol=1e-8)
    np.testing.assert_allclose(stationary_distribution(H), closed, atol=0)  # auto -> closed
    assert abs(closed.sum() - 1.0) < 1e-12
    M = transition_matrix(H)
    np.testing.assert_allclose(M @ closed, closed, atol=1e-14)


def test_operator_matches_explicit_hyper_adjacency():
    rng = np.random.default_rng(0)
    active = chain_active(*rng.integers(0, 2, size=(5, 3)))
    active[0] = True
    adjs = chain_adjs(active)
    H = hyper_adjacency(adjs, lam=0.7)
    op = HyperAdjacencyOperator(adjs, lam=0.7)
    assert isinstance(op, spla.LinearOperator)
    assert op.shape == H.shape and op.is_symmetric
    x = rng.normal(size=H.shape[0])
    X = rng.normal(size=(H.shape[0], 3))
    np.testing.assert_allclose(op.matvec(x), H @ x, atol=1e-12)
    np.testing.assert_allclose(op.rmatvec(x), H.T @ x, atol=1e-12)
    np.testing.assert_allclose(op.matmat(X), H @ X, atol=1e-12)
    np.testing.assert_allclose(op.column_sums(), np.asarray(H.sum(axis=0)).ravel())
    closed = stationary_distribution(H, method="closed_form")
    from_op = stationary_distribution(op, method="closed_form")
    np.testing.assert_allclose(from_op, closed, atol=1e-15)
    np.testing.assert_allclose(stationary_distribution(op, method="iterative"), closed, atol=1e-8)
    M = transition_matrix(op)
    np.testing.assert_allclose(M.matvec(closed), closed, atol=1e-14)


def test_operator_scales_without_coupling_blocks():
    # T = 2000 copies: the explicit H would hold T*(T-1)*V = 28M coupling entries.
    rng = np.random.default_rng(1)
    active = chain_active(*rng.integers(0, 2, size=(2000, 3)))
    op = HyperAdjacencyOperator(chain_adjs(active), lam=1.0)
    assert op._diag.nnz < 2000 * 2 * len(CHAIN_EDGES) + 2 * 2000
    pi = stationary_distribution(op, method="closed_form")
    np.testing.assert_allclose(
        tas(pi, 2000, CHAIN_V),
        tas_from_configs(CHAIN_V, CHAIN_EDGES, active, SOURCE, SINK, prune=False),
        atol=1e-12,
    )


def test_non_symmetric_closed_form_raises_iterative_solves():
    H = sp.csr_matrix(np.array([
        [1.0, 0.0, 2.0, 0.0],
        [1.0, 1.0, 0.0, 0.0],
        [0.0, 3.0, 0.0, 1.0],
        [1.0, 0.0, 1.0, 1.0],
    ]))
    with pytest.raises(ValueError, match="symmetric.*Received: method='closed_form'"):
        stationary_distribution(H, method="closed_form")
    pi = stationary_distribution(H, method="iterative")
    np.testing.assert_allclose(stationary_distribution(H, method="power"), pi, atol=1e-9)
    # Reference: dense null space of M - I for this 4x4 matrix.
    M = H.toarray() / H.toarray().sum(axis=0)
    ref = scipy.linalg.null_space(M - np.eye(4))[:, 0]
    ref = ref / ref.sum()
    np.testing.assert_allclose(pi, ref, atol=1e-8)
    np.testing.assert_allclose(stationary_distribution(H), pi, atol=0)  # auto -> iterative
    assert not np.allclose(pi, np.asarray(H.sum(axis=0)).ravel() / H.sum())
    generic = spla.aslinearoperator(H)
    with pytest.raises(ValueError, match="Received"):
        stationary_distribution(generic, method="closed_form")
    np.testing.assert_allclose(stationary_distribution(generic), ref, atol=1e-8)


def test_operator_with_directed_blocks_uses_iterative():
    # Directed blocks (upper triangle only, plus source/sink loops): H is not symmetric.
    blocks = [sp.csr_matrix(sp.triu(A) + sp.identity(CHAIN_V))
              for A in chain_adjs(chain_active((1, 1, 1), (1, 0, 1), (0, 1, 1)))]
    op = HyperAdjacencyOperator(blocks, lam=1.0)
    H = hyper_adjacency(blocks, lam=1.0)
    assert not op.is_symmetric
    np.testing.assert_allclose(op.rmatvec(np.arange(21.0)), H.T @ np.arange(21.0))
    with pytest.raises(ValueError, match="Received"):
        stationary_distribution(op, method="closed_form")
    pi = stationary_distribution(op)  # auto -> iterative
    np.testing.assert_allclose(pi, stationary_distribution(H, method="iterative"), atol=1e-10)
    np.testing.assert_allclose(transition_matrix(H) @ pi, pi, atol=1e-10)


def test_iterative_non_convergence_raises():
    A = adjacency(CHAIN_V, CHAIN_EDGES, chain_active((1, 1, 1))[0], SOURCE, SINK)
    with pytest.raises(RuntimeError, match="max_iter=2"):
        stationary_distribution(A, method="power", max_iter=2)


def test_reducible_chain_gives_a_valid_stationary_distribution():
    # Two components: path 0-1-2 (loops on 0, 2) and the edge 3-4 (loop on 3 only).
    H = sp.csr_matrix(np.array([
        [1, 1, 0, 0, 0], [1, 0, 1, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 1, 0],
    ], dtype=float))
    M = transition_matrix(H)
    for method in ("iterative", "power"):
        pi = stationary_distribution(H, method=method)
        assert np.all(pi >= 0) and abs(pi.sum() - 1) < 1e-12
        np.testing.assert_allclose(M @ pi, pi, atol=1e-10)
    # Not unique: the closed form weights the components by degree (6/9, 3/9), power
    # iteration from the uniform start keeps each component's initial mass (3/5, 2/5).
    np.testing.assert_allclose(stationary_distribution(H, method="closed_form"),
                               np.array([2, 2, 2, 2, 1]) / 9, atol=1e-15)
    np.testing.assert_allclose(stationary_distribution(H, method="power"),
                               [0.2, 0.2, 0.2, 4 / 15, 2 / 15], atol=1e-10)


def test_iterative_scales_to_many_copies_where_power_iteration_is_slow():
    # T = 300 copies of a 40-node residual chain: the coupling makes the spectral gap tiny
    # (power iteration needs > 100k steps here); the Krylov solver needs a few hundred mat-vecs.
    num_nodes, edges, gates, num_gates = _resnet_graph()
    rng = np.random.default_rng(0)
    active = np.ones((300, len(edges)), bool)
    bits = rng.random((300, num_gates)) < 0.5
    active[:, gates >= 0] = bits[:, gates[gates >= 0]]
    active[0] = True
    op = HyperAdjacencyOperator(
        [adjacency(num_nodes, edges, row, 0, num_nodes - 1) for row in active], lam=1.0
    )
    start = time.perf_counter()
    pi = stationary_distribution(op, method="iterative")
    elapsed = time.perf_counter() - start
    np.testing.assert_allclose(pi, stationary_distribution(op, method="closed_form"), atol=1e-12)
    np.testing.assert_allclose(
        tas(pi, 300, num_nodes),
        tas_from_configs(num_nodes, edges, active, 0, num_nodes - 1, prune=False),
        atol=1e-10,
    )
    assert elapsed < 5.0
    with pytest.raises(RuntimeError):
        stationary_distribution(op, method="power", max_iter=2000)


# --------------------------------------------------------------------------
# TAS
# --------------------------------------------------------------------------


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


def test_tas_from_configs_single_config_and_parallel_edges():
    edges = [[0, 1], [0, 1], [1, 2]]
    out = tas_from_configs(3, edges, [[True, True, True]], 0, 2)
    np.testing.assert_allclose(out, [2 / 6, 2 / 6, 2 / 6])
    H = hyper_adjacency([adjacency(3, edges, [True] * 3, 0, 2)], lam=1.0)
    np.testing.assert_allclose(tas(stationary_distribution(H), 1, 3), out, atol=1e-12)


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


@st.composite
def random_dags(draw):
    """Small DAG with permuted labels (index order is not topological)."""
    n = draw(st.integers(3, 7))
    perm = draw(st.permutations(list(range(n))))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=12))  # duplicates ok
    edges = np.array([[perm[i], perm[j]] for i, j in chosen])
    return n, edges, perm[0], perm[n - 1]


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

_A = adjacency(3, [[0, 1], [1, 2]], [True, True], 0, 2)
_E = [[0, 1], [1, 2]]

ERROR_CASES = {
    "hyper_lam": lambda: hyper_adjacency([_A], lam=-1.0),
    "operator_lam": lambda: HyperAdjacencyOperator([_A], lam=-0.5),
    "tas_from_configs_lam": lambda: tas_from_configs(3, _E, [[1, 1]], 0, 2, lam=-1.0),
    "importance_lam": lambda: importance_from_configs(3, _E, [0, -1], 1, [[1, 1]], 0, 2, lam=-2),
    "hyper_empty": lambda: hyper_adjacency([]),
    "operator_empty": lambda: HyperAdjacencyOperator([], lam=1.0),
    "hyper_shape_mismatch": lambda: hyper_adjacency([_A, sp.identity(4)]),
    "active_wrong_width": lambda: tas_from_configs(3, _E, [[1, 1, 1]], 0, 2),
    "active_1d": lambda: prune_to_paths(3, _E, [1, 1], 0, 2),
    "active_non_boolean": lambda: prune_to_paths(3, _E, [[2, 1]], 0, 2),
    "active_empty": lambda: tas_from_configs(3, _E, np.zeros((0, 2), bool), 0, 2),
    "importance_active_empty": lambda: importance_from_configs(
        3, _E, [0, -1], 1, np.zeros((0, 2), bool), 0, 2),
    "edge_out_of_range": lambda: prune_to_paths(3, [[0, 1], [1, 5]], [[1, 1]], 0, 2),
    "edge_negative": lambda: adjacency(3, [[0, -1]], [True], 0, 2),
    "edges_bad_shape": lambda: enumerate_paths(3, [[0, 1, 2]], 0, 2),
    "source_out_of_range": lambda: prune_to_paths(3, _E, [[1, 1]], 3, 2),
    "sink_equals_source": lambda: prune_to_paths(3, _E, [[1, 1]], 1, 1),
    "num_nodes": lambda: topological_order(0, []),
    "cycle": lambda: prune_to_paths(3, [[0, 1], [1, 2], [2, 1]], [[1, 1, 1]], 0, 2),
    "self_loop_edge": lambda: topological_order(2, [[1, 1]]),
    "adjacency_row_length": lambda: adjacency(3, _E, [True], 0, 2),
    "zero_column": lambda: transition_matrix(sp.csr_matrix(np.array([[1.0, 0.0], [1.0, 0.0]]))),
    "negative_H": lambda: transition_matrix(np.array([[1.0, -1.0], [1.0, 1.0]])),
    "non_square_H": lambda: stationary_distribution(np.ones((2, 3))),
    "closed_form_non_symmetric": lambda: stationary_distribution(
        np.array([[1.0, 2.0], [1.0, 1.0]]), method="closed_form"),
    "unknown_method": lambda: stationary_distribution(_A, method="eig"),
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
    with pytest.raises(ValueError) as info:
        ERROR_CASES[case]()
    message = str(info.value)
    assert "Received" in message, message
    assert message.startswith("Invalid value for argument `"), message


def test_error_messages_exact():
    with pytest.raises(ValueError) as info:
        hyper_adjacency([_A], lam=-1.0)
    assert str(info.value) == (
        "Invalid value for argument `lam`. Expected a non-negative float. Received: lam=-1.0"
    )
    with pytest.raises(ValueError, match="Received: active with 0 configurations"):
        tas_from_configs(3, _E, np.zeros((0, 2), bool), 0, 2)
    with pytest.raises(ValueError, match=r"\('log', 'sum'\). Received: mode='prod'"):
        path_score(np.ones(3) / 3, [0, 1], mode="prod")
    with pytest.raises(ValueError, match=r"no edge for gates \[1\]"):
        gate_importance(np.array([-1.0, -2.0]), [0, 0], 2)


# --------------------------------------------------------------------------
# Purity and speed
# --------------------------------------------------------------------------


def test_module_imports_only_numpy_and_scipy():
    source = pathlib.Path(__file__).resolve().parents[1] / "tips_keras" / "dtmc.py"
    tree = ast.parse(source.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0] if node.level == 0 else ".")
    assert roots <= {"__future__", "heapq", "numbers", "numpy", "scipy"}, roots


def _resnet_graph(num_blocks=19):
    """source + num_blocks residual blocks (in, mid, out) + head -> 2*B + 2 nodes."""
    edges, gates = [], []
    for b in range(num_blocks):
        i, m, o = 2 * b, 2 * b + 1, 2 * b + 2
        edges += [[i, m], [m, o], [i, o]]
        gates += [b, b, -1]
    last = 2 * num_blocks
    edges.append([last, last + 1])
    gates.append(-1)
    return last + 2, np.array(edges), np.array(gates), num_blocks


def test_tas_from_configs_speed_t2000_v40():
    num_nodes, edges, gates, num_gates = _resnet_graph()
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
