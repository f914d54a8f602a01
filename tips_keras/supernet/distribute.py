"""A fix that lets Keras 3 ``fit`` run under `tf.distribute.MultiWorkerMirroredStrategy`.

Keras 3.15's TensorFlow trainer calls ``strategy.reduce`` in two ways that
``MultiWorkerMirroredStrategy`` (the collective-ops strategy) does not take, so ``fit`` fails for
any model under it (keras-team/keras#20585, tensorflow/tensorflow#72388; unchanged in Keras
master in 2026-08):

* with the first ``(x, y)`` batch as a tuple during the symbolic build ("Attempt to convert a value
  (PerReplica...) to a Tensor");
* with ``axis=0`` for scalar per-replica logs such as the loss ("Invalid reduction dimension 0 for
  input with 0 dimensions").

`fix_multi_worker_reduce` wraps the strategy's ``reduce`` so that it reduces a structure leaf by
leaf and a scalar over the replicas only, which is what both calls mean. It is applied to the
strategy in scope by `AnytimeModel.fit`, so a TIPS supernet needs nothing else; a plain Keras model
trained beside it (for example a network trained alone for comparison) can call it directly.
"""

import tensorflow as tf

_FIXED = "_tips_leafwise_reduce"


def fix_multi_worker_reduce(strategy=None):
    """Makes ``strategy.reduce`` accept what Keras 3's ``fit`` passes it (keras#20585).

    Only `tf.distribute.MultiWorkerMirroredStrategy` is changed (any other strategy is returned
    as it is); applying it twice changes nothing more. The instance's ``reduce`` is replaced, not
    the class's.

    Args:
        strategy: a `tf.distribute.Strategy`; default: the strategy in scope
            (`tf.distribute.get_strategy()`).

    Returns:
        The same strategy object.

    Raises:
        TypeError: `strategy` is not a `tf.distribute.Strategy`.

    Example:
        >>> strategy = tf.distribute.MultiWorkerMirroredStrategy()  # doctest: +SKIP
        >>> fix_multi_worker_reduce(strategy)  # doctest: +SKIP
    """
    if strategy is None:
        strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError("Invalid value for argument `strategy`: expected a tf.distribute.Strategy "
                        f"or None. Received: strategy={strategy!r} of type {type(strategy).__name__}")
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or getattr(strategy, _FIXED, False):
        return strategy
    reduce = strategy.reduce

    def leafwise_reduce(reduce_op, value, axis=None):
        if isinstance(value, (tuple, list, dict)):
            return tf.nest.map_structure(lambda leaf: leafwise_reduce(reduce_op, leaf, axis), value)
        if axis is not None and strategy.experimental_local_results(value)[0].shape.rank == 0:
            axis = None  # a scalar per replica: reduce over the replicas only
        return reduce(reduce_op, value, axis)

    strategy.reduce = leafwise_reduce
    setattr(strategy, _FIXED, True)
    return strategy
