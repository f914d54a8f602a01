"""BatchNorm statistics per configuration: compiled recalibration.

The moving statistics of a supernet's BatchNormalization layers average over every sub-network
trained: a block's input statistics differ when the blocks before it are skipped, so a small
sub-network evaluated with them loses accuracy (measured: the README demo's searched front scored
0.09 to 0.51 without recalibration). Recalibration re-estimates the statistics of one configuration
from a few training batches, as the slimmable / anytime literature does before evaluating or
exporting (the authors' ``reset_bn``; PyTorch's ``torch.optim.swa_utils.update_bn``).

`Recalibrator` does it in one compiled function per calibration set: the set is batched once
into a constant tensor, and a ``tf.function`` that loops over the batches in-graph is traced once
(with every BatchNorm momentum replaced by a variable that makes the moving statistics the exact
running mean of the batch statistics, the cumulative average of ``update_bn``). Recalibrating
another configuration is a variable assign plus one call: no re-trace, no Python loop, no numpy
copies. BatchNorm layers frozen with ``trainable=False`` (transfer learning) are recalibrated too:
Keras 3 runs them in inference mode even under ``training=True``, which would leave their
statistics silently unchanged, while skipping blocks shifts their inputs as much as anyone's. A
layer that still does not update (called with a fixed ``training=False`` by a custom layer) is
named in a ``RuntimeWarning`` the first time a configuration that runs it is recalibrated
(`tips_keras.training.bn_update_check`).
"""

import contextlib
import hashlib

import keras
import numpy as np
import tensorflow as tf

from tips_keras.training.bn_update_check import UpdateCheck, moments


def batchnorm_layers(layer):
    """All ``BatchNormalization`` layers inside ``layer``, nested models and wrappers included.

    Args:
        layer: a Keras layer or model (itself included if it is a BatchNormalization).

    Returns:
        A list of ``keras.layers.BatchNormalization``.

    Example:
        >>> len(batchnorm_layers(tips_keras.zoo.anytime_resnet())) > 0  # doctest: +SKIP
        True
    """
    return [sub for sub in layer._flatten_layers(include_self=True, recursive=True)
            if isinstance(sub, keras.layers.BatchNormalization)]


def check_sizes(**sizes):
    """Checks that each keyword argument is a positive integer (not a bool).

    Args:
        **sizes: argument name -> value, e.g. ``batch_size=256``.

    Raises:
        ValueError: the first value that is not a positive integer, named with what was received.
    """
    for arg, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Invalid value for argument `{arg}`. Expected a positive integer. "
                             f"Received: {arg}={value!r}")


def _as_inputs(model, x, arg="x"):
    x = np.asarray(x)
    expected = tuple(model.inputs[0].shape[1:])
    if x.ndim < 2 or len(x) == 0 or any(e is not None and e != s for e, s in zip(expected, x.shape[1:])) \
            or x.ndim != len(expected) + 1:
        raise ValueError(
            f"Invalid value for argument `{arg}`. Expected a non-empty batch of inputs of shape "
            f"(N, {', '.join(str(e) for e in expected)}). Received: shape={x.shape}"
        )
    return x


