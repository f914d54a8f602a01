"""Masked updates: a variable whose gradient is all zero is not stepped by any Keras optimizer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tips_keras.training.optimizer import is_masked, mask_updates, unmask_updates

OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(0.1),
    "sgd_momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "adamw": lambda: keras.optimizers.AdamW(0.1, weight_decay=0.5),
    "loss_scale": lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.1)),
}


def _two_steps(optimizer, masked):
    a, b = keras.Variable(np.ones(3, "float32")), keras.Variable(np.ones(3, "float32"))
    if masked:
        mask_updates(optimizer)

    @tf.function
    def step(ga, gb):
        optimizer.apply([ga, gb], [a, b])

    step(tf.ones(3), tf.ones(3))  # both took part: momentum builds up for b too
    after_first = b.numpy().copy()
    step(tf.ones(3), tf.zeros(3))  # b took no part
    return a.numpy(), after_first, b.numpy()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_variable_without_gradient_is_left_alone(name):
    a, b_first, b = _two_steps(OPTIMIZERS[name](), masked=True)
    np.testing.assert_array_equal(b, b_first)
    assert not np.allclose(a, b_first)  # the other one kept training
    _, b_first_plain, b_plain = _two_steps(OPTIMIZERS[name](), masked=False)
    assert not np.array_equal(b_plain, b_first_plain)  # unmasked, momentum or decay moves it


def test_mask_is_idempotent_and_can_be_removed():
    optimizer = keras.optimizers.Adam(0.1)
    assert mask_updates(mask_updates(optimizer)) is optimizer and is_masked(optimizer)
    unmask_updates(optimizer)
    assert not is_masked(optimizer)
    assert "update_step" not in optimizer.__dict__ and "_apply_weight_decay" not in optimizer.__dict__
    _, b_first, b = _two_steps(optimizer, masked=False)
    assert not np.array_equal(b, b_first)  # plain Adam again


def test_something_else_is_refused():
    with pytest.raises(ValueError, match="Keras 3 optimizer.*Received: str"):
        mask_updates("adam")


def _if_ops(function, *args):
    graph = function.get_concrete_function(*args).graph
    return sum(op.type in ("If", "StatelessIf") for op in graph.get_operations())


def test_groups_step_together_in_one_conditional_each():
    # two "layers": (a, b) took part (only a has a non-zero gradient), (c, d) did not; e is alone
    variables = [keras.Variable(np.ones(3, "float32"), name=n) for n in "abcde"]
    optimizer = mask_updates(keras.optimizers.SGD(0.1, momentum=0.9), groups=[variables[:2], variables[2:4]])

    @tf.function
    def step(grads):
        optimizer.apply(grads, variables)

    ones, zeros = tf.ones(3), tf.zeros(3)
    step([ones] * 5)  # all took part: momentum builds up everywhere
    first = [v.numpy().copy() for v in variables]
    step([ones, zeros, zeros, zeros, zeros])
    a, b, c, d, e = (v.numpy() for v in variables)
    assert not np.array_equal(a, first[0]) and not np.array_equal(b, first[1])  # b stepped with a
    for value, before in ((c, first[2]), (d, first[3]), (e, first[4])):
        np.testing.assert_array_equal(value, before)  # no gradient in the group: left alone
    # one conditional per group and per ungrouped variable, not one per variable
    assert _if_ops(step, [ones] * 5) == 3
    unmask_updates(optimizer)
    assert "_distributed_tf_update_step" not in optimizer.__dict__ and not is_masked(optimizer)


def test_a_variable_tied_into_two_groups_steps_neither_group_alone():
    # s is shared by the groups (a, s) and (b, s): a gradient for a and s must not step b
    a, b, s = (keras.Variable(np.ones(3, "float32"), name=n) for n in "abs")
    optimizer = mask_updates(keras.optimizers.SGD(0.1, momentum=0.9), groups=[[a, s], [b, s]])

    @tf.function
    def step(grads):
        optimizer.apply(grads, [a, b, s])

    ones, zeros = tf.ones(3), tf.zeros(3)
    step([ones] * 3)  # momentum everywhere
    before = b.numpy().copy()
    step([ones, zeros, ones])
    np.testing.assert_array_equal(b.numpy(), before)
    assert _if_ops(step, [ones] * 3) == 3  # (a), (b), and s on its own


def test_grouped_weight_decay_is_the_plain_optimizers_when_every_variable_took_part():
    values = [np.linspace(-1, 1, 6, dtype="float32").reshape(2, 3), np.arange(3, dtype="float32")]
    grads = [tf.fill((2, 3), 0.3), tf.constant([0.1, -0.2, 0.5])]
    results = []
    for masked in (False, True):
        variables = [keras.Variable(v) for v in values]
        optimizer = keras.optimizers.AdamW(0.1, weight_decay=0.5)
        if masked:
            mask_updates(optimizer, groups=[variables])
        step = tf.function(lambda: optimizer.apply(grads, variables))
        for _ in range(3):
            step()
        results.append([v.numpy() for v in variables])
    for plain, grouped in zip(*results):
        np.testing.assert_allclose(grouped, plain, rtol=1e-6)  # decay applied once, not 0 or 2 times


def test_sparse_gradients_are_masked_by_their_values():
    table = keras.Variable(np.ones((4, 2), "float32"))
    optimizer = mask_updates(keras.optimizers.SGD(0.5))

    @tf.function
    def step(values):
        optimizer.apply([tf.IndexedSlices(values, tf.constant([1]), tf.constant([4, 2]))], [table])

    step(tf.zeros((1, 2)))  # an all-zero sparse gradient: not stepped
    np.testing.assert_array_equal(table.numpy(), np.ones((4, 2)))
    step(tf.ones((1, 2)))
    np.testing.assert_allclose(table.numpy()[1], [0.5, 0.5])
    np.testing.assert_array_equal(table.numpy()[[0, 2, 3]], np.ones((3, 2)))
