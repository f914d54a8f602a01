"""DTMC model of supernet training: TAS, TPS and per-gate importance (TIPS).

This module is pure numpy / scipy (it must never import Keras or TensorFlow), so
that every formula can be tested against hand-computed graphs.

The method (TIPS, ICML 2023), as implemented here:

1. **Subnetwork adjacency.** A supernet is a DAG whose nodes are feature maps
   and whose edges are operations. A configuration ``k`` activates a subset of
   the edges; ``A_k`` is the symmetric 0/1 ``(V, V)`` adjacency of the active
   edges over *all* supernet nodes, with self-loops on the source (input) and the
   sink (output) so that the chain is aperiodic (:func:`adjacency`).
2. **Training as a DTMC.** Training visits configurations ``z_1 .. z_T``. The
   hyper-adjacency ``H(lam)`` (:func:`hyper_adjacency`) is the ``(T*V, T*V)``
   matrix with ``A_1 .. A_T`` on the block diagonal and ``lam * I`` coupling
   blocks between every pair of distinct copies (node ``v`` of copy ``i`` is tied
   to node ``v`` of copy ``j``). State ``(k, v)`` has the flat index ``k*V + v``
   (copy-major).
3. **Transition matrix and stationary distribution.** ``M = H D^-1`` with ``D``
   the diagonal of column sums (column-stochastic, :func:`transition_matrix`);
   ``pi`` solves ``M pi = pi, sum(pi) = 1`` (:func:`stationary_distribution`).
   For a symmetric ``H`` (always the case for the hyper-adjacency) ``pi`` is the
   normalised degree vector ``d / sum(d)`` - a random walk on an undirected
   graph is reversible with ``pi(x) M(y|x) = H[x, y] / sum(d)`` symmetric. A
   sparse power iteration on the lazy chain ``(I + M) / 2`` (same fixed points,
   aperiodic by construction) and a Krylov eigensolver (ARPACK) cover the
   general, non-symmetric case and are used by the tests to confirm the closed
   form.
4. **TAS** (Topological Accumulated Score, :func:`tas`):
   ``TAS(v) = sum_k pi(k, v)``; it sums to 1 over the ``V`` supernet nodes.
   With the closed form, ``d(k, v) = deg_{A_k}(v) + lam * (T - 1)``, so
   :func:`tas_from_configs` computes TAS directly from the ``(T, E)`` mask of
   active edges in ``O(T * E)`` without building ``H`` at all.
5. **TPS** (Topological Path Score, :func:`path_score`) of a source->sink node
   path ``P``: ``prod_{v in P} TAS(v)``, computed in log space as
   ``sum_{v in P} log TAS(v)`` (``mode="log"``); ``mode="sum"`` is the plain sum
   of TAS that the authors use in one analysis.
6. **Importance.** :func:`best_path_score_per_edge` gives, for every edge, the
   best TPS of any source->sink path through it (one forward and one backward
   dynamic programme over the DAG). :func:`gate_importance` turns it into a
   per-gate importance in ``[0, 1]`` with the rule:

   * ``score_g = max`` of the edge scores over the edges switched by gate ``g``;
   * gates with a finite score are min-max normalised:
     ``(score_g - min) / (max - min)`` over the finite scores;
   * gates whose score is ``-inf`` (no source->sink path, or a path through a
     node of TAS 0 in log mode) get ``0``;
   * if the finite scores all agree (spread ``< 1e-12``) those gates get ``1``.

   :func:`importance_from_configs` chains the whole pipeline.

Why closed forms and operators: the callback rebuilds the DTMC every epoch
from thousands of sampled configurations. ``H`` has ``(T*V)^2`` entries and
``T^2`` coupling blocks, so it is never formed in the hot path; the closed form
costs ``O(T * E)``. :class:`HyperAdjacencyOperator` applies ``H`` as
``blockdiag(A) x + lam * (1_T kron sum_k x_k) - lam * x`` in ``O(T * (E + V))``
per mat-vec, so the iterative solver also scales to large ``T``. Dense matrix
powers or dense ``(T*V)^2`` matrices are never formed.

Graph conventions: nodes are ``0 .. V-1``; ``edges`` is an ``(E, 2)`` integer
array of directed edges ``(u, v)`` (``u -> v``); node indices need not be in
topological order (a topological order is computed, a cycle raises
``ValueError``); ``edge_gate[e]`` is the gate index of edge ``e`` or ``-1`` for a
fixed edge; a set of ``T`` configurations is a boolean ``(T, E)`` mask.
"""

from __future__ import annotations

import heapq
import numbers

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = [
    "topological_order",
    "prune_to_paths",
    "adjacency",
    "hyper_adjacency",
    "HyperAdjacencyOperator",
    "transition_matrix",
    "stationary_distribution",
    "tas",
    "tas_from_configs",
    "path_score",
    "enumerate_paths",
    "best_path_score_per_edge",
    "gate_importance",
    "importance_from_configs",
]

_PATH_SCORE_MODES = ("log", "sum")
_STATIONARY_METHODS = ("auto", "closed_form", "iterative", "power")
_SPREAD_EPS = 1e-12
_SYMMETRY_RTOL = 1e-12


# --------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_num_nodes(num_nodes):
    if not _is_int(num_nodes) or num_nodes < 1:
        raise ValueError(
            "Invalid value for argument `num_nodes`. Expected a positive integer. "
            f"Received: num_nodes={num_nodes!r}"
        )
    return int(num_nodes)


def _check_node(name, value, num_nodes):
    if not _is_int(value) or not 0 <= value < num_nodes:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a node index in "
            f"[0, {num_nodes - 1}]. Received: {name}={value!r}"
        )
    return int(value)


