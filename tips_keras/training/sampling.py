"""Samplers: which sub-networks ("paths") to train at each step. Pure numpy.

Every sampler returns control vectors ``[gate bits..., exit]`` (array of shape (k, G + 1), k =
paths per step) from a numpy ``Generator`` that the caller seeds per step; the same seed gives
the same paths, so training is reproducible and a resumed run replays the same draws.

* ``"tips"``: Topologically Important Path Sampling. Gate g is on with probability
  ``p_g = p_min + (p_max - p_min) * importance_g``, with ``importance`` in [0, 1] recomputed every
  epoch from the DTMC of the sub-networks sampled in that epoch (`tips_keras.dtmc`). Before the
  first update all gates are on with probability 0.5. The exit is drawn from ``exit_probs``
  (uniform unless set), so every exit keeps training. With ``include_largest`` (used when
  distilling) the first path of each step is the largest sub-network.
* ``"uniform"``: every gate on with probability 0.5, exit uniform.
* ``"sandwich"``: the largest, the smallest and ``n_random`` uniform paths each step
  (slimmable networks / BigNAS); k = 2 + n_random.
* ``"stochastic_depth"``: gate l (in depth order) survives with probability
  ``1 - l / (G - 1) * (1 - final_survival)`` (Huang et al., 2016, linear decay), exit uniform.
"""

import numpy as np

from tips_keras.supernet.configs import ConfigSpace

SAMPLERS = ("tips", "uniform", "sandwich", "stochastic_depth")


def _check_prob(name, value):
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a probability in [0, 1]. "
            f"Received: {name}={value!r}"
        )


