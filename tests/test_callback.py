"""TIPSCallback inside model.fit."""

import keras
import numpy as np
import pytest

import tips_keras as tips
from tips_keras.batchnorm import recalibrated
from tests.conftest import tiny_supernet


@pytest.mark.parametrize("sampler", ["tips", "uniform", "sandwich", "stochastic_depth"])
def test_fit_with_each_sampler_records_paths_and_logs_importance(sampler, supernet, blobs):
    x, y, xv, yv = blobs
    callback = tips.TIPSCallback(sampler=sampler, seed=1)
    history = supernet.fit(x[:96], y[:96], batch_size=32, epochs=1, validation_data=(xv[:32], yv[:32]),
                           callbacks=[callback], verbose=0)
    names = supernet.config_space.gate_names
    assert set(callback.importance) == set(names)
    assert all(0.0 <= v <= 1.0 for v in callback.importance.values())
    for name in names:
        assert history.history[f"importance/{name}"] == [pytest.approx(callback.importance[name])]
    expected_k = 4 if sampler == "sandwich" else 1
    assert [len(r) for r in callback._records] == [expected_k] * 3
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(supernet.controller.importance), [callback.importance[n] for n in names], atol=1e-6
    )
    assert supernet.get_active_config() == supernet.config_space.largest()  # eval_config after fit


def test_tips_importance_reaches_the_sampling_probabilities(supernet, blobs):
    callback = tips.TIPSCallback(sampler="tips", p_min=0.1, p_max=0.9)
    supernet.fit(blobs[0][:64], blobs[1][:64], batch_size=32, epochs=2, callbacks=[callback], verbose=0)
    importance = np.array(list(callback.importance.values()))
    np.testing.assert_allclose(callback.sampler.gate_probs, 0.1 + 0.8 * importance)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(supernet.controller.gate_probs), callback.sampler.gate_probs, atol=1e-6)
    assert [h["sampled"] for h in callback.history] == [2, 2]


def test_signal_weights_the_dtmc_with_the_measured_path_losses(supernet, blobs, monkeypatch):
    x, y = blobs[0][:96], blobs[1][:96]
    callback = tips.TIPSCallback(sampler="tips", signal="loss", paths_per_step=2, seed=3)
    seen, recorded = [], []
    original, read = callback.compute_importance, supernet.get_path_signals
    monkeypatch.setattr(callback, "compute_importance",
                        lambda vectors, weights=None: seen.append(weights) or original(vectors, weights))
    monkeypatch.setattr(supernet, "get_path_signals", lambda: recorded.append(read()) or recorded[-1])
    supernet.fit(x, y, batch_size=32, epochs=1, callbacks=[callback], verbose=0)
    losses = np.concatenate(callback._signals)
    assert losses.shape == (6,) and np.all(np.isfinite(losses)) and np.all(losses > 0)
    # Each step's per-path losses are what the model recorded in that step (loss, grad norm).
    assert len(recorded) == 3 and all(r.shape == (2, 2) and np.all(r > 0) for r in recorded)
    np.testing.assert_allclose(losses, np.concatenate([r[:, 0] for r in recorded]))
    vectors = np.concatenate(callback._records)
    expected = tips.signals.exit_normalized_weights(vectors, losses)
    np.testing.assert_allclose(seen[0], expected)
    assert not np.allclose(seen[0], 1.0)


def test_marginal_importance_comes_from_the_recorded_losses(supernet, blobs):
    callback = tips.TIPSCallback(sampler="tips", importance="marginal", paths_per_step=2, seed=3)
    assert callback.signal == "loss"
    supernet.fit(blobs[0][:96], blobs[1][:96], batch_size=32, epochs=1, callbacks=[callback], verbose=0)
    vectors, losses = np.concatenate(callback._records), np.concatenate(callback._signals)
    expected = tips.signals.marginal_importance(
        vectors, losses, supernet.config_space.gate_min_exit, "loss"
    )
    np.testing.assert_allclose(list(callback.importance.values()), expected)
    np.testing.assert_allclose(callback.sampler.gate_probs, 0.35 + 0.3 * expected)
    with pytest.raises(ValueError, match="`importance`.*Received: importance='tas'"):
        tips.TIPSCallback(importance="tas")


