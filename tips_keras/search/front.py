"""`ParetoFront`: evaluated configurations, the accuracy-vs-FLOPs front, best per budget, I/O, plot.

A point dominates another when it has at most its FLOPs and at least its accuracy (and is
strictly better in one). The front is the set of non-dominated points, sorted by FLOPs; along it
accuracy strictly increases. The JSON form (`to_json`) holds every evaluated point (with an
``on_front`` flag), the supernet's full FLOPs and the budgets; `tips_keras.extraction.load_front`
reads it.
"""

import dataclasses
import io
import json
import os
import tempfile

import numpy as np

from tips_keras.supernet.configs import Configuration
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
        budgets: the search's budgets as given (fractions <= 1 or absolute FLOPs).
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
        self.budgets = [float(b) if float(b) <= 1 else int(b) for b in budgets]
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
        the row is `best`.

        Args:
            all_points: list every evaluated point, not only the front (default False).

        Returns:
            The table as a string.
        """
        rows = self.points if all_points else self.front
        best_for = {}
        for b in self.budgets:
            try:
                best_for.setdefault(id(self.best(b)), []).append(f"{b:g}")
            except ValueError:
                pass
        recal = any(p.accuracy_no_recal is not None for p in rows)
        head = ["exit", "gates", "FLOPs", "% full", "params", "accuracy"]
        head += ["acc (no recal)"] if recal else []
        head += ["best for"]
        lines = []
        for p in rows:
            bits = "".join(str(v) for v in p.gates.values())
            row = [str(p.exit), bits, f"{p.flops:,}", f"{100 * p.flops / self.full_flops:.1f}",
                   f"{p.params:,}", f"{p.accuracy:.4f}"]
            if recal:
                row.append("" if p.accuracy_no_recal is None else f"{p.accuracy_no_recal:.4f}")
            row.append(",".join(best_for.get(id(p), [])))
            lines.append(row)
        widths = [max(len(h), *(len(r[i]) for r in lines)) if lines else len(h) for i, h in enumerate(head)]
        fmt = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))  # noqa: E731
        title = (f"Pareto front: {len(self.front)} of {len(self.points)} evaluated configurations "
                 f"(full FLOPs {self.full_flops:,}; gates: {' '.join(self.gate_names)})")
        return "\n".join([title, fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in lines])

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
        _atomic_write(path, text.encode("utf-8"))
        return path

    @classmethod
    def from_dict(cls, data, source="<dict>"):
        """Rebuilds a front from the output of `to_dict`.

        Args:
            data: the decoded dict.
            source: what error messages name (default ``"<dict>"``).

        Returns:
            A `ParetoFront`.

        Raises:
            ValueError: ``full_flops`` or ``points`` missing or malformed.
        """
        try:
            points = [ParetoPoint(exit=int(p["exit"]), gates={str(k): int(v) for k, v in p["gates"].items()},
                                  flops=int(p["flops"]), params=int(p.get("params", 0)),
                                  accuracy=float(p["accuracy"]),
                                  accuracy_no_recal=p.get("accuracy_no_recal"),
                                  trial_id=p.get("trial_id")) for p in data["points"]]
            return cls(points, int(data["full_flops"]), data.get("budgets") or (), data.get("metadata"))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"Invalid Pareto front in {source}: expected {FORMAT} JSON with "
                             f"'full_flops' and 'points' (exit, gates, flops, accuracy); {e!r}") from None

    @classmethod
    def from_json(cls, path):
        """Reads a front written by `to_json`.

        Args:
            path: the JSON file.

        Returns:
            A `ParetoFront`.

        Raises:
            ValueError: the file is truncated, not JSON, or not a Pareto front (names the file).
            FileNotFoundError: no such file.
        """
        with open(path, "rb") as f:
            raw = f.read()
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"Corrupt or truncated Pareto front file {str(path)!r}: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"Invalid Pareto front file {str(path)!r}: expected a JSON object.")
        return cls.from_dict(data, source=f"file {str(path)!r}")

    # -- plot ---------------------------------------------------------------------------------
    def plot(self, path, title=None):
        """Saves accuracy vs FLOPs: every evaluated point, the front highlighted, budgets as
        vertical lines (matplotlib, Agg, written atomically).

        Args:
            path: the image file; its extension picks the format (default png).
            title: the plot title (default: a generic one).

        Returns:
            ``path``.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        scale = 1e6
        ax.scatter([p.flops / scale for p in self.points], [p.accuracy for p in self.points],
                   s=14, color="0.6", alpha=0.7, label=f"evaluated ({len(self.points)})")
        ax.plot([p.flops / scale for p in self.front], [p.accuracy for p in self.front], "o-",
                color="tab:red", ms=5, drawstyle="steps-post", label=f"Pareto front ({len(self.front)})")
        for i, b in enumerate(self.budgets):
            ax.axvline(self.budget_flops(b) / scale, color="tab:blue", ls="--", lw=1,
                       label="budgets" if i == 0 else None)
        ax.set_xlabel("MFLOPs (multiply-accumulates)")
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title(title or "Accuracy vs FLOPs of the searched configurations")
        buffer = io.BytesIO()
        fig.savefig(buffer, format=os.path.splitext(str(path))[1][1:] or "png", dpi=120,
                    bbox_inches="tight")
        _atomic_write(path, buffer.getvalue())
        return path


def _atomic_write(path, data):
    directory = os.path.dirname(os.path.abspath(str(path)))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(str(path))}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, str(path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
