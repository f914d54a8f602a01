"""EpochRecord: the epoch's drawn paths and per-path signals, replayed draws included."""

import numpy as np
import pytest

from tips_keras.training.epoch_record import EpochRecord


def paths(*rows):
    return np.array(rows, dtype=np.float32)


def test_paths_and_signals_line_up_in_step_order():
    record = EpochRecord(with_signal=True)
    record.add(paths([1, 1, 1], [0, 0, 0]))
    record.add_signal([0.5, 2.0])
    record.add(paths([1, 0, 1], [0, 1, 1]))
    record.add_signal([1.0, 3.0])
    np.testing.assert_array_equal(record.vectors(), [[1, 1, 1], [0, 0, 0], [1, 0, 1], [0, 1, 1]])
    np.testing.assert_array_equal(record.values(), [0.5, 2.0, 1.0, 3.0])
    np.testing.assert_array_equal(record.last(), [[1, 0, 1], [0, 1, 1]])


def test_replayed_batches_are_the_draws_of_those_batches_without_a_signal():
    record = EpochRecord(with_signal=True)
    record.replay(lambda batch: paths([batch, 0, 1]), range(0, 6, 2))  # steps_per_execution 2
    record.add(paths([9, 9, 1]))
    record.add_signal([4.0])
    np.testing.assert_array_equal(record.vectors()[:, 0], [0, 2, 4, 9])
    values = record.values()
    assert np.isnan(values[:3]).all() and values[3] == 4.0


def test_without_a_signal_values_are_none_and_signals_are_ignored():
    record = EpochRecord(with_signal=False)
    record.add(paths([1, 1, 0]))
    record.add_signal([1.0])
    assert record.values() is None and record.vectors().shape == (1, 3)


def test_an_empty_epoch_has_no_vectors_and_no_last_step():
    record = EpochRecord(with_signal=True)
    assert record.vectors().shape == (0, 0) and record.values() is None
    with pytest.raises(IndexError):
        record.last()
