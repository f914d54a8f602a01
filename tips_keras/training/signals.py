"""Training signals: as DTMC weights, or as a per-gate importance of their own. Pure numpy.

The topological DTMC (`tips_keras.dtmc`) sees only which sub-networks were sampled, never how
training went: on a fixed supernet and a fixed sampling rule its importance settles on a
structural fixed point (benchmarks/RESULTS.md). ``TIPSCallback(signal=...)`` adds what training
measured: each step records, per path, its loss and the global norm of its gradients
(`AnytimeStep.path_signals`), and the epoch's copy of that sub-network in the hyper-adjacency
is weighted by it (``w_k * A_k``, `tips_keras.dtmc.tas_from_configs`). A random walk then spends
more time on the sub-networks that produced more loss or more gradient; the TAS of their nodes, and
so the importance of their gates, rises. This is the paper's "important paths carry the gradient"
measured instead of inferred from topology.

Why per exit: a path that leaves at an early exit has a much higher loss than one that reaches
the last exit, whatever its gates; the DTMC already models exits through topology, so the signal
is divided by the mean signal of the paths that took the same exit in the epoch. What remains is
"this choice of gates did better or worse than the other draws that left at the same exit".

Measured, the weights do not move the DTMC's importance (the coupling term swamps them). So
``TIPSCallback(importance="marginal")`` uses the signal directly: `marginal_importance` scores each
gate by how much the draws with it on beat the draws with it off.
"""

import numpy as np

SIGNALS = ("loss", "grad_norm")
IMPORTANCE_RULES = ("budget_paths", "best_path", "marginal")
_COLUMN = {"loss": 0, "grad_norm": 1}
_FLOOR = 1e-3  # weights are kept >= this after normalisation (the DTMC needs them positive)


def check_signal(signal):
    """Validates a ``signal`` argument.

    Args:
        signal: ``None`` (topology only) or one of ``SIGNALS``.

    Returns:
        The signal.

    Raises:
        ValueError: anything else.

    Example:
        >>> check_signal("loss")
        'loss'
    """
    if signal is not None and signal not in SIGNALS:
        raise ValueError(
            f"Invalid value for argument `signal`. Expected None or one of {SIGNALS}. "
            f"Received: signal={signal!r}"
        )
    return signal


def check_importance_rule(importance):
    """Validates an ``importance`` argument (`TIPSCallback(importance=...)`).

    Args:
        importance: one of ``IMPORTANCE_RULES``.

    Returns:
        The rule.

    Raises:
        ValueError: anything else.

    Example:
        >>> check_importance_rule("marginal")
        'marginal'
    """
    if importance not in IMPORTANCE_RULES:
        raise ValueError(
            f"Invalid value for argument `importance`. Expected one of {IMPORTANCE_RULES}. "
            f"Received: importance={importance!r}"
        )
    return importance


def signal_column(signals, signal):
    """Picks one signal out of the ``(paths, 2)`` array of `AnytimeStep.path_signals`.

    Args:
        signals: array (paths, 2) of ``[loss, grad_norm]`` per path.
        signal: one of ``SIGNALS``.

    Returns:
        A float array (paths,).

    Example:
        >>> signal_column(np.array([[2.0, 5.0], [1.0, 3.0]]), "grad_norm").tolist()
        [5.0, 3.0]
    """
    return np.asarray(signals, dtype=float)[:, _COLUMN[check_signal(signal)]]


