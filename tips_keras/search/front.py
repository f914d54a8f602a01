"""`ParetoFront`: evaluated configurations, the accuracy-vs-FLOPs front, best per budget, I/O, plot.

A point dominates another when it has at most its FLOPs and at least its accuracy (and is
strictly better in one). The front is the set of non-dominated points, sorted by FLOPs; along it
accuracy strictly increases. The JSON form (`to_json`) holds every evaluated point (with an
``on_front`` flag), the supernet's full FLOPs and the budgets; `tips_keras.extraction.load_front`
reads it.
"""

import dataclasses
import json
import math
import warnings

import numpy as np

from tips_keras.supernet.configs import Configuration
from tips_keras.atomic import atomic_write
from tips_keras.search.space import budget_to_flops

FORMAT = "tips_keras.search.ParetoFront"
VERSION = 1


@dataclasses.dataclass
class ParetoPoint:
    """One evaluated configuration.

    Attributes:
        exit: exit index.
        gates: ``{gate name: 0/1}`` in gate order.
        flops: analytic FLOPs (MACs).
        params: parameters.
        accuracy: validation accuracy (recalibrated when recalibration was measured).
        accuracy_no_recal: accuracy with the shared BatchNorm statistics, or None.
        trial_id: the keras-tuner trial that evaluated it, or None.

    Example:
        >>> ParetoPoint(exit=0, gates={"g0": 1, "g1": 0}, flops=90, params=9, accuracy=0.8).config
        Configuration(exit=0, gates=(1, 0))
    """

    exit: int
    gates: dict
    flops: int
    params: int
    accuracy: float
    accuracy_no_recal: float = None
    trial_id: str = None

    @property
    def config(self):
        """The `tips_keras.Configuration` of the point (for ``model.set_config`` or export)."""
        return Configuration(int(self.exit), tuple(int(b) for b in self.gates.values()))

    def dominates(self, other):
        """Whether this point is at least as good as ``other`` in FLOPs and accuracy, better in one.

        Args:
            other: another `ParetoPoint`.
        """
        return (self.flops <= other.flops and self.accuracy >= other.accuracy
                and (self.flops < other.flops or self.accuracy > other.accuracy))

    def to_dict(self):
        """JSON-able dict of the point; ``accuracy_no_recal`` / ``trial_id`` only when set."""
        out = {"exit": int(self.exit), "gates": {k: int(v) for k, v in self.gates.items()},
               "flops": int(self.flops), "params": int(self.params), "accuracy": float(self.accuracy)}
        if self.accuracy_no_recal is not None:
            out["accuracy_no_recal"] = float(self.accuracy_no_recal)
        if self.trial_id is not None:
            out["trial_id"] = str(self.trial_id)
        return out


def _front(points):
    front, best = [], -np.inf
    for p in sorted(points, key=lambda p: (p.flops, -p.accuracy)):
        if p.accuracy > best:
            front.append(p)
            best = p.accuracy
    return front


