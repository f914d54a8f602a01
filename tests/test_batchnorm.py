"""BatchNorm recalibration per configuration."""

import gc
import weakref

import keras
import numpy as np
import pytest

import tips_keras as tips
from tips_keras.training.batchnorm import (Recalibrator, batchnorm_layers, recalibrate_batchnorm, recalibrated,
                                          recalibrator)
from tests.conftest import tiny_supernet


@pytest.fixture(scope="module")
def trained(blobs):
    keras.utils.set_random_seed(0)
    model = tiny_supernet()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(blobs[0], blobs[1], batch_size=32, epochs=6, verbose=0,
              callbacks=[tips.TIPSCallback(sampler="sandwich", recipe="single_path", n_random=1)])
    return model


def test_statistics_equal_the_exact_average_of_batch_statistics(trained, blobs):
    x = blobs[0][:64]
    recalibrate_batchnorm(trained, "smallest", x, batch_size=32, max_batches=2)
    stem = trained.get_layer("stem_bn")
    features = keras.Model(trained.inputs[0], trained.get_layer("stem_conv").output)
    means = [features(x[i : i + 32]).numpy().mean(axis=(0, 1, 2)) for i in (0, 32)]
    np.testing.assert_allclose(stem.moving_mean.numpy(), np.mean(means, axis=0), rtol=1e-4, atol=1e-6)


def test_only_layers_of_the_configuration_change(trained, blobs):
    before = {bn.name: bn.moving_mean.numpy().copy() for bn in batchnorm_layers(trained)}
    with recalibrated(trained, (0, [1, 0, 0, 0]), blobs[0][:64]):
        after = {bn.name: bn.moving_mean.numpy() for bn in batchnorm_layers(trained)}
    changed = {name for name in before if not np.array_equal(before[name], after[name])}
    assert "stem_bn" in changed and "stage0_block0_branch_bn1" in changed and "exit0_bn" in changed
    assert not changed & {"stage0_block1_branch_bn1", "exit1_bn", "stage1_transition_bn"}
    # The context manager restored the shared statistics.
    for bn in batchnorm_layers(trained):
        np.testing.assert_array_equal(bn.moving_mean.numpy(), before[bn.name])


def test_recalibration_helps_small_configurations(trained, blobs):
    x, _, xv, yv = blobs
    gains = []
    for config in ("largest", (1, [0, 0, 0, 0]), (0, [1, 0, 0, 0])):
        trained.set_config(config)
        plain = trained.evaluate(xv, yv, verbose=0)[1]
        with recalibrated(trained, config, x):
            gains.append(trained.evaluate(xv, yv, verbose=0)[1] - plain)
    # 128 validation images: one image is 0.008.
    assert min(gains) >= 0 and np.mean(gains) > 0.1, gains


def test_one_trace_for_every_configuration_and_save_restore(trained, blobs):
    recal = Recalibrator(trained, blobs[0][:96], batch_size=32, batches=3)
    assert recal.num_images == 96
    stem = trained.get_layer("stem_bn")
    shared = stem.moving_mean.numpy().copy()
    seen = []
    for config in ("largest", "smallest", (1, [0, 1, 1, 0]), "largest"):
        with recal.applied(config):
            seen.append(stem.moving_mean.numpy().copy())
        np.testing.assert_array_equal(stem.moving_mean.numpy(), shared)  # restored each time
    assert recal.trace_count == 1
    # save / restore are one compiled call each, traced once (no eager assign per layer)
    assert recal._save.experimental_get_tracing_count() == 1
    assert recal._restore.experimental_get_tracing_count() == 1
    np.testing.assert_allclose(seen[0], seen[3], atol=1e-6)  # same data, same configuration
    np.testing.assert_allclose(seen[0], seen[1], atol=1e-6)  # the stem sees the same inputs always
    assert trained.get_active_config() == trained.config_space.largest()


def test_the_cached_recalibrator_is_reused_and_dies_with_its_model(blobs):
    model = tiny_supernet()
    x = blobs[0][:64]
    first = recalibrator(model, x, batch_size=32, max_batches=2)
    assert recalibrator(model, x.copy(), batch_size=32, max_batches=2) is first  # same images
    assert recalibrator(model, x[:32], batch_size=32, max_batches=2) is not first
    first("smallest")
    dead = weakref.ref(model)
    del model, first
    gc.collect()
    assert dead() is None  # the cache keeps no model alive (it once did, with its graphs)


def test_a_recalibrated_models_checkpoint_restores_strictly_into_a_fresh_one(blobs, tmp_path):
    import tensorflow as tf

    model = tiny_supernet()
    recalibrate_batchnorm(model, "smallest", blobs[0][:64], batch_size=32, max_batches=2)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    # no trace of the recalibration in it (its momentum variable was once left as a dependency)
    tf.train.Checkpoint(model=tiny_supernet()).read(path).assert_consumed()


def test_a_callers_own_passes_give_the_same_statistics(trained, blobs):
    recal = Recalibrator(trained, blobs[0][:96], batch_size=32, batches=3)
    assert recal.batches.shape == (3, 32, 12, 12, 1) and len(recal.layers) == len(batchnorm_layers(trained))
    stem = trained.get_layer("stem_bn")
    features = keras.Model(trained.inputs[0], trained.get_layer("stem_conv").output)
    shared = stem.moving_mean.numpy().copy()
    with recal.applied("largest"):
        expected = stem.moving_mean.numpy().copy()
    recal.save()
    try:  # the stem's BatchNorm alone, on the stem convolution's output of each calibration batch
        with recal.calibrating([stem]):
            for i in range(3):
                recal.set_momentum(i)
                stem(features(recal.batches[i]), training=True)
        np.testing.assert_allclose(stem.moving_mean.numpy(), expected, rtol=1e-4, atol=1e-6)
        assert not np.allclose(expected, shared)
    finally:
        recal.restore()
    np.testing.assert_array_equal(stem.moving_mean.numpy(), shared)


def test_calibrating_warns_about_a_layer_the_passes_do_not_update(blobs):
    model = tiny_supernet()
    recal = Recalibrator(model, blobs[0][:64], batch_size=32, batches=2)
    stem = model.get_layer("stem_bn")
    before = stem.moving_mean.numpy().copy()
    with pytest.warns(RuntimeWarning, match="stem_bn"):
        with recal.calibrating([stem]):  # passes that run nothing
            pass
    np.testing.assert_array_equal(stem.moving_mean.numpy(), before)  # the mark was taken back


def test_frozen_batchnorm_is_recalibrated_and_stays_frozen(blobs):
    model = tiny_supernet()
    stem = model.get_layer("stem_bn")
    stem.trainable = False  # transfer learning: Keras 3 would run it in inference mode
    before = stem.moving_mean.numpy().copy()
    assert recalibrate_batchnorm(model, "smallest", blobs[0][:64]) > 0
    assert not np.array_equal(stem.moving_mean.numpy(), before)
    assert stem.trainable is False and not stem.trainable_weights


def test_bad_arguments(trained):
    with pytest.raises(ValueError, match="`x`.*Received"):
        recalibrate_batchnorm(trained, "largest", np.zeros((0, 12, 12, 1)))
    with pytest.raises(ValueError, match="`max_batches`.*Received"):
        recalibrate_batchnorm(trained, "largest", np.zeros((4, 12, 12, 1)), max_batches=0)
