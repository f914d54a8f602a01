"""keras-tuner Oracles over the configurations of an anytime supernet, FLOPs budgets enforced.

Both oracles propose configurations in ``populate_space`` and never hand out one over the
largest budget (keras-tuner has no constraints: a proposal over budget is repaired or rejected
before it becomes a trial). Trials are spread round-robin over the budgets: trial ``n`` targets
budget ``n mod B`` and its configuration has at most that many FLOPs, so every budget gets
candidates near it. Configurations are canonical (bits of gates after the exit are 0), so
keras-tuner's own duplicate check never lets a sub-network be evaluated twice.

* `TIPSOracle` is guided by the supernet's TIPS importance: per budget it first tries TIPS'
  important paths that fit it (stored in the controller by `TIPSCallback`: the highest-TPS
  configuration per training budget, the paths TIPS trained most), then the importance-greedy
  configuration of every exit (switch on gates by decreasing importance while the budget
  allows), then evolves: a tournament picks an accurate evaluated parent that fits the
  budget, gates are flipped with importance-weighted probabilities (important off-gates are
  switched on, unimportant on-gates off), the exit moves by one now and then, the child is
  repaired into the budget (gates switched off in a random order that favours unimportant ones)
  and half the children are greedily filled up to the budget (favouring important gates). The
  strength of the guidance is a parameter (``guidance``; 0 gives a plain evolutionary search).
* `RandomOracle` is the baseline: uniformly random exits and bits, rejected when over the budget.

When proposals keep colliding with evaluated configurations, a small space (<= 65,536
configurations) is enumerated and an untried one under the budget is drawn; when none is left
the oracle stops the search.
"""

import keras_tuner
import numpy as np
from keras_tuner.engine import trial as trial_module

from tips_keras.search.space import SearchSpace

STATE_KEY = "tips_search"
ORACLES = ("tips", "random")
_ENUMERATION_LIMIT = 1 << 16