def _check_lam(lam):
    ok = isinstance(lam, numbers.Real) and not isinstance(lam, (bool, np.bool_))
    if not ok or not np.isfinite(lam) or lam < 0:
        raise ValueError(
            "Invalid value for argument `lam`. Expected a non-negative float. "
            f"Received: lam={lam!r}"
        )
    return float(lam)


def _check_mode(mode):
    if mode not in _PATH_SCORE_MODES:
        raise ValueError(
            f"Invalid value for argument `mode`. Expected one of {_PATH_SCORE_MODES}. "
            f"Received: mode={mode!r}"
        )
    return mode


def _check_edges(edges, num_nodes):
    arr = np.asarray(edges)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(
            "Invalid value for argument `edges`. Expected an integer array of shape "
            f"(E, 2). Received: edges with shape {arr.shape}"
        )
    if not (np.issubdtype(arr.dtype, np.integer)):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
            raise ValueError(
                "Invalid value for argument `edges`. Expected integer node indices. "
                f"Received: edges with dtype {arr.dtype}"
            )
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= num_nodes)
    if bad.any():
        e = int(np.argwhere(bad)[0, 0])
        raise ValueError(
            "Invalid value for argument `edges`. Expected node indices in "
            f"[0, {num_nodes - 1}]. Received: edges[{e}]={tuple(int(x) for x in arr[e])}"
        )
    return arr


def _check_graph(num_nodes, edges, source, sink):
    num_nodes = _check_num_nodes(num_nodes)
    edges = _check_edges(edges, num_nodes)
    source = _check_node("source", source, num_nodes)
    sink = _check_node("sink", sink, num_nodes)
    if source == sink:
        raise ValueError(
            "Invalid value for argument `sink`. Expected a node different from "
            f"`source`. Received: source={source}, sink={sink}"
        )
    return num_nodes, edges, source, sink


def _check_mask(name, mask, shape_desc, expected_ndim, num_edges):
    arr = np.asarray(mask)
    if arr.ndim != expected_ndim or arr.shape[-1] != num_edges:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a boolean array of shape "
            f"{shape_desc} with E={num_edges}. Received: {name} with shape {arr.shape}"
        )
    if arr.dtype != np.bool_:
        if arr.size and not (
            (np.issubdtype(arr.dtype, np.number)) and np.all((arr == 0) | (arr == 1))
        ):
            raise ValueError(
                f"Invalid value for argument `{name}`. Expected boolean (or 0/1) "
                f"values. Received: {name} with dtype {arr.dtype}"
            )
        arr = arr.astype(bool)
    return arr


def _check_active(active, num_edges, allow_empty=True):
    arr = _check_mask("active", active, "(T, E)", 2, num_edges)
    if not allow_empty and arr.shape[0] == 0:
        raise ValueError(
            "Invalid value for argument `active`. Expected at least one "
            f"configuration. Received: active with 0 configurations (shape {arr.shape})"
        )
    return arr


def _check_vector(name, values, length, length_desc):
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] != length:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a 1-D array of length "
            f"{length_desc}={length}. Received: {name} with shape {arr.shape}"
        )
    return arr


def _check_tas_values(tas_values, num_nodes=None):
    arr = np.asarray(tas_values, dtype=np.float64)
    if arr.ndim != 1 or (num_nodes is not None and arr.shape[0] != num_nodes):
        expected = "V" if num_nodes is None else f"V={num_nodes}"
        raise ValueError(
            "Invalid value for argument `tas_values`. Expected a 1-D array of length "
            f"{expected}. Received: tas_values with shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(
            "Invalid value for argument `tas_values`. Expected finite non-negative "
            f"values. Received: tas_values={arr!r}"
        )
    return arr


def _edge_orders(num_nodes, edges):
    """Edges sorted for a forward pass (by source rank) and a backward pass."""
    order = topological_order(num_nodes, edges)
    rank = np.empty(num_nodes, dtype=np.int64)
    rank[order] = np.arange(num_nodes)
    if len(edges) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    forward = np.argsort(rank[edges[:, 0]], kind="stable")
    backward = np.argsort(-rank[edges[:, 1]], kind="stable")
    return forward, backward


# --------------------------------------------------------------------------
# Graph utilities
# --------------------------------------------------------------------------


