"""`EpochRecord`: the paths one epoch trained, and the per-path signal of each step.

`TIPSCallback` builds the epoch's DTMC from these (`tips_keras.training.importance`). Pure numpy.
"""

import numpy as np


class EpochRecord:
    """The control vectors drawn in an epoch's steps and, with a signal, one value per path.

    Args:
        with_signal: also keep one signal value per path (`add_signal`).

    Example:
        >>> record = EpochRecord(with_signal=False)
        >>> record.add(np.array([[1, 1, 0]], dtype=np.float32))
        >>> record.vectors().shape
        (1, 3)
    """

    def __init__(self, with_signal):
        self.with_signal = bool(with_signal)
        self._paths = []
        self._signals = []

    def add(self, paths):
        """Records a step's paths.

        Args:
            paths: array (paths_per_step, G + 1) of control vectors.
        """
        self._paths.append(paths)

    def add_signal(self, values):
        """Records the signal of the latest step's paths (ignored without ``with_signal``).

        Args:
            values: array (paths_per_step,) of the step's per-path values (NaN: not measured).
        """
        if self.with_signal:
            self._signals.append(np.asarray(values, dtype=np.float64))

    def replay(self, draw, batches):
        """Records the draws of batches that ran before a resume (their signal: NaN).

        Args:
            draw: ``batch -> paths``, the deterministic draw of a batch.
            batches: the skipped batch indices, in order.
        """
        for batch in batches:
            self.add(draw(batch))
            self.add_signal(np.full(len(self._paths[-1]), np.nan))

    @property
    def steps(self):
        """The recorded steps' paths, in order: a list of arrays (paths_per_step, G + 1)."""
        return list(self._paths)

    def last(self):
        """The latest step's paths: array (paths_per_step, G + 1).

        Raises:
            IndexError: no step recorded yet.
        """
        return self._paths[-1]

    def vectors(self):
        """Every recorded path: array (T, G + 1), or (0, 0) when nothing was recorded."""
        return np.concatenate(self._paths, axis=0) if self._paths else np.zeros((0, 0))

    def values(self):
        """The signal per recorded path: array (T,), or ``None`` without a signal or a path."""
        if not self.with_signal or not self._paths:
            return None
        return np.concatenate(self._signals)
