"""The sampler comparison benchmark runs end to end in --quick mode and writes its report."""

import importlib
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "compare_samplers.py")

# Runs the script as `python SCRIPT ARGS...` would, without Grappler unless TIPS_TEST_GRAPPLER=1
# (as every test process: see tests/conftest.py; the notebooks keep TensorFlow's default).
RUNNER = """
import os, runpy, sys
sys.path.insert(0, os.getcwd())  # the repository root (cwd=ROOT)
from tests.conftest import disable_grappler_unless_asked
disable_grappler_unless_asked()
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _benchmark(name):
    """Imports benchmarks/``name``.py (the folder is not a package: it is on sys.path meanwhile)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare_quick")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", RUNNER, SCRIPT, "--quick", "--out", str(out)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out, result.stdout


def test_quick_run_writes_report_and_figures(quick_run):
    out, _ = quick_run
    for name in ("RESULTS.md", "results.json", "pareto.png", "convergence.png", "importance.png"):
        assert (out / name).stat().st_size > 0, name
    assert not [p for p in os.listdir(out) if p.endswith(".tmp") or p.startswith(".")]  # atomic writes
    text = (out / "RESULTS.md").read_text()
    assert "compare_samplers.py --quick" in text.split("## Setup")[0]  # command at the top
    assert "QUICK / SMOKE RUN" in text
    assert "| sampler | paths/step | 10% | 25% | 50% | 75% | 100% | mean |" in text
    assert ("| sampler | mean acc (fixed set) | front mean acc | front AUC | epochs to target "
            "| s/epoch | total train s | metric at uniform's wall time |") in text
    # The quick supernet's smallest configuration is above 10 % of its FLOPs: no 10 % budget.
    assert "| sampler (searched front) | ≤25% | ≤50% | ≤75% | ≤100% | mean | AUC |" in text
    for row in ("| tips | 4 |", "| uniform | 4 |", "| single_path | 1 |", "| trained alone | 1 |"):
        assert row in text, row
    # The gap tables: supernet minus the same network trained alone, fixed set and searched menu.
    assert "## Supernet vs the same networks trained alone" in text
    assert text.count("| supernet | 25% | 50% | 100% | mean |") == 2


def test_quick_run_states_tips_vs_uniform(quick_run):
    out, stdout = quick_run
    line = [l for l in stdout.splitlines() if l.startswith("tips ") and "uniform" in l]
    assert line and ("BEATS" in line[0] or "does NOT beat" in line[0]) and "±" in line[0]
    assert "## TIPS vs uniform" in (out / "RESULTS.md").read_text()


def test_quick_run_json_is_complete(quick_run):
    out, _ = quick_run
    payload = json.loads((out / "results.json").read_text())
    assert payload["partial"] is False
    records = payload["records"]
    assert {r["name"] for r in records} == {"tips", "uniform", "single_path"}
    tips_run = next(r for r in records if r["name"] == "tips")
    epochs = payload["meta"]["sizes"]["epochs"]
    assert len(tips_run["epochs"]) == epochs and len(tips_run["tips_history"]) == epochs
    assert set(tips_run["tips_history"][0]) >= {"importance", "gate_probs"}
    assert [b["budget"] for b in tips_run["front"]] == [0.25, 0.5, 0.75, 1.0]  # 10 % < the smallest
    assert all(0 <= b["test_acc"] <= 1 for b in tips_run["front"])
    assert tips_run["paths_per_step"] == 4
    assert next(r for r in records if r["name"] == "single_path")["paths_per_step"] == 1
    # Networks trained alone: the fixed 25/50/100 % configurations, and menu picks, each with its seed.
    alone = payload["alone"]
    fixed_alone = {tuple(a["vector"]) for a in alone if a["why"].startswith("fixed")}
    assert fixed_alone == {tuple(payload["configs"][str(l)]["vector"]) for l in (0.25, 0.5, 1.0)}
    assert all(0 <= a["test_acc"] <= 1 and a["seed"] == 0 for a in alone)
    gaps = payload["summary"]["runs"]["tips"]["gap_fixed"]
    assert set(gaps) == {"0.25", "0.5", "1.0"} and all(len(v) == 1 for v in gaps.values())
    assert set(payload["summary"]["comparisons"]["tips"]) >= {"fixed_mean_per_seed", "front_mean"}


