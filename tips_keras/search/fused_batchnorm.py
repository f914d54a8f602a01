"""BatchNorm through TensorFlow's fused kernel while the search traces its evaluation functions.

Keras 3's ``BatchNormalization`` computes from elementary ops: in training mode the moments (a
mean, a squared difference, another mean), then a multiply and an add over the feature map; in
inference mode the multiply and the add. Keras 2's layer used TensorFlow's fused kernel instead
(``fused=None`` by default: ``FusedBatchNormV3``, one op per call, oneDNN's kernel on this CPU).
The search's shared-prefix evaluation (`tips_keras.search.SharedPrefixEvaluator`) replays the
supernet layer by layer on thousands of images per configuration, and in a profile of it taken
before this module existed (TensorFlow's profiler, as ``benchmarks/profile_ops.py`` reads it) those
elementary ops took about as long as the convolutions (37 % and 54 % of the op time); after it,
the convolutions take 71 % (``benchmarks/profile_ops.txt``).

`fused_in` makes the BatchNormalization layers inside a layer compute with
``tf.compat.v1.nn.fused_batch_norm`` while a function is traced, then puts the layers back:

* inference mode: ``FusedBatchNormV3`` with the moving statistics;
* training mode (the recalibration passes): ``FusedBatchNormV3`` computes the batch moments and
  normalises in one op; the moving statistics are updated as Keras does,
  ``moving = momentum * moving + (1 - momentum) * batch``, with the batch's biased variance (the
  kernel returns the unbiased one, so it is scaled by ``(n - 1) / n``).

The results are those of the Keras layer up to float rounding. Only layers the kernel computes
exactly as Keras does are swapped: Keras' own ``call`` (not a subclass's or the instance's),
4-D inputs normalised over the last axis, no renormalisation, no synchronisation across replicas,
float32 variables, ``epsilon`` at least the kernel's minimum (1.001e-5), no mask; the others keep
the Keras computation. The model's layers, weights and saved form are not touched: only the call
used while tracing.

Example:
    >>> with fused_in(block):  # doctest: +SKIP
    ...     concrete = tf.function(lambda x: block(x, training=False)).get_concrete_function(x)
"""

import contextlib

import keras
import tensorflow as tf

from tips_keras.training.batchnorm import batchnorm_layers

MIN_EPSILON = 1.001e-5  # FusedBatchNormV3 raises a smaller epsilon to this (cuDNN's minimum)


def fusable(bn):
    """Whether ``bn`` computes the same through the fused kernel (see the module docstring).

    Args:
        bn: a built ``keras.layers.BatchNormalization``.

    Returns:
        True when `fused_in` swaps the layer's call.
    """
    axis = bn.axis if isinstance(bn.axis, int) else None
    reduced = list(getattr(bn, "_reduction_axes", None) or ())  # set by build (Keras 3)
    return (bn.built and type(bn).call is keras.layers.BatchNormalization.call  # not a subclass's own call
            and "call" not in bn.__dict__  # nor one set on the instance (a patch, an outer fused_in)
            and axis in (-1, 3) and reduced == [0, 1, 2]
            and not bn.renorm and not bn.synchronized and bn.epsilon >= MIN_EPSILON
            and bn.moving_mean.dtype == "float32" and not getattr(bn, "quantization_mode", None))


def _fused_call(bn, inputs, training=None, mask=None):
    """``bn.call`` through ``FusedBatchNormV3`` (Keras' semantics, float32 statistics)."""
    if mask is not None or len(inputs.shape) != 4:
        return type(bn).call(bn, inputs, training=training, mask=mask)
    x = tf.cast(inputs, tf.float32)
    channels = x.shape[-1]
    gamma = bn.gamma if bn.scale else tf.ones((channels,), tf.float32)
    beta = bn.beta if bn.center else tf.zeros((channels,), tf.float32)
    if training and bn.trainable:
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, epsilon=bn.epsilon, is_training=True)
        n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        variance = variance * ((n - 1.0) / tf.maximum(n, 1.0))  # unbiased -> biased, as Keras
        momentum = tf.cast(bn.momentum, tf.float32)  # a float, or the recalibration's variable
        bn.moving_mean.assign(bn.moving_mean * momentum + mean * (1.0 - momentum))
        bn.moving_variance.assign(bn.moving_variance * momentum + variance * (1.0 - momentum))
    else:
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, mean=bn.moving_mean, variance=bn.moving_variance, epsilon=bn.epsilon,
            is_training=False)
    return tf.cast(y, bn.compute_dtype)


@contextlib.contextmanager
def fused_in(layer):
    """While inside: the fusable BatchNormalization layers of ``layer`` use the fused kernel.

    Meant around the tracing of a ``tf.function`` (the traced graph keeps the fused ops; later
    calls of the concrete function need no context). The layers' own ``call`` is restored on
    leaving, also after an error.

    Args:
        layer: a Keras layer or model (every BatchNormalization inside it, nested included).

    Yields:
        The list of swapped layers.

    Example:
        >>> with fused_in(model.get_layer("stage0_block0").layer):  # doctest: +SKIP
        ...     y = traced(x)
    """
    swapped = [bn for bn in batchnorm_layers(layer) if fusable(bn)]
    for bn in swapped:
        # an instance attribute shadows the class's `call` (Keras' Operation.__call__ reads
        # `self.call`); object.__setattr__ keeps Keras' attribute tracking out of it
        object.__setattr__(bn, "call", lambda inputs, training=None, mask=None, bn=bn:
                           _fused_call(bn, inputs, training=training, mask=mask))
    try:
        yield swapped
    finally:
        for bn in swapped:
            bn.__dict__.pop("call", None)
