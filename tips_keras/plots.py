"""Plots: importance per gate over epochs (matplotlib, headless)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_importance(history, path, title="TIPS importance per gate"):
    """Saves a plot of per-gate importance (left) and on-probability (right) over epochs.

    Args:
        history: `TIPSCallback.history` (list of dicts with ``importance`` and ``gate_probs``).
        path: PNG file to write (atomically).
        title: figure title.

    Returns:
        ``path``.

    Raises:
        ValueError: empty history.

    Example:
        >>> plot_importance(callback.history, "runs/importance.png")  # doctest: +SKIP
    """
    if not history:
        raise ValueError("Invalid value for argument `history`. Expected at least one epoch. Received: []")
    names = list(history[0]["importance"])
    epochs = [h["epoch"] + 1 for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for key, ax, label in (("importance", axes[0], "importance"), ("gate_probs", axes[1], "P(gate on)")):
        for name in names:
            ax.plot(epochs, [h[key][name] for h in history], marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title)
    return _save(fig, path)
