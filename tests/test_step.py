"""AnytimeStep: paths averaged in one update, every reached exit, teachers, signals."""

import keras
import numpy as np
import pytest

from tests.conftest import tiny_supernet
from tips_keras.training import teacher as teacher_lib
from tips_keras.training.step import AnytimeStep

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py


def _sgd_model():
    model = tiny_supernet()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


def _delta(model, x, y):
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.train_on_batch(x, y)
    after = [w.numpy() for w in model.trainable_weights]
    for w, b in zip(model.trainable_weights, before):
        w.assign(b)
    return [a - b for a, b in zip(after, before)]


def _with_step(model, paths, **kwargs):
    step = AnytimeStep(model, len(paths), **kwargs)
    model.set_training_step(step)
    step.set_paths([model.config_space.resolve(p).to_vector() for p in paths])
    return step


def test_paths_are_averaged_into_one_update(blobs):
    x, y = blobs[0][:16], blobs[1][:16]
    model = _sgd_model()
    a, b = (1, [1, 0, 1, 1]), (0, [0, 1, 0, 0])
    singles = []
    for path in (a, b):
        _with_step(model, [path], exits="active")
        singles.append(_delta(model, x, y))
    _with_step(model, [a, b], exits="active")
    for d, da, db in zip(_delta(model, x, y), *singles):
        np.testing.assert_allclose(d, (da + db) / 2, atol=2e-6)


def test_reached_exits_add_the_loss_of_every_exit_the_trunk_passes(blobs):
    x, y = blobs[0][:16], blobs[1][:16]
    model = _sgd_model()
    path = (1, [1, 0, 1, 0])
    step = _with_step(model, [path], exits="reached", record_signals=True)
    model.train_on_batch(x, y)  # builds everything; then compare one step's loss by hand
    model.set_config(path)
    p0, p1 = model.exits_model()(x, training=True)
    expected = sum(float(np.mean(keras.losses.sparse_categorical_crossentropy(y, p))) for p in (p0, p1))
    weights = [w.numpy().copy() for w in model.weights]
    model.train_on_batch(x, y)
    np.testing.assert_allclose(step.path_signals()[0, 0], expected, rtol=1e-4)
    for w, v in zip(model.weights, weights):
        w.assign(v)
    _with_step(model, [path], exits="active", record_signals=True)
    model.train_on_batch(x, y)
    only_exit1 = model.training_step.path_signals()[0, 0]
    np.testing.assert_allclose(only_exit1, float(np.mean(keras.losses.sparse_categorical_crossentropy(y, p1))),
                               rtol=1e-4)


def test_reached_except_largest_trains_the_largest_path_at_its_own_exit_only(blobs):
    x, y = blobs[0][:16], blobs[1][:16]
    model = _sgd_model()
    paths = ["largest", (1, [1, 0, 1, 0])]
    step = _with_step(model, paths, exits="reached_except_largest", record_signals=True)
    model.train_on_batch(x, y)  # builds everything; then compare one step's losses by hand
    expected = []
    for path in paths:
        model.set_config(path)
        p0, p1 = model.exits_model()(x, training=True)
        losses = [float(np.mean(keras.losses.sparse_categorical_crossentropy(y, p))) for p in (p0, p1)]
        expected.append(losses[1] if path == "largest" else sum(losses))
    model.train_on_batch(x, y)
    np.testing.assert_allclose(step.path_signals()[:, 0], expected, rtol=1e-4)


def test_aux_weight_scales_the_exits_before_the_path_s_own(blobs):
    x, y = blobs[0][:16], blobs[1][:16]
    model = _sgd_model()
    paths = ["largest", (0, [1, 1, 0, 0])]
    step = _with_step(model, paths, exits="reached", record_signals=True)
    step.set_aux_weight(0.25)
    model.train_on_batch(x, y)
    expected = []
    for path in paths:
        model.set_config(path)
        p0, p1 = model.exits_model()(x, training=True)
        losses = [float(np.mean(keras.losses.sparse_categorical_crossentropy(y, p))) for p in (p0, p1)]
        expected.append(0.25 * losses[0] + losses[1] if path == "largest" else losses[0])
    model.train_on_batch(x, y)
    np.testing.assert_allclose(step.path_signals()[:, 0], expected, rtol=1e-4)
    with pytest.raises(ValueError, match="Received: weight=1.5"):
        step.set_aux_weight(1.5)