def test_no_signal_records_nothing(supernet, blobs):
    callback = tips.TIPSCallback(sampler="tips", paths_per_step=2, seed=3)
    supernet.fit(blobs[0][:64], blobs[1][:64], batch_size=32, epochs=1, callbacks=[callback], verbose=0)
    assert callback._signals == [] and len(callback._records) == 2


def test_sampler_state_is_restored_from_the_weights(tmp_path, supernet, blobs):
    first = tips.TIPSCallback(sampler="tips", p_min=0.0, p_max=1.0)
    supernet.fit(blobs[0][:64], blobs[1][:64], batch_size=32, epochs=1, callbacks=[first], verbose=0)
    path = tmp_path / "w.weights.h5"
    supernet.save_weights(path)
    fresh = tiny_supernet()
    fresh.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    fresh.load_weights(path)
    second = tips.TIPSCallback(sampler="tips", p_min=0.0, p_max=1.0)
    second.set_model(fresh)
    second.on_train_begin()
    np.testing.assert_allclose(second.sampler.gate_probs, first.sampler.gate_probs, atol=1e-6)
    assert second.importance == pytest.approx(first.importance)
    # Same seed and state -> same paths for the same (epoch, batch).
    np.testing.assert_array_equal(second.step_paths(3, 5), first.step_paths(3, 5))


def test_trained_supernet_is_accurate_at_both_exits(blobs):
    keras.utils.set_random_seed(0)
    model = tiny_supernet()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y, xv, yv = blobs
    model.fit(x, y, batch_size=32, epochs=6, callbacks=[tips.TIPSCallback(sampler="sandwich", n_random=1)], verbose=0)
    for config, floor in (("largest", 0.9), ((0, [1, 1, 0, 0]), 0.5)):  # chance: 0.25
        with recalibrated(model, config, x):
            accuracy = model.evaluate(xv, yv, verbose=0)[1]
        assert accuracy > floor, (config, accuracy)


def test_recalibration_data_recalibrates_before_validation(supernet, blobs):
    x, y, xv, yv = blobs
    callback = tips.TIPSCallback(sampler="uniform", recalibration_data=x[:64])
    supernet.fit(x[:64], y[:64], batch_size=32, epochs=1, validation_data=(xv[:32], yv[:32]),
                 callbacks=[callback], verbose=0)
    stem = supernet.get_layer("stem_bn")
    features = keras.Model(supernet.inputs, supernet.get_layer("stem_conv").output)
    # Batch size 128 > 64 images: one batch; stats = that batch's mean.
    expected = features(x[:64]).numpy().mean(axis=(0, 1, 2))
    np.testing.assert_allclose(stem.moving_mean.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_nan_loss_stops_training_and_names_the_subnetwork(supernet, blobs):
    x = blobs[0][:64].copy()
    x[:] = np.nan
    callback = tips.TIPSCallback(sampler="uniform")
    with pytest.warns(RuntimeWarning, match="Sub-network"):
        supernet.fit(x, blobs[1][:64], batch_size=32, epochs=3, callbacks=[callback], verbose=0)
    assert len(callback._records) == 1 and callback.nan_config
    assert set(callback.nan_config[0]) == {"exit", "gates"}


def test_empty_epoch_is_refused(supernet):
    callback = tips.TIPSCallback()
    callback.set_model(supernet)
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    with pytest.raises(ValueError, match="empty epoch.*Received: 0"):
        callback.on_epoch_end(0, {})


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(sampler="greedy"), "`sampler`"),
        (dict(coupling=-1.0), "`coupling`"),
        (dict(score="max"), "`score`"),
        (dict(signal="accuracy"), "`signal`"),
        (dict(distillation=2.0), "`distillation`"),
        (dict(sampler="uniform", distillation=0.5), "`distillation`"),
        (dict(sampler="tips", distillation=0.5), "`paths_per_step`"),
    ],
)
def test_bad_callback_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        tips.TIPSCallback(**kwargs)
    assert "Received" in str(info.value)
