"""The search space of an anytime supernet: configurations, their FLOPs, budgets and repairs.

Pure numpy around one Keras call (`tips_keras.supernet.analytic_flops.cost_vectors`, exact and
vectorised): the oracles build, repair and de-duplicate configurations here as control vectors
``[gate bits..., exit]`` (`tips_keras.Configuration.to_vector`), always in canonical form (bits of
gates after the exit are 0, so equal sub-networks have equal vectors).
"""

import math

import keras
import keras_tuner
import numpy as np

from tips_keras.supernet import analytic_flops
from tips_keras.supernet.configs import Configuration

EXIT_HP = "exit"


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def budget_to_flops(budget, full_flops, arg="budget"):
    """Turns a budget into absolute FLOPs: ``<= 1`` is a fraction of ``full_flops``, ``> 1`` absolute.

    Args:
        budget: a fraction of the full FLOPs (``<= 1``) or absolute FLOPs (``> 1``).
        full_flops: FLOPs of the largest configuration.
        arg: argument name used in the error message.

    Returns:
        The budget in FLOPs, an ``int`` (fractions are floored).

    Raises:
        ValueError: not a positive finite number, or absolute FLOPs beyond int64.

    Example:
        >>> budget_to_flops(0.5, 1000), budget_to_flops(300, 1000)
        (500, 300)
    """
    if not _is_number(budget) or not math.isfinite(budget) or budget <= 0:
        raise ValueError(
            f"Invalid value for argument `{arg}`. Expected a positive number: a fraction of the "
            f"full FLOPs if <= 1, else absolute FLOPs. Received: {arg}={budget!r}"
        )
    if budget >= 2**63:  # FLOPs are stored as int64 (NumPy) downstream
        raise ValueError(
            f"Invalid value for argument `{arg}`. Expected absolute FLOPs below 2**63 (int64). "
            f"Received: {arg}={budget!r}"
        )
    return int(math.floor(budget * full_flops + 1e-9)) if budget <= 1 else int(budget)


