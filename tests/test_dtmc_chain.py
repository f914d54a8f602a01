"""Tests for tips_keras.dtmc.chain: adjacency, hyper-adjacency, transition matrix, stationary pi."""

import time

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from tests.dtmc_graphs import CHAIN_EDGES
from tests.dtmc_graphs import CHAIN_V
from tests.dtmc_graphs import PATH3_EDGES as _E
from tests.dtmc_graphs import SINK
from tests.dtmc_graphs import SOURCE
from tests.dtmc_graphs import assert_keras_style_value_error
from tests.dtmc_graphs import chain_active
from tests.dtmc_graphs import chain_adjs
from tests.dtmc_graphs import resnet_graph
from tips_keras.dtmc import HyperAdjacencyOperator
from tips_keras.dtmc import adjacency
from tips_keras.dtmc import hyper_adjacency
from tips_keras.dtmc import prune_to_paths
from tips_keras.dtmc import stationary_distribution
from tips_keras.dtmc import tas
from tips_keras.dtmc import tas_from_configs
from tips_keras.dtmc import transition_matrix


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
    num_nodes, edges, gates, num_gates = resnet_graph()
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
# Errors (Keras-style messages)
# --------------------------------------------------------------------------

_A = adjacency(3, [[0, 1], [1, 2]], [True, True], 0, 2)

ERROR_CASES = {
    "hyper_lam": lambda: hyper_adjacency([_A], lam=-1.0),
    "operator_lam": lambda: HyperAdjacencyOperator([_A], lam=-0.5),
    "hyper_empty": lambda: hyper_adjacency([]),
    "operator_empty": lambda: HyperAdjacencyOperator([], lam=1.0),
    "hyper_shape_mismatch": lambda: hyper_adjacency([_A, sp.identity(4)]),
    "edge_negative": lambda: adjacency(3, [[0, -1]], [True], 0, 2),
    "adjacency_row_length": lambda: adjacency(3, _E, [True], 0, 2),
    "zero_column": lambda: transition_matrix(sp.csr_matrix(np.array([[1.0, 0.0], [1.0, 0.0]]))),
    "negative_H": lambda: transition_matrix(np.array([[1.0, -1.0], [1.0, 1.0]])),
    "non_square_H": lambda: stationary_distribution(np.ones((2, 3))),
    "closed_form_non_symmetric": lambda: stationary_distribution(
        np.array([[1.0, 2.0], [1.0, 1.0]]), method="closed_form"),
    "unknown_method": lambda: stationary_distribution(_A, method="eig"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_value_errors_are_keras_style(case):
    assert_keras_style_value_error(ERROR_CASES[case])


def test_error_messages_exact():
    with pytest.raises(ValueError) as info:
        hyper_adjacency([_A], lam=-1.0)
    assert str(info.value) == (
        "Invalid value for argument `lam`. Expected a non-negative float. Received: lam=-1.0"
    )