def topological_order(num_nodes, edges):
    """Topological order of a DAG (Kahn's algorithm, smallest index first).

    Args:
        num_nodes: number of nodes ``V``.
        edges: ``(E, 2)`` integer array of directed edges ``(u, v)``.

    Returns:
        ``np.ndarray`` of shape ``(V,)``: every node appears after all of its
        predecessors.

    Raises:
        ValueError: if the graph has a cycle (a self-loop edge included) or the
            arguments are malformed.

    Example:
        >>> topological_order(3, [[2, 0], [0, 1]]).tolist()
        [2, 0, 1]
    """
    num_nodes = _check_num_nodes(num_nodes)
    edges = _check_edges(edges, num_nodes)
    indeg = np.bincount(edges[:, 1], minlength=num_nodes)
    succ = [[] for _ in range(num_nodes)]
    for u, v in edges.tolist():
        succ[u].append(v)
    heap = [v for v in range(num_nodes) if indeg[v] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        u = heapq.heappop(heap)
        order.append(u)
        for v in succ[u]:
            indeg[v] -= 1
            if indeg[v] == 0:
                heapq.heappush(heap, v)
    if len(order) != num_nodes:
        on_cycle = sorted(set(range(num_nodes)) - set(order))
        raise ValueError(
            "Invalid value for argument `edges`. Expected a directed acyclic graph. "
            f"Received: edges with a cycle through nodes {on_cycle}"
        )
    return np.asarray(order, dtype=np.int64)


def prune_to_paths(num_nodes, edges, active, source, sink):
    """Keeps only the active edges that lie on an active source->sink path.

    An edge ``(u, v)`` survives in configuration ``t`` iff it is active, ``u``
    is reachable from ``source`` through active edges and ``sink`` is reachable
    from ``v`` through active edges. Vectorised over the ``T`` configurations
    (the only Python loop is over the edges, in topological order).

    Args:
        num_nodes: number of nodes ``V``.
        edges: ``(E, 2)`` integer array of directed edges.
        active: ``(T, E)`` boolean mask of active edges per configuration.
        source: index of the input node.
        sink: index of the output node.

    Returns:
        ``(T, E)`` boolean array, a subset of ``active``.

    Raises:
        ValueError: on malformed arguments, node indices out of range, a cycle,
            or ``active`` not of shape ``(T, E)``.

    Example:
        >>> # 0 -> 1 -> 2 (sink) plus a dangling branch 0 -> 3.
        >>> prune_to_paths(4, [[0, 1], [1, 2], [0, 3]], [[1, 1, 1]], 0, 2)
        array([[ True,  True, False]])
    """
    num_nodes, edges, source, sink = _check_graph(num_nodes, edges, source, sink)
    act = _check_active(active, len(edges))
    num_configs = act.shape[0]
    forward, backward = _edge_orders(num_nodes, edges)
    act_t = np.ascontiguousarray(act.T)  # (E, T): contiguous rows per edge
    fwd = np.zeros((num_nodes, num_configs), dtype=bool)
    fwd[source] = True
    for e in forward.tolist():
        u, v = edges[e]
        fwd[v] |= fwd[u] & act_t[e]
    bwd = np.zeros((num_nodes, num_configs), dtype=bool)
    bwd[sink] = True
    for e in backward.tolist():
        u, v = edges[e]
        bwd[u] |= bwd[v] & act_t[e]
    keep = act_t & fwd[edges[:, 0]] & bwd[edges[:, 1]]
    return np.ascontiguousarray(keep.T)


def enumerate_paths(num_nodes, edges, source, sink, edge_mask=None):
    """Lists every source->sink node path (exponential: small graphs only).

    Parallel edges give a single node path.

    Args:
        num_nodes: number of nodes ``V``.
        edges: ``(E, 2)`` integer array of directed edges.
        source: index of the input node.
        sink: index of the output node.
        edge_mask: optional ``(E,)`` boolean mask; only these edges are used.

    Returns:
        list of paths, each a list of node indices starting at ``source`` and
        ending at ``sink``, in lexicographic order.

    Raises:
        ValueError: on malformed arguments or a cycle.

    Example:
        >>> enumerate_paths(3, [[0, 1], [1, 2], [0, 2]], 0, 2)
        [[0, 1, 2], [0, 2]]
    """
    num_nodes, edges, source, sink = _check_graph(num_nodes, edges, source, sink)
    topological_order(num_nodes, edges)  # raises on a cycle
    if edge_mask is not None:
        mask = _check_mask("edge_mask", edge_mask, "(E,)", 1, len(edges))
        edges = edges[mask]
    succ = [set() for _ in range(num_nodes)]
    for u, v in edges.tolist():
        succ[u].add(v)
    succ = [sorted(s) for s in succ]
    paths = []
    stack = [(source, [source])]
    while stack:
        node, path = stack.pop()
        if node == sink:
            paths.append(path)
            continue
        for nxt in reversed(succ[node]):
            stack.append((nxt, path + [nxt]))
    return paths


# --------------------------------------------------------------------------
# Adjacency and hyper-adjacency
# --------------------------------------------------------------------------


def adjacency(num_nodes, edges, active_row, source, sink, self_loops=True):
    """Symmetric 0/1 adjacency of one configuration over all supernet nodes.

    Does not prune: pass a row of :func:`prune_to_paths` to drop dangling edges.

    Args:
        num_nodes: number of nodes ``V``.
        edges: ``(E, 2)`` integer array of directed edges.
        active_row: ``(E,)`` boolean mask of the active edges.
        source: index of the input node.
        sink: index of the output node.
        self_loops: put a 1 on the diagonal at ``source`` and ``sink``.

    Returns:
        ``scipy.sparse.csr_matrix`` of shape ``(V, V)``, symmetric, entries in
        ``{0, 1}`` (parallel edges still give 1).

    Raises:
        ValueError: on malformed arguments or node indices out of range.

    Example:
        >>> adjacency(3, [[0, 1], [1, 2]], [True, True], 0, 2).toarray()
        array([[1., 1., 0.],
               [1., 0., 1.],
               [0., 1., 1.]])
    """
    num_nodes, edges, source, sink = _check_graph(num_nodes, edges, source, sink)
    row = _check_mask("active_row", active_row, "(E,)", 1, len(edges))
    sel = edges[row]
    rows = [sel[:, 0], sel[:, 1]]
    cols = [sel[:, 1], sel[:, 0]]
    if self_loops:
        rows.append(np.array([source, sink]))
        cols.append(np.array([source, sink]))
    rows = np.concatenate(rows)
    cols = np.concatenate(cols)
    mat = sp.csr_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(num_nodes, num_nodes)
    )
    mat.sum_duplicates()
    mat.data[:] = 1.0
    return mat


def _as_blocks(adjacencies):
    if isinstance(adjacencies, (sp.spmatrix, sp.sparray, np.ndarray)) and not (
        isinstance(adjacencies, np.ndarray) and adjacencies.ndim == 3
    ):
        adjacencies = [adjacencies]
    blocks = [sp.csr_matrix(a, dtype=np.float64) for a in adjacencies]
    if not blocks:
        raise ValueError(
            "Invalid value for argument `adjacencies`. Expected a non-empty list of "
            "(V, V) matrices. Received: adjacencies with 0 matrices"
        )
    shape = blocks[0].shape
    if shape[0] != shape[1] or shape[0] == 0:
        raise ValueError(
            "Invalid value for argument `adjacencies`. Expected square (V, V) "
            f"matrices. Received: adjacencies[0] with shape {shape}"
        )
    for i, block in enumerate(blocks):
        if block.shape != shape:
            raise ValueError(
                "Invalid value for argument `adjacencies`. Expected matrices of one "
                f"shape {shape}. Received: adjacencies[{i}] with shape {block.shape}"
            )
        if block.nnz and (not np.all(np.isfinite(block.data)) or block.data.min() < 0):
            raise ValueError(
                "Invalid value for argument `adjacencies`. Expected finite non-negative "
                f"entries. Received: adjacencies[{i}] with min {block.data.min()!r}"
            )
    return blocks


