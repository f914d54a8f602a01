"""Per-path training signals under `tf.distribute.MirroredStrategy` (issue 16, kind 3).

`AnytimeStep.path_signals()` documents column 0 as the path's loss: the mean over the replicas,
not scaled for distribution. The old value was replica 0's loss divided by the replica count.
Two logical CPU devices must be configured before TensorFlow starts, so the check runs in a child
process (`WORKER`) that prints JSON.

What "the single-device path loss" means here: each replica normalises BatchNorm with its own
half of the batch (Keras' BatchNormalization is not synchronised across replicas), so the exact
single-device counterpart of a two-replica step is the mean of the single-device losses of the two
halves. That is compared to 1e-5; the full-batch single-device loss differs only by the BatchNorm
batch statistics (checked loosely).
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np
from tips_keras.training.step import AnytimeStep
from tests.conftest import make_blobs, tiny_supernet

x, y = make_blobs(32, seed=3)
keras.utils.set_random_seed(0)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

def build():
    model = tiny_supernet()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
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

report = {
    "replicas": strategy.num_replicas_in_sync,
    "distributed": signals(dist, x, y),
    "halves": [signals(single, x[:16], y[:16]), signals(single, x[16:], y[16:])],
    "full": signals(single, x, y),
}
print("REPORT" + json.dumps(report))
"""


def test_path_loss_under_mirrored_strategy_is_the_single_device_path_loss():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", WORKER, str(ROOT)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT")][-1]
    report = json.loads(line[len("REPORT"):])
    assert report["replicas"] == 2
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
