"""Epoch-level interleaving of several ``fit`` calls, for paired timings on a noisy machine.

Every model trains in its own thread, but only one epoch runs at a time: round ``r`` runs epoch
``r`` of every fit, one after the other, in the given order (reversed every other round, so that
a drift in the machine's speed falls on both sides of a pair alike). Each epoch's wall time
(``time.perf_counter``) and CPU time of the whole process (``time.process_time``: the other fits'
threads are blocked meanwhile and spend none) are recorded. A pair of variants is then compared
round by round: the ratio of the two epochs of the same round, seconds apart.

Used by speed_benchmark.py section 1.
"""

import statistics
import threading
import time

import keras
import numpy as np
from scipy import stats


class _Turnstile:
    """Lets one named fit run an epoch at a time, round after round."""

    def __init__(self, names):
        self.names = list(names)
        self._cond = threading.Condition()
        self._round = 0
        self._queue = list(self.names)
        self.failed = None

    def wait(self, name):
        with self._cond:
            self._cond.wait_for(lambda: self.failed is not None or self._queue[0] == name)
            if self.failed is not None:
                raise RuntimeError(f"interleaved fit {self.failed!r} failed") from None

    def done(self, name):
        with self._cond:
            assert self._queue[0] == name
            self._queue.pop(0)
            if not self._queue:
                self._round += 1
                self._queue = list(self.names if self._round % 2 == 0 else self.names[::-1])
            self._cond.notify_all()

    def fail(self, name):
        with self._cond:
            self.failed = name
            self._cond.notify_all()


class _Turn(keras.callbacks.Callback):
    """Holds the fit's turn from one epoch's start to the next one's (or to the end of training).

    The turn is passed on only when the fit comes back to its next epoch, so that what runs
    between two epochs (the other callbacks' ``on_epoch_end``, the fit loop) does not overlap
    another fit's epoch. The epoch itself is timed from ``on_epoch_begin`` to ``on_epoch_end``.
    ``release`` is the callback to put last in the fit's list: it passes the turn on at the end
    of training, after every other callback's ``on_train_end``.
    """

    def __init__(self, turnstile, name):
        super().__init__()
        self.turnstile, self.name, self.rows, self._holding = turnstile, name, [], False
        self.release = keras.callbacks.LambdaCallback(on_train_end=lambda logs: self._pass())

    def _pass(self):
        if self._holding:
            self._holding = False
            self.turnstile.done(self.name)

    def on_epoch_begin(self, epoch, logs=None):
        self._pass()
        self.turnstile.wait(self.name)
        self._holding = True
        self._start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append((time.perf_counter() - self._start[0], time.process_time() - self._start[1]))


def interleaved_epochs(fits, x, y, epochs, batch_size=128):
    """Trains every model for ``epochs`` epochs, interleaved epoch by epoch.

    Args:
        fits: ``{name: (model, callbacks)}``, compiled models; the order is the order of a round.
        x, y: the training data (the same for every model).
        epochs: epochs per model (the first, which traces the step, is left out of the result).
        batch_size: the batch size.

    Returns:
        ``{name: [(wall seconds, CPU seconds) of epochs 2..epochs]}``.

    Raises:
        RuntimeError: a fit failed (the first failure's exception is its cause).
    """
    turnstile = _Turnstile(fits)
    turns = {name: _Turn(turnstile, name) for name in fits}
    errors = {}

    def run(name):
        model, callbacks = fits[name]
        try:
            model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0,
                      callbacks=[turns[name], *callbacks, turns[name].release])
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            errors[name] = error
            turnstile.fail(name)

    threads = [threading.Thread(target=run, args=(name,), name=f"fit {name}") for name in fits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first = next((errors[n] for n in fits if n in errors and not isinstance(errors[n], RuntimeError)),
                 next(iter(errors.values()), None))
    if first is not None:
        raise RuntimeError(f"interleaved fit failed: {first}") from first
    return {name: turn.rows[1:] for name, turn in turns.items()}


def paired_ratios(times, numerator, denominators, column=1):
    """Per-round ratio of ``numerator``'s epoch to the sum of the ``denominators``' epochs.

    Args:
        times: `interleaved_epochs`' result.
        numerator: a name.
        denominators: names (their epochs of the round are summed).
        column: 0 for wall time, 1 for CPU time.

    Returns:
        A numpy array, one ratio per round.
    """
    rounds = len(times[numerator])
    return np.array([times[numerator][r][column] / sum(times[d][r][column] for d in denominators)
                     for r in range(rounds)])


def median_ci(values, confidence=0.95):
    """Median of ``values`` and its bootstrap confidence interval (scipy.stats.bootstrap, percentile method).

    Args:
        values: 1-D sample (>= 2 values).
        confidence: the interval's confidence level.

    Returns:
        ``(median, low, high)``.
    """
    values = np.asarray(values, float)
    result = stats.bootstrap((values,), np.median, confidence_level=confidence, method="percentile",
                             n_resamples=4999, random_state=0)
    return statistics.median(values), result.confidence_interval.low, result.confidence_interval.high