def hyper_adjacency(adjacencies, lam=1.0):
    """Hyper-adjacency ``H(lam)`` of ``T`` configurations (explicit, small ``T``).

    ``H`` is block-diagonal with ``A_1 .. A_T`` plus ``lam * I`` coupling blocks
    between every pair of distinct copies. State ``(k, v)`` has index ``k*V + v``.
    It holds ``T * (T - 1) * V`` coupling entries: for large ``T`` use
    :class:`HyperAdjacencyOperator` or :func:`tas_from_configs`.

    Args:
        adjacencies: non-empty list of ``(V, V)`` matrices (sparse or dense).
        lam: non-negative coupling weight.

    Returns:
        ``scipy.sparse.csr_matrix`` of shape ``(T*V, T*V)``.

    Raises:
        ValueError: if ``lam < 0``, the list is empty, or shapes disagree.

    Example:
        >>> A = adjacency(2, [[0, 1]], [True], 0, 1)
        >>> hyper_adjacency([A, A], lam=0.5).toarray()
        array([[1. , 1. , 0.5, 0. ],
               [1. , 1. , 0. , 0.5],
               [0.5, 0. , 1. , 1. ],
               [0. , 0.5, 1. , 1. ]])
    """
    lam = _check_lam(lam)
    blocks = _as_blocks(adjacencies)
    num_copies = len(blocks)
    num_nodes = blocks[0].shape[0]
    hyper = sp.block_diag(blocks, format="csr")
    if num_copies > 1 and lam > 0:
        coupling = np.ones((num_copies, num_copies)) - np.eye(num_copies)
        hyper = hyper + lam * sp.kron(
            sp.csr_matrix(coupling), sp.identity(num_nodes, format="csr"), format="csr"
        )
    return sp.csr_matrix(hyper, dtype=np.float64)


class HyperAdjacencyOperator(spla.LinearOperator):
    """``H(lam)`` as a ``LinearOperator``, without the ``T^2`` coupling blocks.

    ``H x = blockdiag(A_1..A_T) x + lam * (1_T kron sum_k x_k) - lam * x`` with
    ``x`` laid out copy-major (``x[k*V + v]``). A mat-vec costs
    ``O(nnz(A) + T*V)``.

    Args:
        adjacencies: non-empty list of ``(V, V)`` matrices (sparse or dense).
        lam: non-negative coupling weight.

    Attributes:
        num_copies: ``T``.
        num_nodes: ``V``.
        lam: the coupling weight.
        is_symmetric: whether every block (hence ``H``) is symmetric.

    Raises:
        ValueError: if ``lam < 0``, the list is empty, or shapes disagree.

    Example:
        >>> A = adjacency(2, [[0, 1]], [True], 0, 1)
        >>> op = HyperAdjacencyOperator([A, A], lam=0.5)
        >>> op.matvec(np.array([1.0, 0.0, 0.0, 0.0])).tolist()
        [1.0, 1.0, 0.5, 0.0]
    """

    def __init__(self, adjacencies, lam=1.0):
        lam = _check_lam(lam)
        blocks = _as_blocks(adjacencies)
        self.num_copies = len(blocks)
        self.num_nodes = blocks[0].shape[0]
        self.lam = lam
        self.is_symmetric = all(_sparse_is_symmetric(b) for b in blocks)
        self._diag = sp.block_diag(blocks, format="csr")
        self._diag_t = sp.csr_matrix(self._diag.T)
        n = self.num_copies * self.num_nodes
        super().__init__(dtype=np.float64, shape=(n, n))

    def _apply(self, diag, x):
        x = np.asarray(x, dtype=np.float64)
        vec = x.ndim == 1
        mat = x.reshape(self.shape[1], -1)
        out = np.asarray(diag @ mat)
        if self.lam > 0:
            cols = mat.shape[1]
            per_copy = mat.reshape(self.num_copies, self.num_nodes, cols)
            total = per_copy.sum(axis=0, keepdims=True)
            out = out + self.lam * (
                np.broadcast_to(total, per_copy.shape).reshape(-1, cols) - mat
            )
        return out.ravel() if vec else out

    def _matvec(self, x):
        return self._apply(self._diag, x)

    def _rmatvec(self, x):
        return self._apply(self._diag_t, x)

    def _matmat(self, x):
        return self._apply(self._diag, x)

    def _rmatmat(self, x):
        return self._apply(self._diag_t, x)

    def column_sums(self):
        """Column sums of ``H`` (the degrees ``d(k, v)`` when symmetric)."""
        diag_cols = np.asarray(self._diag.sum(axis=0)).ravel()
        return diag_cols + self.lam * (self.num_copies - 1)


# --------------------------------------------------------------------------
# Markov chain
# --------------------------------------------------------------------------


def _sparse_is_symmetric(mat):
    diff = (mat - mat.T).tocsr()
    diff.eliminate_zeros()
    if diff.nnz == 0:
        return True
    scale = max(1.0, float(abs(mat).max()))
    return float(abs(diff).max()) <= _SYMMETRY_RTOL * scale


