"""Resuming an interrupted TIPS training with `keras.callbacks.BackupAndRestore`.

What Keras 3.15 does (read from keras/src/callbacks/backup_and_restore.py and the TF trainer, and
checked here):

* a backup is ``model.save_weights`` (model *and* optimizer variables, so also the
  `SubnetController` variables holding the sampler state and the TIPS importance) plus
  ``{"epoch": ..., "batch": ...}``; restoring loads the weights in ``on_train_begin`` and sets
  ``model._initial_epoch``: training restarts at the saved epoch, at batch 0 (the saved batch is
  not used), and ``on_train_batch_begin`` receives 0, 1, ... again;
* so with ``save_freq="epoch"`` a resumed run is the uninterrupted run from the next epoch on
  (weights identical, checked bit for bit), and with ``save_freq=<int>`` the interrupted epoch is
  run again from its first batch on top of the mid-epoch weights (its draws are those of the
  uninterrupted run; the batches before the backup are trained twice).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest

import tips_keras as tips
from tests.conftest import make_blobs
from tests.conftest import tiny_supernet
from tips_keras.supernet.model import _runs_first_order

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py

ROOT = pathlib.Path(__file__).resolve().parents[1]
EPOCHS, BATCH, N = 3, 16, 48  # 3 steps per epoch
# Eager steps: half the time of tracing the multi-path step in every fit on 2 CPU cores. The resume
# logic (callbacks, BackupAndRestore, controller variables) is the same in graph mode.
RUN_EAGERLY = True
SAMPLER = dict(sampler="tips", seed=7, p_min=0.1, p_max=0.9, smoothing=0.5)


class RecordingTIPS(tips.TIPSCallback):
    """Keeps every epoch's draws and the (epoch, batch) indices Keras passed."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.draws, self.batches = {}, []

    def on_train_batch_begin(self, batch, logs=None):
        self.batches.append((self._epoch, int(batch)))
        super().on_train_batch_begin(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.draws[epoch] = self._record.vectors()
        super().on_epoch_end(epoch, logs)


class Crash(keras.callbacks.Callback):
    """Raises at the start of step (epoch, batch), like a preempted job."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self._epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self._epoch, batch) == self.at:
            raise RuntimeError("simulated crash")


def data():
    return make_blobs(N, seed=3)


def fresh_model(init_seed):
    keras.utils.set_random_seed(init_seed)
    model = tiny_supernet()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", run_eagerly=RUN_EAGERLY
    )
    return model


def fit(model, callbacks, epochs=EPOCHS):
    x, y = data()
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)


def state(model):
    """Model variables (controller included) and optimizer variables, by path."""
    out = {f"model/{v.path}": keras.ops.convert_to_numpy(v) for v in model.weights}
    out.update({f"optimizer/{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.optimizer.variables)})
    return out


def max_abs_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)), initial=0.0)) for k in a)


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted run."""
    model = fresh_model(0)
    callback = RecordingTIPS(**SAMPLER)
    fit(model, [callback])
    return dict(state=state(model), draws=callback.draws, history=callback.history)


def test_crash_and_backup_and_restore_continue_exactly(tmp_path, reference):
    backup_dir = str(tmp_path / "backup")

    def callbacks(tips_callback):
        # BackupAndRestore listed first: AnytimeModel.fit runs the TIPS callback first anyway, so
        # the epoch-end backup holds the epoch's update; BackupAndRestore's on_train_begin then
        # restores the backup after TIPSCallback.on_train_begin (the sampler reads it at step 1).
        return [keras.callbacks.BackupAndRestore(backup_dir), tips_callback]

    first = RecordingTIPS(**SAMPLER)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(fresh_model(0), callbacks(first) + [Crash(epoch=1, batch=2)])
    assert sorted(first.draws) == [0] and len(first._record.steps) == 3  # died in step (1, 2)
    # The backup holds the EMA teacher (saved through the model's untracked attribute).
    weights_files = [p for p in pathlib.Path(backup_dir).rglob("*.h5")]
    with h5py.File(weights_files[0]) as handle:
        assert any(name.startswith("_tips_teacher") for name in handle)

    # Restart in a "new process": a differently initialised model, a new callback.
    resumed_model = fresh_model(123)
    second = RecordingTIPS(**SAMPLER)
    fit(resumed_model, callbacks(second))

    # The epoch restarts at the last backup (end of epoch 0), at batch 0.
    assert second.batches == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    # Same sub-networks, same sampler state and importance as the uninterrupted run.
    np.testing.assert_array_equal(first.draws[0], reference["draws"][0])
    for epoch in (1, 2):
        np.testing.assert_array_equal(second.draws[epoch], reference["draws"][epoch])
    assert first.history + second.history == reference["history"]
    # Weights, optimizer (Adam moments, iteration count) and controller variables: identical.
    diff = max_abs_diff(state(resumed_model), reference["state"])
    print(f"\nresume (save_freq='epoch', crash at epoch 1 batch 2): max abs weight diff = {diff:.3g}")
    assert diff == 0.0
    assert not os.path.exists(backup_dir)  # deleted after the completed run


WORKER = r"""
import json, os, signal, sys
sys.path.insert(0, sys.argv[1])
import keras, numpy as np
from tests import test_resume as t

draws = {}
class Dump(t.RecordingTIPS):
    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        draws[epoch] = self.draws[epoch].tolist()
        with open(sys.argv[3], "w") as f:
            json.dump({"draws": draws, "history": self.history}, f)

class Kill(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == (1, 2):
            os.kill(os.getpid(), signal.SIGKILL)

backup = keras.callbacks.BackupAndRestore(sys.argv[2], save_freq=2)
t.fit(t.fresh_model(0), [Dump(**t.SAMPLER), backup, Kill()])
"""


def test_sigkill_mid_epoch_backup_restarts_the_epoch_with_the_same_draws(tmp_path, reference):
    """SIGKILL in a child process; backups every 2 batches (the last one mid-epoch 1)."""
    backup_dir, log = tmp_path / "backup", tmp_path / "log.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(ROOT), str(backup_dir), str(log)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    meta = json.loads((backup_dir / "training_metadata.json").read_text())
    assert meta == {"epoch": 1, "batch": 0}  # saved after step (1, 0), epoch 1 not finished
    killed = json.loads(log.read_text())
    np.testing.assert_array_equal(killed["draws"]["0"], reference["draws"][0])

    model = fresh_model(123)
    tips_callback = RecordingTIPS(**SAMPLER)
    fit(model, [tips_callback, keras.callbacks.BackupAndRestore(str(backup_dir), save_freq=2)])
    # Keras 3.15 restarts the saved epoch at batch 0 (it does not skip the steps already done)...
    assert tips_callback.batches[0] == (1, 0) and len(tips_callback.batches) == 6
    # ...the sampler state came back from the mid-epoch backup (the epoch's starting state),
    # so the epoch's draws, and everything after, equal the uninterrupted run's.
    for epoch in (1, 2):
        np.testing.assert_array_equal(tips_callback.draws[epoch], reference["draws"][epoch])
    assert killed["history"] + tips_callback.history == reference["history"]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.controller.gate_probs),
        reference["state"]["model/" + model.controller.gate_probs.path],
    )
    # The weights are not the uninterrupted run's: step (1, 0) was trained twice.
    ours, theirs = state(model), reference["state"]
    assert int(model.optimizer.iterations) == EPOCHS * 3 + 1
    diff = max_abs_diff(*({k: v for k, v in s.items() if k.startswith("model/")} for s in (ours, theirs)))
    print(f"\nresume (save_freq=2, SIGKILL at epoch 1 batch 2): max abs weight diff = {diff:.3g} "
          "(Keras re-runs the steps of the interrupted epoch done before the backup)")
    assert diff > 0.0


