"""Grappler options for a supernet's ``fit``: no AddN scheduling rewrite where only CPUs are visible.

TensorFlow optimizes every ``tf.function`` with Grappler before its first run. Its memory
optimizer's scheduling pass (``SchedulingPass`` in
``tensorflow/core/grappler/optimizers/memory_optimizer.cc``, part of the default
``DEFAULT_MEM_OPT``) rewrites each ``AddN`` of more than two inputs into a temporary variable,
an ``Assign`` of zeros and one locked ``AssignAdd`` per input, whenever the graph's statically
estimated peak memory exceeds 80 % of the device's memory limit. A CPU device reports a fixed
limit of 256 MiB (``device_lib.list_local_devices()``), not the machine's memory, so the rewrite
fires on CPU training steps of modest batches (128 to 160 images below), where it saves no memory
that matters and costs time.

A gated step meets it where its plain network does not. On speed_benchmark's supernet (2 blocks
per stage) at batch 128, the small configuration's step with the default recipe's masked updates
had four ``AddN`` rewritten (TensorFlow's profiler, ``benchmarks/profile_ops.py --what step``, as
committed before this module: 16 ``AddN``, 4 ``Assign`` and 12 ``AssignAdd`` per step, the last
two taking 1.6 ms of op time per step where four ``AddN`` take about 0.25 ms). Measured in the
same way when this module was written (not committed): the same step without masked updates is
rewritten from batch 160 (not at 64, 96 or 128), and the configuration extracted as a plain
Keras model not at batch 64 to 256.

`no_addn_scheduling` sets Grappler's memory optimizer to ``SWAPPING_HEURISTICS`` (its default
without the scheduling pass; the swapping pass only acts on GPUs) for the functions that the
current thread calls meanwhile: the options are part of a call, and TensorFlow optimizes a
function once for each options it is called with. `AnytimeModel.fit` runs inside it, so a
supernet's train and test functions, and what its callbacks call from ``fit``'s thread, are
optimized without the rewrite; functions called after ``fit`` get TensorFlow's defaults again
(a function *traced* inside that calls another one keeps the options in its call op). It
changes nothing where a device other than a CPU is visible (a GPU's limit is its real memory,
and the pass can keep a step from running out of it) or when the thread's options already set a
memory optimization other than the default.

The per-thread call options are TensorFlow's (``tensorflow.python.eager.context``, not part of
its public API, the mechanism of ``tf.experimental.function_executor_type``); the public
``tf.config.optimizer`` options have no memory optimizer setting.
"""

import contextlib

import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.core.protobuf import rewriter_config_pb2
from tensorflow.python.eager import context

_DEFAULT = rewriter_config_pb2.RewriterConfig.DEFAULT_MEM_OPT
_WITHOUT_SCHEDULING = rewriter_config_pb2.RewriterConfig.SWAPPING_HEURISTICS


def _only_cpus():
    """Whether every visible logical device is a CPU."""
    return all(device.device_type == "CPU" for device in tf.config.list_logical_devices())


@contextlib.contextmanager
def no_addn_scheduling():
    """Turns off Grappler's AddN scheduling rewrite for the functions this thread calls meanwhile.

    A function called inside the block is optimized (once) without the rewrite; called again
    after the block, it runs as optimized with TensorFlow's defaults. The thread's options are
    restored as they were, unless something replaced them meanwhile (for example
    ``tf.config.optimizer.set_experimental_options``, which resets them).

    Yields:
        True when the options were changed (only CPUs visible, default memory optimization),
        else False (nothing changed).

    Example:
        >>> with no_addn_scheduling():  # doctest: +SKIP
        ...     model.fit(x, y)  # the train function is optimized without the rewrite
    """
    ctx = context.context()
    previous = ctx._thread_local_data.function_call_options  # None: derived from ctx.config
    options = ctx.function_call_options  # (fills that cache when it was None)
    ctx.function_call_options = previous
    config = config_pb2.ConfigProto.FromString(options.config_proto_serialized)
    rewrite = config.graph_options.rewrite_options
    if not _only_cpus() or rewrite.memory_optimization != _DEFAULT:
        yield False
        return
    rewrite.memory_optimization = _WITHOUT_SCHEDULING
    ours = context.FunctionCallOptions(executor_type=options.executor_type, config_proto=config)
    ctx.function_call_options = ours
    try:
        yield True
    finally:
        if ctx._thread_local_data.function_call_options is ours:
            ctx.function_call_options = previous