def test_config_selection_orders_levels_by_flops():
    import numpy as np

    import tips_keras as tips

    lib = _benchmark("_compare_lib")

    model = lib.build_model(lib.SETTINGS["standard-quick"])
    space = model.config_space
    configs = lib.select_configs(model)
    assert configs[1.0][2] == 1.0 and np.array_equal(configs[1.0][0], space.largest().to_vector())
    fractions = [configs[l][2] for l in lib.LEVELS]
    assert fractions == sorted(fractions)
    assert [configs[l][1] for l in lib.LEVELS] == [tips.flops(model, lib.as_config(configs[l][0]))
                                                   for l in lib.LEVELS]


def test_regenerating_results_keeps_the_hand_written_analysis_flagged(tmp_path):
    report = _benchmark("_compare_report")

    path = tmp_path / "RESULTS.md"
    assert report.keep_analysis(str(path), "tables") == "tables"  # no file yet
    path.write_text("old tables\n" + report.ANALYSIS_MARKER + "\n\nTIPS loses because ...\n")
    once = report.keep_analysis(str(path), "new tables")
    assert once.startswith("new tables\n" + report.ANALYSIS_MARKER)
    assert "written for an earlier run" in once and once.endswith("TIPS loses because ...\n")
    path.write_text(once)
    assert report.keep_analysis(str(path), "new tables") == once  # the warning is not repeated


def test_draw_rate_counts_only_the_gates_before_the_exit():
    report = _benchmark("_compare_report")

    probs, gate_min_exit = [0.8, 0.4, 0.9], [0, 0, 1]
    # Exit 0: gate 2 does not count; gate 0 on (0.8 / 0.5), gate 1 off (0.6 / 0.5).
    assert abs(report.draw_rate_vs_uniform(probs, [1, 0, 0, 0], gate_min_exit) - 1.92) < 1e-12
    assert abs(report.draw_rate_vs_uniform(probs, [1, 0, 1, 1], gate_min_exit) - 3.456) < 1e-12
    assert report.draw_rate_vs_uniform([0.5] * 3, [0, 1, 1, 1], gate_min_exit) == 1.0


def test_readme_results_are_copied_from_the_committed_benchmark():
    """The README's results table rows appear verbatim in benchmarks/RESULTS.md or, for the deep
    setting, benchmarks/deep/RESULTS.md (no figure typed by hand), and the plots it shows exist."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = [l for l in section.splitlines() if l.startswith("| ") and not l.startswith("|---")]
    assert len(rows) >= 5, "README ## Results has no table"
    results = ""
    for parts in (("RESULTS.md",), ("deep", "RESULTS.md")):
        path = os.path.join(ROOT, "benchmarks", *parts)
        if os.path.exists(path):
            results += open(path).read()
    missing = [r for r in rows if r not in results]
    assert not missing, f"README rows not in benchmarks/RESULTS.md or benchmarks/deep/RESULTS.md: {missing}"
    for image in ("benchmarks/pareto.png", "benchmarks/convergence.png"):
        assert image in section and os.path.getsize(os.path.join(ROOT, image)) > 0


def test_readme_search_speed_is_copied_from_the_committed_output():
    """The README's search-speed rows appear verbatim in benchmarks/speed_search.txt, whose
    command line is the one the README gives."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    block = readme.split("### Search speed", 1)[1].split("```", 2)[1]
    rows = [l for l in block.splitlines() if l.strip()]
    output = open(os.path.join(ROOT, "benchmarks", "speed_search.txt")).read()
    assert len(rows) >= 10 and all(r in output.splitlines() for r in rows)
    assert output.splitlines()[0] == "# speed benchmark: .venv/bin/python benchmarks/speed_benchmark.py --sections 2"


