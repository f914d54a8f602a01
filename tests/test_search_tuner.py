"""ConfigEvaluator + ConfigTuner + ExitSearch on a tiny supernet: no training, no re-trace, no
rebuild, budgets enforced on the recorded trials, resume, recalibration.

The supernet is not trained (fitting even the tiny one costs 20-50 s on 2 shared cores, and no
assertion here depends on accuracy values); its importance variable is set as TIPS training
would set it. benchmarks/search_benchmark.py searches a trained supernet.
"""

import json

import keras
import numpy as np
import pytest

import tips_keras as tips
from tips_keras.training.batchnorm import batchnorm_layers
from tips_keras.search import ConfigEvaluator, ExitSearch
from tips_keras.search.shared_prefix import SharedPrefixEvaluator
from tests.conftest import tiny_supernet

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py

BUDGETS = [0.3, 0.6]


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    model = tiny_supernet()
    model.controller.importance.assign([1.0, 0.2, 0.7, 0.0])
    return model


def trial_flops(model, trial):
    values = trial.hyperparameters.values
    gates = [int(values[name]) for name in model.config_space.gate_names]
    return tips.flops(model, (values["exit"], gates))


def test_evaluator_matches_predict_and_traces_once(trained, blobs):
    evaluator = ConfigEvaluator(trained, (blobs[2], blobs[3]), batch_size=48)  # 128 = 2 x 48 + 32
    function = evaluator.function
    for config in ("largest", (1, [0, 0, 1, 0]), (0, [1, 0, 0, 0]), "smallest"):
        assert evaluator.accuracy(config) == pytest.approx(evaluator.reference_accuracy(config))
    result = evaluator.evaluate((1, [1, 0, 0, 1]))
    assert set(result) == {"accuracy", "flops", "params"}
    assert (result["flops"], result["params"]) == tips.cost(trained, (1, [1, 0, 0, 1]))
    assert evaluator.trace_count == 1 and function.experimental_get_tracing_count() == 1
    assert evaluator.function is function
    one_hot = keras.utils.to_categorical(blobs[3], 4)
    assert ConfigEvaluator(trained, (blobs[2], one_hot)).accuracy("largest") == evaluator.accuracy("largest")


def test_evaluator_rejects_bad_data(trained, blobs):
    with pytest.raises(ValueError, match="`validation_data`.*Received"):
        ConfigEvaluator(trained, blobs[2])
    with pytest.raises(ValueError, match=r"shape \(N, 12, 12, 1\)"):
        ConfigEvaluator(trained, (np.zeros((4, 8, 8, 1)), np.zeros(4)))
    with pytest.raises(ValueError, match="label"):
        ConfigEvaluator(trained, (blobs[2], blobs[3][:5]))
    with pytest.raises(ValueError, match="`batch_size`"):
        ConfigEvaluator(trained, (blobs[2], blobs[3]), batch_size=0)
    with pytest.raises(ValueError, match=r"argument `fuse_after`.*Received: fuse_after=-1"):
        ConfigEvaluator(trained, (blobs[2], blobs[3]), fuse_after=-1)


@pytest.mark.parametrize("evaluation", ["compiled", "shared_prefix"])
def test_search_enforces_budgets_without_training_or_rebuilding(trained, blobs, tmp_path, evaluation):
    weights = [w.numpy().copy() for w in trained.weights if "controller" not in w.path]
    layers = list(trained.layers)
    trained.set_config((1, [1, 0, 1, 0]))
    search = ExitSearch(trained, (blobs[2], blobs[3]), budgets=BUDGETS, max_trials=8,
                        directory=tmp_path, overwrite=True, progress=False, evaluation=evaluation)
    assert search.metadata["evaluation"] == evaluation
    front = search.run()
    trials = list(search.oracle.trials.values())
    assert len(trials) == 8 and all(t.status == "COMPLETED" for t in trials)
    largest = min(BUDGETS[-1] * search.space.full_flops, search.space.full_flops)
    assert max(trial_flops(trained, t) for t in trials) <= largest  # never evaluated over budget
    for t in trials:
        assert t.metrics.get_last_value("flops") == trial_flops(trained, t)
    if evaluation == "compiled":
        assert search.evaluator.trace_count == 1  # one compiled function for every trial
    else:  # one compiled function per node of the graph, not per trial
        assert isinstance(search.evaluator, SharedPrefixEvaluator)
        assert search.evaluator.trace_count <= len(trained.layers) and search.evaluator.cache.hits > 0
    assert list(trained.layers) == layers
    after = [w.numpy() for w in trained.weights if "controller" not in w.path]
    assert all(np.array_equal(a, b) for a, b in zip(weights, after))  # nothing trained
    assert trained.get_active_config() == tips.Configuration(1, (1, 0, 1, 0))  # restored
    assert len(front.points) == 8
    for budget in BUDGETS:
        best = front.best(budget)
        assert best.flops <= budget * front.full_flops
        assert best.accuracy == max(p.accuracy for p in front.points if p.flops <= budget * front.full_flops)
    assert not list(tmp_path.glob("exit_search/trial_*/checkpoint*"))  # no model saved per trial


