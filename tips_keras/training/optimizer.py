"""Masked updates: parameters that took no part in a training step are not stepped.

A sub-network trains only the weights on its path; the others get an all-zero gradient. A stock
Keras optimizer would still move them: Adam by its momentum, SGD with momentum likewise, and every
optimizer with ``weight_decay`` by the decay. The authors' loop (GitHub LiGuihong/TIPS,
``dyn_slim/apis/train_slim.py``) steps only parameters whose gradient is not all zero, so that a
block keeps the weights its own sub-networks trained. `mask_updates` does the same to any Keras 3
optimizer, for the duration of training: its per-variable ``update_step`` (and the weight decay
that ``apply`` performs for every variable first) runs inside a graph conditional on "this
variable's gradient has a non-zero entry". Nothing is re-traced per step and the optimizer's
variables, iterations and saved state are unchanged; `unmask_updates` restores the plain optimizer
(for functions traced after it: an already traced train function keeps the mask).

`TIPSCallback` groups the variables by top-level layer (``groups``): a layer is stepped whole
(momentum and weight decay included) when any of its gradients is non-zero. That differs from the
authors' per-parameter rule only for a parameter with an exactly zero gradient inside a layer that
ran (none in the zoo's gated blocks and exit heads, whose every parameter gets a gradient when the
block runs), and it makes one conditional per block instead of one per parameter. A variable
listed in more than one group (weights tied across layers) keeps a conditional of its own, so
that its gradient does not step the other group.
"""

import tensorflow as tf

_MARK = "_tips_masked_updates"


def _inner(optimizer):
    """The optimizer that owns ``update_step`` (a `LossScaleOptimizer` delegates to its inner one)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def _key(variable):
    """The identity of a variable as the TensorFlow update loop sees it (the backing tf.Variable)."""
    return id(variable if isinstance(variable, tf.Variable) else getattr(variable, "value", variable))


def _nonzero(gradient):
    """Whether ``gradient`` has a non-zero entry (of its values only, for an ``IndexedSlices``)."""
    values = gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient
    return tf.reduce_any(tf.not_equal(values, 0))


def mask_updates(optimizer, groups=None):
    """Makes ``optimizer`` skip variables whose gradient is all zero (idempotent).

    With ``groups`` (lists of variables, e.g. each top-level layer's trainable variables) the
    variables of a group are stepped together, inside one graph conditional on "some gradient of
    the group is non-zero": a gated block's variables take part together, and one conditional
    per block instead of one per variable makes the traced step smaller (the tests' 4-gate
    supernet has 41 trainable variables in 9 top-level layers: 9 conditionals instead of 41).
    Variables in no group or in several groups, and every variable under a distribution
    strategy (any but the default one: there each variable is updated on its own replicas),
    keep one conditional each. Masking an optimizer that is already masked changes nothing,
    ``groups`` included: `unmask_updates` first to regroup.

    Args:
        optimizer: a Keras 3 optimizer (a ``LossScaleOptimizer`` is handled through its inner
            optimizer).
        groups: optional sequence of sequences of variables stepped together.

    Returns:
        The optimizer, patched in place (instance attributes only).

    Raises:
        ValueError: ``optimizer`` is not a Keras optimizer.

    Example:
        >>> opt = mask_updates(keras.optimizers.AdamW(1e-3, weight_decay=0.05))  # doctest: +SKIP
        >>> mask_updates(model.optimizer, groups=[l.trainable_variables for l in model.layers])  # doctest: +SKIP
    """
    opt = _inner(optimizer)
    if not callable(getattr(opt, "update_step", None)) or not hasattr(opt, "_apply_weight_decay"):
        raise ValueError(
            "Invalid value for argument `optimizer`. Expected a Keras 3 optimizer (with "
            f"update_step). Received: {type(optimizer).__name__}"
        )
    if getattr(opt, _MARK, False):
        return optimizer
    update_step = opt.update_step  # bound method of the class

    def decayed_update_step(gradient, variable, learning_rate):
        if opt.weight_decay is not None and opt._use_weight_decay(variable):
            lr = tf.cast(learning_rate, variable.dtype)
            wd = tf.cast(opt.weight_decay, variable.dtype)
            variable.assign(variable - variable * wd * lr)
        update_step(gradient, variable, learning_rate)

    def masked_update_step(gradient, variable, learning_rate):
        took_part = _nonzero(gradient)
        tf.cond(took_part, lambda: decayed_update_step(gradient, variable, learning_rate), lambda: None)

    opt.update_step = masked_update_step
    opt._apply_weight_decay = lambda variables: None  # applied per variable, inside the mask
    group_of = {}
    for i, group in enumerate(groups or ()):
        for key in {_key(v) for v in group}:
            group_of[key] = ("alone", key) if key in group_of else i  # tied weights: their own
    distributed_update = getattr(opt, "_distributed_tf_update_step", None)  # the TensorFlow backend's
    if group_of and distributed_update is not None:
        def grouped_update(distribution, grads_and_vars, learning_rate):
            if tf.distribute.has_strategy():  # not the default strategy: per-variable updates
                return distributed_update(distribution, grads_and_vars, learning_rate)
            buckets = {}
            for grad, var in grads_and_vars:
                buckets.setdefault(group_of.get(_key(var), ("alone", _key(var))), []).append((grad, var))

            def apply(var, grad, lr):
                return decayed_update_step(grad, var, lr)

            for pairs in buckets.values():
                def step(pairs=pairs):
                    for grad, var in pairs:
                        distribution.extended.update(var, apply, args=(grad, learning_rate), group=False)
                took_part = tf.reduce_any(tf.stack([_nonzero(g) for g, _ in pairs]))
                tf.cond(took_part, step, lambda: None)

        opt._distributed_tf_update_step = grouped_update
    setattr(opt, _MARK, True)
    return optimizer


def unmask_updates(optimizer):
    """Undoes `mask_updates` (no-op on an optimizer that was not masked).

    Args:
        optimizer: the optimizer.

    Returns:
        The optimizer.

    Example:
        >>> unmask_updates(model.optimizer)  # doctest: +SKIP
    """
    opt = _inner(optimizer)
    if getattr(opt, _MARK, False):
        for name in ("update_step", "_apply_weight_decay", "_distributed_tf_update_step", _MARK):
            opt.__dict__.pop(name, None)
    return optimizer


def is_masked(optimizer):
    """Whether `mask_updates` is in effect on ``optimizer``.

    Args:
        optimizer: a Keras optimizer.

    Returns:
        A bool.

    Example:
        >>> is_masked(model.optimizer)  # doctest: +SKIP
        False
    """
    return bool(getattr(_inner(optimizer), _MARK, False))
