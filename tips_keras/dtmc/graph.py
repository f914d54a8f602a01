"""DAG utilities: topological order, pruning to source->sink paths, path enumeration."""

from __future__ import annotations

import heapq

import numpy as np

from tips_keras.dtmc._checks import _check_active
from tips_keras.dtmc._checks import _check_edges
from tips_keras.dtmc._checks import _check_graph
from tips_keras.dtmc._checks import _check_mask
from tips_keras.dtmc._checks import _check_num_nodes


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