class Recalibrator:
    """Compiled BatchNorm recalibration of a supernet on one calibration set.

    ``batches`` batches of ``batch_size`` images are taken from ``x`` (fewer when ``x`` is
    smaller; the last partial batch is dropped unless it is the only one). Calling the
    recalibrator with a configuration makes it active and sets the moving mean and variance of
    every BatchNorm layer that configuration runs to the average, over the batches, of the batch
    mean and variance (exactly the statistics of ``x`` for the mean). Layers the configuration
    does not run keep theirs.

    Args:
        model: a gated supernet (`AnytimeModel`).
        x: calibration inputs, e.g. 1,024 training images.
        batch_size: images per forward pass.
        batches: forward passes at most.

    Attributes:
        trace_count: how often the recalibration function was traced (1 after any number of
            configurations).
        num_images: images used per recalibration.

    Raises:
        ValueError: empty ``x``, inputs of the wrong shape, or a bad ``batch_size`` / ``batches``.

    Example:
        >>> recal = Recalibrator(model, x_train[:1024])  # doctest: +SKIP
        >>> for config in ("largest", "smallest"):  # doctest: +SKIP
        ...     with recal.applied(config):
        ...         print(model.evaluate(x_val, y_val, verbose=0))
    """

    def __init__(self, model, x, batch_size=128, batches=8):
        check_sizes(batch_size=batch_size, batches=batches)
        x = _as_inputs(model, x)
        size = min(batch_size, len(x))
        count = max(min(batches, len(x) // size), 1)
        self.model = model
        self.num_images = size * count
        dtype = keras.backend.standardize_dtype(model.inputs[0].dtype or "float32")
        self._x = tf.constant(x[: self.num_images].reshape((count, size) + x.shape[1:]).astype(dtype))
        self._layers = batchnorm_layers(model)
        self._momentum = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="recal_momentum")
        self._saved = [tuple(tf.Variable(keras.ops.convert_to_numpy(v), trainable=False)
                             for v in (bn.moving_mean, bn.moving_variance)) for bn in self._layers]
        self.trace_count = 0
        self._function = tf.function(self._run)
        self._concrete = None
        self._update_check = UpdateCheck(model, self._layers, batchnorm_layers)  # layers seen to update, or warned about
        self._fused = {}  # fn -> concrete function of `fused`
        self._save = self._restore = None  # compiled copies to / from `_saved` (built at first use)

    @property
    def batches(self):
        """The calibration set as one tensor, shape ``(batches, batch_size) + input shape``.

        Batch ``i`` is the input of the ``i``-th training-mode pass of every recalibration; a
        caller that computes the passes itself (`calibrating`) must use these batches, in this order.
        """
        return self._x

    @property
    def layers(self):
        """The supernet's BatchNormalization layers (a new list; the layers themselves)."""
        return list(self._layers)

    @contextlib.contextmanager
    def calibrating(self, layers):
        """Context of a caller's own calibration passes (the search runs them in one compiled call).

        For each calibration batch ``i``, in order, the caller calls `set_momentum` and then runs
        some of ``layers`` with ``training=True`` on ``batches[i]``'s features, eagerly or in a
        function traced inside the context: their moving statistics end as the average of the
        batch statistics, exactly as a whole-model recalibration leaves them. Inside, the
        momentum of every layer of ``layers`` is the recalibration's momentum variable and frozen
        layers update too. On leaving, each layer not checked before is checked to have updated
        (the ``RuntimeWarning`` of `__call__`). Used by `tips_keras.search.SharedPrefixEvaluator`
        (`tips_keras.search.node_function`).

        Args:
            layers: the BatchNorm layers the passes update.

        Example:
            >>> with recal.calibrating(bns):  # doctest: +SKIP
            ...     for i in range(len(recal.batches)):
            ...         recal.set_momentum(i)
            ...         block(features(recal.batches[i]), training=True)
        """
        unchecked = self._update_check.unchecked(layers)
        before = UpdateCheck.mark(unchecked)
        with self._tracing(layers):  # only these layers: setting a Keras attribute is slow
            yield
        self._update_check.check(unchecked, before)

    def set_momentum(self, i):
        """Sets the momentum for the pass of batch ``i`` (eagerly, or inside a traced function).

        ``i / (i + 1)``: after passes ``0..i`` the moving statistics are the average of the batch
        statistics (the cumulative average of ``update_bn``).

        Args:
            i: the batch index, a Python int or an integer tensor.
        """
        i = tf.cast(i, tf.float32)
        self._momentum.assign(i / (i + 1.0))

    def _run(self, x):
        self.trace_count += 1  # Python side effect: runs only while tracing
        for i in tf.range(tf.shape(x)[0]):
            self.set_momentum(i)  # cumulative average of the batch statistics
            self.model(x[i], training=True)
        return tf.constant(0)

    @contextlib.contextmanager
    def _tracing(self, layers=None):
        """While tracing: every momentum (of ``layers``, default all) is the variable, frozen
        layers update too."""
        layers = self._layers if layers is None else layers
        saved = [(bn.momentum, bn.trainable) for bn in layers]
        try:
            for bn in layers:
                # moving = m * moving + (1 - m) * batch in the graph; set untracked (tracked, the
                # variable stayed a checkpoint dependency of the layer after the float came back)
                object.__setattr__(bn, "momentum", self._momentum)
                bn._trainable = True  # frozen layers too (no effect outside this trace)
            yield
        finally:
            for bn, (momentum, trainable) in zip(layers, saved):
                object.__setattr__(bn, "momentum", momentum)
                bn._trainable = trainable

    def _trace(self):
        with self._tracing():
            self._concrete = self._function.get_concrete_function(self._x)

    def fused(self, fn, *args):
        """One compiled call: save the statistics, recalibrate the active configuration, run ``fn``.

        Saving, the calibration passes, ``fn(*args)`` (which must call the model with
        ``training=False``) and restoring the shared statistics run in one ``tf.function`` call:
        no eager assign per layer and no second dispatch per configuration (the search's hot path,
        `tips_keras.training.evaluation.ConfigEvaluator`). The function is traced once per ``fn``.
        The first configurations that run a layer not yet seen to update go through the checked
        path (`applied`) instead, so a layer that cannot be recalibrated is still reported.

        Args:
            fn: a function of tensors, e.g. a `tf.function` (traced once inside the fused call).
            *args: tensors passed to ``fn`` (same shapes at every call).

        Returns:
            What ``fn`` returns, computed with the active configuration recalibrated; the shared
            statistics are in place again afterwards.
        """
        if self._update_check.unchecked_active():
            with self.applied():
                return fn(*args)
        compiled = self._fused.get(fn)
        if compiled is None:
            def run(x, *inner):  # save / restore traced into the graph: no eager assign per layer
                self.save()
                self._run(x)
                out = fn(*inner)
                self.restore()
                return out
            with self._tracing():
                compiled = tf.function(run).get_concrete_function(self._x, *args)
            self._fused[fn] = compiled
        return compiled(self._x, *args)

    def __call__(self, config=None):
        """Recalibrates ``config`` (default: the active configuration) and leaves it active.

        Args:
            config: ``None`` or any form accepted by `tips_keras.ConfigSpace.resolve`.

        Returns:
            The resolved `Configuration` that is active now.

        Raises:
            ValueError: ``config`` does not fit the supernet.
        """
        resolved = self.model.set_config(config) if config is not None else self.model.get_active_config()
        if self._concrete is None:
            self._trace()
        unchecked = self._update_check.unchecked_active()
        before = UpdateCheck.mark(unchecked)
        self._concrete(self._x)
        self._update_check.check(unchecked, before)
        return resolved

    def save(self):
        """Remembers every BatchNorm layer's moving statistics (restored by `restore`).

        One compiled call (traced once): no eager assign per layer."""
        if self._save is None:
            self._save, self._restore = self._copy_function(True), self._copy_function(False)
        self._save()

    def restore(self):
        """Puts back the statistics remembered by the last `save` (one compiled call)."""
        if self._restore is None:
            self._save, self._restore = self._copy_function(True), self._copy_function(False)
        self._restore()

    def _copy_function(self, saving):
        pairs = [((bn.moving_mean, mean), (bn.moving_variance, var))
                 for bn, (mean, var) in zip(self._layers, self._saved)]

        def copy():
            for pair in pairs:
                for live, kept in pair:
                    (kept.assign(live) if saving else live.assign(kept))
            return tf.constant(0)
        return tf.function(copy, autograph=False)

    @contextlib.contextmanager
    def applied(self, config=None):
        """Context manager: recalibrate ``config``, then restore the shared statistics.

        Args:
            config: ``None`` (the active configuration) or any form of `ConfigSpace.resolve`.

        Yields:
            The resolved `Configuration` (active inside and after the block).
        """
        self.save()
        try:
            yield self(config)
        finally:
            self.restore()


def recalibrator(model, x, batch_size=128, max_batches=8):
    """A cached `Recalibrator` of ``model`` for the calibration set ``x``.

    The same model, the same images (by content) and the same sizes return the same compiled
    recalibrator, so repeated `recalibrate_batchnorm` calls trace once. `TIPSCallback`'s
    validation pass and deployed report and every `tips_keras.training.evaluation.ConfigEvaluator`
    take theirs from here too (one trace per ``fit``, and none in a later ``fit`` of the same
    model on the same calibration sample). Its `save` / `restore` keep one copy of the statistics:
    they do not nest, so a caller restores before the next one saves (as `applied` does).

    Args:
        model: a gated supernet.
        x: calibration inputs.
        batch_size: images per forward pass.
        max_batches: forward passes at most.

    Returns:
        A `Recalibrator`.

    Raises:
        ValueError: as `Recalibrator`.

    Example:
        >>> recalibrator(model, x_train[:1024])("smallest")  # doctest: +SKIP
    """
    x = _as_inputs(model, x)
    check_sizes(batch_size=batch_size, max_batches=max_batches)
    digest = hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]
    key = (digest, x.shape, batch_size, max_batches)
    # On the model (its __dict__, past Keras' attribute tracking), not in a WeakKeyDictionary keyed
    # by it: a Recalibrator holds its model, so such a key was never freed (nor its graphs).
    per_model = vars(model).setdefault("_tips_recalibrators", {})
    if key not in per_model:
        if len(per_model) >= 4:  # a few calibration sets per model at most
            per_model.pop(next(iter(per_model)))
        per_model[key] = Recalibrator(model, x, batch_size, max_batches)
    return per_model[key]