class Sampler:
    """Base class: Bernoulli gates with per-gate probabilities, categorical exit.

    Subclasses change ``gate_probs`` / ``exit_probs`` or override `sample`; `update` receives
    the importance every epoch.

    Args:
        space: the supernet's `ConfigSpace`.
        paths_per_step: sub-networks per training step (default 1).
        include_largest: the first path of every step is the largest sub-network (the sandwich
            rule's upper slice; the teacher of in-place distillation).
        include_smallest: the smallest sub-network is a path of every step (after the largest
            when both are set).
        largest_prob: probability that a drawn path is replaced by the largest sub-network
            (default 0): trains the full network on a share of the steps without a second pass.

    Attributes:
        gate_probs: per-gate on-probability (0.5 each initially).
        exit_probs: per-exit probability (uniform initially).

    Raises:
        ValueError: ``space`` is not a `ConfigSpace`, ``paths_per_step`` is not a positive int or
            smaller than the number of fixed paths, or ``largest_prob`` outside [0, 1].

    Example:
        >>> space = ConfigSpace(("g0", "g1"), (0, 0), num_exits=1)
        >>> Sampler(space, paths_per_step=2).sample(np.random.default_rng(0)).shape
        (2, 3)
    """

    name = "base"
    # Whether the distribution changes with training (and so must be restored after a resume).
    adaptive = False

    def __init__(self, space, paths_per_step=1, include_largest=False, include_smallest=False,
                 largest_prob=0.0):
        if not isinstance(space, ConfigSpace):
            raise ValueError(f"Invalid value for argument `space`. Expected a ConfigSpace. Received: {space!r}")
        if isinstance(paths_per_step, bool) or not isinstance(paths_per_step, int) or paths_per_step < 1:
            raise ValueError(
                "Invalid value for argument `paths_per_step`. Expected a positive integer. "
                f"Received: paths_per_step={paths_per_step!r}"
            )
        fixed = int(bool(include_largest)) + int(bool(include_smallest))
        if paths_per_step < fixed:
            raise ValueError(
                f"Invalid value for argument `paths_per_step`. Expected at least {fixed}: the "
                f"fixed path(s) (include_largest={include_largest}, include_smallest="
                f"{include_smallest}). Received: paths_per_step={paths_per_step!r}"
            )
        _check_prob("largest_prob", largest_prob)
        self.space = space
        self.paths_per_step = paths_per_step
        self.include_largest = bool(include_largest)
        self.include_smallest = bool(include_smallest)
        self.largest_prob = float(largest_prob)
        self.gate_probs = np.full(space.num_gates, 0.5)
        self.exit_probs = np.full(space.num_exits, 1.0 / space.num_exits)

    def _draw(self, rng, n):
        bits = (rng.random((n, self.space.num_gates)) < self.gate_probs).astype(np.float32)
        exits = rng.choice(self.space.num_exits, size=n, p=self.exit_probs).astype(np.float32)
        return self.space.canonical_vectors(np.concatenate([bits, exits[:, None]], axis=1))

    def _fixed_then_drawn(self, rng, largest, smallest):
        """The largest and/or smallest path first (as asked), then draws for the rest of the step."""
        fixed = ([self.space.largest().to_vector()] if largest else []) + (
            [self.space.smallest().to_vector()] if smallest else [])
        drawn = self._draw(rng, self.paths_per_step - len(fixed))
        return np.concatenate([np.stack(fixed), drawn], axis=0) if fixed else drawn

    def sample(self, rng):
        """Draws the control vectors of one training step.

        The largest sub-network comes first when ``include_largest``, then the smallest when
        ``include_smallest`` (the sandwich rule); the other paths are drawn, and with
        ``largest_prob`` each drawn path is replaced by the largest with that probability.

        Args:
            rng: a ``numpy.random.Generator``; the same seed gives the same paths.

        Returns:
            A float32 array (paths_per_step, G + 1) of canonical control vectors.
        """
        paths = self._fixed_then_drawn(rng, self.include_largest, self.include_smallest)
        if self.largest_prob > 0:  # no extra draw otherwise: runs without it replay exactly
            fixed = int(self.include_largest) + int(self.include_smallest)
            replace = rng.random(len(paths) - fixed) < self.largest_prob
            paths[fixed:][replace] = self.space.largest().to_vector()
        return paths

    def update(self, importance, important_paths=None):
        """Receives the epoch's gate importance; samplers other than TIPS ignore it.

        Args:
            importance: array (G,) of per-gate importance in [0, 1].
            important_paths: optional array (n, G + 1) of control vectors (TIPS' important paths).
        """

    def set_state(self, gate_probs, exit_probs, important_paths=None):
        """Restores the distribution (e.g. from the model's controller after a resume).

        Args:
            gate_probs: per-gate on-probabilities (G,).
            exit_probs: per-exit weights (E,), normalised to sum to 1.
            important_paths: optional (n, G + 1) control vectors; rows with a negative exit are
                unused (the controller's padding). Kept by samplers that draw them (TIPS).

        Raises:
            ValueError: wrong shapes, gate probabilities outside [0, 1], or exit weights that are
                negative, not finite or all zero.
        """
        gate_probs, exit_probs = np.asarray(gate_probs, float), np.asarray(exit_probs, float)
        if gate_probs.shape != (self.space.num_gates,) or exit_probs.shape != (self.space.num_exits,):
            raise ValueError(
                "Invalid sampler state. Expected gate_probs of shape "
                f"({self.space.num_gates},) and exit_probs of shape ({self.space.num_exits},). "
                f"Received: shapes {gate_probs.shape} and {exit_probs.shape}"
            )
        if (not np.all((gate_probs >= 0) & (gate_probs <= 1)) or not np.all(np.isfinite(exit_probs))
                or np.any(exit_probs < 0) or not exit_probs.sum() > 0):
            raise ValueError(
                "Invalid sampler state. Expected gate_probs in [0, 1] and non-negative finite "
                f"exit_probs with a positive sum. Received: gate_probs={gate_probs.tolist()}, "
                f"exit_probs={exit_probs.tolist()}"
            )
        self.gate_probs = gate_probs
        self.exit_probs = exit_probs / exit_probs.sum()


class UniformSampler(Sampler):
    """Uniform random path sampling (every gate on with probability 0.5, exit uniform).

    Args:
        space: the supernet's `ConfigSpace`.
        paths_per_step: sub-networks per training step (default 1).
        **options: ``include_largest``, ``include_smallest``, ``largest_prob`` (see `Sampler`).

    Example:
        >>> sampler = UniformSampler(model.config_space, paths_per_step=2)  # doctest: +SKIP
    """

    name = "uniform"


class SandwichSampler(Sampler):
    """The sandwich rule: largest + smallest + ``n_random`` uniform paths per step.

    Args:
        space: the supernet's `ConfigSpace`.
        n_random: uniform random paths per step besides the largest and the smallest (>= 0;
            default 2). ``paths_per_step`` is ``2 + n_random``.

    Raises:
        ValueError: ``n_random`` is not a non-negative integer.

    Example:
        >>> s = SandwichSampler(space, n_random=2)  # doctest: +SKIP
        >>> s.sample(np.random.default_rng(0)).shape  # doctest: +SKIP
        (4, G + 1)
    """

    name = "sandwich"

    def __init__(self, space, n_random=2):
        if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
            raise ValueError(
                "Invalid value for argument `n_random`. Expected a non-negative integer. "
                f"Received: n_random={n_random!r}"
            )
        super().__init__(space, paths_per_step=2 + n_random, include_largest=True, include_smallest=True)
        self.n_random = n_random