def _as_sparse_square(H):
    mat = sp.csr_matrix(H, dtype=np.float64)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1] or mat.shape[0] == 0:
        raise ValueError(
            "Invalid value for argument `H`. Expected a non-empty square matrix. "
            f"Received: H with shape {mat.shape}"
        )
    if mat.nnz and (not np.all(np.isfinite(mat.data)) or mat.data.min() < 0):
        raise ValueError(
            "Invalid value for argument `H`. Expected finite non-negative entries. "
            f"Received: H with min entry {mat.data.min()!r}"
        )
    return mat


def _column_sums(H):
    """(H as sparse matrix or LinearOperator, column sums)."""
    if isinstance(H, HyperAdjacencyOperator):
        return H, H.column_sums()
    if isinstance(H, spla.LinearOperator):
        if H.shape[0] != H.shape[1]:
            raise ValueError(
                "Invalid value for argument `H`. Expected a square operator. "
                f"Received: H with shape {H.shape}"
            )
        try:
            sums = np.asarray(H.rmatvec(np.ones(H.shape[0])), dtype=np.float64).ravel()
        except NotImplementedError as exc:
            raise ValueError(
                "Invalid value for argument `H`. Expected a LinearOperator with "
                "`rmatvec` (needed for the column sums). Received: H without rmatvec"
            ) from exc
        return H, sums
    mat = _as_sparse_square(H)
    return mat, np.asarray(mat.sum(axis=0)).ravel()


def _check_positive_columns(sums):
    zero = np.flatnonzero(~(sums > 0))
    if zero.size:
        shown = zero[:10].tolist()
        raise ValueError(
            "Invalid value for argument `H`. Expected positive column sums (every "
            "state needs an outgoing transition). Received: H with zero column sum "
            f"at node index {shown}{' ...' if zero.size > 10 else ''}"
        )


def transition_matrix(H):
    """Column-stochastic transition matrix ``M = H D^-1``.

    Args:
        H: ``(N, N)`` non-negative matrix (sparse or dense), or a
            ``LinearOperator`` (e.g. :class:`HyperAdjacencyOperator`) with
            ``rmatvec``.

    Returns:
        ``scipy.sparse.csr_matrix`` ``M`` (or a ``LinearOperator`` when ``H`` is
        one) whose columns sum to 1.

    Raises:
        ValueError: if a column of ``H`` sums to zero (the message names the
            node index), or ``H`` is not square / has negative entries.

    Example:
        >>> transition_matrix(np.array([[1.0, 1.0], [1.0, 0.0]])).toarray()
        array([[0.5, 1. ],
               [0.5, 0. ]])
    """
    mat, sums = _column_sums(H)
    _check_positive_columns(sums)
    inv = 1.0 / sums
    if isinstance(mat, spla.LinearOperator):
        return spla.LinearOperator(
            mat.shape,
            matvec=lambda x: mat.matvec(np.ravel(x) * inv),
            rmatvec=lambda x: inv * mat.rmatvec(np.ravel(x)),
            dtype=np.float64,
        )
    return sp.csr_matrix(mat @ sp.diags(inv))


def _stationary_power(apply_m, n, tol, max_iter):
    """Power iteration on the lazy chain (I + M) / 2 from the uniform vector."""
    x = np.full(n, 1.0 / n)
    delta = np.inf
    for _ in range(int(max_iter)):
        y = 0.5 * (x + apply_m(x))
        y /= y.sum()
        delta = float(np.abs(y - x).sum())
        x = y
        if delta < tol:
            return x
    raise RuntimeError(
        f"Power iteration did not converge in max_iter={max_iter} iterations "
        f"(last L1 change {delta:.3e} >= tol={tol}). Is the chain irreducible?"
    )


def _stationary_krylov(apply_m, n, tol, max_iter):
    """ARPACK (implicitly restarted Arnoldi) eigenvector of M for eigenvalue 1.

    Returns None when the answer cannot be trusted (tiny ``n``, no convergence,
    a sign-mixed vector from a repeated eigenvalue 1, a large residual).
    """
    if n < 3:  # ARPACK needs k < n - 1
        return None
    op = spla.LinearOperator((n, n), matvec=apply_m, dtype=np.float64)
    try:
        _, vecs = spla.eigs(
            op, k=1, which="LR", v0=np.full(n, 1.0 / n), tol=0, maxiter=int(max_iter)
        )
    except (spla.ArpackNoConvergence, spla.ArpackError):
        return None
    x = np.real(vecs[:, 0])
    total = x.sum()
    if not np.isfinite(total) or abs(total) < 1e-300:
        return None
    x = x / total
    if x.min() < -1e-9 * np.abs(x).max():
        return None
    x = np.clip(x, 0.0, None)
    x /= x.sum()
    residual = float(np.abs(apply_m(x) - x).sum())
    return x if residual <= max(tol, 1e-12) else None


