"""TIPS training under `tf.distribute.MirroredStrategy` on two logical CPU devices.

Logical devices must be configured before TensorFlow initialises, so the training runs in a child
process (`WORKER`), which reports what it saw as JSON. Checked:

* every replica's forward pass ran exactly the sub-networks the callback drew, step by step and
  path by path: a probe accumulates, per replica (an ON_READ variable has one local copy per
  replica), the control vector each forward pass of the multi-path step reads;
* after training, every replica holds the same controller variables (active configuration,
  sampling probabilities, importance, update count), the same step-paths variable and the same
  trainable weights (gradients all-reduced);
* the default recipe runs there (EMA teacher, masked updates), and validation with BatchNorm
  recalibration and the deployed report (compiled functions in cross-replica context) works;
* per-path training signals (issue 16): `AnytimeStep.path_signals()` column 0 is the path's loss,
  the mean over the replicas, not scaled for distribution (the old value was replica 0's loss
  divided by the replica count). Each replica normalises BatchNorm with its own half of the batch
  (Keras' BatchNormalization is not synchronised across replicas), so the exact single-device
  counterpart of a two-replica step is the mean of the single-device losses of the two halves:
  compared to 1e-5; the full-batch single-device loss differs only by the BatchNorm batch
  statistics (checked loosely).

One child process runs both (it starts TensorFlow once).

Accuracy against single-device training (3 seeds each): ``benchmarks/distribute_benchmark.py``.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py

ROOT = pathlib.Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np
import tips_keras as tips
from tips_keras.supernet.layers import SubnetController
from tips_keras.training.step import AnytimeStep
from tests.conftest import make_blobs, tiny_supernet

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    # Per replica: sum of the control vectors read by forward passes, and their number.
    seen = tf.Variable(tf.zeros((2, 5)), trainable=False,
                       synchronization=tf.VariableSynchronization.ON_READ,
                       aggregation=tf.VariableAggregation.SUM)
call = SubnetController.call

def probed_call(self, inputs):
    control = call(self, inputs)
    if not getattr(self, "probed", False):
        return control  # the EMA teacher's controller (a clone)
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return control  # calls outside the replicas (BatchNorm recalibration, deployed report)
    seen.assign_add(tf.reshape(tf.concat([control, tf.ones_like(control)], 0), (2, -1)))
    return control

SubnetController.call = probed_call

def replicas(variable):
    value = variable.value if isinstance(variable, keras.Variable) else variable
    return [np.asarray(v.numpy()).tolist() for v in getattr(value, "values", [value])]

class Recorder(tips.TIPSCallback):
    steps, after_step = [], []
    def on_train_batch_begin(self, batch, logs=None):
        super().on_train_batch_begin(batch, logs)
        self.steps.append(self._record.last().tolist())
        self.seen_before = np.array([v.numpy() for v in seen.values])
    def on_train_batch_end(self, batch, logs=None):
        # After the step: what each replica's forward passes read during the step, and the
        # per-replica copies of the step-paths variable and of the active configuration
        # (assigned inside the step, path after path).
        delta = np.array([v.numpy() for v in seen.values]) - self.seen_before
        self.after_step.append({"seen": delta.tolist(),
                                "paths": replicas(self.model.training_step.paths),
                                "active": replicas(self.model.controller.active)})
        super().on_train_batch_end(batch, logs)

x, y = make_blobs(64, seed=0)
xv, yv = make_blobs(32, seed=1)
keras.utils.set_random_seed(0)
with strategy.scope():
    model = tiny_supernet()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
model.controller.probed = True
# The default recipe: largest + smallest + 2 TIPS paths, every reached exit, EMA teacher, masked
# updates, cosine learning rate, recalibrated validation and the deployed report.
callback = Recorder(sampler="tips", seed=5)
history = model.fit(x, y, batch_size=32, epochs=2, validation_data=(xv, yv), callbacks=[callback],
                    verbose=0)

controller = model.controller
report = {
    "replicas": strategy.num_replicas_in_sync,
    "steps": Recorder.steps,
    "controller": {name: replicas(getattr(controller, name))
                   for name in ("active", "gate_probs", "exit_probs", "importance", "updates")},
    "gate_probs": callback.sampler.gate_probs.tolist(),
    "after_step": Recorder.after_step,
    "released": model.training_step is None,
    "weights_equal": all(
        all(np.array_equal(v.value.values[0].numpy(), c.numpy()) for c in v.value.values[1:])
        for v in model.trainable_weights),
    "num_weights_mirrored": sum(len(getattr(v.value, "values", ())) == 2 for v in model.trainable_weights),
    "num_weights": len(model.trainable_weights),
    "history": {k: [float(a) for a in v] for k, v in history.history.items()},
    "active_config": model.get_active_config().to_dict(),
}
print("REPORT" + json.dumps(report))

# -- per-path training signals: one step under the strategy, and on one device ------------
xs3, ys3 = make_blobs(32, seed=3)
keras.utils.set_random_seed(0)

def build():
    # One step each: eager (tracing a 3-path step four times costs more than running it). The
    # signal's reduction over the replicas is the same code in both modes.
    model = tiny_supernet()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy", run_eagerly=True)
    return model

with strategy.scope():
    dist = build()
single = build()
single.set_weights(dist.get_weights())
space = dist.config_space
paths = np.stack([space.largest().to_vector(), space.resolve((0, [1, 0, 0, 0])).to_vector(),
                  space.smallest().to_vector()])

def signals(model, xs, ys):
    step = AnytimeStep(model, paths_per_step=len(paths), record_signals=True)
    model.set_training_step(step)
    step.set_paths(paths)
    model.fit(xs, ys, batch_size=len(xs), epochs=1, shuffle=False, verbose=0)  # one step
    out = step.path_signals().tolist()
    model.set_training_step(None)
    return out

signals_report = {
    "distributed": signals(dist, xs3, ys3),
    "halves": [signals(single, xs3[:16], ys3[:16]), signals(single, xs3[16:], ys3[16:])],
    "full": signals(single, xs3, ys3),
}
print("SIGNALS" + json.dumps(signals_report))
"""