def exit_normalized_weights(vectors, values):
    """Per-sub-network DTMC weights: each signal divided by the mean of its exit's signals.

    Args:
        vectors: array (T, G + 1) of the epoch's control vectors (the exit is the last column).
        values: array (T,) of their signals; ``nan`` where none was recorded (steps skipped by a
            resume, or not observed with ``steps_per_execution > 1``). Those get weight 1, as do
            all paths of an exit without a finite positive signal.

    Returns:
        A float array (T,) of positive weights (1 = an average draw for its exit).

    Raises:
        ValueError: shapes that do not match.

    Example:
        >>> vectors = np.array([[1, 0], [0, 0], [1, 1]], dtype=float)  # 1 gate; exits 0, 0, 1
        >>> exit_normalized_weights(vectors, np.array([3.0, 1.0, 0.5])).tolist()
        [1.5, 0.5, 1.0]
    """
    vectors = np.asarray(vectors, dtype=float)
    values = np.asarray(values, dtype=float)
    if vectors.ndim != 2 or values.shape != (len(vectors),):
        raise ValueError(
            "Invalid values for arguments `vectors` and `values`. Expected (T, G + 1) control "
            f"vectors and (T,) signals. Received: shapes {vectors.shape} and {values.shape}"
        )
    weights = np.ones(len(values))
    usable = np.isfinite(values) & (values > 0)
    exits = vectors[:, -1]
    for e in np.unique(exits):
        mine = (exits == e) & usable
        if mine.any():
            weights[mine] = values[mine] / values[mine].mean()
    return np.maximum(weights, _FLOOR)



def marginal_importance(vectors, values, gate_min_exit, signal="loss"):
    """Per-gate importance from what each gate did to the measured signal. No DTMC, no path length.

    The DTMC importance of a gate is a topological fixed point (a path-length ranking on our
    supernets, benchmarks/RESULTS.md), and weighting the chain by the signal cannot move it. This
    rule reads the importance off training directly: for each gate, over the epoch's steps whose
    exit comes after the gate, the mean exit-normalised signal (`exit_normalized_weights`) of the
    draws with the gate on minus that of the draws with it off. A gate helps when turning it on
    lowers the loss, or raises the gradient norm (the paper's "important paths carry the
    gradient"). The benefits are min-max normalised to [0, 1]; a gate never seen both on and off
    gets 0.5, and so do all gates when their benefits are equal.

    Args:
        vectors: array (T, G + 1) of the epoch's control vectors (the exit is the last column).
        values: array (T,) of the signal per draw; ``nan`` where none was recorded.
        gate_min_exit: sequence (G,): the first exit after each gate (`ConfigSpace.gate_min_exit`).
        signal: ``"loss"`` (lower is better) or ``"grad_norm"`` (higher is better).

    Returns:
        A float array (G,) in [0, 1].

    Raises:
        ValueError: shapes that do not match, or an unknown signal.

    Example:
        >>> vectors = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1], [0, 1, 1]], dtype=float)
        >>> marginal_importance(vectors, np.array([1.0, 2.0, 1.0, 2.0]), (0, 0)).tolist()
        [1.0, 0.0]
    """
    check_signal(signal)
    if signal is None:
        raise ValueError("Invalid value for argument `signal`. Expected one of "
                         f"{SIGNALS}. Received: signal=None")
    vectors = np.asarray(vectors, dtype=float)
    gate_min_exit = np.asarray(gate_min_exit)
    if vectors.ndim != 2 or vectors.shape[1] != len(gate_min_exit) + 1:
        raise ValueError(
            "Invalid value for argument `vectors`. Expected control vectors (T, G + 1) with "
            f"G = {len(gate_min_exit)} gates. Received: shape {vectors.shape}"
        )
    relative = exit_normalized_weights(vectors, values)
    observed = np.isfinite(np.asarray(values, dtype=float))
    exits = np.rint(vectors[:, -1])
    sign = -1.0 if signal == "loss" else 1.0
    benefit = np.full(len(gate_min_exit), np.nan)
    for g, first_exit in enumerate(gate_min_exit):
        rows = observed & (exits >= first_exit)
        on = rows & (vectors[:, g] > 0.5)
        off = rows & (vectors[:, g] <= 0.5)
        if on.any() and off.any():
            benefit[g] = sign * (relative[on].mean() - relative[off].mean())
    importance = np.full(len(gate_min_exit), 0.5)
    known = np.isfinite(benefit)
    if known.any():
        low, high = benefit[known].min(), benefit[known].max()
        if high > low:
            importance[known] = (benefit[known] - low) / (high - low)
    return importance
