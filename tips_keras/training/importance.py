"""TIPS importance of an epoch: the DTMC of the sampled sub-networks, TAS, the important paths.

`dtmc_importance` turns the control vectors an epoch trained into a per-gate importance with one
of two DTMC rules (the third, ``"marginal"``, reads the training signal instead:
`tips_keras.training.signals`):

* ``"budget_paths"`` (default): TAS of every node from the hyper-adjacency of the sampled
  sub-networks (each node tied to its copies with a total weight λ), node values TAS (``score=
  "sum"``) or log TAS (``"log"``), the highest-TPS configuration within each FLOPs budget
  (`important_paths`, an exact knapsack: `tips_keras.dtmc.best_configurations`), and a gate's
  importance the share of budgets whose important path switches it on;
* ``"best_path"`` (tips-keras 0.1): the best TPS of any input -> output path through the gate's
  edges, min-max normalised (`tips_keras.dtmc.importance_from_configs`).

`epoch_importance` is what `TIPSCallback` runs at the end of an epoch: the rule it was given on
the epoch's control vectors and, with a training signal, their per-path signals.

The math is in `tips_keras.dtmc` (pure numpy); this module only reads the supernet (topology,
analytic FLOPs) for it.
"""

import numpy as np

from tips_keras import dtmc
from tips_keras.supernet import analytic_flops
from tips_keras.training import signals as signals_lib

RULES = ("budget_paths", "best_path")


def important_paths(model, node_value, budgets):
    """The highest-TPS configuration of ``model`` within each FLOPs budget.

    TPS and FLOPs are additive over the gates (`tips_keras.dtmc.budget`): the base value and cost
    of each exit and each gate's increment are read off ``E + G`` probe configurations.

    Args:
        model: a gated supernet.
        node_value: (V,) score of each node (TAS for the sum TPS, log TAS for the product).
        budgets: fractions of the full FLOPs.

    Returns:
        The list of `tips_keras.dtmc.best_configurations` (``(exit, bits, tps, flops)`` or None).

    Example:
        >>> important_paths(model, tas, [0.25, 0.5])  # doctest: +SKIP
    """
    topo = model.topology
    space = topo.space
    g, e = space.num_gates, space.num_exits
    base = np.zeros((e, g + 1), np.float32)
    base[:, -1] = np.arange(e)
    probes = np.concatenate([np.eye(g, dtype=np.float32),  # gate g alone, at the first exit reaching it
                             np.asarray(space.gate_min_exit, np.float32)[:, None]], axis=1)
    vectors = np.concatenate([base, probes])
    nodes = topo.node_masks(vectors).astype(np.float64)
    value = nodes @ np.asarray(node_value, dtype=np.float64)
    cost = np.array([c for c, _ in analytic_flops.cost_vectors(model, vectors)], dtype=np.float64)
    exit_of_gate = np.asarray(space.gate_min_exit)
    gate_value = value[e:] - value[exit_of_gate]
    gate_cost = cost[e:] - cost[exit_of_gate]
    full = float(analytic_flops.flops(model, "largest"))
    return dtmc.best_configurations(value[:e], gate_value, cost[:e], gate_cost, exit_of_gate,
                                    [b * full for b in budgets])


def as_configurations(space, found):
    """The `Configuration` of each `important_paths` result (``None`` stays ``None``).

    Args:
        space: the supernet's `ConfigSpace`.
        found: the list `important_paths` returns.

    Returns:
        A list of `Configuration` or ``None``, one per budget.

    Example:
        >>> as_configurations(model.config_space, important_paths(model, tas, [0.25]))  # doctest: +SKIP
    """
    return [None if p is None else space.resolve((p[0], list(p[1]))) for p in found]


