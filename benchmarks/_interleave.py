"""Epoch-level interleaving of several ``fit`` calls, for paired timings on a noisy machine.

Every model trains in its own thread, but only one epoch runs at a time: round ``r`` runs epoch
``r`` of every fit, one after the other, in the given order (reversed every other round, so that
a drift in the machine's speed falls on both sides of a pair alike). Each epoch's wall time
(``time.perf_counter``) and the whole process's CPU time (``time.process_time``) are recorded.
The other fits' Python threads are blocked meanwhile; what still runs beside an epoch is
TensorFlow's own: mostly the tf.data prefetch of the iterator the previous fit's loop opened at
the end of its epoch (Keras 3's ``EpochIterator`` does), the same for every fit on the same data.
A pair of variants is then compared round by round: the ratio of the two epochs of the same
round. The median of those ratios and its bootstrap interval describe one run only: runs on a
shared machine differ by more than that interval (see the README, "Training step speed").

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
        """Blocks until it is ``name``'s turn.

        Raises:
            RuntimeError: another fit failed (`fail`) meanwhile.
        """
        with self._cond:
            self._cond.wait_for(lambda: self.failed is not None or self._queue[0] == name)
            if self.failed is not None:
                raise RuntimeError(f"interleaved fit {self.failed!r} failed") from None

    def done(self, name):
        """Passes the turn from ``name`` (whose turn it is) to the next fit of the round."""
        with self._cond:
            assert self._queue[0] == name
            self._queue.pop(0)
            if not self._queue:
                self._round += 1
                self._queue = list(self.names if self._round % 2 == 0 else self.names[::-1])
            self._cond.notify_all()

    def fail(self, name):
        """Wakes every waiting fit with an error naming the first fit that failed."""
        with self._cond:
            if self.failed is None:
                self.failed = name
            self._cond.notify_all()


class _Turn(keras.callbacks.Callback):
    """Holds the fit's turn from one epoch's start to the next one's (or to the end of training).

    The turn is passed on only when the fit comes back to its next epoch, so that what runs
    between two epochs (the fit loop, callbacks after this one) does not overlap another fit's
    epoch. The epoch is timed from this callback's ``on_epoch_begin`` to its ``on_epoch_end``:
    a callback that runs before it (`TIPSCallback`, which `AnytimeModel.fit` puts first) has its
    ``on_epoch_end`` timed and its ``on_epoch_begin`` not. ``release`` is the callback to put
    last in the fit's list: it passes the turn on at the end of training.

    Args:
        turnstile: the shared `_Turnstile`.
        name: the fit's name in it.
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
        x: the training inputs (the same for every model).
        y: the training targets.
        epochs: epochs per model (the first, which traces the step, is left out of the result).
        batch_size: the batch size.

    Returns:
        ``{name: [(wall seconds, CPU seconds) of epochs 2..epochs]}``.

    Raises:
        RuntimeError: a fit failed, or stopped before ``epochs`` epochs (``stop_training``: a
            NaN loss under `TIPSCallback`, early stopping); the first failure is its cause.
    """
    turnstile = _Turnstile(fits)
    turns = {name: _Turn(turnstile, name) for name in fits}
    errors = {}  # in the order the fits failed

    def run(name):
        model, callbacks = fits[name]
        try:
            model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0,
                      callbacks=[turns[name], *callbacks, turns[name].release])
            if len(turns[name].rows) < epochs:  # its name would stay in every round's queue
                raise RuntimeError(f"{name} stopped after {len(turns[name].rows)} of {epochs} epochs")
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            errors[name] = error
            turnstile.fail(name)

    threads = [threading.Thread(target=run, args=(name,), name=f"fit {name}", daemon=True) for name in fits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        name, first = next(iter(errors.items()))
        raise RuntimeError(f"interleaved fit {name!r} failed: {first}") from first
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
    """Median of ``values`` and its bootstrap confidence interval.

    The interval is scipy.stats.bootstrap's percentile interval (4,999 resamples, fixed seed). It
    treats the values as independent draws: it describes one run, not the spread between runs.

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
