"""Grappler options of a supernet's ``fit``: no AddN scheduling rewrite on CPUs, scoped to the call."""

import glob
import os
import tempfile

import keras
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.core.protobuf import rewriter_config_pb2
from tensorflow.python.eager import context
from tensorflow.tsl.profiler.protobuf import xplane_pb2

import tips_keras as tips
from tips_keras.supernet import graph_options

RewriterConfig = rewriter_config_pb2.RewriterConfig


def memory_optimization():
    """The memory optimization of the current thread's function call options."""
    config = config_pb2.ConfigProto.FromString(context.context().function_call_options.config_proto_serialized)
    return config.graph_options.rewrite_options.memory_optimization


def ops_run(fn, *args):
    """The op types that calling ``fn(*args)`` ran (read from TensorFlow's profiler)."""
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            fn(*args)
        finally:
            tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
            space.ParseFromString(f.read())
    return {event.name.rsplit(":", 1)[-1] for plane in space.planes for event in plane.event_metadata.values()}


def three_way_gradient():
    """A function whose gradient is a 3-input AddN of 32 MB tensors (enough to trigger the rewrite)."""
    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(tf.sin(x)) + tf.reduce_sum(tf.cos(x)) + tf.reduce_sum(tf.tanh(x))
        return tape.gradient(y, x)
    return gradient


@pytest.fixture(autouse=True)
def fresh_thread_options(monkeypatch):
    """Each test starts from the thread's default call options, with only CPUs visible."""
    monkeypatch.setattr(graph_options, "_only_cpus", lambda: True)
    context.context().function_call_options = None
    yield
    context.context().function_call_options = None


@pytest.fixture
def grappler_on():
    """Grappler on for one test (conftest turns it off for the suite's speed)."""
    previous = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False})
    yield
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": previous})


@pytest.mark.skipif(any(d.device_type != "CPU" for d in tf.config.list_logical_devices()),
                    reason="the rewrite's trigger is a CPU device's 256 MiB limit")
def test_the_addn_rewrite_happens_by_default_and_not_inside_the_block(grappler_on):
    x = tf.random.normal([8192, 1024])
    before = three_way_gradient()
    # TensorFlow's default rewrites the 3-input AddN (if this fails, the module may be unneeded)
    assert "TemporaryVariable" in ops_run(before, x)
    inside = three_way_gradient()
    with graph_options.no_addn_scheduling() as changed:
        assert changed
        assert memory_optimization() == RewriterConfig.SWAPPING_HEURISTICS
        ran = ops_run(inside, x)
    assert "TemporaryVariable" not in ran and "AddN" in ran
    assert memory_optimization() == RewriterConfig.DEFAULT_MEM_OPT
    assert "TemporaryVariable" in ops_run(inside, x)  # called after the block: the defaults again


def test_the_threads_own_options_come_back_as_they_were():
    ctx = context.context()
    with graph_options.no_addn_scheduling():
        pass
    assert ctx._thread_local_data.function_call_options is None  # derived from the config again
    mine = context.FunctionCallOptions(executor_type="SINGLE_THREADED_EXECUTOR", config_proto=ctx.config)
    ctx.function_call_options = mine
    with graph_options.no_addn_scheduling() as changed:
        assert changed and ctx.function_call_options is not mine
        assert ctx.function_call_options.executor_type == "SINGLE_THREADED_EXECUTOR"
    assert ctx.function_call_options is mine


def test_options_reset_meanwhile_are_not_overwritten_with_stale_ones():
    ctx = context.context()
    ctx.function_call_options  # the cached options of a thread that has called functions
    with graph_options.no_addn_scheduling():
        tf.config.optimizer.set_experimental_options({})  # resets the thread's options
    assert ctx._thread_local_data.function_call_options is None


def test_nothing_changes_with_an_accelerator_or_a_chosen_memory_optimization(monkeypatch):
    ctx = context.context()
    config = ctx.config
    config.graph_options.rewrite_options.memory_optimization = RewriterConfig.NO_MEM_OPT
    chosen = context.FunctionCallOptions(config_proto=config)
    ctx.function_call_options = chosen
    with graph_options.no_addn_scheduling() as changed:
        assert not changed and ctx.function_call_options is chosen
    ctx.function_call_options = None
    monkeypatch.setattr(graph_options, "_only_cpus", lambda: False)
    with graph_options.no_addn_scheduling() as changed:
        assert not changed and ctx._thread_local_data.function_call_options is None  # read, no trace


class _Probe(keras.callbacks.Callback):
    """Records the memory optimization in effect at each batch; raises at batch ``fail_at``."""

    def __init__(self, fail_at=None):
        super().__init__()
        self.seen, self.fail_at = [], fail_at

    def on_train_batch_begin(self, batch, logs=None):
        self.seen.append(memory_optimization())
        if batch == self.fail_at:
            raise RuntimeError("stop here")


def test_a_supernets_fit_runs_without_the_rewrite_and_gives_the_defaults_back(supernet, blobs):
    x, y, _, _ = blobs
    probe = _Probe(fail_at=0)
    with pytest.raises(RuntimeError, match="stop here"):  # Keras skips on_train_end then
        supernet.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0, callbacks=[probe])
    assert probe.seen == [RewriterConfig.SWAPPING_HEURISTICS]
    assert memory_optimization() == RewriterConfig.DEFAULT_MEM_OPT
    callback = tips.TIPSCallback(recipe="single_path", report_configs=(), recalibration_data=None)
    probe = _Probe()
    supernet.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0, callbacks=[callback, probe])
    assert probe.seen == [RewriterConfig.SWAPPING_HEURISTICS] * 2
    assert memory_optimization() == RewriterConfig.DEFAULT_MEM_OPT