class ParetoFront:
    """All evaluated configurations of a search and their accuracy-vs-FLOPs Pareto front.

    Args:
        points: the evaluated `ParetoPoint` s (any order).
        full_flops: FLOPs of the largest configuration (budgets <= 1 are fractions of it).
        budgets: the search's budgets as given (fractions <= 1 or absolute FLOPs; a repeated
            one is kept once).
        metadata: JSON-able facts about the search (oracle, validation size, ...).

    Attributes:
        points: every evaluated point, sorted by FLOPs. front: the non-dominated points,
        sorted by FLOPs (accuracy increases along it).

    Example:
        >>> front = search.run()  # doctest: +SKIP
        >>> print(front.table())  # doctest: +SKIP
        >>> model.set_config(front.best(0.5).config)  # doctest: +SKIP
    """

    def __init__(self, points, full_flops, budgets=(), metadata=None):
        self.points = sorted(points, key=lambda p: (p.flops, -p.accuracy))
        self.front = _front(self.points)
        self.full_flops = int(full_flops)
        self.budgets = list(dict.fromkeys(float(b) if float(b) <= 1 else int(b) for b in budgets))
        self.metadata = dict(metadata or {})

    def __len__(self):
        return len(self.front)

    def __iter__(self):
        return iter(self.front)

    def __repr__(self):
        return (f"ParetoFront({len(self.front)} points on the front, {len(self.points)} evaluated, "
                f"full_flops={self.full_flops}, budgets={self.budgets})")

    @property
    def gate_names(self):
        """The gate names in gate order, a list (from the first point; empty without points)."""
        return list(self.points[0].gates) if self.points else []

    def budget_flops(self, budget):
        """Absolute FLOPs (an int) of a budget: a fraction <= 1 of `full_flops`, else absolute.

        Args:
            budget: a positive number.
        """
        return budget_to_flops(budget, self.full_flops)

    def best(self, budget):
        """The most accurate configuration with ``flops <= budget`` (ties: fewer FLOPs).

        Args:
            budget: a fraction of the full FLOPs (<= 1) or absolute FLOPs (> 1).

        Returns:
            A `ParetoPoint` of the front.

        Raises:
            ValueError: bad budget, or no evaluated configuration fits it.

        Example:
            >>> model.set_config(front.best(0.5).config)  # doctest: +SKIP
        """
        limit = self.budget_flops(budget)
        fits = [p for p in self.front if p.flops <= limit]
        if not fits:
            smallest = self.front[0].flops if self.front else None
            raise ValueError(
                f"Invalid value for argument `budget`: no evaluated configuration fits {limit} "
                f"FLOPs (the smallest evaluated one has {smallest} FLOPs). Received: budget={budget!r}"
            )
        return fits[-1]  # accuracy increases along the front

    def hypervolume(self):
        """Area (a float) dominated by the front in (FLOPs fraction, accuracy) above (1.0, 0)."""
        fractions = [min(p.flops / self.full_flops, 1.0) for p in self.front] + [1.0]
        return float(sum((fractions[i + 1] - fractions[i]) * max(p.accuracy, 0.0)
                         for i, p in enumerate(self.front)))

    def mean_best_accuracy(self, budgets=None):
        """Mean over ``budgets`` of ``best(budget).accuracy``; a budget no point fits counts as 0.

        Args:
            budgets: budgets to average over (default: the search's).

        Returns:
            A float (NaN without budgets).
        """
        values = []
        for b in self.budgets if budgets is None else budgets:
            try:
                values.append(self.best(b).accuracy)
            except ValueError:
                values.append(0.0)
        return float(np.mean(values)) if values else float("nan")

    # -- text ---------------------------------------------------------------------------------
    def table(self, all_points=False):
        """A text table, one row per configuration of the front (or every point).

        Gates are shown as one character per gate in the order of the header line: ``1`` on,
        ``0`` off, ``.`` after the exit (irrelevant). ``best for`` lists the budgets for which
        the row is `best` (`tips_keras.search.front_report.front_table`).

        Args:
            all_points: list every evaluated point, not only the front (default False).

        Returns:
            The table as a string.
        """
        from tips_keras.search.front_report import front_table

        return front_table(self, all_points)

    # -- JSON ---------------------------------------------------------------------------------
    def to_dict(self):
        """JSON-able dict: format, version, full FLOPs, budgets, metadata, points (``on_front``)."""
        on_front = {id(p) for p in self.front}
        points = [dict(p.to_dict(), on_front=id(p) in on_front) for p in self.points]
        return {"format": FORMAT, "version": VERSION, "full_flops": self.full_flops,
                "budgets": self.budgets,
                "budget_flops": [self.budget_flops(b) for b in self.budgets],
                "metadata": self.metadata, "points": points}

    def to_json(self, path=None):
        """The JSON text, or writes it atomically (temp file + ``os.replace``) to ``path``.

        Args:
            path: the file to write, or None.

        Returns:
            The JSON string when ``path`` is None, else ``path``.
        """
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is None:
            return text
        atomic_write(path, text)
        return path

    @classmethod
    def from_dict(cls, data, source="<dict>", model=None):
        """Rebuilds a front from the output of `to_dict` (hand-edited values are checked).

        Args:
            data: the decoded dict.
            source: what error messages name (default ``"<dict>"``).
            model: the supernet the front belongs to, or None. Given, FLOPs and parameters are
                counted on it (`recount`): selection then never trusts a stated count.

        Returns:
            A `ParetoFront`.

        Raises:
            ValueError: ``full_flops`` or ``points`` missing or malformed (an exit that is not a
                non-negative integer, gate bits other than 0 / 1, FLOPs or accuracy not finite
                and non-negative), or a point that does not fit ``model``.
        """
        def bit(value):
            if value not in (0, 1) or isinstance(value, str):
                raise ValueError(f"gate bit {value!r} is not 0 or 1")
            return int(value)

        def count(value, what, kind=int):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0 or (kind is int and value != int(value)):
                raise ValueError(f"{what} {value!r} is not a finite non-negative number")
            return kind(value)

        try:
            points = [ParetoPoint(exit=count(p["exit"], "exit"), gates={str(k): bit(v) for k, v in p["gates"].items()},
                                  flops=count(p["flops"], "flops"), params=count(p.get("params", 0), "params"),
                                  accuracy=count(p["accuracy"], "accuracy", float),
                                  accuracy_no_recal=p.get("accuracy_no_recal"),
                                  trial_id=p.get("trial_id")) for p in data["points"]]
            budgets = [count(b, "budget", float) for b in data.get("budgets") or ()]
            front = cls(points, count(data["full_flops"], "full_flops"), budgets, data.get("metadata"))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"Invalid Pareto front in {source}: expected {FORMAT} JSON with "
                             f"'full_flops' and 'points' (exit, gates, flops, accuracy); {e!r}") from e
        return front if model is None else front.recount(model)

    @classmethod
    def from_json(cls, path, model=None):
        """Reads a front written by `to_json` (or edited since: any line endings, UTF-8 with or
        without a byte-order mark, UTF-16 / UTF-32 with one).

        Args:
            path: the JSON file.
            model: the supernet the front belongs to, or None (see `from_dict`).

        Returns:
            A `ParetoFront`.

        Raises:
            ValueError: the file is truncated, not JSON, or not a Pareto front (names the file).
            FileNotFoundError: no such file.
        """
        with open(path, "rb") as f:
            raw = f.read()
        try:
            data = json.loads(raw)  # bytes: JSON's own encoding detection (BOM, UTF-16/32)
        except ValueError as e:
            raise ValueError(f"Corrupt or truncated Pareto front file {str(path)!r}: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"Invalid Pareto front file {str(path)!r}: expected a JSON object.")
        return cls.from_dict(data, source=f"file {str(path)!r}", model=model)

    def recount(self, model):
        """A copy of the front with FLOPs, parameters and full FLOPs counted on ``model``.

        A front file states FLOPs; a hand-edited or stale one may state fewer than a
        configuration costs, and `best` would then return a point over its budget. The copy's
        `best` uses the model's own count; a warning names the points whose stated FLOPs
        differ.

        Args:
            model: the supernet the front's configurations belong to.

        Returns:
            A new `ParetoFront` (points canonical; metadata ``recounted_on`` names the model).

        Raises:
            ValueError: a point does not fit ``model`` (unknown gate names, exit out of range).

        Example:
            >>> front = ParetoFront.from_json("front.json").recount(model)  # doctest: +SKIP
        """
        from tips_keras.supernet import analytic_flops, topology

        space = topology.read_topology(model).space
        points, differ = [], []
        for p in self.points:
            try:
                config = space.canonical(space.resolve({"exit": p.exit, "gates": p.gates}))
            except ValueError as e:
                raise ValueError(f"Invalid Pareto front: point {p.to_dict()} does not fit model "
                                 f"{model.name!r}: {e}") from e
            flops, params = analytic_flops.cost(model, config)
            if flops != p.flops:
                differ.append(f"exit {p.exit} {''.join(map(str, p.gates.values()))}: "
                              f"{p.flops:,} stated, {flops:,} counted")
            points.append(dataclasses.replace(p, exit=config.exit, flops=flops, params=params,
                                              gates=dict(zip(space.gate_names, config.gates))))
        full = analytic_flops.flops(model, "largest")
        if full != self.full_flops:
            differ.append(f"full FLOPs {self.full_flops:,} stated, {full:,} counted")
        if differ:
            warnings.warn(f"Pareto front FLOPs differ from model {model.name!r}'s own count "
                          f"({'; '.join(differ[:3])}{'; ...' if len(differ) > 3 else ''}): the "
                          "model's count is used.", stacklevel=2)
        return ParetoFront(points, full, self.budgets, dict(self.metadata, recounted_on=model.name))

    # -- plot ---------------------------------------------------------------------------------
    def plot(self, path, title=None):
        """Saves accuracy vs FLOPs: every evaluated point, the front highlighted, budgets as
        vertical lines (matplotlib, Agg, written atomically; `tips_keras.search.front_report`).

        Args:
            path: the image file; its extension picks the format (default png).
            title: the plot title (default: a generic one).

        Returns:
            ``path``.
        """
        from tips_keras.search.front_report import plot_front

        return plot_front(self, path, title)


def make_point(space, values, metrics, trial_id=None):
    """A `ParetoPoint` from keras-tuner hyperparameter values and the metrics of a trial.

    Args:
        space: the `SearchSpace` (decodes ``values``, gives the exact cost).
        values: the trial's hyperparameter values.
        metrics: ``{"accuracy": a}``, plus ``"accuracy_no_recal"`` when measured.
        trial_id: the trial's id, or None.

    Returns:
        A `ParetoPoint` of the canonical configuration.
    """
    vector = space.from_values(values)
    config = space.to_config(vector)
    flops, params = (int(v[0]) for v in space.cost(vector))
    no_recal = metrics.get("accuracy_no_recal")
    return ParetoPoint(config.exit, dict(zip(space.gate_names, config.gates)), flops, params,
                       float(metrics["accuracy"]), None if no_recal is None else float(no_recal),
                       None if trial_id is None else str(trial_id))


def from_trials(trials, space, budgets, metadata=None):
    """Builds a `ParetoFront` from the completed keras-tuner trials of a configuration search.

    Args:
        trials: keras-tuner trials (only completed ones with an accuracy are used).
        space: the `SearchSpace` of the search.
        budgets: the search's budgets.
        metadata: JSON-able facts stored with the front.

    Returns:
        A `ParetoFront`.
    """
    points = []
    for t in trials:
        if t.status != "COMPLETED" or not t.metrics.exists("accuracy"):
            continue
        metrics = {name: t.metrics.get_last_value(name) for name in ("accuracy", "accuracy_no_recal")
                   if t.metrics.exists(name)}
        points.append(make_point(space, t.hyperparameters.values, metrics, t.trial_id))
    return ParetoFront(points, space.full_flops, budgets, metadata)
