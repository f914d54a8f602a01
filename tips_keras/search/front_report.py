"""Views of a `ParetoFront`: its text table and its plot (matplotlib, Agg backend, imported only
when plotting)."""

import io
import os

from tips_keras.atomic import atomic_write


def front_table(front, all_points=False):
    """A text table, one row per configuration of the front (or every point).

    Gates are shown as one character per gate in the order of the header line: ``1`` on,
    ``0`` off, ``.`` after the exit (irrelevant). ``best for`` lists the budgets for which
    the row is `best`.

    Args:
        front: a `ParetoFront`.
        all_points: list every evaluated point, not only the front (default False).

    Returns:
        The table as a string.

    Example:
        >>> print(front_table(front))  # same as front.table()  # doctest: +SKIP
    """
    rows = front.points if all_points else front.front
    best_for = {}
    for b in front.budgets:
        try:
            best_for.setdefault(id(front.best(b)), []).append(f"{b:g}")
        except ValueError:
            pass
    recal = any(p.accuracy_no_recal is not None for p in rows)
    head = ["exit", "gates", "FLOPs", "% full", "params", "accuracy"]
    head += ["acc (no recal)"] if recal else []
    head += ["best for"]
    lines = []
    for p in rows:
        bits = "".join(str(v) for v in p.gates.values())
        row = [str(p.exit), bits, f"{p.flops:,}", f"{100 * p.flops / front.full_flops:.1f}",
               f"{p.params:,}", f"{p.accuracy:.4f}"]
        if recal:
            row.append("" if p.accuracy_no_recal is None else f"{p.accuracy_no_recal:.4f}")
        row.append(",".join(best_for.get(id(p), [])))
        lines.append(row)
    widths = [max(len(h), *(len(r[i]) for r in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))  # noqa: E731
    title = (f"Pareto front: {len(front.front)} of {len(front.points)} evaluated configurations "
             f"(full FLOPs {front.full_flops:,}; gates: {' '.join(front.gate_names)})")
    return "\n".join([title, fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in lines])


def plot_front(front, path, title=None):
    """Saves accuracy vs FLOPs: every evaluated point, the front highlighted, budgets as
    vertical lines (matplotlib, Agg, written atomically).

    Args:
        front: a `ParetoFront`.
        path: the image file; its extension picks the format (default png).
        title: the plot title (default: a generic one).

    Returns:
        ``path``.

    Example:
        >>> plot_front(front, "pareto.png")  # same as front.plot("pareto.png")  # doctest: +SKIP
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    scale = 1e6
    ax.scatter([p.flops / scale for p in front.points], [p.accuracy for p in front.points],
               s=14, color="0.6", alpha=0.7, label=f"evaluated ({len(front.points)})")
    ax.plot([p.flops / scale for p in front.front], [p.accuracy for p in front.front], "o-",
            color="tab:red", ms=5, drawstyle="steps-post", label=f"Pareto front ({len(front.front)})")
    for i, b in enumerate(front.budgets):
        ax.axvline(front.budget_flops(b) / scale, color="tab:blue", ls="--", lw=1,
                   label="budgets" if i == 0 else None)
    ax.set_xlabel("MFLOPs (multiply-accumulates)")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "Accuracy vs FLOPs of the searched configurations")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=os.path.splitext(str(path))[1][1:] or "png", dpi=120,
                bbox_inches="tight")
    atomic_write(path, buffer.getvalue())
    return path
