"""Grappler options for the training step's function: no AddN scheduling rewrite on a CPU.

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
per stage) at batch 128, the small configuration's step with masked updates has four ``AddN``
rewritten (one in the step's gradient, three inside gated blocks' gradient branches). They took
1.8 ms of op time per step (``Assign`` 0.5 ms, ``AssignAdd`` 1.3 ms), where four ``AddN`` take
about 0.25 ms (TensorFlow's profiler, ``benchmarks/profile_ops.py --what step``). The same step
without masked updates has them rewritten from batch 160 (not at 64, 96 or 128), and the same
configuration extracted as a plain Keras model has none rewritten at batch 64 to 256.

`no_addn_scheduling` sets Grappler's memory optimizer to ``SWAPPING_HEURISTICS`` (its default
without the scheduling pass; the swapping pass only acts on GPUs) for the functions that the
current thread calls meanwhile: the options are part of a call, and TensorFlow optimizes a
function once for each options it is called with. `TIPSCallback` holds it from
``on_train_begin`` to ``on_train_end``: the train and test functions of ``fit``, and whatever
functions other callbacks call during ``fit``, are optimized without the rewrite; functions
called after ``fit`` get TensorFlow's defaults again. It changes nothing when a GPU is visible
(there the limit is the device's real memory, and the pass can keep a step from running out of
it) or when the thread's options already set a memory optimization other than the default.

The per-thread call options are TensorFlow's (``tensorflow.python.eager.context``, not part of
its public API; the public ``tf.config.optimizer`` options have no memory optimizer setting).
"""

import contextlib

import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.core.protobuf import rewriter_config_pb2
from tensorflow.python.eager import context

_DEFAULT = rewriter_config_pb2.RewriterConfig.DEFAULT_MEM_OPT
_WITHOUT_SCHEDULING = rewriter_config_pb2.RewriterConfig.SWAPPING_HEURISTICS


@contextlib.contextmanager
def no_addn_scheduling():
    """Turns off Grappler's AddN scheduling rewrite for the functions this thread calls meanwhile.

    A function called inside the block is optimized (once) without the rewrite; called again
    after the block, it runs as optimized with TensorFlow's defaults.

    Yields:
        True when the options were changed (no GPU visible, default memory optimization), else
        False (nothing changed).

    Example:
        >>> with no_addn_scheduling():  # doctest: +SKIP
        ...     model.fit(x, y)  # the train function is optimized without the rewrite
    """
    ctx = context.context()
    previous = ctx._thread_local_data.function_call_options  # None: derived from ctx.config
    options = ctx.function_call_options
    config = config_pb2.ConfigProto.FromString(options.config_proto_serialized)
    rewrite = config.graph_options.rewrite_options
    if tf.config.list_logical_devices("GPU") or rewrite.memory_optimization != _DEFAULT:
        yield False
        return
    rewrite.memory_optimization = _WITHOUT_SCHEDULING
    ctx.function_call_options = context.FunctionCallOptions(executor_type=options.executor_type,
                                                            config_proto=config)
    try:
        yield True
    finally:
        ctx.function_call_options = previous