def stationary_distribution(H, method="auto", tol=1e-12, max_iter=100_000):
    """Stationary distribution ``pi`` of ``M = H D^-1``: ``M pi = pi, sum(pi)=1``.

    Methods:

    * ``"closed_form"``: ``pi = d / sum(d)`` with ``d`` the column sums (the
      degrees). Exact for a symmetric ``H`` only; symmetry is checked.
    * ``"iterative"``: Krylov eigensolver (ARPACK ``eigs``, largest real part)
      for the eigenvector of ``M`` with eigenvalue 1, accepted when it is a
      non-negative vector with ``||M pi - pi||_1 <= max(tol, 1e-12)``; otherwise
      (tiny ``N``, no convergence, reducible chain) falls back to ``"power"``.
      Converges in far fewer mat-vecs than the power iteration when the
      spectral gap is small (large ``T``: most of the mass of each state goes
      to the coupling edges).
    * ``"power"``: power iteration on the lazy chain ``(I + M) / 2`` (same
      stationary distribution, aperiodic; converges for an irreducible chain),
      from the uniform vector, until ``||x_{n+1} - x_n||_1 < tol``.
    * ``"auto"``: closed form when ``H`` is (known to be) symmetric, else
      ``"iterative"``.

    The iterative methods work on a sparse matrix or a ``LinearOperator`` and
    never form a dense matrix. For a reducible chain the stationary
    distribution is not unique: the methods may return different (valid)
    stationary distributions.

    Args:
        H: ``(N, N)`` non-negative matrix (sparse or dense) or a
            ``LinearOperator``. A generic operator cannot be checked for symmetry,
            :class:`HyperAdjacencyOperator` knows it.
        method: ``"auto"``, ``"closed_form"``, ``"iterative"`` or ``"power"``.
        tol: L1 tolerance (power: change per step; Krylov: residual).
        max_iter: maximum number of power iterations / ARPACK restarts.

    Returns:
        ``np.ndarray`` of shape ``(N,)``, non-negative, summing to 1.

    Raises:
        ValueError: unknown ``method``; ``"closed_form"`` on a non-symmetric (or
            unverifiable) ``H``; a zero column sum; invalid ``tol``/``max_iter``.
        RuntimeError: if the power iteration does not converge in ``max_iter``.

    Example:
        >>> A = adjacency(3, [[0, 1], [1, 2]], [True, True], 0, 2)
        >>> stationary_distribution(A).tolist()  # degrees 2, 2, 2
        [0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
    """
    if method not in _STATIONARY_METHODS:
        raise ValueError(
            f"Invalid value for argument `method`. Expected one of "
            f"{_STATIONARY_METHODS}. Received: method={method!r}"
        )
    if not (isinstance(tol, numbers.Real) and tol > 0):
        raise ValueError(
            "Invalid value for argument `tol`. Expected a positive float. "
            f"Received: tol={tol!r}"
        )
    if not (_is_int(max_iter) and max_iter >= 1):
        raise ValueError(
            "Invalid value for argument `max_iter`. Expected a positive integer. "
            f"Received: max_iter={max_iter!r}"
        )
    mat, sums = _column_sums(H)
    _check_positive_columns(sums)
    if isinstance(mat, HyperAdjacencyOperator):
        symmetric = mat.is_symmetric
    elif isinstance(mat, spla.LinearOperator):
        symmetric = None  # unknown
    else:
        symmetric = _sparse_is_symmetric(mat)

    if method == "closed_form" and not symmetric:
        reason = "a non-symmetric H" if symmetric is False else (
            "a LinearOperator whose symmetry cannot be verified"
        )
        raise ValueError(
            "Invalid value for argument `method`. The closed form pi = d / sum(d) "
            "requires a symmetric `H`; use method='iterative'. "
            f"Received: method='closed_form' with {reason}"
        )
    if method == "closed_form" or (method == "auto" and symmetric):
        return sums / sums.sum()

    inv = 1.0 / sums
    apply_h = mat.matvec if isinstance(mat, spla.LinearOperator) else mat.__matmul__

    def apply_m(x):
        return np.asarray(apply_h(np.ravel(x) * inv), dtype=np.float64).ravel()

    n = sums.shape[0]
    if method != "power":
        pi = _stationary_krylov(apply_m, n, tol, max_iter)
        if pi is not None:
            return pi
    return _stationary_power(apply_m, n, tol, max_iter)


def tas(pi, num_copies, num_nodes):
    """Topological Accumulated Score ``TAS(v) = sum_k pi(k, v)``.

    Args:
        pi: ``(T*V,)`` stationary distribution, copy-major (``pi[k*V + v]``).
        num_copies: ``T``.
        num_nodes: ``V``.

    Returns:
        ``np.ndarray`` of shape ``(V,)``; sums to 1 when ``pi`` does.

    Raises:
        ValueError: if ``pi`` does not have ``T*V`` entries.

    Example:
        >>> tas(np.array([0.1, 0.2, 0.3, 0.4]), 2, 2).tolist()
        [0.4, 0.6000000000000001]
    """
    if not _is_int(num_copies) or num_copies < 1:
        raise ValueError(
            "Invalid value for argument `num_copies`. Expected a positive integer. "
            f"Received: num_copies={num_copies!r}"
        )
    num_nodes = _check_num_nodes(num_nodes)
    arr = _check_vector("pi", pi, num_copies * num_nodes, "T*V")
    return arr.reshape(num_copies, num_nodes).sum(axis=0)


def _config_degrees(num_nodes, edges, active, source, sink):
    """``(T, V)`` degrees in ``A_k`` (distinct neighbours + source/sink self-loop)."""
    num_configs = active.shape[0]
    deg = np.zeros((num_configs, num_nodes))
    if len(edges):
        pairs = np.sort(edges, axis=1)
        uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
        inverse = np.ravel(inverse)
        num_pairs = len(uniq)
        # (E, P) edge -> undirected pair; (P, V) pair -> its two endpoints.
        to_pair = sp.csr_matrix(
            (np.ones(len(edges)), (np.arange(len(edges)), inverse)),
            shape=(len(edges), num_pairs),
        )
        incidence = sp.csr_matrix(
            (
                np.ones(2 * num_pairs),
                (np.repeat(np.arange(num_pairs), 2), uniq.ravel()),
            ),
            shape=(num_pairs, num_nodes),
        )
        pair_on = np.asarray(to_pair.T @ active.T.astype(np.float64)) > 0  # (P, T)
        deg = np.asarray(incidence.T @ pair_on.astype(np.float64)).T  # (T, V)
    deg[:, source] += 1.0
    deg[:, sink] += 1.0
    return deg