def test_readme_step_speed_is_copied_from_the_committed_output():
    """The README's training-step tables are copied verbatim from one run of section 1 in
    benchmarks/speed_step.txt (which holds this stop's runs, each under its command line)."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    block = readme.split("### Training step speed", 1)[1].split("```", 2)[1]
    rows = [l for l in block.splitlines() if l.strip() and not l.startswith("#")]
    lines = open(os.path.join(ROOT, "benchmarks", "speed_step.txt")).read().splitlines()
    commands = [l.split(": ", 1)[1] for l in lines if l.startswith("# speed benchmark: ")]
    assert commands and all(c.startswith(".venv/bin/python benchmarks/speed_benchmark.py --sections 1")
                            for c in commands)
    runs, run = [], None  # a run: a command without --threads and its one-thread subprocess's output
    for line in lines:
        if line.startswith("# speed benchmark: ") and "--threads" not in line:
            run = []
            runs.append(run)
        run.append(line)
    assert len(rows) >= 16 and any(all(r in run for r in rows) for run in runs)


def test_plain_teacher_work_is_the_ema_teachers_forward_and_update():
    """The baseline of speed_benchmark's "+T" rows does the EMA teacher's work on plain networks:
    a training-mode forward pass of the teacher's copy (its BatchNorm statistics move) and one
    step of `EMATeacher.update` towards the student's copy (first decay: min(0.997, 1 / 10))."""
    import keras
    import numpy as np

    speed = _benchmark("speed_benchmark")
    vector = speed.supernet((4, 8), 1).config_space.largest().to_vector()
    work = speed.PlainTeacherWork((4, 8), 1, vector)
    work.compile(optimizer="adam")
    for w in work.student.trainable_weights:
        w.assign(w + 1.0)
    teacher = [w.numpy().copy() for w in work.network.trainable_weights]
    student = [w.numpy().copy() for w in work.student.trainable_weights]
    bn = next(l for l in work.network.layers if isinstance(l, keras.layers.BatchNormalization))
    mean = bn.moving_mean.numpy().copy()
    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    work.fit(x, np.zeros(8, "int32"), batch_size=8, epochs=1, verbose=0)
    for w, t, s in zip(work.network.trainable_weights, teacher, student):
        np.testing.assert_allclose(w.numpy(), 0.1 * t + 0.9 * s, rtol=1e-5, atol=1e-6)
    for w, s in zip(work.student.trainable_weights, student):
        np.testing.assert_array_equal(w.numpy(), s)  # the student's own step is the plain step's
    assert float(work.num_updates.numpy()) == 1.0 and not np.allclose(bn.moving_mean.numpy(), mean)


def test_importance_probe_prints_its_table(capsys):
    importance_probe = _benchmark("importance_probe")
    importance_probe.main(steps=8, couplings=(1.0,))
    out = capsys.readouterr().out
    assert "T = 8 sampled sub-networks" in out
    row = [l for l in out.splitlines() if l.startswith("| 1.0 |")]
    assert len(row) == 1 and row[0].count("|") == 7


def test_demo_reference_trains_what_the_demo_exported():
    # The configurations trained alone are the demo's: the largest, and per exported budget the
    # front's best configuration within it (as `tips_keras.demo.search_and_export` picks it).
    from tips_keras.search import ParetoFront
    from tips_keras.search.front import ParetoPoint

    demo_reference = _benchmark("demo_reference")
    import tips_keras as tips

    space = tips.zoo.anytime_resnet((12, 12, 1), 4, widths=(4, 8), blocks_per_stage=2).config_space
    small, middle = tips.Configuration(0, (1, 0, 0, 0)), tips.Configuration(1, (1, 0, 1, 0))
    def point(config, flops, accuracy):
        return ParetoPoint(config.exit, dict(zip(space.gate_names, config.gates)), flops, 10, accuracy)

    points = [point(small, 100, 0.7), point(middle, 300, 0.8), point(tips.Configuration(1, (0, 0, 1, 0)), 250, 0.6)]
    front = ParetoFront(points, 1000, [0.25, 0.5])
    summary = {"rows": [{"name": "largest", "accuracy_recalibrated": 0.88}],
               "exports": [{"budget": 0.25, "accuracy": 0.77}, {"budget": 0.5, "accuracy": 0.79}]}
    rows = demo_reference.reference_rows(summary, front, space)
    assert [(name, config, acc) for name, config, acc, _ in rows] == [
        ("largest", space.largest(), 0.88), ("25% budget", small, 0.77), ("50% budget", middle, 0.79)]


def _epoch_log(name, log, fail_at=None):
    """A callback that records which fit ran which epoch, in the order they ran."""
    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == fail_at:
                raise ValueError(f"{name} fails at epoch {epoch}")
            log.append((name, epoch, "begin"))

        def on_epoch_end(self, epoch, logs=None):
            log.append((name, epoch, "end"))

    return EpochLog()


def _tiny_dense(seed):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model


def test_interleaved_epochs_run_one_epoch_at_a_time_in_alternating_order():
    import numpy as np

    interleave = _benchmark("_interleave")
    x, y = np.random.default_rng(0).normal(size=(32, 4)).astype("float32"), np.arange(32) % 3
    log = []
    fits = {name: (_tiny_dense(i), [_epoch_log(name, log)]) for i, name in enumerate("abc")}
    times = interleave.interleaved_epochs(fits, x, y, epochs=4, batch_size=8)
    # whole epochs, never overlapping; round order a b c, then c b a, ...
    assert log[0::2] == [(n, e, "begin") for e, order in enumerate(["abc", "cba", "abc", "cba"]) for n in order]
    assert all(end == (begin[0], begin[1], "end") for begin, end in zip(log[0::2], log[1::2]))
    assert set(times) == set("abc") and all(len(rows) == 3 for rows in times.values())  # epoch 1 left out
    assert all(wall > 0 and cpu >= 0 for rows in times.values() for wall, cpu in rows)
    ratios = interleave.paired_ratios(times, "b", ["a", "c"], column=0)
    assert ratios.shape == (3,)
    assert ratios[0] == times["b"][0][0] / (times["a"][0][0] + times["c"][0][0])
    median, low, high = interleave.median_ci([1.0, 1.1, 0.9, 1.05, 0.95, 1.2])
    assert median == pytest.approx(1.025) and low <= median <= high


