"""TIPSCallback inside model.fit: the recipe, TIPS importance, deployed validation metrics."""

import csv

import keras
import numpy as np
import pytest

import tips_keras as tips
from tests.conftest import compiled_supernet, tiny_supernet
from tips_keras.training import importance as importance_lib
from tips_keras.training import optimizer as optimizer_lib
from tips_keras.training.batchnorm import recalibrated
from tips_keras.training.schedule import aux_weight_at, warmup_cosine

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py


@pytest.mark.parametrize("sampler", ["tips", "uniform", "sandwich", "stochastic_depth"])
def test_anytime_recipe_with_each_sampler(sampler, supernet, blobs):
    x, y, xv, yv = blobs
    callback = tips.TIPSCallback(sampler=sampler, recipe="anytime", seed=1)
    # The deployed validation does not depend on the sampler: checked once, with TIPS.
    validation = (xv[:32], yv[:32]) if sampler == "tips" else None
    history = supernet.fit(x[:96], y[:96], batch_size=32, epochs=1, validation_data=validation,
                           callbacks=[callback], verbose=0)
    space = supernet.config_space
    assert [len(r) for r in callback._record.steps] == [4] * 3  # sandwich: largest, smallest + 2 drawn
    for paths in callback._record.steps:
        np.testing.assert_array_equal(paths[0], space.largest().to_vector())
        np.testing.assert_array_equal(paths[1], space.smallest().to_vector())
    assert set(callback.importance) == set(space.gate_names)
    for name in space.gate_names:
        assert history.history[f"importance/{name}"] == [pytest.approx(callback.importance[name])]
    for key in ("val_largest_accuracy", "val_smallest_accuracy", "val_accuracy"):
        assert (len(history.history[key]) == 1 and 0.0 <= history.history[key][0] <= 1.0) \
            if validation else key not in history.history
    assert supernet.get_active_config() == space.largest()  # eval_config after fit
    assert supernet.training_step is None and not optimizer_lib.is_masked(supernet.optimizer)
    assert callback.signal is None and callback._record.values() is None and not callback.step.record_signals


@pytest.mark.parametrize("sampler, k", [("tips", 1), ("uniform", 1), ("sandwich", 4), ("stochastic_depth", 1)])
def test_single_path_recipe_is_the_old_rule(sampler, k, supernet, blobs):
    callback = tips.TIPSCallback(sampler=sampler, recipe="single_path", seed=1)
    supernet.fit(blobs[0][:64], blobs[1][:64], batch_size=32, epochs=1, callbacks=[callback], verbose=0)
    assert [len(r) for r in callback._record.steps] == [k, k]
    values = callback.recipe_values
    assert values["exits"] == "active" and values["distillation"] == 0.0 and not values["masked_updates"]
    assert callback.step.exits == "active" and callback.step.teacher is None


def test_menu_recipe_draws_the_budgets_important_paths_after_the_largest(supernet, blobs, tmp_path):
    callback = tips.TIPSCallback(recipe="menu", budgets=(0.3, 0.6), seed=1)
    seen = {}

    def keep(epoch, logs):
        seen[epoch] = (dict(callback.important_paths), [list(map(tuple, paths)) for paths in callback._record.steps])

    x, y, xv, yv = blobs
    log = tmp_path / "log.csv"
    history = supernet.fit(x[:64], y[:64], batch_size=32, epochs=2, verbose=0, validation_data=(xv[:32], yv[:32]),
                           callbacks=[callback, keras.callbacks.LambdaCallback(on_epoch_end=keep),
                                      keras.callbacks.CSVLogger(str(log))])
    # The report of the menu recipe: the largest, the smallest and each budget's important path.
    names = ("val_largest_accuracy", "val_smallest_accuracy", "val_budget30_accuracy", "val_budget60_accuracy")
    for key in names:
        assert len(history.history[key]) == 2 and 0.0 <= history.history[key][-1] <= 1.0
    with open(log) as f:
        assert set(names) <= set(next(csv.reader(f)))
    # Epoch 1's validation evaluated the paths that epoch trained: those found after epoch 0.
    report = callback._validation.report.configs
    assert report["budget30"] == seen[0][0][0.3] and report["budget60"] == seen[0][0][0.6]
    space = supernet.config_space
    largest = tuple(space.largest().to_vector())
    assert callback.step.exits == "reached_except_largest" and callback.sampler_options["focus"] == 1.0
    important_after_epoch_0 = {tuple(c.to_vector()) for c in seen[0][0].values()}
    assert important_after_epoch_0 and len(seen[1][1]) == 2
    for paths in seen[1][1]:  # epoch 1: the largest, then only the menu's important paths
        assert len(paths) == 4 and paths[0] == largest
        assert set(paths[1:]) <= important_after_epoch_0, (paths, important_after_epoch_0)