def tas_from_configs(num_nodes, edges, active, source, sink, lam=1.0, prune=True):
    """TAS of ``T`` configurations by the closed form, without building ``H``.

    ``d(k, v) = deg_{A_k}(v) + lam * (T - 1)`` (the self-loop of the source and
    the sink counts 1, as in :func:`adjacency`) and
    ``TAS(v) = sum_k d(k, v) / sum_{k, v} d(k, v)``. Equal to
    ``tas(stationary_distribution(hyper_adjacency([...], lam)), T, V)``. Cost
    ``O(T * E)``. Nodes used by no configuration get
    ``lam * (T - 1) / sum(d)`` (0 when ``T == 1`` or ``lam == 0``).

    Args:
        num_nodes: number of nodes ``V``.
        edges: ``(E, 2)`` integer array of directed edges.
        active: ``(T, E)`` boolean mask, ``T >= 1``.
        source: index of the input node.
        sink: index of the output node.
        lam: non-negative coupling weight.
        prune: first drop edges on no active source->sink path
            (:func:`prune_to_paths`).

    Returns:
        ``np.ndarray`` of shape ``(V,)`` summing to 1.

    Raises:
        ValueError: ``lam < 0``, ``active`` with 0 configurations or not of shape
            ``(T, E)``, node indices out of range, a cycle.

    Example:
        >>> tas_from_configs(3, [[0, 1], [1, 2]], [[True, True]], 0, 2).tolist()
        [0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
    """
    lam = _check_lam(lam)
    num_nodes, edges, source, sink = _check_graph(num_nodes, edges, source, sink)
    act = _check_active(active, len(edges), allow_empty=False)
    if prune:
        act = prune_to_paths(num_nodes, edges, act, source, sink)
    else:
        topological_order(num_nodes, edges)  # same cycle check either way
    num_configs = act.shape[0]
    deg = _config_degrees(num_nodes, edges, act, source, sink)
    per_node = deg.sum(axis=0) + lam * (num_configs - 1) * num_configs
    return per_node / per_node.sum()


# --------------------------------------------------------------------------
# Paths and importance
# --------------------------------------------------------------------------


def _node_weights(tas_values, mode):
    if mode == "log":
        with np.errstate(divide="ignore"):
            return np.log(tas_values)
    return tas_values.copy()


def path_score(tas_values, path, mode="log"):
    """Topological Path Score of an explicit node path.

    Args:
        tas_values: ``(V,)`` TAS values (non-negative).
        path: sequence of node indices (e.g. from :func:`enumerate_paths`).
        mode: ``"log"`` -> ``sum(log TAS(v))`` = log of ``prod TAS(v)`` (``-inf``
            if a node has TAS 0); ``"sum"`` -> ``sum(TAS(v))``.

    Returns:
        float score.

    Raises:
        ValueError: unknown ``mode``, empty path, node index out of range.

    Example:
        >>> path_score(np.array([0.5, 0.25, 0.25]), [0, 1], mode="sum")
        0.75
    """
    mode = _check_mode(mode)
    values = _check_tas_values(tas_values)
    nodes = np.asarray(path)
    if nodes.ndim != 1 or nodes.size == 0 or not np.issubdtype(nodes.dtype, np.integer):
        raise ValueError(
            "Invalid value for argument `path`. Expected a non-empty sequence of node "
            f"indices. Received: path={path!r}"
        )
    if nodes.min() < 0 or nodes.max() >= len(values):
        raise ValueError(
            "Invalid value for argument `path`. Expected node indices in "
            f"[0, {len(values) - 1}]. Received: path={list(map(int, nodes))}"
        )
    return float(_node_weights(values, mode)[nodes].sum())


def best_path_score_per_edge(num_nodes, edges, tas_values, source, sink, mode="log"):
    """Best TPS of any source->sink path through each edge.

    Forward DP ``F(v)`` = best score of a source->v path (``v`` included),
    backward DP ``B(v)`` = best score of a v->sink path (``v`` included); the
    score of edge ``(u, v)`` is ``F(u) + B(v)``. Node weights are ``log TAS``
    (``mode="log"``) or ``TAS`` (``mode="sum"``).

    Args:
        num_nodes: number of nodes ``V``.
        edges: ``(E, 2)`` integer array of directed edges (the whole supernet).
        tas_values: ``(V,)`` TAS values.
        source: index of the input node.
        sink: index of the output node.
        mode: ``"log"`` or ``"sum"``.

    Returns:
        ``(E,)`` float array; ``-inf`` for edges on no source->sink path (and,
        in log mode, for edges whose every path crosses a node of TAS 0). Never
        NaN.

    Raises:
        ValueError: unknown ``mode``, bad ``tas_values`` (wrong length, negative,
            non-finite), node indices out of range, a cycle.

    Example:
        >>> t = np.array([0.5, 0.125, 0.25, 0.125])
        >>> best_path_score_per_edge(4, [[0, 1], [1, 3], [0, 2], [2, 3]], t, 0, 3,
        ...                          mode="sum").tolist()
        [0.75, 0.75, 0.875, 0.875]
    """
    mode = _check_mode(mode)
    num_nodes, edges, source, sink = _check_graph(num_nodes, edges, source, sink)
    values = _check_tas_values(tas_values, num_nodes)
    weights = _node_weights(values, mode)
    forward, backward = _edge_orders(num_nodes, edges)
    fwd = np.full(num_nodes, -np.inf)
    fwd[source] = weights[source]
    bwd = np.full(num_nodes, -np.inf)
    bwd[sink] = weights[sink]
    us = edges[:, 0].tolist()
    vs = edges[:, 1].tolist()
    w = weights.tolist()
    f = fwd.tolist()
    b = bwd.tolist()
    for e in forward.tolist():
        cand = f[us[e]] + w[vs[e]]
        if cand > f[vs[e]]:
            f[vs[e]] = cand
    for e in backward.tolist():
        cand = b[vs[e]] + w[us[e]]
        if cand > b[us[e]]:
            b[us[e]] = cand
    f = np.asarray(f)
    b = np.asarray(b)
    if len(edges) == 0:
        return np.zeros(0)
    return f[edges[:, 0]] + b[edges[:, 1]]