def dtmc_importance(model, vectors, rule="budget_paths", coupling=1.0, score="sum", budgets=(0.25, 0.5),
                    weights=None):
    """Per-gate importance, TAS per node and the important paths of sampled sub-networks.

    Args:
        model: a gated supernet.
        vectors: array (T, G + 1) of the control vectors trained in the epoch, T >= 1.
        rule: one of ``RULES``.
        coupling: λ >= 0, the total weight tying each node to its T - 1 copies (λ / (T - 1) per
            pair).
        score: ``"sum"`` or ``"log"`` (TPS as the sum of TAS or of log TAS).
        budgets: fractions of the full FLOPs (``"budget_paths"``).
        weights: optional (T,) positive weights of the sub-networks in the DTMC.

    Returns:
        ``(importance, tas, paths)``: (G,) in [0, 1], (V,) summing to 1, and a list with one
        `Configuration` (or None) per budget for ``"budget_paths"``, else ``None``.

    Raises:
        ValueError: an unknown rule, or the errors of `tips_keras.dtmc` (empty or malformed
            vectors, bad coupling or weights).

    Example:
        >>> importance, tas, paths = dtmc_importance(model, vectors)  # doctest: +SKIP
    """
    if rule not in RULES:
        raise ValueError(f"Invalid value for argument `rule`. Expected one of {RULES}. Received: rule={rule!r}")
    topo = model.topology
    vectors = np.asarray(vectors, dtype=np.float32)
    lam = coupling / max(len(vectors) - 1, 1)
    if rule == "best_path":
        importance, tas = dtmc.importance_from_configs(
            topo.num_nodes, topo.edges, topo.edge_gate, topo.num_gates, topo.edge_masks(vectors, prune=False),
            topo.source, topo.sink, lam=lam, mode=score, weights=weights)
        return importance, tas, None
    tas = dtmc.tas_from_configs(topo.num_nodes, topo.edges, topo.edge_masks(vectors), topo.source,
                                topo.sink, lam=lam, prune=False, weights=weights)
    node_value = tas if score == "sum" else np.log(np.maximum(tas, 1e-300))
    found = important_paths(model, node_value, budgets)
    return dtmc.budget_importance(found, topo.num_gates), tas, as_configurations(model.config_space, found)


def check_vectors(vectors):
    """The control vectors of an epoch as a float32 array (T, G + 1), T >= 1.

    Args:
        vectors: array-like (T, G + 1).

    Returns:
        A float32 numpy array.

    Raises:
        ValueError: no vectors (an epoch in which no step ran).

    Example:
        >>> check_vectors([[1, 0, 1]]).shape
        (1, 3)
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(
            "Invalid value: empty epoch. Expected at least one sampled sub-network to build "
            f"the DTMC. Received: {len(vectors)} sub-networks"
        )
    return vectors


def epoch_importance(model, vectors, values=None, rule="budget_paths", signal=None, coupling=1.0, score="sum",
                     budgets=(0.25, 0.5)):
    """The importance an epoch's training gives each gate, by any rule of `TIPSCallback`.

    ``"marginal"`` with signals reads them (`tips_keras.training.signals.marginal_importance`);
    every other case builds the DTMC (`dtmc_importance`), its sub-networks weighted by their
    exit-normalised signal when there is one (`tips_keras.training.signals.exit_normalized_weights`).

    Args:
        model: a gated supernet.
        vectors: array (T, G + 1) of the control vectors trained in the epoch.
        values: optional (T,) signal of each path (NaN where none was recorded).
        rule: ``"budget_paths"``, ``"best_path"`` or ``"marginal"``.
        signal: the signal's name (``"loss"`` or ``"grad_norm"``) when ``values`` is given.
        coupling: λ >= 0 (`dtmc_importance`).
        score: ``"sum"`` or ``"log"``.
        budgets: fractions of the full FLOPs.

    Returns:
        ``(importance, paths)``: (G,) in [0, 1] and, for ``"budget_paths"``, one `Configuration`
        (or None) per budget, else ``None``.

    Raises:
        ValueError: no vectors (an epoch in which no step ran), or the errors of `dtmc_importance`.

    Example:
        >>> importance, paths = epoch_importance(model, vectors)  # doctest: +SKIP
    """
    vectors = check_vectors(vectors)
    if rule == "marginal" and values is not None:
        importance = signals_lib.marginal_importance(vectors, values, model.config_space.gate_min_exit, signal)
        return importance, None
    weights = None if values is None else signals_lib.exit_normalized_weights(vectors, values)
    importance, _, paths = dtmc_importance(model, vectors, rule, coupling, score, budgets, weights)
    return importance, paths