def test_menu_recipe_is_the_explicit_options_it_names():
    explicit = tips.TIPSCallback(recipe="anytime", budgets=(0.25, 0.5), focus=1.0, exits="reached_except_largest",
                                 aux_weight=0.3, sandwich=False, include_largest=True, include_smallest=False)
    named = tips.TIPSCallback(recipe="menu", budgets=(0.25, 0.5))
    assert named.recipe_values == explicit.recipe_values
    assert named.sampler_options == explicit.sampler_options


def test_the_default_recipe_is_the_menu_of_four_budgets():
    default = tips.TIPSCallback()
    assert default.recipe == "menu"
    assert default.recipe_values == tips.TIPSCallback(recipe="menu").recipe_values
    assert default.budgets == (0.1, 0.25, 0.5, 0.75) and default.sampler_options["include_smallest"] is False
    assert set(default.report_configs) == {"largest", "smallest"} and default._report_budgets


def test_a_configuration_named_budgets_in_a_dict_stays_a_configuration():
    callback = tips.TIPSCallback(report_configs={"budgets": "smallest"})
    assert callback.report_configs == {"budgets": "smallest"} and not callback._report_budgets
    assert tips.TIPSCallback(report_configs=("budgets",))._report_budgets


BUDGET_OPTIONS = dict(sampler="tips", p_min=0.1, p_max=0.9, budgets=(0.3, 0.6, 0.9))


@pytest.fixture(scope="module")
def budget_fit(blobs):
    """One 2-epoch fit with TIPS budget paths; the tests below only read its results."""
    supernet = compiled_supernet()
    callback = tips.TIPSCallback(**BUDGET_OPTIONS)
    supernet.fit(blobs[0][:64], blobs[1][:64], batch_size=32, epochs=2, callbacks=[callback], verbose=0)
    return supernet, callback


def test_budget_paths_importance_is_the_share_of_budgets_whose_best_path_uses_the_gate(budget_fit):
    supernet, callback = budget_fit
    full = tips.flops(supernet, "largest")
    paths = callback.important_paths
    assert set(paths) == {0.3, 0.6, 0.9}
    for budget, config in paths.items():
        assert config is not None and tips.flops(supernet, config) <= budget * full
    expected = np.mean([config.gates for config in paths.values()], axis=0)
    np.testing.assert_allclose(list(callback.importance.values()), expected)
    np.testing.assert_allclose(callback.sampler.gate_probs, 0.1 + 0.8 * expected)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(supernet.controller.gate_probs),
                               callback.sampler.gate_probs, atol=1e-6)
    assert [h["sampled"] for h in callback.history] == [8, 8]


def test_important_path_is_the_highest_tps_configuration_within_the_budget(supernet):
    topo = supernet.topology
    tas = np.random.default_rng(0).random(topo.num_nodes)
    vectors = supernet.config_space.all_vectors()
    flops = np.array([c for c, _ in tips.analytic_flops.cost_vectors(supernet, vectors)])
    tps = topo.node_masks(vectors) @ tas  # the sum of TAS over the configuration's nodes
    full = tips.flops(supernet, "largest")
    for budget, found in zip((0.2, 0.5, 0.8), importance_lib.important_paths(supernet, tas, (0.2, 0.5, 0.8))):
        fits = flops <= budget * full
        assert found[2] == pytest.approx(tps[fits].max())  # additive TPS: exact optimum
        assert found[3] <= budget * full