def gate_importance(edge_scores, edge_gate, num_gates):
    """Per-gate importance in ``[0, 1]`` from per-edge best-path scores.

    Rule:

    1. ``score_g = max(edge_scores[e] for e with edge_gate[e] == g)``
       (fixed edges, ``edge_gate == -1``, are ignored);
    2. gates with a finite score: min-max normalisation over those gates,
       ``(score_g - min) / (max - min)``;
    3. gates with score ``-inf`` get ``0``;
    4. if the finite scores all agree (``max - min < 1e-12``), every gate with a
       finite score gets ``1.0``.

    The result is never NaN.

    Args:
        edge_scores: ``(E,)`` scores (e.g. :func:`best_path_score_per_edge`);
            finite or ``-inf``.
        edge_gate: ``(E,)`` integer gate index per edge, ``-1`` for fixed edges.
        num_gates: number of gates ``G``.

    Returns:
        ``np.ndarray`` of shape ``(G,)`` in ``[0, 1]``.

    Raises:
        ValueError: a gate with no edge, NaN or ``+inf`` scores, gate indices out
            of ``[-1, G-1]``, shape mismatch.

    Example:
        >>> gate_importance(np.array([-3.0, -1.0, -2.0, -np.inf]), [0, 1, 1, 2], 3).tolist()
        [0.0, 1.0, 0.0]
    """
    if not _is_int(num_gates) or num_gates < 0:
        raise ValueError(
            "Invalid value for argument `num_gates`. Expected a non-negative integer. "
            f"Received: num_gates={num_gates!r}"
        )
    scores = np.asarray(edge_scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(
            "Invalid value for argument `edge_scores`. Expected a 1-D array. "
            f"Received: edge_scores with shape {scores.shape}"
        )
    if np.any(np.isnan(scores)) or np.any(scores == np.inf):
        raise ValueError(
            "Invalid value for argument `edge_scores`. Expected finite values or "
            f"-inf. Received: edge_scores={scores!r}"
        )
    gates = np.asarray(edge_gate)
    if gates.shape != scores.shape or (gates.size and not np.issubdtype(gates.dtype, np.integer)):
        raise ValueError(
            "Invalid value for argument `edge_gate`. Expected an integer array of "
            f"shape {scores.shape}. Received: edge_gate with shape {gates.shape} and "
            f"dtype {gates.dtype}"
        )
    gates = gates.astype(np.int64)
    if gates.size and (gates.min() < -1 or gates.max() >= num_gates):
        raise ValueError(
            "Invalid value for argument `edge_gate`. Expected values in "
            f"[-1, {num_gates - 1}]. Received: edge_gate with values in "
            f"[{gates.min()}, {gates.max()}]"
        )
    gated = gates >= 0
    counts = np.bincount(gates[gated], minlength=num_gates)
    if np.any(counts == 0):
        missing = np.flatnonzero(counts == 0).tolist()
        raise ValueError(
            "Invalid value for argument `edge_gate`. Expected every gate to switch "
            f"at least one edge. Received: edge_gate with no edge for gates {missing}"
        )
    gate_scores = np.full(num_gates, -np.inf)
    np.maximum.at(gate_scores, gates[gated], scores[gated])
    importance = np.zeros(num_gates)
    finite = np.isfinite(gate_scores)
    if finite.any():
        lo = gate_scores[finite].min()
        hi = gate_scores[finite].max()
        spread = hi - lo
        if spread < _SPREAD_EPS:
            importance[finite] = 1.0
        else:
            importance[finite] = (gate_scores[finite] - lo) / spread
    return np.clip(importance, 0.0, 1.0)


def importance_from_configs(
    num_nodes, edges, edge_gate, num_gates, active, source, sink, lam=1.0, mode="log"
):
    """Per-gate importance from the configurations sampled in an epoch.

    Chains :func:`prune_to_paths` -> :func:`tas_from_configs` ->
    :func:`best_path_score_per_edge` (on the full supernet) ->
    :func:`gate_importance`.

    Args:
        num_nodes: number of nodes ``V``.
        edges: ``(E, 2)`` integer array of directed edges.
        edge_gate: ``(E,)`` gate index per edge, ``-1`` for fixed edges.
        num_gates: number of gates ``G``.
        active: ``(T, E)`` boolean mask of the sampled configurations, ``T >= 1``.
        source: index of the input node.
        sink: index of the output node.
        lam: non-negative coupling weight.
        mode: ``"log"`` or ``"sum"`` path scoring.

    Returns:
        ``(importance, tas_values)``: ``(G,)`` in ``[0, 1]`` and ``(V,)`` summing
        to 1.

    Raises:
        ValueError: any of the errors of the chained functions.

    Example:
        >>> edges = [[0, 1], [1, 2], [0, 2]]  # one residual block, gate 0
        >>> imp, t = importance_from_configs(3, edges, [0, 0, -1], 1,
        ...                                  [[1, 1, 1], [0, 0, 1]], 0, 2)
        >>> imp.tolist()
        [1.0]
    """
    mode = _check_mode(mode)
    lam = _check_lam(lam)
    num_nodes, edges, source, sink = _check_graph(num_nodes, edges, source, sink)
    act = _check_active(active, len(edges), allow_empty=False)
    pruned = prune_to_paths(num_nodes, edges, act, source, sink)
    tas_values = tas_from_configs(num_nodes, edges, pruned, source, sink, lam=lam, prune=False)
    scores = best_path_score_per_edge(num_nodes, edges, tas_values, source, sink, mode=mode)
    return gate_importance(scores, edge_gate, num_gates), tas_values
