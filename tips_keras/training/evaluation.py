"""Accuracy of supernet configurations on fixed validation data, without training or rebuilding.

`ConfigEvaluator` pads and pre-batches the validation set once into two tensors and compiles one
`tf.function` that loops over the batches in-graph and counts correct predictions. A
configuration is switched with `AnytimeModel.set_config` (one variable assign), so the function is
traced once for the whole search: no per-call overhead of ``model.evaluate`` (callbacks, data
adapter, metric objects), no re-tracing, no rebuilt model. Optional BatchNorm recalibration per
configuration runs in compiled calls too: a calibration pass and the evaluation, and for long
searches (``fuse_after``) one fused call (`Recalibrator.fused`: save the shared statistics,
calibration passes, evaluation, restore), one dispatch per configuration.
"""

import hashlib
import time

import keras
import numpy as np
import tensorflow as tf

from tips_keras.supernet import analytic_flops
from tips_keras.training.batchnorm import check_sizes, recalibrator


# Evaluations before the fused call is traced: on the demo supernet (2,000 validation, 512 calibration
# images) its trace took 3.9 s and it saved 26 ms wall / 12 ms CPU per configuration, so it paid for
# itself after 148 (wall) to 307 (CPU) evaluations (benchmarks/speed_benchmark.py --sections 2).
FUSE_AFTER = 256


def _labels(y, n):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = np.argmax(y, axis=1)
    y = y.reshape(-1)
    if len(y) != n or not np.issubdtype(y.dtype, np.number):
        raise ValueError(
            "Invalid value for argument `validation_data`. Expected (x, y) with one integer label "
            f"(or one-hot row) per example. Received: {n} examples and labels of shape {np.shape(y)}"
        )
    return y.astype(np.int32)


def validation_arrays(model, validation_data):
    """Checks ``validation_data`` against the model's input: float32 inputs, int32 labels.

    Args:
        model: the supernet (its input shape is checked).
        validation_data: ``(x, y)``; integer labels or one-hot rows.

    Returns:
        ``(x, y)``: float32 of shape (N, *input shape) and int32 of shape (N,).

    Raises:
        ValueError: not a pair, an empty ``x`` or one of the wrong shape, or labels that do not fit.
    """
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError("Invalid value for argument `validation_data`. Expected a tuple "
                         f"(x_val, y_val). Received: {type(validation_data).__name__}")
    x = np.asarray(validation_data[0], dtype=np.float32)
    expected = tuple(model.inputs[0].shape[1:])
    if x.ndim < 1 or len(x) == 0 or tuple(x.shape[1:]) != expected:
        raise ValueError(
            "Invalid value for argument `validation_data`. Expected a non-empty batch of inputs "
            f"of shape (N, {', '.join(map(str, expected))}). Received: x of shape {x.shape}"
        )
    return x, _labels(validation_data[1], len(x))