def test_inplace_distillation_changes_the_update_of_smaller_paths(blobs):
    x, y = blobs[0][:16], blobs[1][:16]
    paths = ["largest", "smallest"]
    deltas = []
    for alpha in (0.0, 0.9):
        keras.utils.set_random_seed(0)
        model = _sgd_model()
        _with_step(model, paths, exits="active", teacher="inplace", distillation=alpha, first_is_largest=True)
        deltas.append(np.concatenate([d.ravel() for d in _delta(model, x, y)]))
    assert np.abs(deltas[0] - deltas[1]).max() > 1e-6


def test_ema_teacher_follows_the_weights_and_teaches_the_smaller_paths(blobs):
    x, y = blobs[0][:16], blobs[1][:16]
    keras.utils.set_random_seed(0)
    model = _sgd_model()
    teacher = teacher_lib.attach(model, decay=0.9)
    assert teacher.network is not model and len(model.weights) == len(tiny_supernet().weights)
    start = [w.numpy().copy() for w in teacher.network.trainable_weights]
    _with_step(model, ["largest", "smallest"], teacher=teacher, distillation=0.5, first_is_largest=True)
    model.train_on_batch(x, y)
    # First update: decay min(0.9, 1 / 10) = 0.1, so the teacher moves 90 % of the way.
    for t, s, w in zip(teacher.network.trainable_weights, start, model.trainable_weights):
        np.testing.assert_allclose(t.numpy(), 0.1 * s + 0.9 * w.numpy(), atol=1e-6)
    assert float(teacher.num_updates.numpy()) == 1.0
    assert teacher_lib.detach(model) is teacher and teacher_lib.detach(model) is None


def test_ema_teacher_is_saved_with_the_weights(tmp_path, blobs):
    keras.utils.set_random_seed(0)
    model = _sgd_model()
    teacher = teacher_lib.attach(model, decay=0.5)
    _with_step(model, ["largest", "smallest"], teacher=teacher, distillation=0.5, first_is_largest=True)
    model.train_on_batch(blobs[0][:16], blobs[1][:16])
    model.save_weights(tmp_path / "w.weights.h5")
    other = _sgd_model()
    other_teacher = teacher_lib.attach(other, decay=0.5)
    other.load_weights(tmp_path / "w.weights.h5")
    for a, b in zip(teacher.network.weights, other_teacher.network.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert float(other_teacher.num_updates.numpy()) == 1.0
    plain = _sgd_model()  # a model without a teacher loads the same file (the teacher is ignored)
    plain.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_array_equal(plain.weights[3].numpy(), model.weights[3].numpy())


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(paths_per_step=0), "paths_per_step.*Received"),
    (dict(paths_per_step=True), "Received: paths_per_step=True"),
    (dict(distillation=1.5, teacher="inplace", first_is_largest=True), "distillation.*Received"),
    (dict(exits="all"), "exits.*Received: exits='all'"),
    (dict(teacher="ema"), "teacher.*Received: teacher='ema'"),
    (dict(teacher="inplace", distillation=0.5), "first_is_largest=False"),
    (dict(exit_weights=[1.0]), "exit_weights.*Received"),
    (dict(record_signals=1), "record_signals.*Received: record_signals=1"),
])
def test_bad_step_arguments(supernet, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        AnytimeStep(supernet, **kwargs)


def test_paths_of_the_wrong_shape_and_unrecorded_signals_are_refused(supernet):
    step = AnytimeStep(supernet, 2)
    largest = supernet.config_space.largest().to_vector()
    with pytest.raises(ValueError, match=r"`vectors`.*Received: shape \(1, 5\)"):
        step.set_paths([largest])
    step.set_paths([largest, largest])
    with pytest.raises(ValueError, match="record_signals=True"):
        step.path_signals()


def test_path_signals_are_recorded_on_request(supernet, blobs):
    step = _with_step(supernet, ["largest", "smallest"], record_signals=True)
    supernet.train_on_batch(blobs[0][:32], blobs[1][:32])
    loss, grad_norm = step.path_signals().T
    assert np.all(loss > 0) and np.all(grad_norm > 0) and loss[0] != loss[1]
