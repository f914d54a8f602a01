"""What TIPSCallback takes from fit's arguments, and the deployed accuracy it reports."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tips_keras.training.batchnorm import batchnorm_layers, recalibrated
import tips_keras as tips
from tips_keras.training.validation import (DeployedValidation, budget_configs, budget_name, calibration_sample,
                                          check_arguments, prepare, validation_sample)


def test_calibration_sample_of_an_array_is_a_seeded_subset_of_the_training_part():
    x = np.arange(100, dtype="float32").reshape(100, 1)
    sample = calibration_sample({"x": x, "validation_split": 0.2}, 30, seed=1)
    assert sample.shape == (30, 1) and sample.max() < 80 and len(np.unique(sample)) == 30
    np.testing.assert_array_equal(sample, calibration_sample({"x": x, "validation_split": 0.2}, 30, seed=1))
    assert calibration_sample({"x": x}, 500).shape == (100, 1)  # all of a small set


def test_calibration_sample_of_datasets_takes_the_first_batches():
    x = np.arange(40, dtype="float32").reshape(40, 1)
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(40))).batch(16)
    np.testing.assert_array_equal(calibration_sample({"x": ds}, 20), x[:20])

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return x[i * 10:(i + 1) * 10], np.zeros(10)

    np.testing.assert_array_equal(calibration_sample({"x": Batches()}, 15), x[:15])
    assert calibration_sample({"x": None}, 5) is None
    assert calibration_sample({"x": iter([1, 2])}, 5) is None  # a generator: nothing to take


def test_validation_sample_from_data_split_or_dataset():
    x, y = np.arange(50.0)[:, None], np.arange(50)
    xv, yv = validation_sample({"validation_data": (x, y)}, 10)
    assert xv.shape == (10, 1) and yv.tolist() == list(range(10))
    xs, ys = validation_sample({"x": x, "y": y, "validation_split": 0.2}, None)
    assert ys.tolist() == list(range(40, 50))  # Keras holds out the last examples
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    xd, yd = validation_sample({"validation_data": ds}, 12)
    assert yd.tolist() == list(range(12))
    assert validation_sample({"x": x, "y": y}, 10) is None
    assert validation_sample({"validation_data": (x,)}, 10) is None


def test_deployed_validation_is_each_configuration_recalibrated(supernet, blobs):
    x, y, xv, yv = blobs
    report = DeployedValidation(supernet, {"largest": "largest", "tiny": "smallest"}, (xv, yv), x[:64])
    supernet.set_config((0, [1, 0, 0, 0]))
    results = report.evaluate()
    assert supernet.get_active_config().gates == (1, 0, 0, 0)  # the active configuration is kept
    assert set(results) == {"largest_accuracy", "tiny_accuracy"}
    for name, config in (("largest", "largest"), ("tiny", "smallest")):
        with recalibrated(supernet, config, x[:64]):
            expected = supernet.evaluate(xv, yv, verbose=0)[1]
        assert results[f"{name}_accuracy"] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="config"):
        DeployedValidation(supernet, {"bad": (5, [1])}, (xv, yv))


def _statistics(model):
    return [v.numpy().copy() for bn in batchnorm_layers(model) for v in (bn.moving_mean, bn.moving_variance)]


def test_validation_pass_and_report_share_one_recalibration_trace_and_restore_the_statistics(supernet, blobs):
    x, y, xv, yv = blobs
    arguments = {"x": x, "y": y, "validation_data": (xv[:64], yv[:64])}
    configs = {"largest": "largest", "tiny": "smallest"}
    validation = prepare(supernet, arguments, "auto", 200, configs, None)
    recal = validation.recalibrator
    assert validation.report.evaluator.recalibrator is recal  # one compiled calibration pass
    shared = _statistics(supernet)
    for _ in range(2):  # two epochs' validation
        validation.begin()
        logs = validation.end()
    assert recal.trace_count == 1
    for before, after in zip(shared, _statistics(supernet)):
        np.testing.assert_array_equal(after, before)  # the shared statistics are back
    sample = tips.training.calibration.calibration_data(supernet)
    for name, config in configs.items():  # each configuration recalibrated on the sample
        with recalibrated(supernet, config, sample):
            expected = supernet.evaluate(xv[:64], yv[:64], verbose=0)[1]
        assert logs[f"val_{name}_accuracy"] == pytest.approx(expected, abs=1e-6)
    # A later fit's validation pass on the same sample reuses the compiled pass.
    assert prepare(supernet, arguments, "auto", 200, configs, None).recalibrator is recal
    assert recal.trace_count == 1


def test_budget_report_names_each_budgets_important_path(supernet):
    assert budget_name(0.25) == "budget25" and budget_name(0.125) == "budget12.5" and budget_name(1.0) == "budget100"
    full = tips.flops(supernet, "largest")
    smallest = tips.flops(supernet, "smallest") / full
    # Before any importance: the configuration with the most nodes within each budget.
    found = budget_configs(supernet, (0.6, 1.0, smallest / 2))
    assert set(found) == {"budget60", "budget100"}  # nothing fits half the smallest: not reported
    assert found["budget100"] == supernet.config_space.largest()
    assert tips.flops(supernet, found["budget60"]) <= 0.6 * full
    # The callback's important paths win where it has them.
    given = supernet.config_space.smallest()
    assert budget_configs(supernet, (0.6, 1.0), {0.6: given, 1.0: None})["budget60"] == given


def test_check_arguments_defaults_the_report_and_splits_off_the_budgets_entry():
    assert check_arguments(None, "auto", 8, None)[:2] == ({"largest": "largest", "smallest": "smallest"}, False)
    assert check_arguments(None, "auto", 8, None, menu=True)[:2] == ({"largest": "largest", "smallest": "smallest"},
                                                                     True)
    assert check_arguments(("budgets",), "auto", 8, None)[:2] == ({}, True)
    # a configuration the user named "budgets" stays a configuration
    assert check_arguments({"budgets": "smallest"}, "auto", 8, None)[:2] == ({"budgets": "smallest"}, False)
    with pytest.raises(ValueError, match="Received: recalibration_data='all'"):
        check_arguments((), "all", 8, None)
    with pytest.raises(ValueError, match="Received: validation_size=0"):
        check_arguments((), "auto", 8, 0)