class ConfigOracle(keras_tuner.Oracle):
    """Base class: budgets, round-robin targets, canonical de-duplication and resumable state.

    A subclass sets ``kind`` and implements ``_propose(target, rng, round_index)``, yielding
    ``(origin, candidate vectors)``; the base class keeps the first new candidate that fits.

    Args:
        space: the `SearchSpace` of the supernet.
        budgets: FLOPs budgets, fractions of the full FLOPs (<= 1) or absolute FLOPs (> 1).
        max_trials: configurations to evaluate at most.
        seed: seed of the proposals (trial ``n`` uses ``default_rng([seed, n])``).
        candidates: candidates generated per proposal round.
        fingerprint: extra JSON-able facts that must match when a search is resumed.
        **kwargs: passed to `keras_tuner.Oracle` (e.g. ``max_retries_per_trial``).

    Raises:
        ValueError: bad ``space`` / ``max_trials`` / ``budgets`` (see
            `SearchSpace.resolve_budgets`; a budget given twice too), or a resumed project whose
            supernet or budgets differ.

    Example:
        >>> class FillOracle(ConfigOracle):  # doctest: +SKIP
        ...     kind = "fill"
        ...     def _propose(self, target, rng, round_index):
        ...         yield "fill", self.space.fill(self.space.random_vectors(rng, 8), target)
    """

    kind = None

    def __init__(self, space, budgets, max_trials=100, seed=0, candidates=32, fingerprint=None, **kwargs):
        if not isinstance(space, SearchSpace):
            raise ValueError("Invalid value for argument `space`. Expected a "
                             f"tips_keras.search.SearchSpace. Received: space={space!r}")
        if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
            raise ValueError("Invalid value for argument `max_trials`. Expected a positive integer. "
                             f"Received: max_trials={max_trials!r}")
        super().__init__(
            objective=keras_tuner.Objective("accuracy", "max"),
            max_trials=max_trials,
            hyperparameters=space.hyperparameters(),
            allow_new_entries=False,
            tune_new_entries=False,
            seed=int(seed) + 1,  # keras-tuner replaces a seed of 0 by a random one
            **kwargs,
        )
        self.verbose = 0  # progress comes from the tuner (tqdm), not keras-tuner's prints
        self.space = space
        self.budgets = space.resolve_budgets(budgets)  # validates
        self.budget_values = [float(b) for b in (budgets if np.ndim(budgets) else [budgets])]
        if len(set(self.budget_values)) != len(self.budget_values):
            # The front stores the budgets, and the export writes one directory per budget.
            raise ValueError("Invalid value for argument `budgets`. Expected distinct budgets. "
                             f"Received: budgets={list(budgets)!r}")
        self.search_seed = int(seed)
        self.candidates = int(candidates)
        self.fingerprint = {
            "oracle": self.kind,
            "gate_names": list(space.gate_names),
            "full_flops": int(space.full_flops),
            "budgets": [int(b) for b in self.budgets],
            **(fingerprint or {}),
        }
        # trial_id -> {"target": budget of its round-robin turn, "budget": the FLOPs limit it
        # was proposed under (the target, or the largest budget once the target's configurations
        # are exhausted), "origin": seed / mutation / importance / random / enumeration}
        self.proposals = {}
        self._all = None

    # -- keras-tuner hooks --------------------------------------------------------------------
    def populate_space(self, trial_id):
        """keras-tuner hook: proposes the configuration of trial ``trial_id``.

        Args:
            trial_id: the trial's id; trial ``n`` targets budget ``n mod B``.

        Returns:
            ``{"status": RUNNING, "values": hyperparameter values}``, or ``STOPPED`` (values None)
            when no new configuration was found (after the proposal rounds and, for small spaces,
            the enumeration).
        """
        n = int(trial_id)
        target = int(self.budgets[n % len(self.budgets)])
        rng = np.random.default_rng([self.search_seed, n])
        vector, origin, limit = self._choose(target, rng)
        if vector is None:
            return {"status": trial_module.TrialStatus.STOPPED, "values": None}
        self.proposals[str(trial_id)] = {"target": target, "budget": limit, "origin": origin}
        return {"status": trial_module.TrialStatus.RUNNING, "values": self.space.to_values(vector)}

    def get_state(self):
        """keras-tuner hook: the state plus the fingerprint, proposals and seed (for resuming).

        Returns:
            The state dict.
        """
        state = super().get_state()
        state[STATE_KEY] = {"fingerprint": self.fingerprint, "proposals": self.proposals,
                            "search_seed": self.search_seed}
        return state

    def set_state(self, state):
        """keras-tuner hook: restores a state saved by `get_state`.

        Args:
            state: the saved state dict.

        Raises:
            ValueError: the saved fingerprint differs (other supernet weights, budgets, validation
                data, oracle or options): pass ``overwrite=True`` or another project name.
        """
        super().set_state(state)
        saved = state.get(STATE_KEY) or {}
        if saved.get("fingerprint") != self.fingerprint:
            raise ValueError(
                "Cannot resume the search in "
                f"{getattr(self, '_directory', '?')}/{getattr(self, '_project_name', '?')}: it was "
                f"made with {saved.get('fingerprint')}, this one has {self.fingerprint}. Pass "
                "overwrite=True (or another project_name) to start a new search."
            )
        self.proposals = dict(saved.get("proposals", {}))
        self.search_seed = int(saved.get("search_seed", self.search_seed))

    # -- evaluated configurations ---------------------------------------------------------------
    def evaluated(self):
        """The completed trials that reported an accuracy.

        Returns:
            ``(vectors (N, G + 1), accuracy (N,), flops (N,))``.
        """
        done = [t for t in self.trials.values()
                if t.status == trial_module.TrialStatus.COMPLETED and t.metrics.exists("accuracy")]
        if not done:
            width = self.space.num_gates + 1
            return np.zeros((0, width), np.float32), np.zeros(0), np.zeros(0, np.int64)
        vectors = np.stack([self.space.from_values(t.hyperparameters.values) for t in done])
        accuracy = np.asarray([t.metrics.get_last_value("accuracy") for t in done], dtype=np.float64)
        return vectors, accuracy, self.space.cost(vectors)[0]

    # -- proposal machinery ---------------------------------------------------------------------
    def _propose(self, target, rng, round_index):
        """Yields ``(origin, candidate vectors)``; subclasses implement the strategy."""
        raise NotImplementedError

    def _choose(self, target, rng, rounds=4):
        for round_index in range(rounds):
            for origin, candidates in self._propose(target, rng, round_index):
                vector = self._first_new(candidates, target)
                if vector is not None:
                    return vector, origin, target
        return self._enumerated(target, rng)

    def _is_new(self, vector):
        return not self._duplicate(self.space.to_values(vector))

    def _first_new(self, candidates, limit):
        if candidates is None or not len(candidates):
            return None
        candidates = self.space.canonical(candidates)
        fits = self.space.cost(candidates)[0] <= limit  # the budget is enforced here, always
        seen = set()
        for vector in candidates[fits]:
            key = self.space.key(vector)
            if key not in seen and self._is_new(vector):
                return vector
            seen.add(key)
        return None

    def _enumerated(self, target, rng):
        """``(vector, origin, limit)``: an untried configuration drawn from the enumerated space
        under ``target`` or, when none is left there, under the largest budget; Nones when the
        space is exhausted (or too large to enumerate)."""
        if self.space.size > _ENUMERATION_LIMIT:
            return None, None, None
        if self._all is None:
            vectors = self.space.all_vectors()
            self._all = (vectors, self.space.cost(vectors)[0])
        vectors, flops = self._all
        for limit in (target, int(self.budgets[-1])):
            pool = [v for v in vectors[flops <= limit] if self._is_new(v)]
            if pool:
                return pool[int(rng.integers(len(pool)))], "enumeration", limit
        return None, None, None


