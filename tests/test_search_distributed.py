"""keras-tuner's chief/worker mode with the configuration oracle: one chief, two workers.

Three subprocesses run the same script with KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP /
KERASTUNER_ORACLE_PORT set (127.0.0.1, a free port); each loads the supernet from a .keras file.
The chief serves the oracle, the workers evaluate. Every trial must be recorded by the chief
exactly once and evaluated by exactly one worker.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_blobs, tiny_supernet

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py

MAX_TRIALS = 8
TIMEOUT = 150  # seconds for the whole run (three TensorFlow imports on 2 shared cores)

SCRIPT = r'''
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
import keras
import tips_keras  # registers the gated layers
from tips_keras.search import ExitSearch

model_path, data_path, directory, sync, out_path, max_trials = sys.argv[1:7]
me = os.environ["KERASTUNER_TUNER_ID"]

def wait_for(names):
    deadline = time.time() + 120
    while not all(os.path.exists(os.path.join(sync, n + ".ready")) for n in names):
        if time.time() > deadline:
            sys.exit(f"{me}: timed out waiting for {names}")
        time.sleep(0.1)

if me != "chief":
    wait_for(["chief"])  # the chief has (re)created the project directory
model = keras.models.load_model(model_path, compile=False)
data = np.load(data_path)
search = ExitSearch(model, (data["x"], data["y"]), budgets=[0.5, 1.0], max_trials=int(max_trials),
                    directory=directory, project_name="distributed", overwrite=True, progress=False)
open(os.path.join(sync, me + ".ready"), "w").close()
if me != "chief":
    wait_for(["worker0", "worker1"])  # both workers start searching together
front = search.run()
report = {"me": me, "evaluated": [r[0] for r in search.tuner.results], "front_points": len(front.points)}
if me == "chief":
    report["trials"] = {t.trial_id: t.status for t in search.oracle.trials.values()}
    report["configs"] = [sorted(t.hyperparameters.values.items()) for t in search.oracle.trials.values()]
with open(out_path, "w") as f:
    json.dump(report, f)
'''


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chief_and_two_workers_record_every_trial_once(tmp_path):
    model_path = tmp_path / "supernet.keras"
    tiny_supernet().save(model_path)
    x, y = make_blobs(96, seed=5)
    np.savez(tmp_path / "val.npz", x=x, y=y)
    (tmp_path / "sync").mkdir()
    script = tmp_path / "search_process.py"
    script.write_text(SCRIPT)
    root = str(Path(__file__).resolve().parents[1])
    port = str(free_port())
    processes = {}
    try:
        for me in ("chief", "worker0", "worker1"):
            env = dict(os.environ, KERASTUNER_TUNER_ID=me, KERASTUNER_ORACLE_IP="127.0.0.1",
                       KERASTUNER_ORACLE_PORT=port, PYTHONPATH=root, CUDA_VISIBLE_DEVICES="")
            args = [sys.executable, str(script), str(model_path), str(tmp_path / "val.npz"),
                    str(tmp_path / "runs"), str(tmp_path / "sync"), str(tmp_path / f"{me}.json"), str(MAX_TRIALS)]
            processes[me] = subprocess.Popen(args, env=env, cwd=root, stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + TIMEOUT
        outputs = {}
        for me, process in processes.items():
            try:
                outputs[me] = process.communicate(timeout=max(1.0, deadline - time.time()))[0]
            except subprocess.TimeoutExpired:
                pytest.fail(f"{me} did not finish within {TIMEOUT} s")
            assert process.returncode == 0, f"{me} failed:\n{outputs[me][-3000:]}"
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    reports = {me: json.loads((tmp_path / f"{me}.json").read_text()) for me in processes}
    chief = reports["chief"]
    assert len(chief["trials"]) == MAX_TRIALS
    assert set(chief["trials"].values()) == {"COMPLETED"}
    assert chief["front_points"] == MAX_TRIALS and chief["evaluated"] == []
    evaluated = reports["worker0"]["evaluated"] + reports["worker1"]["evaluated"]
    assert sorted(evaluated) == sorted(chief["trials"])  # each trial evaluated exactly once
    assert len(set(map(str, chief["configs"]))) == MAX_TRIALS  # and no configuration twice
    assert reports["worker0"]["evaluated"] and reports["worker1"]["evaluated"], reports
    saved = sorted(p.parent.name for p in (tmp_path / "runs" / "distributed").glob("trial_*/trial.json"))
    assert len(saved) == MAX_TRIALS
