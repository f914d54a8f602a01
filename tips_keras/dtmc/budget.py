"""Important paths under FLOPs budgets: the highest-TPS configuration per budget. Pure numpy.

The paper characterises the *important operations* as the edges of the path with the highest TPS
(TIPS, ICML 2023, Fig. 2), and TIPS is "a framework to automatically design AnytimeNNs under
various hardware constraints". With TPS the sum of TAS along a path (the authors' analysis,
``TPS_analysis/tps_sum.py``, ``calculate_tps_by_depth``), the unconstrained best path is always the
whole network, so we ask the question per budget: which configuration with at most ``b`` FLOPs
has the highest TPS? A gate's importance is then the share of budgets whose important path
switches it on (`budget_importance`).

A configuration ``(e, bits)`` of a gated supernet is one path in the sense of the authors' block
graphs (a gated block is either its convolution chain or its skip edge), and its TPS and its
FLOPs are additive over the gates: ``TPS = base_value[e] + sum(gate_value[g] for g on)``, likewise
``FLOPs`` (a gate's own nodes and operations appear exactly when it is on, once its stage is
reached). The caller measures the four vectors once from the supernet (`Topology` probes);
`best_configurations` solves the resulting knapsack exactly by enumeration when an exit reaches at
most ``limit`` gates, greedily (value per FLOP, then fill) otherwise.
"""

import numpy as np


def _check(name, values, length):
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (length,) or not np.all(np.isfinite(arr)):
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected {length} finite values. "
            f"Received: {np.asarray(values).tolist()!r}"
        )
    return arr


def _best_subset(values, costs, room, limit):
    """Max-value subset of items within ``room`` cost: (value, cost, mask). Ties: lower cost."""
    n = len(values)
    if n == 0:
        return 0.0, 0.0, np.zeros(0, bool)
    if n <= limit:
        masks = ((np.arange(1 << n)[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)
        value, cost = masks @ values, masks @ costs
        ok = cost <= room + 1e-9
        order = np.lexsort((cost[ok], -value[ok]))  # best value, then lowest cost
        i = np.flatnonzero(ok)[order[0]]
        return float(value[i]), float(cost[i]), masks[i]
    chosen, spent = np.zeros(n, bool), 0.0
    ratio = values / np.maximum(costs, 1e-12)
    for g in np.argsort(-ratio, kind="stable"):
        if values[g] > 0 and spent + costs[g] <= room + 1e-9:
            chosen[g], spent = True, spent + costs[g]
    return float(values[chosen].sum()), spent, chosen


def best_configurations(base_value, gate_value, base_cost, gate_cost, gate_min_exit, budgets, limit=16):
    """The highest-TPS configuration within each budget (additive TPS and FLOPs).

    Args:
        base_value: (E,) TPS of exit ``e`` with every gate off.
        gate_value: (G,) TPS added by switching gate ``g`` on (once its stage is reached).
        base_cost: (E,) FLOPs of exit ``e`` with every gate off.
        gate_cost: (G,) FLOPs added by gate ``g``.
        gate_min_exit: (G,) the first exit that reaches gate ``g``.
        budgets: budgets in FLOPs (absolute).
        limit: enumerate exactly when an exit reaches at most this many gates (else greedy).

    Returns:
        A list with one entry per budget: ``(exit, bits, tps, flops)`` with ``bits`` a tuple of
        0/1 per gate (gates after the exit 0), or ``None`` when no configuration fits. Ties
        between configurations of equal TPS go to fewer FLOPs, then to the deeper exit.

    Raises:
        ValueError: vectors of the wrong length or not finite, or a budget that is not a
            positive number.

    Example:
        >>> best_configurations([1.0, 3.0], [1.0, 0.5], [10, 30], [10, 10], [0, 1], [25, 45])
        [(0, (1, 0), 2.0, 20.0), (1, (1, 0), 4.0, 40.0)]
    """
    base_value = np.asarray(base_value, dtype=np.float64)
    num_exits = base_value.shape[0] if base_value.ndim == 1 else -1
    base_value = _check("base_value", base_value, num_exits)
    gate_value = np.asarray(gate_value, dtype=np.float64)
    num_gates = gate_value.shape[0] if gate_value.ndim == 1 else -1
    gate_value = _check("gate_value", gate_value, num_gates)
    base_cost = _check("base_cost", base_cost, num_exits)
    gate_cost = _check("gate_cost", gate_cost, num_gates)
    min_exit = np.asarray(gate_min_exit)
    if min_exit.shape != (num_gates,) or not np.issubdtype(min_exit.dtype, np.integer):
        raise ValueError(
            f"Invalid value for argument `gate_min_exit`. Expected {num_gates} integers. "
            f"Received: {min_exit.tolist()!r}"
        )
    out = []
    for budget in budgets:
        if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)) \
                or not budget > 0:
            raise ValueError(
                "Invalid value for argument `budgets`. Expected positive FLOPs. "
                f"Received: {budget!r}"
            )
        best = None
        for e in range(num_exits):
            room = float(budget) - base_cost[e]
            if room < -1e-9:
                continue
            reach = np.flatnonzero(min_exit <= e)
            value, cost, chosen = _best_subset(gate_value[reach], gate_cost[reach], room, limit)
            key = (base_value[e] + value, -(base_cost[e] + cost), e)
            if best is None or key > best[0]:
                bits = np.zeros(num_gates, dtype=int)
                bits[reach[chosen]] = 1
                best = (key, (e, tuple(int(b) for b in bits), float(key[0]), float(-key[1])))
        out.append(None if best is None else best[1])
    return out


def budget_importance(configurations, num_gates):
    """Per-gate importance: the share of budgets whose important path switches the gate on.

    Args:
        configurations: the list returned by `best_configurations` (``None`` entries skipped).
        num_gates: number of gates ``G``.

    Returns:
        A float array (G,) in [0, 1]; all 0 when no budget has a path.

    Example:
        >>> budget_importance([(0, (1, 0), 2.0, 20.0), (1, (1, 1), 4.0, 40.0)], 2).tolist()
        [1.0, 0.5]
    """
    paths = [np.asarray(c[1], dtype=float) for c in configurations if c is not None]
    if not paths:
        return np.zeros(num_gates)
    return np.mean(paths, axis=0)