class RandomOracle(ConfigOracle):
    """Random-search baseline: uniform exits and gate bits, rejected when over the target budget.

    Args:
        space: the `SearchSpace` of the supernet.
        budgets: FLOPs budgets (fractions <= 1 or absolute FLOPs).
        **kwargs: see `ConfigOracle` (``max_trials``, ``seed``, ``candidates``, ...).

    Example:
        >>> oracle = RandomOracle(SearchSpace(model), budgets=[0.5, 1.0], max_trials=50)  # doctest: +SKIP
    """

    kind = "random"

    def _propose(self, target, rng, round_index):
        yield "random", self.space.random_vectors(rng, self.candidates)


class TIPSOracle(ConfigOracle):
    """Importance-guided evolutionary search (see the module docstring).

    Args:
        space: the `SearchSpace` (its ``importance`` guides the proposals).
        budgets: FLOPs budgets (fractions <= 1 or absolute FLOPs).
        guidance: how strongly importance steers mutations, repairs and fills, in [0, 1]: a
            gate's preference to be on is ``(1 - guidance) + guidance * importance`` (0: uniform,
            an evolutionary search; 1: unimportant gates are almost never switched on).
        mutation_rate: expected number of gate flips per child.
        exit_rate: probability that a child moves its exit by one.
        fill_rate: fraction of children greedily filled up to the budget.
        **kwargs: see `ConfigOracle`.

    Example:
        >>> oracle = TIPSOracle(SearchSpace(model), budgets=[0.25, 0.5, 1.0], max_trials=100)  # doctest: +SKIP
    """

    kind = "tips"

    def __init__(self, space, budgets, guidance=0.7, mutation_rate=1.5, exit_rate=0.2, fill_rate=0.5, **kwargs):
        super().__init__(space, budgets, **kwargs)
        if not 0.0 <= float(guidance) <= 1.0:
            raise ValueError("Invalid value for argument `guidance`. Expected a float in [0, 1]. "
                             f"Received: guidance={guidance!r}")
        self.guidance = float(guidance)
        self.mutation_rate, self.exit_rate, self.fill_rate = mutation_rate, exit_rate, fill_rate
        self.fingerprint["guidance"] = self.guidance
        # Preference to have a gate on: 1 - guidance (no preference) + guidance * importance.
        self.preference = (1.0 - self.guidance) + self.guidance * space.importance

    def seeds(self, target):
        """The first candidates for ``target``: TIPS' important paths, then greedy fills.

        First the important paths stored in the supernet's controller that fit ``target`` (most
        FLOPs first: the important path of the nearest budget below), then the importance-greedy
        configuration of every exit (deepest first): all gates off, then gates switched on by
        decreasing importance while it fits (`SearchSpace.fill`).

        Args:
            target: the budget in FLOPs.

        Returns:
            A float32 array (n, G + 1) of canonical vectors that fit ``target``.
        """
        important = self.space.important_paths
        if len(important):
            flops = self.space.cost(important)[0]
            important = important[flops <= target][np.argsort(-flops[flops <= target], kind="stable")]
        exits = np.arange(self.space.num_exits)[::-1]
        base = np.zeros((len(exits), self.space.num_gates + 1), np.float32)
        base[:, -1] = exits
        base = base[self.space.cost(base)[0] <= target]
        filled = self.space.fill(base, target) if len(base) else base
        return np.concatenate([important.astype(np.float32), filled]) if len(important) else filled

    def _propose(self, target, rng, round_index):
        if round_index == 0:
            yield "seed", self.seeds(target)
        vectors, accuracy, flops = self.evaluated()
        fits = flops <= target
        if fits.any():
            yield "mutation", self.mutants(vectors[fits], accuracy[fits], target, rng)
        p_on = 0.5 + 0.8 * self.guidance * (self.space.importance - 0.5)
        samples = self.space.random_vectors(rng, self.candidates, on_prob=p_on)
        yield "importance", self._repair_and_fill(samples, target, rng)

    def _repair_and_fill(self, vectors, target, rng):
        vectors = self.space.repair(vectors, target, rng=rng, weights=self.preference)
        chosen = rng.random(len(vectors)) < self.fill_rate
        if chosen.any():
            vectors[chosen] = self.space.fill(vectors[chosen], target, rng=rng, weights=self.preference)
        return vectors

    def mutants(self, parents, accuracy, target, rng):
        """Children of tournament-selected parents, mutated by importance and repaired to fit.

        Each of ``candidates`` children copies the most accurate of 3 random parents; its exit moves
        by one with probability ``exit_rate`` (gates that become relevant are drawn afresh); about
        ``mutation_rate`` relevant gates flip (on -> off favours unimportant gates, off -> on
        important ones; at least one when the exit did not move); it is then repaired into
        ``target`` and, with probability ``fill_rate``, filled up to it.

        Args:
            parents: evaluated vectors (N, G + 1) that fit ``target``.
            accuracy: their accuracies (N,).
            target: the budget in FLOPs.
            rng: a ``numpy.random.Generator``.

        Returns:
            A float32 array (candidates, G + 1) of canonical vectors within ``target``.
        """
        space, k = self.space, self.candidates
        imp = space.importance
        picks = rng.integers(0, len(parents), (k, 3))
        winners = picks[np.arange(k), np.argmax(accuracy[picks], axis=1)]
        children = parents[winners].copy()
        old_exit = children[:, -1].copy()
        moved = rng.random(k) < self.exit_rate
        step = np.where(rng.random(k) < 0.5, -1.0, 1.0)
        children[:, -1] = np.clip(old_exit + moved * step, 0, space.num_exits - 1)
        fresh = space.relevant(children) & ~space.relevant(old_exit[:, None])
        draw = rng.random(children[:, :-1].shape) < (0.5 + 0.8 * self.guidance * (imp - 0.5))[None, :]
        children[:, :-1] = np.where(fresh, draw, children[:, :-1])
        relevant = space.relevant(children)
        g = self.guidance  # flip on -> off: prefer unimportant gates; off -> on: important ones
        weight = (1.0 - g) + g * np.where(children[:, :-1] > 0.5, 1.0 - imp, imp)
        weight = np.where(relevant, weight + 1e-9, 0.0)
        total = weight.sum(axis=1, keepdims=True)
        prob = np.clip(self.mutation_rate * weight / np.maximum(total, 1e-12), 0.0, 1.0)
        flip = rng.random(prob.shape) < prob
        lazy = ~flip.any(axis=1) & ~moved & (total[:, 0] > 0)
        for row in np.flatnonzero(lazy):  # every child differs from its parent
            flip[row, rng.choice(space.num_gates, p=weight[row] / total[row, 0])] = True
        children[:, :-1] = np.where(flip, 1.0 - children[:, :-1], children[:, :-1])
        return self._repair_and_fill(children, target, rng)


