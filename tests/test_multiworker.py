"""TIPS training under `tf.distribute.MultiWorkerMirroredStrategy`: two worker processes on
127.0.0.1, as the README's "Several machines" section runs it (same script everywhere, TF_CONFIG
differing only in the task index, `TIPSCallback` with the same seed, one `BackupAndRestore`
directory per worker).

Three runs of a worker pair (`WORKER`, each a fresh process per worker; gRPC on loopback):

* A, uninterrupted (2 epochs of 2 steps, the default recipe): both workers draw the same paths,
  step by step, and end with bit-identical trainable weights, controller and optimizer variables;
  BatchNorm moving statistics are each worker's own (not synchronised, as in any Keras
  data-parallel run) except where the final recalibration on the shared calibration sample set
  them, and a recalibrated extraction is bit-identical on both workers;
* B, the same run stopped at the start of epoch 1 (both workers raise, as a preempted job's
  processes die; the epoch-0 backups remain);
* C, both workers restarted from their backups: they run epoch 1 only, draw what A drew there,
  and each ends with exactly A's variables (all of them, BatchNorm statistics included).

Keras 3.15's ``fit`` fails under MultiWorkerMirroredStrategy for any model
(keras-team/keras#20585): `AnytimeModel.fit` applies
`tips_keras.supernet.distribute.fix_multi_worker_reduce` (a leaf-wise ``strategy.reduce``), which
this test exercises as the README's snippet runs it. Steps run eagerly: tracing the default recipe's step (4 paths
unrolled under several replicas, EMA teacher) takes 45 s per worker on 2 shared cores.

What Keras 3.15 guarantees and this relies on: ``BackupAndRestore`` saves model and optimizer
variables (the controller's sampler state among them) at every epoch end, per worker, restores
them in ``on_train_begin`` and restarts at the saved epoch (see tests/test_resume.py); the draws
depend only on (seed, epoch, batch) and that state.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py

ROOT = pathlib.Path(__file__).resolve().parents[1]
EPOCHS, CRASH_EPOCH, TIMEOUT = 2, 1, 240

WORKER = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
out, backup, crash_epoch, epochs = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
start = time.time()
import tensorflow as tf
import keras
import numpy as np
import tips_keras as tips
from tests.conftest import make_blobs, tiny_supernet

marks = [["imported", round(time.time() - start, 1)]]
strategy = tf.distribute.MultiWorkerMirroredStrategy()
marks.append(["strategy", round(time.time() - start, 1)])
task = strategy.cluster_resolver.task_id

class Recorder(tips.TIPSCallback):
    draws, steps = {}, []
    def on_train_batch_begin(self, batch, logs=None):
        self.steps.append([self._epoch, int(batch)])
        super().on_train_batch_begin(batch, logs)
    def on_epoch_end(self, epoch, logs=None):
        self.draws[epoch] = self._record.vectors().tolist()
        super().on_epoch_end(epoch, logs)

class Crash(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        marks.append([f"epoch{epoch}", round(time.time() - start, 1)])
        if epoch == crash_epoch:
            raise RuntimeError("simulated preemption")

x, y = make_blobs(64, seed=3)
keras.utils.set_random_seed(0)  # same seed on every worker
with strategy.scope():
    model = tiny_supernet()
    # Eager steps (see the module docstring); the synchronisation is the same.
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  run_eagerly=True)
callback = Recorder(sampler="tips", seed=11)  # the default recipe
report = {"task": task, "replicas": strategy.num_replicas_in_sync}
try:
    model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[callback, keras.callbacks.BackupAndRestore(backup), Crash()])
    report["finished"] = True
except RuntimeError as error:
    report["finished"] = False
    report["error"] = str(error)
marks.append(["fit_end", round(time.time() - start, 1)])
if report["finished"]:  # what a worker would deploy: recalibrated on the kept calibration sample
    sub = tips.extract(model, (0, [1, 0, 0, 0]))
    np.savez(out + ".sub.npz", *sub.get_weights())
state = [keras.ops.convert_to_numpy(v) for v in model.weights]
state += [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
report["names"] = [v.path for v in model.weights] + [v.path for v in model.optimizer.variables]
np.savez(out + ".npz", *state)
report.update(draws=Recorder.draws, steps=Recorder.steps, seconds=round(time.time() - start, 1), marks=marks,
              backup_left=os.path.isdir(backup) and bool(os.listdir(backup)))
with open(out, "w") as f:
    json.dump(report, f)
sys.stdout.flush()
os._exit(0)  # do not wait for the collective runtime's threads
"""


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_pair(tmp_path, name, crash_epoch):
    """Starts both workers of a fresh cluster; returns their reports and final states."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs = []
    for task in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": task}}))
        out = tmp_path / f"{name}_worker{task}.json"
        args = [sys.executable, "-c", WORKER, str(ROOT), str(out), str(tmp_path / f"backup{task}"),
                str(crash_epoch), str(EPOCHS)]
        procs.append((subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True), out))
    results = []
    try:
        for proc, out in procs:
            _, stderr = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0 and out.exists(), stderr[-3000:]
            state = np.load(f"{out}.npz")
            results.append((json.loads(out.read_text()), [state[k] for k in state.files]))
    finally:
        for proc, _ in procs:  # a worker left waiting for its peer
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def _differ(a, b, names):
    """Names of the variables that are not bit-identical (all of them if the lists differ)."""
    if len(a) != len(b):
        return list(names)
    return [n for n, u, v in zip(names, a, b) if not np.array_equal(u, v)]


def test_two_workers_draw_the_same_paths_end_equal_and_resume_from_backups(tmp_path):
    start = time.time()
    (a0, sa0), (a1, sa1) = _run_pair(tmp_path, "A", crash_epoch=-1)
    assert a0["replicas"] == a1["replicas"] == 2 and {a0["task"], a1["task"]} == {0, 1}
    assert a0["finished"] and a1["finished"]
    assert sorted(a0["draws"]) == [str(e) for e in range(EPOCHS)]
    assert np.asarray(a0["draws"]["0"]).shape == (2 * 4, 5)  # 2 steps x 4 paths per epoch
    assert a0["draws"] == a1["draws"]  # the same sub-networks on both workers, step by step
    # Bit-identical trainable weights, controller and optimizer variables. BatchNorm moving
    # statistics are each worker's own (Keras' BatchNormalization is not synchronised across
    # replicas): those of the layers the final recalibration (eval_config, the same calibration
    # sample on every worker) did not reach differ, and any recalibrated extraction is identical.
    differ = _differ(sa0, sa1, a0["names"])
    assert all(n.endswith(("/moving_mean", "/moving_variance")) for n in differ), differ
    assert all(n.startswith("exit0_layers/") for n in differ), differ  # eval_config takes exit 1
    sub0, sub1 = (np.load(tmp_path / f"A_worker{t}.json.sub.npz") for t in (0, 1))
    assert all(np.array_equal(sub0[k], sub1[k]) for k in sub0.files)

    (b0, _), (b1, _) = _run_pair(tmp_path, "B", crash_epoch=CRASH_EPOCH)
    assert not b0["finished"] and not b1["finished"] and "simulated preemption" in b0["error"]
    assert b0["backup_left"] and b1["backup_left"]
    assert b0["draws"] == {str(e): a0["draws"][str(e)] for e in range(CRASH_EPOCH)}

    (c0, sc0), (c1, sc1) = _run_pair(tmp_path, "C", crash_epoch=-1)
    assert c0["finished"] and c1["finished"]
    resumed = range(CRASH_EPOCH, EPOCHS)
    assert c0["steps"] == c1["steps"] == [[e, b] for e in resumed for b in (0, 1)]  # from the backup
    assert c0["draws"] == c1["draws"] == {str(e): a0["draws"][str(e)] for e in resumed}
    assert _differ(sc0, sa0, c0["names"]) == [] and _differ(sc1, sa1, c1["names"]) == []  # exactly A's
    assert not c0["backup_left"] and not c1["backup_left"]  # deleted after the completed run
    seconds = time.time() - start
    print(f"\nmulti-worker: runs A/B/C {a0['seconds']}/{b0['seconds']}/{c0['seconds']} s per "
          f"worker, {seconds:.0f} s in all; {len(sa0)} variables, {len(differ)} per-worker "
          "BatchNorm statistics")


def test_fix_multi_worker_reduce_leaves_other_strategies_and_refuses_non_strategies():
    import pytest
    import tensorflow as tf

    from tips_keras.supernet import distribute

    default = tf.distribute.get_strategy()
    reduce = default.reduce
    assert distribute.fix_multi_worker_reduce() is default and default.reduce == reduce
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert distribute.fix_multi_worker_reduce(mirrored) is mirrored
    assert not getattr(mirrored, distribute._FIXED, False)
    with pytest.raises(TypeError, match=r"Received: strategy='mwms' of type str"):
        distribute.fix_multi_worker_reduce("mwms")