def test_signal_weights_the_dtmc_with_the_measured_path_losses(supernet, blobs, monkeypatch):
    x, y = blobs[0][:96], blobs[1][:96]
    callback = tips.TIPSCallback(sampler="tips", signal="loss", seed=3)
    seen = []
    original = importance_lib.dtmc_importance
    monkeypatch.setattr(importance_lib, "dtmc_importance",
                        lambda *args: seen.append(args[-1]) or original(*args))
    supernet.fit(x, y, batch_size=32, epochs=1, callbacks=[callback], verbose=0)
    losses = callback._record.values()
    assert losses.shape == (12,) and np.all(np.isfinite(losses)) and np.all(losses > 0)
    np.testing.assert_allclose(losses[-4:], callback.step.path_signals()[:, 0])
    vectors = callback._record.vectors()
    np.testing.assert_allclose(seen[0], tips.signals.exit_normalized_weights(vectors, losses))
    assert not np.allclose(seen[0], 1.0)


def test_marginal_importance_comes_from_the_recorded_losses(supernet, blobs):
    callback = tips.TIPSCallback(sampler="tips", importance="marginal", seed=3)
    assert callback.signal == "loss"
    supernet.fit(blobs[0][:96], blobs[1][:96], batch_size=32, epochs=1, callbacks=[callback], verbose=0)
    vectors, losses = callback._record.vectors(), callback._record.values()
    expected = tips.signals.marginal_importance(vectors, losses, supernet.config_space.gate_min_exit, "loss")
    np.testing.assert_allclose(list(callback.importance.values()), expected)
    np.testing.assert_allclose(callback.sampler.gate_probs, 0.35 + 0.3 * expected)
    with pytest.raises(ValueError, match="`importance`.*Received: importance='tas'"):
        tips.TIPSCallback(importance="tas")


# The fresh model's optimizer is not built, so Keras skips the saved optimizer state (and says so):
# only the controller's variables matter here.
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_sampler_state_is_restored_from_the_weights(tmp_path, budget_fit):
    supernet, first = budget_fit
    path = tmp_path / "w.weights.h5"
    supernet.save_weights(path)
    fresh = tiny_supernet()
    fresh.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    fresh.load_weights(path)
    second = tips.TIPSCallback(**BUDGET_OPTIONS)
    second.set_model(fresh)
    second.on_train_begin()
    np.testing.assert_allclose(second.sampler.gate_probs, first.sampler.gate_probs, atol=1e-6)
    assert second.importance == pytest.approx(first.importance)
    np.testing.assert_array_equal(second.step_paths(3, 5), first.step_paths(3, 5))  # same draws


def _trained(callback, blobs):
    keras.utils.set_random_seed(0)
    model = tiny_supernet()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(blobs[0], blobs[1], batch_size=32, epochs=5, callbacks=[callback], verbose=0)
    return model


def _accuracy(model, config, blobs):
    with recalibrated(model, config, blobs[0]):
        return model.evaluate(blobs[2], blobs[3], verbose=0)[1]


def test_anytime_recipe_trains_both_exits(blobs):
    model = _trained(tips.TIPSCallback(recipe="anytime"), blobs)
    for config, floor in (("largest", 0.85), ((0, [1, 1, 0, 0]), 0.6), ("smallest", 0.4)):  # chance 0.25
        accuracy = _accuracy(model, config, blobs)
        assert accuracy > floor, (config, accuracy)


def test_default_recipe_trains_the_largest_and_each_budgets_important_path(blobs):
    callback = tips.TIPSCallback()
    model = _trained(callback, blobs)
    assert _accuracy(model, "largest", blobs) > 0.85
    assert sorted(callback.important_paths) == [0.1, 0.25, 0.5, 0.75]
    for budget, config in callback.important_paths.items():  # the menu
        assert tips.flops(model, config) <= budget * tips.flops(model, "largest")
        accuracy = _accuracy(model, config, blobs)
        assert accuracy > 0.5, (budget, config, accuracy)  # chance 0.25 (measured: 0.56 to 0.59)


