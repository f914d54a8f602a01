"""TAS, TPS (path scores) and per-gate importance from sampled configurations."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from tips_keras.dtmc._checks import _check_active
from tips_keras.dtmc._checks import _check_graph
from tips_keras.dtmc._checks import _check_lam
from tips_keras.dtmc._checks import _check_mode
from tips_keras.dtmc._checks import _check_num_nodes
from tips_keras.dtmc._checks import _check_tas_values
from tips_keras.dtmc._checks import _check_vector
from tips_keras.dtmc._checks import _check_weights
from tips_keras.dtmc._checks import _is_int
from tips_keras.dtmc.graph import _edge_orders
from tips_keras.dtmc.graph import prune_to_paths
from tips_keras.dtmc.graph import topological_order

_SPREAD_EPS = 1e-12


# --------------------------------------------------------------------------
# TAS
# --------------------------------------------------------------------------


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


def tas_from_configs(num_nodes, edges, active, source, sink, lam=1.0, prune=True, weights=None):
    """TAS of ``T`` configurations by the closed form, without building ``H``.

    ``d(k, v) = w_k * deg_{A_k}(v) + lam * (T - 1)`` (the self-loop of the source
    and the sink counts 1, as in :func:`adjacency`) and
    ``TAS(v) = sum_k d(k, v) / sum_{k, v} d(k, v)``. Equal to
    ``tas(stationary_distribution(hyper_adjacency([w_1 A_1, ...], lam)), T, V)``:
    scaling a copy's block keeps ``H`` symmetric, so the closed form still holds.
    Cost ``O(T * E)``. Nodes used by no configuration get
    ``lam * (T - 1) / sum(d)`` (0 when ``T == 1`` or ``lam == 0``).

    Weights say how much each visited sub-network counts (for example its
    training loss, see `tips_keras.training.signals`); they are rescaled to mean 1, so
    only their ratios matter and all-equal weights give the unweighted chain.

    Args:
        num_nodes: number of nodes ``V``.
        edges: ``(E, 2)`` integer array of directed edges.
        active: ``(T, E)`` boolean mask, ``T >= 1``.
        source: index of the input node.
        sink: index of the output node.
        lam: non-negative coupling weight.
        prune: first drop edges on no active source->sink path
            (:func:`prune_to_paths`).
        weights: ``None`` (all 1) or ``(T,)`` positive weights of the copies.

    Returns:
        ``np.ndarray`` of shape ``(V,)`` summing to 1.

    Raises:
        ValueError: ``lam < 0``, ``active`` with 0 configurations or not of shape
            ``(T, E)``, node indices out of range, a cycle, weights of the wrong
            length or not positive and finite.

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
    w = _check_weights(weights, num_configs)
    deg = _config_degrees(num_nodes, edges, act, source, sink)
    per_node = w @ deg + lam * (num_configs - 1) * num_configs
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
    num_nodes, edges, edge_gate, num_gates, active, source, sink, lam=1.0, mode="log", weights=None
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
        weights: ``None`` or ``(T,)`` positive weights of the configurations
            (:func:`tas_from_configs`).

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
    tas_values = tas_from_configs(
        num_nodes, edges, pruned, source, sink, lam=lam, prune=False, weights=weights
    )
    scores = best_path_score_per_edge(num_nodes, edges, tas_values, source, sink, mode=mode)
    return gate_importance(scores, edge_gate, num_gates), tas_values