def recalibrate_batchnorm(model, config, x, batch_size=128, max_batches=8):
    """Re-estimates the BatchNorm moving statistics of ``config`` from data (compiled, cached).

    Only the layers the configuration runs see data, so only their statistics change. The
    configuration is left active.

    Args:
        model: a gated supernet.
        config: any form accepted by `ConfigSpace.resolve`.
        x: input images (at least one), e.g. a slice of the training set.
        batch_size: images per forward pass.
        max_batches: forward passes used (the statistics are averaged over them exactly).

    Returns:
        The number of BatchNorm layers whose statistics changed.

    Raises:
        ValueError: empty ``x``, inputs of the wrong shape, or a bad ``batch_size`` /
            ``max_batches``.

    Example:
        >>> recalibrate_batchnorm(model, "smallest", x_train[:1024])  # doctest: +SKIP
    """
    recal = recalibrator(model, x, batch_size, max_batches)
    before = moments(recal._layers)
    recal(config)
    after = moments(recal._layers)
    return sum(not (np.array_equal(m0, m1) and np.array_equal(v0, v1))
               for (m0, v0), (m1, v1) in zip(before, after))


@contextlib.contextmanager
def recalibrated(model, config, x, **kwargs):
    """Context manager: recalibrate for ``config``, then restore the shared statistics.

    Use it to evaluate or export one sub-network with its own BatchNorm statistics without
    changing them for the others. Only the moving statistics are restored on exit; ``config``
    stays active.

    Args:
        model: a gated supernet.
        config: any form accepted by `ConfigSpace.resolve`.
        x: input images (at least one), e.g. a slice of the training set.
        **kwargs: ``batch_size`` and ``max_batches`` of `recalibrate_batchnorm`.

    Yields:
        ``model``, recalibrated for ``config``.

    Raises:
        ValueError: as `recalibrate_batchnorm`.

    Example:
        >>> with recalibrated(model, "smallest", x_train[:1024]):  # doctest: +SKIP
        ...     model.evaluate(x_val, y_val)
    """
    recal = recalibrator(model, x, **kwargs)
    with recal.applied(config):
        yield model