def test_explicit_recalibration_data_recalibrates_before_validation(supernet, blobs):
    x, y, xv, yv = blobs
    callback = tips.TIPSCallback(sampler="uniform", recalibration_data=x[:64], report_configs=())
    supernet.fit(x[:64], y[:64], batch_size=32, epochs=1, validation_data=(xv[:32], yv[:32]),
                 callbacks=[callback], verbose=0)
    stem = supernet.get_layer("stem_bn")
    features = keras.Model(supernet.inputs[0], supernet.get_layer("stem_conv").output)
    expected = features(x[:64]).numpy().mean(axis=(0, 1, 2))  # one batch of 64: its exact mean
    np.testing.assert_allclose(stem.moving_mean.numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def reported_fit(blobs, tmp_path_factory):
    """2 epochs with two reported configurations, a CSVLogger and ``validation_split`` (so the
    calibration sample is drawn from ``fit``'s own data); the tests below only read it."""
    x, y, _, _ = blobs
    supernet = compiled_supernet()
    log = tmp_path_factory.mktemp("csv") / "log.csv"
    callback = tips.TIPSCallback(calibration_size=50,
                                 report_configs={"tiny": "smallest", "mid": (0, [1, 1, 0, 0])})
    history = supernet.fit(x[:100], y[:100], batch_size=32, epochs=2, validation_split=0.2,
                           callbacks=[keras.callbacks.CSVLogger(str(log)), callback], verbose=0)
    return supernet, history, log


def test_auto_calibration_sample_comes_from_fit_and_stays_on_the_model(reported_fit, blobs):
    supernet, x = reported_fit[0], blobs[0]
    sample = tips.training.calibration.calibration_data(supernet)
    assert sample.shape == (50, 12, 12, 1)
    rows = {tuple(r.ravel()[:5]) for r in x[:80]}  # the training part only (Keras validates on the last 20)
    assert all(tuple(r.ravel()[:5]) in rows for r in sample)


def test_deployed_accuracies_reach_history_and_csv_logger(reported_fit, blobs):
    supernet, history, log = reported_fit
    xv, yv = blobs[0][80:100], blobs[1][80:100]  # what validation_split=0.2 held out
    with open(log) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    for key in ("val_tiny_accuracy", "val_mid_accuracy"):
        assert [float(r[key]) for r in rows] == pytest.approx(history.history[key])
    # The logged value is that configuration recalibrated on the calibration sample.
    with recalibrated(supernet, "smallest", tips.training.calibration.calibration_data(supernet)):
        accuracy = supernet.evaluate(xv, yv, verbose=0)[1]
    assert history.history["val_tiny_accuracy"][-1] == pytest.approx(accuracy, abs=1e-6)


@pytest.fixture(scope="module")
def ema_fit(blobs):
    """2 epochs of 4 steps with warm-up, ``final_weights="ema"``, fading auxiliary exits, the
    learning rate and the auxiliary exits' weight read before each step and the teacher's
    `copy_to` calls recorded; the tests below only read them."""
    supernet, seen, copied = compiled_supernet(), [], []
    callback = tips.TIPSCallback(warmup=0.25, final_weights="ema", aux_weight=(1.0, 0.2))

    class Probe(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):  # runs after TIPSCallback's
            seen.append((float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
                         float(callback.step.aux_weight.numpy())))

    original = tips.training.teacher.EMATeacher.copy_to
    supernet.optimizer.learning_rate = 0.01
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tips.training.teacher.EMATeacher, "copy_to",
                      lambda self, model: copied.append(self) or original(self, model))
        supernet.fit(blobs[0][:128], blobs[1][:128], batch_size=32, epochs=2, verbose=0,
                     callbacks=[Probe(), callback])
    return supernet, seen, copied


def test_aux_weight_fades_per_step(ema_fit):
    _, seen, _ = ema_fit
    expected = [aux_weight_at((1.0, 0.2), s / 7) for s in range(8)]
    np.testing.assert_allclose([w for _, w in seen], expected, rtol=1e-6)


def test_cosine_schedule_sets_the_learning_rate_per_step_and_restores_it(ema_fit):
    supernet, seen, _ = ema_fit
    expected = [0.01 * warmup_cosine(s, 8, 2) for s in range(8)]
    np.testing.assert_allclose([lr for lr, _ in seen], expected, rtol=1e-6)
    assert float(keras.ops.convert_to_numpy(supernet.optimizer.learning_rate)) == pytest.approx(0.01)