def padded_batches(x, y, batch_size):
    """Pads ``x`` / ``y`` to whole batches and fingerprints them (the search's resume check).

    Args:
        x: float32 inputs, shape (N, ...).
        y: int32 labels, shape (N,).
        batch_size: images per batch (<= N).

    Returns:
        ``(x, y, fingerprint)``: shapes (B, batch_size, ...) and (B, batch_size), padding of zero
        images labelled -1 (never a class), and ``"N:<digest>"`` (of the images and labels, not
        of the padding: evaluators with other batch sizes give the same fingerprint).
    """
    batches = -(-len(x) // batch_size)
    pad = batches * batch_size - len(x)
    digest = hashlib.sha1(np.ascontiguousarray(x, np.float32).tobytes())
    digest.update(y.tobytes())
    x_padded = np.concatenate([x, np.zeros((pad,) + x.shape[1:], np.float32)])
    y_padded = np.concatenate([y, np.full(pad, -1, np.int32)])
    return (x_padded.reshape((batches, batch_size) + x.shape[1:]), y_padded.reshape(batches, batch_size),
            f"{len(x)}:{digest.hexdigest()[:16]}")


class ConfigEvaluator:
    """Evaluates configurations of a supernet on validation data with one compiled function.

    Accuracy is top-1: ``argmax`` of the model output against integer labels (one-hot labels
    are accepted). The model must output class scores (e.g. the softmax of `tips_keras.supernet.zoo`).

    Args:
        model: a gated supernet (`tips_keras.AnytimeModel`); never trained or rebuilt here.
        validation_data: ``(x, y)`` NumPy arrays.
        batch_size: examples per forward pass of the compiled loop.
        recalibration_data: optional training images; when given, each configuration's
            BatchNorm statistics are re-estimated from them before it is evaluated (and restored
            afterwards), by the model's cached `tips_keras.training.batchnorm.recalibrator` for
            these images and sizes.
        recalibration_batches: forward passes used per recalibration.
        recalibration_batch_size: images per recalibration pass.
        report_shared_statistics: when recalibrating, also evaluate each configuration with the
            supernet's shared statistics and report it as ``accuracy_no_recal`` (a diagnostic of
            what recalibration gains; it doubles the evaluation time).
        fuse_after: when recalibrating, the number of evaluations that run through separate
            compiled calls (recalibrate, evaluate, restore) before the fused call is traced and
            used; ``None`` never fuses. Tracing the fused call costs seconds and saves
            milliseconds per configuration (``benchmarks/speed_benchmark.py`` measures both), so
            only long searches gain; a ``fit``'s validation (two configurations per epoch) does not.

    Attributes:
        trace_count: how many times the evaluation loop was traced: once per compiled function
            (the plain evaluation, and the fused call once `fuse_after` evaluations are done),
            never once per configuration.
        evaluations / seconds: number of `evaluate` calls and the time (s) they took in total.

    Raises:
        ValueError: empty or mismatched validation data, or inputs that do not fit the model.

    Example:
        >>> evaluator = ConfigEvaluator(model, (x_val, y_val))  # doctest: +SKIP
        >>> evaluator.evaluate("smallest")  # doctest: +SKIP
        {'flops': 150688.0, 'params': 3034.0, 'accuracy': 0.71}
    """

    def __init__(self, model, validation_data, batch_size=256, recalibration_data=None,
                 recalibration_batches=4, recalibration_batch_size=128, report_shared_statistics=False,
                 fuse_after=FUSE_AFTER):
        x, y = validation_arrays(model, validation_data)
        if fuse_after is not None and (isinstance(fuse_after, bool) or not isinstance(fuse_after, int)
                                       or fuse_after < 0):
            raise ValueError("Invalid value for argument `fuse_after`. Expected None or a non-negative "
                             f"integer. Received: fuse_after={fuse_after!r}")
        check_sizes(batch_size=batch_size, recalibration_batches=recalibration_batches,
                    recalibration_batch_size=recalibration_batch_size)
        self.model = model
        self.num_examples = len(x)
        self.batch_size = min(batch_size, len(x))
        x, y_padded, self.fingerprint = padded_batches(x, y, self.batch_size)
        self._x = tf.constant(x)
        self._y = tf.constant(y_padded)
        self.recalibration_data = None
        self.recalibrator = None
        if recalibration_data is not None:
            self.recalibration_data = np.asarray(recalibration_data)
            self.recalibrator = recalibrator(model, self.recalibration_data, recalibration_batch_size,
                                             recalibration_batches)  # cached: traced once per data and sizes
        self.recalibration_batches = recalibration_batches
        self.recalibration_batch_size = recalibration_batch_size
        self.report_shared_statistics = bool(report_shared_statistics)
        self.fuse_after = fuse_after
        self.trace_count = 0
        self.evaluations, self.seconds = 0, 0.0
        self.function = tf.function(self._count_correct)

    def _count_correct(self, x, y):
        self.trace_count += 1  # Python side effect: runs only while tracing
        correct = tf.constant(0, tf.int32)
        for i in tf.range(tf.shape(x)[0]):
            scores = self.model(x[i], training=False)
            predicted = tf.argmax(scores, axis=-1, output_type=tf.int32)
            correct += tf.reduce_sum(tf.cast(tf.equal(predicted, y[i]), tf.int32))
        return correct

    def accuracy(self, config=None):
        """Top-1 accuracy of ``config`` (default: the active configuration) on the validation data.

        Runs the compiled loop only, without recalibration (`evaluate` adds it); ``config`` stays
        active.

        Args:
            config: None, or any form accepted by `tips_keras.ConfigSpace.resolve`.

        Returns:
            A float in [0, 1].

        Example:
            >>> evaluator.accuracy("largest")  # doctest: +SKIP
        """
        if config is not None:
            self.model.set_config(config)
        return int(self.function(self._x, self._y)) / self.num_examples

    def evaluate(self, config):
        """Metrics of one configuration.

        The configuration stays active afterwards (with the shared BatchNorm statistics).

        Args:
            config: any form accepted by `tips_keras.ConfigSpace.resolve`.

        Returns:
            ``{"accuracy", "flops", "params"}`` (``"accuracy"`` recalibrated when recalibrating),
            plus ``"accuracy_no_recal"`` with ``report_shared_statistics``.

        Raises:
            ValueError: ``config`` does not fit the supernet.

        Example:
            >>> evaluator.evaluate({"exit": 1, "gates": {"stage0_block0": 1}})  # doctest: +SKIP
        """
        start = time.perf_counter()
        resolved = self.model.set_config(config)
        flops, params = analytic_flops.cost(self.model, resolved)
        result = {"flops": float(flops), "params": float(params)}
        if self.recalibration_data is None:
            result["accuracy"] = self.accuracy()
        else:
            if self.report_shared_statistics:
                result["accuracy_no_recal"] = self.accuracy()
            if self.fuse_after is not None and self.evaluations >= self.fuse_after:
                correct = self.recalibrator.fused(self.function, self._x, self._y)
            else:
                with self.recalibrator.applied():
                    correct = self.function(self._x, self._y)
            result["accuracy"] = int(correct) / self.num_examples
        self.evaluations += 1
        self.seconds += time.perf_counter() - start
        return result

    def reference_accuracy(self, config):
        """The same accuracy through ``model.predict`` (slow reference for tests and benchmarks).

        Args:
            config: any form accepted by `tips_keras.ConfigSpace.resolve` (left active).

        Returns:
            A float in [0, 1].
        """
        self.model.set_config(config)
        x = self._x.numpy().reshape((-1,) + tuple(self._x.shape[2:]))[: self.num_examples]
        y = self._y.numpy().reshape(-1)[: self.num_examples]
        scores = self.model.predict(x, batch_size=self.batch_size, verbose=0)
        return float(np.mean(np.argmax(keras.ops.convert_to_numpy(scores), axis=-1) == y))