def get_oracle(oracle, space, budgets, **kwargs):
    """Returns an oracle: ``"tips"`` (`TIPSOracle`), ``"random"`` (`RandomOracle`) or an instance.

    Args:
        oracle: ``"tips"``, ``"random"`` or a `ConfigOracle` (returned as is, with its own
            budgets and options; it must search the same supernet as ``space``).
        space: the `SearchSpace`.
        budgets: FLOPs budgets (fractions <= 1 or absolute FLOPs).
        **kwargs: options of the oracle class (``max_trials``, ``seed``, ``guidance``, ...).

    Returns:
        A `ConfigOracle`.

    Raises:
        ValueError: unknown name, invalid options, or an instance built on another supernet
            (other gates or other FLOPs).

    Example:
        >>> get_oracle("random", space, [0.5, 1.0], max_trials=20)  # doctest: +SKIP
    """
    if isinstance(oracle, ConfigOracle):
        theirs = (oracle.space.gate_names, oracle.space.num_exits, oracle.space.full_flops)
        ours = (space.gate_names, space.num_exits, space.full_flops)
        if theirs != ours:
            raise ValueError(
                "Invalid value for argument `oracle`: the ConfigOracle instance searches another "
                f"supernet. Expected (gates, exits, full FLOPs) {ours}. Received: {theirs}"
            )
        return oracle
    classes = {"tips": TIPSOracle, "random": RandomOracle}
    if oracle not in classes:
        raise ValueError(f"Invalid value for argument `oracle`. Expected one of {ORACLES} or a "
                         f"ConfigOracle instance. Received: oracle={oracle!r}")
    return classes[oracle](space, budgets, **kwargs)