@pytest.fixture(scope="module")
def masked_fit(blobs):
    """A user's AdamW with a learning-rate schedule and weight decay; gate 3 is never drawn (no
    sandwich, no teacher). Returns the model, the schedule, and gate 3's / gate 2's branch
    weights before training; the tests below only read them."""
    keras.utils.set_random_seed(0)
    model = tiny_supernet()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 1, 0.5)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.1),
                  loss="sparse_categorical_crossentropy")
    never = tips.training.sampling.Sampler(model.config_space)  # gate 3 always off
    never.gate_probs = np.array([1.0, 1.0, 1.0, 0.0])
    branch, used = model.get_layer("stage1_block1").layer, model.get_layer("stage1_block0").layer
    before = [w.numpy().copy() for w in branch.trainable_weights]
    used_before = used.trainable_weights[0].numpy().copy()
    model.fit(blobs[0][:64], blobs[1][:64], batch_size=32, epochs=1, verbose=0,
              callbacks=[tips.TIPSCallback(sampler=lambda space: never, sandwich=False, distillation=0.0)])
    return model, schedule, before, used_before


def test_an_optimizer_schedule_of_the_user_is_kept(masked_fit):
    model, schedule, _, _ = masked_fit
    assert model.optimizer._learning_rate is schedule  # the callback's cosine schedule stands aside


def test_masked_updates_keep_the_weights_of_branches_no_path_used(masked_fit):
    model, _, before, used_before = masked_fit
    branch, used = model.get_layer("stage1_block1").layer, model.get_layer("stage1_block0").layer
    for w, b in zip(branch.trainable_weights, before):
        np.testing.assert_array_equal(w.numpy(), b)  # AdamW's decay alone would have shrunk them
    assert not np.array_equal(used.trainable_weights[0].numpy(), used_before)  # a used branch trained


def test_final_weights_ema_copies_the_teacher(ema_fit):
    supernet, _, copied = ema_fit
    assert len(copied) == 1
    for t, w in zip(copied[0].network.trainable_weights, supernet.trainable_weights):
        np.testing.assert_array_equal(t.numpy(), w.numpy())
    assert tips.training.teacher.TEACHER_ATTRIBUTE not in supernet.__dict__  # detached after fit


def test_nan_loss_stops_training_and_names_the_subnetwork(supernet, blobs):
    x = blobs[0][:64].copy()
    x[:] = np.nan
    callback = tips.TIPSCallback(sampler="uniform", recalibration_data=None)
    with pytest.warns(RuntimeWarning, match="Sub-network"):
        supernet.fit(x, blobs[1][:64], batch_size=32, epochs=3, callbacks=[callback], verbose=0)
    assert len(callback._record.steps) == 1 and callback.nan_config
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
        (dict(recipe="fast"), "`recipe`"),
        (dict(coupling=-1.0), "`coupling`"),
        (dict(score="max"), "`score`"),
        (dict(signal="accuracy"), "`signal`"),
        (dict(distillation=2.0), "`distillation`"),
        (dict(teacher="ema_largest"), "`teacher`"),
        (dict(exits="all"), "`exits`"),
        (dict(lr_schedule="step"), "`lr_schedule`"),
        (dict(warmup=1.5), "`warmup`"),
        (dict(masked_updates="yes"), "`masked_updates`"),
        (dict(ema_decay=1.0), "`ema_decay`"),
        (dict(final_weights="best"), "`final_weights`"),
        (dict(final_weights="ema", teacher="inplace"), "`final_weights`"),
        (dict(sandwich=True, paths_per_step=1), "`paths_per_step`"),
        (dict(budgets=[0.5, 1.5]), "`budgets`"),
        (dict(calibration_size=0), "`calibration_size`"),
        (dict(recipe="single_path", sampler="stochastic_depth", distillation=0.5), "`distillation`"),
        (dict(recipe="single_path", sampler="tips", distillation=0.5), "`distillation`"),
    ],
)
def test_bad_callback_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        tips.TIPSCallback(**kwargs)
    assert "Received" in str(info.value)