def _raises_without_hanging(call, timeout=120):
    """Runs ``call`` in a daemon thread; returns the exception it raised (fails on a hang)."""
    import threading

    outcome = {}

    def run():
        try:
            call()
        except BaseException as error:  # noqa: BLE001
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s: the interleaved fits hang"
    return outcome.get("error")


@pytest.mark.parametrize("how", ["raises", "stops early"])
def test_interleaved_epochs_hand_a_failure_to_the_caller_without_hanging(how):
    import keras
    import numpy as np

    interleave = _benchmark("_interleave")
    x, y = np.zeros((16, 4), "float32"), np.zeros(16, int)
    if how == "raises":
        bad = _epoch_log("bad", [], fail_at=1)
    else:  # stop_training, as TIPSCallback does at a NaN loss
        bad = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: setattr(
            fits["bad"][0], "stop_training", epoch == 1))
    fits = {"ok": (_tiny_dense(0), []), "bad": (_tiny_dense(1), [bad]), "ok too": (_tiny_dense(2), [])}
    error = _raises_without_hanging(lambda: interleave.interleaved_epochs(fits, x, y, epochs=4, batch_size=8))
    assert isinstance(error, RuntimeError) and str(error).startswith("interleaved fit 'bad' failed: ")
    if how == "raises":
        assert isinstance(error.__cause__, ValueError) and "bad fails at epoch 1" in str(error)
    else:
        assert "bad stopped after 2 of 4 epochs" in str(error)


def test_suite_time_counts_each_tests_own_and_child_process_cpu(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "import subprocess, sys\n"
        "def test_child():\n"
        "    subprocess.run([sys.executable, '-c', 'sum(range(3 * 10**7))'], check=True)\n"
        "def test_self():\n"
        "    sum(range(3 * 10**7))\n")
    out = tmp_path / "records"
    out.mkdir()
    env = dict(os.environ, TIPS_SUITE_TIME_DIR=str(out), PYTHONPATH=os.path.join(ROOT, "benchmarks"))
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "_suite_time_plugin",
                    "test_x.py"], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    suite_time = _benchmark("suite_time")
    records = suite_time.read_records(out)
    (process,) = records.values()
    by_test = {r["id"].split("::")[1]: r for r in process}
    assert set(by_test) == {"test_child", "test_self"}
    assert by_test["test_child"]["child"] > 0.2 > by_test["test_child"]["cpu"]  # the work was the child's
    assert by_test["test_self"]["cpu"] > 0.2 and by_test["test_self"]["child"] == 0.0
    (row,) = suite_time.file_table(records)
    assert row[:2] == ("test_x.py", 2) and row[3] == pytest.approx(by_test["test_child"]["child"])
    report = suite_time.format_report(10.0, 15.0, records)
    assert "suite: 10 s wall, 15 s CPU (user + system, all processes), 1.50 cores busy" in report
    assert "| 0 | 1 | 2 | 0 |" in report and "| all | 2 |" in report


def test_fit_memory_measures_each_fit_and_releases_the_custom_gradients():
    import numpy as np
    from tensorflow.python.framework import ops

    fit_memory = _benchmark("fit_memory")

    def fit():
        _tiny_dense(0).train_on_batch(np.zeros((8, 4), "float32"), np.zeros(8, int))

    custom = lambda: [n for n in ops._gradient_registry._registry if n.startswith("CustomGradient-")]  # noqa: E731
    kept = fit_memory.measure(2, release=False, fit=fit)
    assert len(kept) == 2 and all(size > 0 for size in kept) and len(custom()) >= 2  # one per fit
    released = fit_memory.measure(2, release=True, fit=fit)
    assert len(released) == 2 and custom() == []
    text = fit_memory.table([100.0, 250.0, 400.0], [100.0, 110.0, 100.0])
    assert text.splitlines()[0] == "| fit | kept (MB) | released (MB) |"
    assert text.splitlines()[-1] == "| growth per fit | +150 | +0 |"