def test_fused_recalibration_matches_the_checked_path(trained, blobs):
    # One compiled call per configuration (save, calibration passes, evaluation, restore) gives
    # the same accuracy as recalibrating, evaluating and restoring step by step.
    shared = [bn.moving_variance.numpy().copy() for bn in batchnorm_layers(trained)]
    fused = ConfigEvaluator(trained, (blobs[2], blobs[3]), batch_size=48, recalibration_data=blobs[0],
                            recalibration_batches=2, recalibration_batch_size=64, fuse_after=2)
    checked = ConfigEvaluator(trained, (blobs[2], blobs[3]), batch_size=48, recalibration_data=blobs[0],
                              recalibration_batches=2, recalibration_batch_size=64, fuse_after=None)
    gains = []
    for i, config in enumerate(("largest", "smallest", (1, [0, 1, 1, 0]), (0, [1, 0, 0, 0]), "largest")):
        assert bool(fused.recalibrator._fused) == (i > 2)  # traced at the first call after fuse_after
        result = fused.evaluate(config)
        assert set(result) == {"accuracy", "flops", "params"}  # no shared-statistics pass by default
        with checked.recalibrator.applied(config):
            assert result["accuracy"] == checked.accuracy()
        gains.append(result["accuracy"] - checked.accuracy(config))
        for bn, variance in zip(batchnorm_layers(trained), shared):
            np.testing.assert_array_equal(bn.moving_variance.numpy(), variance)  # restored
    # Same images and sizes: one cached recalibrator, in which only `fused` has a fused call.
    assert fused.recalibrator is checked.recalibrator and list(fused.recalibrator._fused) == [fused.function]
    assert fused.trace_count == 1 and fused.recalibrator.trace_count == 2  # checked + fused trace
    assert max(gains) > 0  # recalibration changed some accuracy: the fused call really recalibrates


def test_resume_continues_the_trial_count(trained, blobs, tmp_path):
    common = dict(validation_data=(blobs[2], blobs[3]), budgets=BUDGETS, directory=tmp_path, progress=False)
    first = ExitSearch(trained, max_trials=3, overwrite=True, **common)
    first.run()
    before = {t.trial_id: t.hyperparameters.values for t in first.oracle.trials.values()}
    second = ExitSearch(trained, max_trials=6, overwrite=False, **common)
    front = second.run()
    trials = second.oracle.trials
    assert sorted(trials) == ["0", "1", "2", "3", "4", "5"]
    assert all(trials[k].hyperparameters.values == v for k, v in before.items())
    keys = {tuple(sorted(t.hyperparameters.values.items())) for t in trials.values()}
    assert len(keys) == 6 and len(front.points) == 6  # no duplicate across the restart
    assert set(second.oracle.proposals) == set(trials)
    with pytest.raises(ValueError, match="Cannot resume"):
        ExitSearch(trained, max_trials=6, overwrite=False, **dict(common, budgets=[0.4, 1.0]))
    retrained = tiny_supernet()  # same architecture, other weights: stale accuracies
    with pytest.raises(ValueError, match="Cannot resume"):
        ExitSearch(retrained, max_trials=6, overwrite=False, **common)


def test_random_oracle_and_recalibration(trained, blobs, tmp_path):
    means = [bn.moving_mean.numpy().copy() for bn in batchnorm_layers(trained)]
    search = ExitSearch(trained, (blobs[2], blobs[3]), budgets=[0.5, 1.0], max_trials=4, oracle="random",
                        directory=tmp_path, overwrite=True, progress=False, report_shared_statistics=True,
                        recalibration_data=blobs[0], recalibration_batches=2, recalibration_batch_size=64)
    front = search.run()
    assert all(p.accuracy_no_recal is not None for p in front.points)
    assert isinstance(search.evaluator, SharedPrefixEvaluator)  # the default evaluation
    for bn, mean in zip(batchnorm_layers(trained), means):  # shared statistics restored
        np.testing.assert_array_equal(bn.moving_mean.numpy(), mean)
    data = json.loads(front.to_json())
    assert data["metadata"]["oracle"] == "random" and data["metadata"]["recalibration"]["batches"] == 2


def test_bad_model_and_budgets(trained, blobs, tmp_path):
    plain = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Flatten(), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="`model`.*AnytimeModel"):
        ExitSearch(plain, (blobs[2], blobs[3]), directory=tmp_path)
    with pytest.raises(ValueError, match="smallest configuration has"):
        ExitSearch(trained, (blobs[2], blobs[3]), budgets=[100], directory=tmp_path)