class StochasticDepthSampler(Sampler):
    """Stochastic depth: independent drop per block, survival decaying linearly with depth.

    Gate ``l`` (in gate-index order) is on with probability
    ``1 - l / (G - 1) * (1 - final_survival)`` (Huang et al., 2016); the exit is uniform.

    Args:
        space: the supernet's `ConfigSpace`.
        paths_per_step: sub-networks per training step (default 1).
        final_survival: on-probability of the last gate, in [0, 1] (default 0.5).
        **options: ``include_largest``, ``include_smallest``, ``largest_prob`` (see `Sampler`).

    Raises:
        ValueError: ``final_survival`` outside [0, 1], or a bad ``space`` / ``paths_per_step``.

    Example:
        >>> StochasticDepthSampler(space_with_6_gates).gate_probs  # doctest: +SKIP
        array([1. , 0.9, 0.8, 0.7, 0.6, 0.5])
    """

    name = "stochastic_depth"

    def __init__(self, space, paths_per_step=1, final_survival=0.5, **options):
        super().__init__(space, paths_per_step, **options)
        _check_prob("final_survival", final_survival)
        depth = np.arange(space.num_gates) / max(space.num_gates - 1, 1)
        self.gate_probs = 1.0 - depth * (1.0 - final_survival)



class TIPSSampler(Sampler):
    """Topologically Important Path Sampling.

    Args:
        space: the supernet's `ConfigSpace`.
        paths_per_step: sub-networks per step (default 1).
        p_min: on-probability of the least important gate (default 0.35).
        p_max: on-probability of the most important gate (default 0.65). The defaults are the
            best one-path rule of the sampler comparison (benchmarks/RESULTS.md); a sharper
            0.05 / 0.95 or 0.2 / 0.8 lost accuracy there.
        smoothing: ``p <- smoothing * p_old + (1 - smoothing) * p_new`` at each update (0 = no
            memory), damping the feedback between what is sampled and what is important.
        focus: probability that a drawn path is one of the important paths (the highest-TPS
            configuration of a FLOPs budget, `tips_keras.dtmc.budget`) rather than a draw from the
            per-gate probabilities (default 0.75; 0 = per-gate draws only).
        **options: ``include_largest``, ``include_smallest``, ``largest_prob`` (see `Sampler`).

    Raises:
        ValueError: a probability outside [0, 1], ``p_min > p_max``, or ``paths_per_step`` too
            small for the fixed paths plus one sampled path.

    Example:
        >>> sampler = TIPSSampler(model.config_space, paths_per_step=2)  # doctest: +SKIP
        >>> sampler.update(importance)  # doctest: +SKIP
        >>> paths = sampler.sample(np.random.default_rng(0))  # doctest: +SKIP
    """

    name = "tips"
    adaptive = True

    def __init__(self, space, paths_per_step=1, p_min=0.35, p_max=0.65, smoothing=0.0, focus=0.75, **options):
        super().__init__(space, paths_per_step, **options)
        _check_prob("p_min", p_min)
        _check_prob("p_max", p_max)
        _check_prob("smoothing", smoothing)
        _check_prob("focus", focus)
        if p_min > p_max:
            raise ValueError(
                "Invalid values for arguments `p_min` and `p_max`. Expected p_min <= p_max. "
                f"Received: p_min={p_min}, p_max={p_max}"
            )
        self.p_min, self.p_max, self.smoothing = float(p_min), float(p_max), float(smoothing)
        self.focus = float(focus)
        self.important = np.zeros((0, space.num_gates + 1), np.float32)

    def sample(self, rng):
        """Draws one step's paths: the fixed ones first (largest, smallest), then the drawn ones.

        With important paths known and ``focus > 0``, each drawn path is, with probability
        ``focus``, one of them (uniformly); otherwise its gates are drawn from the per-gate
        probabilities. Before the first update there are none, and no extra random numbers are
        drawn (the first epoch replays the uniform sampler's draws).

        Args:
            rng: a ``numpy.random.Generator``.

        Returns:
            A float32 array (paths_per_step, G + 1).
        """
        paths = super().sample(rng)
        fixed = int(self.include_largest) + int(self.include_smallest)
        if self.focus > 0 and len(self.important) and len(paths) > fixed:
            drawn = len(paths) - fixed
            take = rng.random(drawn) < self.focus
            which = rng.integers(0, len(self.important), drawn)
            paths[fixed:][take] = self.important[which[take]]
        return paths

    def update(self, importance, important_paths=None):
        """Moves the gate probabilities towards ``p_min + (p_max - p_min) * importance``.

        With smoothing ``s``: ``p <- s * p + (1 - s) * target``; importance is clipped to [0, 1].

        Args:
            importance: array (G,) of finite per-gate importance (from `tips_keras.dtmc`).
            important_paths: optional array (n, G + 1) of control vectors: the paths that ``focus``
                draws from now on (``None`` keeps the previous ones).

        Raises:
            ValueError: wrong shape or non-finite values.
        """
        importance = np.asarray(importance, dtype=float)
        if importance.shape != (self.space.num_gates,) or not np.all(np.isfinite(importance)):
            raise ValueError(
                f"Invalid value for argument `importance`. Expected {self.space.num_gates} finite "
                f"values in [0, 1]. Received: {importance!r}"
            )
        target = self.p_min + (self.p_max - self.p_min) * np.clip(importance, 0.0, 1.0)
        self.gate_probs = self.smoothing * self.gate_probs + (1.0 - self.smoothing) * target
        if important_paths is not None:
            self.important = self._paths(important_paths)

    def _paths(self, vectors):
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.space.num_gates + 1)
        vectors = vectors[vectors[:, -1] >= 0]  # drop the controller's padding rows
        return self.space.canonical_vectors(vectors) if len(vectors) else vectors

    def set_state(self, gate_probs, exit_probs, important_paths=None):
        """Restores the distribution and the important paths (see `Sampler.set_state`).

        Args:
            gate_probs: per-gate on-probabilities (G,).
            exit_probs: per-exit weights (E,).
            important_paths: optional (n, G + 1) control vectors (negative exit: padding).

        Raises:
            ValueError: as `Sampler.set_state`.
        """
        super().set_state(gate_probs, exit_probs)
        if important_paths is not None:
            self.important = self._paths(important_paths)