class SearchSpace:
    """Configurations of a supernet with exact FLOPs, importance and budget repairs.

    Args:
        model: a gated supernet (`tips_keras.AnytimeModel`).
        importance: per-gate importance in [0, 1] (default: ``model.controller.importance``).
            All zeros (a supernet not trained with TIPS) is treated as uniform (0.5 each).

    Attributes:
        full_flops: FLOPs of the largest configuration.
        smallest_flops: FLOPs of the smallest configuration.
        gate_flops: FLOPs saved by switching off each gate alone (from the largest).
        importance: the importance used (clipped to [0, 1]).
        importance_given: False when the importance was all zeros.
        important_paths: TIPS' important paths stored in the controller (canonical control
            vectors (n, G + 1); empty for a supernet not trained with TIPS).

    Raises:
        ValueError: ``importance`` not of length G or not finite.

    Example:
        >>> space = SearchSpace(tips_keras.supernet.zoo.anytime_resnet())  # doctest: +SKIP
        >>> space.resolve_budgets([0.5, 1.0])  # doctest: +SKIP
        array([11882624, 23765248])
    """

    def __init__(self, model, importance=None):
        self.model = model
        cs = model.config_space
        self.config_space = cs
        self.gate_names = tuple(cs.gate_names)
        self.gate_min_exit = np.asarray(cs.gate_min_exit, dtype=int)
        self.num_gates, self.num_exits = cs.num_gates, cs.num_exits
        if importance is None:
            importance = keras.ops.convert_to_numpy(model.controller.importance)
        importance = np.asarray(importance, dtype=np.float64).reshape(-1)
        if importance.shape != (self.num_gates,) or not np.all(np.isfinite(importance)):
            raise ValueError(
                f"Invalid value for argument `importance`. Expected {self.num_gates} finite values "
                f"(one per gate). Received: importance={importance.tolist()}"
            )
        importance = np.clip(importance, 0.0, 1.0)
        self.importance_given = bool(importance.any())
        self.importance = importance if self.importance_given else np.full(self.num_gates, 0.5)
        stored = keras.ops.convert_to_numpy(getattr(model.controller, "important_paths", np.zeros((0, 1))))
        stored = np.asarray(stored, np.float32).reshape(-1, self.num_gates + 1) if stored.size else \
            np.zeros((0, self.num_gates + 1), np.float32)
        stored = stored[stored[:, -1] >= 0]
        self.important_paths = cs.canonical_vectors(stored) if len(stored) else stored
        flops, _ = self.cost(np.stack([cs.largest().to_vector(), cs.smallest().to_vector()]))
        self.full_flops, self.smallest_flops = int(flops[0]), int(flops[1])
        largest = cs.largest().to_vector()
        off = np.repeat(largest[None], self.num_gates, axis=0)
        off[np.arange(self.num_gates), np.arange(self.num_gates)] = 0.0
        self.gate_flops = self.full_flops - self.cost(off)[0]  # marginal FLOPs of each gate
        # Repairs switch off the least important gates first (then the most expensive ones).
        self.off_order = np.lexsort((-self.gate_flops, self.importance))
        self.on_order = self.off_order[::-1]

    # -- sizes, conversions ---------------------------------------------------------------------
    @property
    def size(self):
        """Number of distinct (canonical) configurations.

        Returns:
            An int.
        """
        return int(sum(2 ** int((self.gate_min_exit <= e).sum()) for e in range(self.num_exits)))

    def all_vectors(self):
        """Every canonical configuration as control vectors; only for small spaces.

        Returns:
            A float32 array (size, G + 1).

        Raises:
            ValueError: more than 65,536 configurations.
        """
        return self.config_space.all_vectors(limit=1 << 16)

    def canonical(self, vectors):
        """Canonical form of control vectors (bits of gates after the exit set to 0).

        Args:
            vectors: one vector (G + 1,) or an array (T, G + 1).

        Returns:
            A float32 array (T, G + 1).
        """
        return self.config_space.canonical_vectors(np.atleast_2d(vectors))

    def relevant(self, vectors):
        """Which gates matter for each vector's exit.

        Args:
            vectors: one vector (G + 1,) or an array (T, G + 1).

        Returns:
            A boolean array (T, G).
        """
        exits = np.rint(np.atleast_2d(vectors)[:, -1]).astype(int)
        return self.gate_min_exit[None, :] <= exits[:, None]

    def cost(self, vectors):
        """Exact FLOPs and parameters of control vectors (`tips_keras.supernet.analytic_flops.cost_vectors`).

        Args:
            vectors: one vector (G + 1,) or an array (T, G + 1).

        Returns:
            ``(flops, params)``: int64 arrays (T,).

        Example:
            >>> flops, params = space.cost(space.all_vectors())  # doctest: +SKIP
        """
        rows = analytic_flops.cost_vectors(self.model, np.atleast_2d(vectors))
        costs = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
        return costs[:, 0], costs[:, 1]

    def key(self, vector):
        """A hashable key of a (canonical) vector, for de-duplication.

        Args:
            vector: a control vector (G + 1,).

        Returns:
            A tuple of ints.
        """
        return tuple(int(round(float(v))) for v in vector)

    def to_config(self, vector):
        """`tips_keras.Configuration` of a control vector.

        Args:
            vector: a control vector (G + 1,).

        Returns:
            A `Configuration`.
        """
        return Configuration.from_vector(vector)

    def hyperparameters(self):
        """keras-tuner space: ``Int("exit", 0, E - 1)`` and one ``Boolean(gate name)`` per gate.

        Returns:
            A ``keras_tuner.HyperParameters``.
        """
        hp = keras_tuner.HyperParameters()
        hp.Int(EXIT_HP, 0, self.num_exits - 1)
        for name in self.gate_names:
            hp.Boolean(name)
        return hp

    def to_values(self, vector):
        """keras-tuner values ``{"exit": e, gate name: bool}`` of a control vector (canonicalised).

        Args:
            vector: a control vector (G + 1,).

        Returns:
            A dict.
        """
        vector = self.canonical(vector)[0]
        values = {EXIT_HP: int(round(float(vector[-1])))}
        values.update({n: bool(b > 0.5) for n, b in zip(self.gate_names, vector[:-1])})
        return values

    def from_values(self, values):
        """Canonical control vector of keras-tuner values (inverse of `to_values`).

        Args:
            values: ``{"exit": e, gate name: bool}``; gates not given are off.

        Returns:
            A float32 vector (G + 1,).

        Raises:
            KeyError: no ``"exit"`` value.
        """
        bits = [float(bool(values.get(n, False))) for n in self.gate_names]
        return self.canonical(np.asarray(bits + [float(values[EXIT_HP])], dtype=np.float32))[0]

    # -- budgets ------------------------------------------------------------------------------
    def resolve_budgets(self, budgets):
        """Absolute FLOPs of ``budgets`` (fractions <= 1 or absolute FLOPs), sorted, unique.

        Args:
            budgets: one budget, or a list / tuple / array of them.

        Returns:
            An int64 array of FLOPs.

        Raises:
            ValueError: empty, not positive numbers, absolute FLOPs of 2**63 or more, or one
                smaller than the smallest configuration (the message names its FLOPs).

        Example:
            >>> space.resolve_budgets([1.0, 0.5, 0.5])  # doctest: +SKIP
            array([11882624, 23765248])
        """
        values = list(budgets) if isinstance(budgets, (list, tuple, np.ndarray)) else [budgets]
        if not values:
            raise ValueError("Invalid value for argument `budgets`. Expected a non-empty list of "
                             f"FLOPs budgets. Received: budgets={budgets!r}")
        try:
            absolute = [budget_to_flops(b, self.full_flops, "budgets") for b in values]
        except ValueError as e:
            raise ValueError(
                "Invalid value for argument `budgets`. Expected positive numbers: fractions of the "
                f"full FLOPs ({self.full_flops}) if <= 1, else absolute FLOPs below 2**63. "
                f"Received: budgets={list(values)!r}"
            ) from e
        if min(absolute) < self.smallest_flops:
            raise ValueError(
                "Invalid value for argument `budgets`: a budget is below the smallest "
                f"configuration; the smallest configuration has {self.smallest_flops} FLOPs "
                f"({self.smallest_flops / self.full_flops:.4f} of the full {self.full_flops}). "
                f"Received: budgets={list(values)!r} ({sorted(absolute)} FLOPs)"
            )
        return np.unique(np.asarray(absolute, dtype=np.int64))

    # -- constructions --------------------------------------------------------------------------
    def random_vectors(self, rng, n, on_prob=None, exits=None):
        """``n`` canonical vectors: uniform exits (or ``exits``), gate bits ~ Bernoulli(on_prob).

        Args:
            rng: a ``numpy.random.Generator``.
            n: the number of vectors.
            on_prob: per-gate on-probabilities (G,) (default 0.5 each).
            exits: the exit of each vector (n,) (default: uniform).

        Returns:
            A float32 array (n, G + 1); no budget is applied (see `repair`).

        Example:
            >>> space.random_vectors(np.random.default_rng(0), 8).shape  # doctest: +SKIP
            (8, 7)
        """
        p = np.full(self.num_gates, 0.5) if on_prob is None else np.asarray(on_prob)
        bits = (rng.random((n, self.num_gates)) < p[None, :]).astype(np.float32)
        if exits is None:
            exits = rng.integers(0, self.num_exits, n)
        return self.canonical(np.concatenate([bits, np.asarray(exits, np.float32).reshape(-1, 1)], 1))

    def _orders(self, n, weights, rng, descending):
        """Per-row gate orders: by ``weights`` (default importance), or sampled without
        replacement with probabilities proportional to ``weights`` when ``rng`` is given."""
        if rng is None:
            order = self.on_order if descending else self.off_order
            if weights is not None:
                order = np.argsort(-np.asarray(weights) if descending else np.asarray(weights), kind="stable")
            return np.repeat(order[None, :], n, axis=0)
        weights = self.importance if weights is None else np.asarray(weights, dtype=np.float64)
        sign = 1.0 if descending else -1.0  # Gumbel-top-k: P(first) proportional to weight^sign
        scores = sign * np.log(np.maximum(weights, 1e-6))[None, :] + rng.gumbel(size=(n, self.num_gates))
        return np.argsort(-scores, axis=1)

    def repair(self, vectors, budget, rng=None, weights=None):
        """Makes every vector fit ``budget``: switches off on-gates, least important first, then
        moves to an earlier exit, until it fits (vectorised; exact FLOPs at every step).

        Args:
            vectors: array (T, G + 1).
            budget: absolute FLOPs (at least the smallest configuration's).
            rng: with a generator, each vector switches gates off in a random order in which a
                gate comes early with probability proportional to ``1 / weight``.
            weights: per-gate preference to keep a gate on (default: the importance).

        Returns:
            Canonical vectors (T, G + 1) whose FLOPs are ``<= budget``.

        Example:
            >>> limit = space.resolve_budgets(0.5)[0]  # doctest: +SKIP
            >>> fitted = space.repair(space.random_vectors(rng, 8), limit)  # doctest: +SKIP
            >>> bool((space.cost(fitted)[0] <= limit).all())  # doctest: +SKIP
            True
        """
        v = self.canonical(vectors).copy()
        orders = self._orders(len(v), weights, rng, descending=False)
        for _ in range(self.num_gates + self.num_exits + 1):
            over = np.flatnonzero(self.cost(v)[0] > budget)
            if not len(over):
                return v
            order = orders[over]
            bits = np.take_along_axis(v[over, :-1], order, axis=1) > 0.5
            has_on = bits.any(axis=1)
            first = np.argmax(bits, axis=1)
            v[over[has_on], order[has_on, first[has_on]]] = 0.0
            rows = over[~has_on]
            v[rows, -1] = np.maximum(v[rows, -1] - 1, 0)
            v = self.canonical(v)
        raise RuntimeError(f"Could not repair configurations to fit {budget} FLOPs.")  # unreachable

    def fill(self, vectors, budget, rng=None, weights=None):
        """Switches on off-gates while the vector still fits ``budget`` (greedy, vectorised).

        Gates are tried by decreasing ``weights`` (default: importance), only those that matter for
        the vector's exit; with ``rng`` each vector gets its own order, a gate coming early with
        probability proportional to its weight. A vector already over the budget is not repaired.

        Args:
            vectors: array (T, G + 1).
            budget: absolute FLOPs.
            rng: optional ``numpy.random.Generator`` (per-vector random orders).
            weights: per-gate preference to be on (default: the importance).

        Returns:
            Canonical vectors (T, G + 1).

        Example:
            >>> filled = space.fill(space.repair(vectors, limit), limit)  # doctest: +SKIP
        """
        v = self.canonical(vectors).copy()
        n = len(v)
        orders = self._orders(n, weights, rng, descending=True)
        relevant = self.relevant(v)
        rows = np.arange(n)
        for k in range(self.num_gates):
            gate = orders[:, k]
            candidates = rows[relevant[rows, gate] & (v[rows, gate] < 0.5)]
            if not len(candidates):
                continue
            trial = v[candidates].copy()
            trial[np.arange(len(candidates)), gate[candidates]] = 1.0
            fits = self.cost(trial)[0] <= budget
            v[candidates[fits]] = trial[fits]
        return v