@pytest.fixture(scope="module")
def child():
    """Runs `WORKER` once; returns its two reports (training, per-path signals)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", WORKER, str(ROOT)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    return tuple(json.loads([ln for ln in lines if ln.startswith(tag)][-1][len(tag):])
                 for tag in ("REPORT", "SIGNALS"))


def test_mirrored_strategy_trains_the_same_subnetwork_on_every_replica(child):
    report = child[0]
    assert report["replicas"] == 2

    # 64 examples / global batch 32 = 2 steps per epoch, 2 epochs, 4 paths per step.
    steps = np.asarray(report["steps"])
    assert steps.shape == (4, 4, 5)
    for step, after in zip(steps, report["after_step"]):
        # Each replica's forward passes in the step read exactly the step's drawn paths.
        expected = [step.sum(axis=0).tolist(), [float(len(step))] * 5]
        assert after["seen"] == [expected, expected]

    for name, copies in report["controller"].items():
        assert len(copies) == 2 and copies[0] == copies[1], name
    np.testing.assert_allclose(report["controller"]["gate_probs"][0], report["gate_probs"], atol=1e-6)
    assert report["controller"]["updates"][0] == 2.0
    for step, after in zip(steps, report["after_step"]):
        assert after["paths"] == [step.tolist()] * 2  # both replicas got the step's paths
        assert after["active"] == [step[-1].tolist()] * 2  # and switched to the last one in-step
    assert report["released"]  # standard train_step again after fit
    assert report["weights_equal"]
    assert report["num_weights_mirrored"] == report["num_weights"]

    history = report["history"]
    assert all(np.isfinite(history["loss"])) and "val_accuracy" in history
    assert all(0.0 <= a <= 1.0 for a in history["val_largest_accuracy"] + history["val_smallest_accuracy"])
    assert any(key.startswith("importance/") for key in history)
    assert report["active_config"] == {"exit": 1, "gates": [1, 1, 1, 1]}  # eval_config


def test_path_loss_under_mirrored_strategy_is_the_single_device_path_loss(child):
    report = child[1]
    distributed = np.asarray(report["distributed"])
    halves = np.asarray(report["halves"])
    full = np.asarray(report["full"])
    assert distributed.shape == (3, 2)
    expected = halves[:, :, 0].mean(axis=0)  # mean over the two replicas' halves
    np.testing.assert_allclose(distributed[:, 0], expected, rtol=1e-5)
    # Not replica 0's loss divided by the number of replicas (the old value).
    assert not np.allclose(distributed[:, 0], halves[0, :, 0] / 2, rtol=0.05)
    np.testing.assert_allclose(distributed[:, 0], full[:, 0], rtol=0.2)  # BatchNorm statistics only
    assert np.all(np.isfinite(distributed[:, 1])) and np.all(distributed[:, 1] > 0)