def get_sampler(name, space, paths_per_step=None, **kwargs):
    """Builds a sampler by name, or by a user's factory.

    Args:
        name: one of ``SAMPLERS``, or a callable ``space -> Sampler`` (called with ``space``
            only; the options are then ignored).
        space: the supernet's `ConfigSpace`.
        paths_per_step: sub-networks per step (sandwich: derived from ``n_random``).
        **kwargs: sampler-specific options (see the classes).

    Returns:
        A `Sampler`.

    Raises:
        ValueError: unknown name or options, or a callable that does not return a `Sampler`.

    Example:
        >>> sampler = get_sampler("tips", model.config_space, p_min=0.2)  # doctest: +SKIP
    """
    if callable(name):
        sampler = name(space)
        if not isinstance(sampler, Sampler):
            raise ValueError(
                "Invalid value for argument `sampler`. A callable must return a "
                f"tips_keras.training.sampling.Sampler. Received: {type(sampler).__name__}"
            )
        return sampler
    classes = {
        "tips": TIPSSampler,
        "uniform": UniformSampler,
        "sandwich": SandwichSampler,
        "stochastic_depth": StochasticDepthSampler,
    }
    if name not in classes:
        raise ValueError(
            f"Invalid value for argument `sampler`. Expected one of {SAMPLERS}. Received: sampler={name!r}"
        )
    if name == "sandwich":
        if paths_per_step is not None and paths_per_step < 2:
            raise ValueError(
                "Invalid value for argument `paths_per_step`. The sandwich rule trains at least "
                f"the largest and the smallest path (>= 2). Received: paths_per_step={paths_per_step}"
            )
        if paths_per_step is not None:
            kwargs.setdefault("n_random", paths_per_step - 2)
        return SandwichSampler(space, **kwargs)
    try:
        return classes[name](space, paths_per_step=1 if paths_per_step is None else paths_per_step, **kwargs)
    except TypeError as error:
        raise ValueError(f"Invalid options for sampler {name!r}: {error}. Received: {kwargs!r}") from None

