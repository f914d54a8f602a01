"""The sampler's state in the model: what `TIPSCallback` stores in the `SubnetController`.

The controller's variables (gate probabilities, exit probabilities, importance, important paths,
number of updates) are saved with the model's weights, so ``model.save_weights``, ``.keras`` files
and ``keras.callbacks.BackupAndRestore`` keep the sampler's state and a resumed run draws the same
paths as an uninterrupted one.
"""

import numpy as np


def store_state(sampler, controller):
    """Writes a sampler's distribution and important paths into the model's `SubnetController`.

    Args:
        sampler: a `Sampler`.
        controller: the supernet's `SubnetController` (its variables are checkpointed).

    Example:
        >>> store_state(callback.sampler, model.controller)  # doctest: +SKIP
    """
    controller.gate_probs.assign(np.asarray(sampler.gate_probs, np.float32))
    controller.exit_probs.assign(np.asarray(sampler.exit_probs, np.float32))
    rows = np.full(tuple(controller.important_paths.shape), -1.0, np.float32)
    important = np.asarray(getattr(sampler, "important", ()), np.float32).reshape(-1, rows.shape[1])
    rows[: len(important)] = important[: len(rows)]
    controller.important_paths.assign(rows)


def load_state(sampler, controller):
    """Restores an adaptive sampler from the controller, once it holds an update.

    Args:
        sampler: a `Sampler`.
        controller: the supernet's `SubnetController`.

    Returns:
        The stored importance (G,) when the state was restored, else ``None`` (a sampler that
        does not adapt, or a controller still at its initial state).

    Example:
        >>> load_state(callback.sampler, model.controller)  # doctest: +SKIP
    """
    read = lambda v: np.asarray(v.numpy() if hasattr(v, "numpy") else v)  # noqa: E731
    if not sampler.adaptive or float(read(controller.updates)) <= 0:
        return None
    sampler.set_state(read(controller.gate_probs), read(controller.exit_probs), read(controller.important_paths))
    return read(controller.importance)


def record_update(sampler, controller, importance):
    """Stores an epoch's update: the importance, one more update counted, the sampler's state.

    Args:
        sampler: the updated `Sampler`.
        controller: the supernet's `SubnetController`.
        importance: array (G,) of the gates' importance in [0, 1].

    Example:
        >>> record_update(callback.sampler, model.controller, importance)  # doctest: +SKIP
    """
    controller.importance.assign(np.asarray(importance, np.float32))
    controller.updates.assign(controller.updates + 1.0)
    store_state(sampler, controller)