def test_resume_at_a_batch_offset_replays_the_skipped_draws(supernet):
    """If a trainer resumes inside an epoch (first batch index > 0), the epoch's DTMC still sees
    the draws of the batches before it."""
    complete = tips.TIPSCallback(**SAMPLER)
    complete.set_model(supernet)
    complete.on_train_begin()
    complete.on_epoch_begin(2)
    for batch in range(5):
        complete.on_train_batch_begin(batch)

    resumed = tips.TIPSCallback(**SAMPLER)
    resumed.set_model(supernet)
    resumed.on_train_begin()
    resumed.on_epoch_begin(2)
    resumed.on_train_batch_begin(3)
    resumed.on_train_batch_begin(4)
    assert len(resumed._record.steps) == 5
    for ours, theirs in zip(resumed._record.steps, complete._record.steps):
        np.testing.assert_array_equal(ours, theirs)
    importance, _ = resumed.compute_importance(resumed._record.vectors())
    expected, _ = complete.compute_importance(complete._record.vectors())
    np.testing.assert_array_equal(importance, expected)


def test_sampler_state_is_read_from_the_controller_at_the_first_step(supernet):
    """Weights restored after the callback's on_train_begin (BackupAndRestore placed after it)
    still set the sampler state."""
    callback = tips.TIPSCallback(**SAMPLER)
    callback.set_model(supernet)
    callback.on_train_begin()  # fresh controller: initial state
    np.testing.assert_allclose(callback.sampler.gate_probs, 0.5)
    controller = supernet.controller
    controller.gate_probs.assign(np.array([0.9, 0.1, 0.3, 0.7], np.float32))  # "restored"
    controller.importance.assign(np.array([1.0, 0.0, 0.25, 0.75], np.float32))
    controller.updates.assign(4.0)
    callback.on_epoch_begin(4)
    callback.on_train_batch_begin(0)
    np.testing.assert_array_equal(callback.sampler.gate_probs, np.float32([0.9, 0.1, 0.3, 0.7]))
    assert list(callback.importance.values()) == [1.0, 0.0, 0.25, 0.75]


def test_fit_moves_runs_first_order():
    a, b = keras.callbacks.History(), keras.callbacks.BackupAndRestore("/tmp/unused")
    t1, t2 = tips.TIPSCallback(), tips.TIPSCallback(sampler="uniform")
    assert _runs_first_order([a, t1, b, t2]) == [t1, t2, a, b]
    assert _runs_first_order((b, t1)) == [t1, b]
    assert _runs_first_order(None) is None
    callback_list = keras.callbacks.CallbackList([a])
    assert _runs_first_order(callback_list) is callback_list
