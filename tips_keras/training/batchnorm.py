"""BatchNorm recalibration for one configuration of a supernet.

The moving statistics of a supernet's BatchNormalization layers are an average over every
sub-network trained: a block's input statistics differ when the blocks before it are skipped, so a
small sub-network evaluated with them loses accuracy. Recalibration re-estimates the statistics of
the chosen configuration from a few training batches (exact average over the batches, not an
exponential one), as the anytime / slimmable literature does before evaluating or exporting.
"""

import contextlib

import keras
import numpy as np


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
    found = []
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        if isinstance(sub, keras.layers.BatchNormalization):
            found.append(sub)
    return found


def _stats(bns):
    return [(bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()) for bn in bns]


def _restore(bns, stats):
    for bn, (mean, var) in zip(bns, stats):
        bn.moving_mean.assign(mean)
        bn.moving_variance.assign(var)


def recalibrate_batchnorm(model, config, x, batch_size=128, max_batches=8):
    """Re-estimates the BatchNorm moving statistics of ``config`` from data.

    Only the layers the configuration runs see data, so only their statistics change. The
    configuration is left active.

    Args:
        model: a gated supernet.
        config: any form accepted by `ConfigSpace.resolve`.
        x: input images (at least one batch), e.g. a slice of the training set.
        batch_size: images per forward pass.
        max_batches: forward passes used (their statistics are averaged exactly).

    Returns:
        The number of BatchNorm layers whose statistics changed.

    Raises:
        ValueError: empty ``x`` or a bad ``batch_size`` / ``max_batches``.

    Example:
        >>> recalibrate_batchnorm(model, "smallest", x_train[:1024])  # doctest: +SKIP
    """
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(
            "Invalid value for argument `x`. Expected a non-empty batch of inputs. "
            f"Received: shape={x.shape}"
        )
    for arg, value in (("batch_size", batch_size), ("max_batches", max_batches)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"Invalid value for argument `{arg}`. Expected a positive integer. Received: {arg}={value!r}"
            )
    model.set_config(config)
    bns = batchnorm_layers(model)
    before = _stats(bns)
    sums = [[np.zeros_like(m), np.zeros_like(v)] for m, v in before]
    momenta = [bn.momentum for bn in bns]
    batches = [x[i : i + batch_size] for i in range(0, len(x), batch_size)][:max_batches]
    try:
        for bn in bns:
            bn.momentum = 0.0  # moving statistics := this batch's statistics
        for batch in batches:
            _restore(bns, before)
            model(batch, training=True)  # eager: no traced function to invalidate
            for acc, bn in zip(sums, bns):
                acc[0] += bn.moving_mean.numpy()
                acc[1] += bn.moving_variance.numpy()
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
    changed = 0
    for bn, acc, (mean, var) in zip(bns, sums, before):
        new_mean, new_var = acc[0] / len(batches), acc[1] / len(batches)
        if not (np.array_equal(new_mean, mean) and np.array_equal(new_var, var)):
            changed += 1
        bn.moving_mean.assign(new_mean)
        bn.moving_variance.assign(new_var)
    return changed


@contextlib.contextmanager
def recalibrated(model, config, x, **kwargs):
    """Context manager: recalibrate for ``config``, then restore the shared statistics.

    Use it to evaluate or export one sub-network with its own BatchNorm statistics without
    changing them for the others. Only the moving statistics are restored on exit; ``config``
    stays active.

    Args:
        model: a gated supernet.
        config: any form accepted by `ConfigSpace.resolve`.
        x: input images (at least one batch), e.g. a slice of the training set.
        **kwargs: ``batch_size`` and ``max_batches`` of `recalibrate_batchnorm`.

    Yields:
        ``model``, recalibrated for ``config``.

    Raises:
        ValueError: as `recalibrate_batchnorm`.

    Example:
        >>> with recalibrated(model, "smallest", x_train[:1024]):  # doctest: +SKIP
        ...     model.evaluate(x_val, y_val)
    """
    bns = batchnorm_layers(model)
    saved = _stats(bns)
    try:
        recalibrate_batchnorm(model, config, x, **kwargs)
        yield model
    finally:
        _restore(bns, saved)
