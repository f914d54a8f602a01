"""SharedPrefixEvaluator: the accuracies of the compiled whole-model path, each prefix computed once."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tips_keras as tips
from tips_keras.search import ExitSearch
from tips_keras.search.feature_cache import MISSING, FeatureCache
from tips_keras.search.shared_prefix import SharedPrefixEvaluator, UnsupportedModelError
from tips_keras.supernet.configs import Configuration
from tips_keras.training.batchnorm import batchnorm_layers
from tips_keras.training.evaluation import ConfigEvaluator
from tests.conftest import tiny_supernet

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py

RECAL = dict(recalibration_batches=2, recalibration_batch_size=64)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    net = tiny_supernet()  # untrained: its shared statistics are far from any configuration's
    net.get_layer("stage1_block0").layer.layers[1].trainable = False  # a frozen BatchNorm layer
    return net


def configs(model):
    return [Configuration.from_vector(v) for v in model.config_space.all_vectors()]


def test_every_configuration_matches_the_compiled_path(model, blobs):
    x, _, xv, yv = blobs
    shared = [(bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()) for bn in batchnorm_layers(model)]
    compiled = ConfigEvaluator(model, (xv, yv), batch_size=48, recalibration_data=x, fuse_after=None, **RECAL)
    prefix = SharedPrefixEvaluator(model, (xv, yv), batch_size=48, recalibration_data=x,
                                   report_shared_statistics=True, **RECAL)
    assert prefix.fingerprint == compiled.fingerprint  # a resumed search may switch evaluator
    gains = []
    for config in configs(model):
        result = prefix.evaluate(config)
        assert result["accuracy"] == compiled.evaluate(config)["accuracy"]
        assert result["flops"] == tips.flops(model, config)
        assert result["accuracy_no_recal"] == compiled.accuracy(config)
        with compiled.recalibrator.applied(config):
            expected = model.predict(xv, batch_size=48, verbose=0)
        np.testing.assert_allclose(prefix.scores(config).numpy(), expected, atol=1e-5)
        gains.append(result["accuracy"] - result["accuracy_no_recal"])
        for bn, (mean, var) in zip(batchnorm_layers(model), shared):  # shared statistics back
            np.testing.assert_array_equal(bn.moving_mean.numpy(), mean)
            np.testing.assert_array_equal(bn.moving_variance.numpy(), var)
    assert max(gains) > 0  # recalibration changed some accuracy: it really recalibrates
    assert model.get_active_config() == configs(model)[-1]  # evaluate leaves its configuration active


def test_prefixes_are_computed_once_and_the_budget_holds(model, blobs):
    x, _, xv, yv = blobs
    prefix = SharedPrefixEvaluator(model, (xv, yv), batch_size=64, recalibration_data=x, **RECAL)
    first = [prefix.evaluate(c)["accuracy"] for c in configs(model)]
    traces, misses = prefix.trace_count, prefix.cache.misses
    assert traces <= 2 * len(model.layers)  # one compiled function per node and mode
    assert prefix.cache.hits > 0  # configurations shared prefixes
    assert [prefix.evaluate(c)["accuracy"] for c in reversed(configs(model))] == first[::-1]
    assert prefix.cache.misses == misses and prefix.trace_count == traces  # nothing computed again
    # Nothing kept: the same accuracies, each configuration computed in full.
    nothing = SharedPrefixEvaluator(model, (xv, yv), batch_size=64, recalibration_data=x, cache_bytes=0, **RECAL)
    assert [nothing.evaluate(c)["accuracy"] for c in configs(model)] == first
    assert len(nothing.cache) == 0 and nothing.cache.hits == 0
    small = SharedPrefixEvaluator(model, (xv, yv), batch_size=64, recalibration_data=x, cache_bytes=300_000, **RECAL)
    assert [small.evaluate(c)["accuracy"] for c in configs(model)] == first
    assert 0 < small.cache.bytes <= 300_000


def test_feature_cache_drops_the_deepest_first_and_counts_shared_values_once():
    def value():  # a validation stream of one 40-byte tensor, no calibration stream
        return ([tf.zeros(10)], None)

    cache = FeatureCache(100)
    shallow = value()
    cache.put(("a",), shallow)
    cache.put(("a", 1), shallow)  # a skipped block: the same value under a deeper key
    assert cache.bytes == 40
    cache.put(("b", 1), value())
    assert cache.get(("b", 1)) is not MISSING  # now the most recently used
    cache.put(("c",), value())  # 120 bytes > 100: the deep entries go, the shallow ones stay
    assert cache.bytes == 80 and len(cache) == 2
    assert cache.get(("a",)) is shallow and cache.get(("c",)) is not MISSING
    assert cache.get(("a", 1)) is MISSING and cache.get(("b", 1)) is MISSING
    empty = FeatureCache(0)
    empty.put(("a",), value())
    assert len(empty) == 0 and empty.get(("a",)) is MISSING


def _control_reading_model():
    """A supernet with a layer (not a gate) that reads the control vector."""

    class ScaleByExit(keras.layers.Layer):
        def call(self, inputs):
            x, control = inputs
            return x * (1.0 + control[-1])

    inputs = keras.Input((4,))
    control = tips.SubnetController(1, 1)(inputs)
    branch = tips.PathGate(keras.layers.Dense(4), gate_index=0)([inputs, control])
    x = ScaleByExit()([keras.layers.Add()([inputs, branch]), control])
    head = tips.ExitHead(keras.layers.Dense(2, activation="softmax"), exit_index=0)([x, control])
    return tips.AnytimeModel(inputs, tips.ExitSelector()([head, control]))


def test_unsupported_models_fall_back_or_are_refused(tmp_path):
    model = _control_reading_model()
    x, y = np.zeros((8, 4), "float32"), np.zeros(8, "int32")
    with pytest.raises(UnsupportedModelError, match=r"Layer 'scale_by_exit.*reads the control vector"):
        SharedPrefixEvaluator(model, (x, y))
    common = dict(budgets=[1.0], max_trials=1, directory=tmp_path, overwrite=True, progress=False)
    search = ExitSearch(model, (x, y), **common)  # evaluation="auto": the compiled path
    assert isinstance(search.evaluator, ConfigEvaluator) and search.metadata["evaluation"] == "compiled"
    with pytest.raises(UnsupportedModelError):
        ExitSearch(model, (x, y), evaluation="shared_prefix", **common)
    with pytest.raises(ValueError, match=r"argument `evaluation`.*Received: evaluation='trie'"):
        ExitSearch(model, (x, y), evaluation="trie", **common)


def test_bad_arguments(model, blobs):
    _, _, xv, yv = blobs
    with pytest.raises(ValueError, match=r"argument `cache_bytes`.*Received: cache_bytes=-1"):
        SharedPrefixEvaluator(model, (xv, yv), cache_bytes=-1)
    with pytest.raises(ValueError, match=r"argument `batch_size`.*Received: batch_size=0"):
        SharedPrefixEvaluator(model, (xv, yv), batch_size=0)
    with pytest.raises(ValueError, match=r"argument `validation_data`.*shape"):
        SharedPrefixEvaluator(model, (xv[:, :6], yv))


def test_bfloat16_convolutions_rank_configurations_as_float32(model, blobs):
    x, _, xv, yv = blobs
    policies = [layer.dtype_policy.name for layer in model._flatten_layers()]
    shared = [bn.moving_mean.numpy().copy() for bn in batchnorm_layers(model)]
    exact = SharedPrefixEvaluator(model, (xv, yv), batch_size=64, recalibration_data=x, **RECAL)
    rounded = SharedPrefixEvaluator(model, (xv, yv), batch_size=64, recalibration_data=x,
                                    compute_dtype="bfloat16", **RECAL)
    differ = []
    for config in configs(model):
        assert abs(rounded.evaluate(config)["accuracy"] - exact.evaluate(config)["accuracy"]) <= 3 / len(yv)
        scores, reference = rounded.scores(config), exact.scores(config).numpy()
        assert scores.dtype == tf.float32  # maps, statistics and scores stay float32
        np.testing.assert_allclose(scores.numpy(), reference, atol=0.03)
        differ.append(not np.array_equal(scores.numpy(), reference))
    assert all(differ)  # really computed in bfloat16 (rounded), not float32
    assert rounded.trace_count <= 2 * len(model.layers)
    assert [layer.dtype_policy.name for layer in model._flatten_layers()] == policies  # model unchanged
    for bn, mean in zip(batchnorm_layers(model), shared):
        np.testing.assert_array_equal(bn.moving_mean.numpy(), mean)
    with pytest.raises(ValueError, match=r"argument `compute_dtype`.*Received: compute_dtype='float16'"):
        SharedPrefixEvaluator(model, (xv, yv), compute_dtype="float16")


def test_exit_search_records_bfloat16_and_refuses_it_on_the_compiled_path(model, blobs, tmp_path):
    x, _, xv, yv = blobs
    common = dict(budgets=[1.0], max_trials=2, directory=tmp_path, overwrite=True, progress=False,
                  recalibration_data=x, recalibration_batches=2, recalibration_batch_size=64)
    search = ExitSearch(model, (xv, yv), compute_dtype="bfloat16", **common)
    assert search.evaluator.compute_dtype == "bfloat16"
    assert search.run().metadata["compute_dtype"] == "bfloat16"
    assert search.oracle.fingerprint["compute_dtype"] == "bfloat16"
    assert "compute_dtype" not in ExitSearch(model, (xv, yv), **common).oracle.fingerprint
    with pytest.raises(ValueError, match=r"evaluation='compiled'.*float32 only.*compute_dtype='bfloat16'"):
        ExitSearch(model, (xv, yv), evaluation="compiled", compute_dtype="bfloat16", **common)
    fallback = _control_reading_model()  # auto falls back to the compiled path: refused too
    with pytest.raises(ValueError, match=r"fell back to it"):
        ExitSearch(fallback, (np.zeros((8, 4), "float32"), np.zeros(8, "int32")), budgets=[1.0],
                   max_trials=1, directory=tmp_path, overwrite=True, progress=False, compute_dtype="bfloat16")
