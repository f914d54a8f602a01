"""Shared-prefix evaluation: configurations that agree on their first blocks compute them once.

Two configurations that agree on the gates before some block feed that block the same features,
with the same recalibrated BatchNorm statistics: a block's statistics depend only on the blocks
before it. `SharedPrefixEvaluator` exploits that. It replays the supernet's functional graph
node by node on concrete tensors and memoises every feature map under the on/off
state of the gates upstream of it, so a search that evaluates many configurations computes each
distinct *prefix* once (the idea of weight-sharing NAS evaluators that cache a trie of partial
paths; for an early-exit network also every exit head on top of a cached trunk).

What is computed per node of the graph, for one configuration:

* the validation stream: the layer in inference mode (``training=False``);
* with recalibration, first the calibration stream: the layer in training mode on each
  calibration batch, with every BatchNorm momentum set so that its moving statistics become the
  average of the batch statistics, exactly as `tips_keras.training.batchnorm.Recalibrator` does
  for the whole model (same batches, same layers, frozen BatchNorm layers too). The validation
  stream then runs with those statistics. A node's statistics depend only on the calibration
  stream that reaches it, so the accuracy is the one of ``ConfigEvaluator`` with recalibration
  (the tests check it against the compiled whole-model path, to float rounding).

Each node is one compiled function, traced once for the whole search: with recalibration it
runs the node's calibration passes (the momentum set in the graph before each) and then its
validation batches in one call, otherwise the validation batches alone. Its BatchNormalization
layers compute through TensorFlow's fused kernel there (`tips_keras.search.fused_batchnorm`,
as Keras 2's layer did), to float rounding the same statistics and outputs. The
supernet's own (shared) statistics are put back after every evaluation. A ``PathGate`` that is
off contributes nothing (the ``Add`` after it passes its other input on, without a copy); an
exit head is computed only for the exit a configuration takes. Feature maps are kept in a cache
of at most ``cache_bytes`` bytes; only those that a later, differently gated block can reuse
(block outputs and exit heads) are kept, and past the budget the deepest (cheapest to recompute)
least recently used ones are dropped first.

Limits: a layer other than `PathGate`, `ExitHead` and `ExitSelector` that reads the control
vector, or a layer that reads an exit head's output directly, is refused
(`UnsupportedModelError`; `ExitSearch` then uses the compiled `ConfigEvaluator`). Memory
for one evaluation is about (validation + calibration images) x the largest feature map x 4
bytes, on top of the cache.
"""

import collections
import logging
import time

import keras
import numpy as np
import tensorflow as tf

from tips_keras.search import precision
from tips_keras.search.feature_cache import MISSING, FeatureCache
from tips_keras.search.node_function import NodeFunction
from tips_keras.supernet import analytic_flops
from tips_keras.supernet import layers as gl
from tips_keras.training import batchnorm
from tips_keras.training.evaluation import padded_batches, validation_arrays



class _NoRetracingWarning(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning: every node of the graph has
    functions of its own, each traced once, which TensorFlow's heuristic takes for retracing."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


_FILTER = _NoRetracingWarning()


class UnsupportedModelError(ValueError):
    """The supernet has a layer that shared-prefix evaluation cannot replay (a `ValueError`).

    Example:
        >>> try:  # doctest: +SKIP
        ...     evaluator = SharedPrefixEvaluator(model, (x_val, y_val))
        ... except UnsupportedModelError:
        ...     evaluator = ConfigEvaluator(model, (x_val, y_val))
    """


class SharedPrefixEvaluator:
    """Evaluates configurations of a supernet, computing each shared prefix of blocks once.

    The same interface and results as `tips_keras.training.evaluation.ConfigEvaluator` (top-1
    accuracy on fixed validation data, optional per-configuration BatchNorm recalibration), for
    searches that evaluate many configurations: on the README demo's supernet (6 gates, 2,000
    validation and 512 calibration images) ``benchmarks/speed_benchmark.py --sections 2`` measures
    both. The supernet must not change while the evaluator is used (cached maps would be stale):
    build a new evaluator after training.

    Args:
        model: a gated supernet (`tips_keras.AnytimeModel`); never trained or rebuilt here.
        validation_data: ``(x, y)`` NumPy arrays (integer or one-hot labels).
        batch_size: validation images per forward pass of a layer (default 2,048: the demo's
            2,000 in one pass, which costs less per image than 256 at a time; the cache holds
            every image's maps anyway).
        recalibration_data: optional training images; when given, every configuration is
            evaluated with BatchNorm statistics re-estimated for it from them.
        recalibration_batches: calibration batches (forward passes) at most.
        recalibration_batch_size: images per calibration batch.
        report_shared_statistics: with recalibration, also report ``accuracy_no_recal`` (the
            supernet's shared statistics; a second, separately cached stream).
        cache_bytes: the most bytes of feature maps kept between evaluations (least recently
            used are dropped first); 0 keeps nothing (each configuration computed in full).
        compute_dtype: ``"float32"`` (default: the accuracies of ``ConfigEvaluator``) or
            ``"bfloat16"``: convolutions and dense layers compute in bfloat16 (Keras'
            ``mixed_bfloat16`` rule: float32 weights cast on read, BatchNorm statistics, feature maps
            and scores in float32; `tips_keras.search.precision`). Faster only on a CPU with native
            bfloat16 kernels (AVX512-BF16 or AMX); the accuracies then differ from float32 by
            rounding (``benchmarks/speed_benchmark.py`` measures both).

    Attributes:
        evaluations / seconds: `evaluate` calls and their total time (s).
        cache: the `FeatureCache` (``hits``, ``misses``, ``bytes``).
        trace_count: traces of the nodes' compiled functions (at most two per node of the
            graph, whatever the number of configurations).

    Raises:
        ValueError: bad validation or calibration data, or a bad size.
        UnsupportedModelError: (a ``ValueError``) a layer other than the gated layers of
            `tips_keras.supernet.layers` reads the control vector or an exit head's output.

    Example:
        >>> evaluator = SharedPrefixEvaluator(model, (x_val, y_val), recalibration_data=x_train[:512])  # doctest: +SKIP
        >>> [evaluator.evaluate((2, bits))["accuracy"] for bits in ([1] * 6, [1] * 5 + [0])]  # doctest: +SKIP
    """

    def __init__(self, model, validation_data, batch_size=2048, recalibration_data=None,
                 recalibration_batches=4, recalibration_batch_size=128, report_shared_statistics=False,
                 cache_bytes=1 << 30, compute_dtype="float32"):
        self.compute_dtype = precision.check_compute_dtype(compute_dtype)
        x, y = validation_arrays(model, validation_data)
        batchnorm.check_sizes(batch_size=batch_size, recalibration_batches=recalibration_batches,
                              recalibration_batch_size=recalibration_batch_size)
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise ValueError("Invalid value for argument `cache_bytes`. Expected a non-negative integer "
                             f"(bytes). Received: cache_bytes={cache_bytes!r}")
        self.model = model
        self.num_examples = len(x)
        self.batch_size = min(batch_size, len(x))
        # The same padding and fingerprint as ConfigEvaluator's, so a resumed search may switch.
        padded, _, self.fingerprint = padded_batches(x, y, self.batch_size)
        self._y = y
        self._val = [tf.constant(batch) for batch in padded]
        self.recalibration_data = None
        self.recalibrator = None
        self._recal = None
        if recalibration_data is not None:
            self.recalibration_data = np.asarray(recalibration_data)
            self.recalibrator = batchnorm.Recalibrator(model, self.recalibration_data,
                                                       recalibration_batch_size, recalibration_batches)
            batches = self.recalibrator.batches  # the batches of the whole-model passes
            self._recal = [batches[i] for i in range(batches.shape[0])]
        self.recalibration_batches = recalibration_batches
        self.recalibration_batch_size = recalibration_batch_size
        self.report_shared_statistics = bool(report_shared_statistics)
        self.evaluations, self.seconds = 0, 0.0
        self._functions = {}  # (id(node), recalibrated) -> NodeFunction
        self.cache = FeatureCache(cache_bytes)  # key -> (validation stream, calibration stream) or None
        self._read_graph(model)
        if self.recalibrator is not None:
            # The supernet's shared statistics, put back after every recalibrated evaluation (one
            # compiled call of `Recalibrator.restore`): taken here, once, like the cached maps, so
            # statistics changed after this point (training) are overwritten (build a new evaluator).
            self.recalibrator.save()

    # -- the graph ------------------------------------------------------------------------------
    def _read_graph(self, model):
        """Producer node and upstream switches of every tensor; which tensors are worth keeping."""
        self._producer, self._switches, self._bn = {}, {}, {}
        control_ids = set()
        order = [n for d in sorted(model._nodes_by_depth, reverse=True) for n in model._nodes_by_depth[d]]
        self._switch_nodes = []  # PathGate nodes, in graph order
        consumers = collections.defaultdict(list)
        for node in order:
            op = node.operation
            for t in node.output_tensors:
                self._producer[id(t)] = node
            if not node.input_tensors:
                self._switches[id(node.output_tensors[0])] = ()
                continue
            if isinstance(op, gl.SubnetController):
                control_ids.update(id(t) for t in node.output_tensors)
                continue
            reads_control = any(id(t) in control_ids for t in node.input_tensors)
            if reads_control and not isinstance(op, (gl.PathGate, gl.ExitHead, gl.ExitSelector)):
                raise UnsupportedModelError(
                    f"Invalid value for argument `model`. Layer {op.name!r} ({type(op).__name__}) reads "
                    "the control vector of the SubnetController; shared-prefix evaluation replays only "
                    "PathGate, ExitHead and ExitSelector as switches. Evaluate this model with "
                    "tips_keras.training.evaluation.ConfigEvaluator (ExitSearch(evaluation=\"compiled\")).")
            data_inputs = [t for t in node.input_tensors if id(t) not in control_ids]
            upstream = set()
            for t in data_inputs:
                upstream.update(self._switches[id(t)])
                consumers[id(t)].append(node)
            if isinstance(op, gl.PathGate):
                upstream.add(len(self._switch_nodes))
                self._switch_nodes.append(op)
            if isinstance(op, gl.ExitSelector):
                upstream.add(-1)  # the exit index itself (flags[-1])
            for t in data_inputs:
                if isinstance(self._producer[id(t)].operation, gl.ExitHead) and not isinstance(op, gl.ExitSelector):
                    raise UnsupportedModelError(
                        f"Invalid value for argument `model`. Layer {op.name!r} reads the exit head "
                        f"{self._producer[id(t)].operation.name!r} directly; shared-prefix evaluation "
                        "expects exit heads to be read by the ExitSelector only. Evaluate this model with "
                        "tips_keras.training.evaluation.ConfigEvaluator (ExitSearch(evaluation=\"compiled\")).")
            for t in node.output_tensors:
                self._switches[id(t)] = tuple(sorted(upstream))
            self._bn[id(node)] = batchnorm.batchnorm_layers(op)
        self._control_ids = control_ids
        self._output_id = id(model.outputs[0])
        # Keep a tensor if a consumer depends on more switches (a later block reuses it), or if
        # it is a head's output or the model's output.
        self._keep = {self._output_id}
        for tid, nodes in consumers.items():
            mine = len(self._switches[tid])
            if any(len(self._switches[id(n.output_tensors[0])]) > mine for n in nodes) or \
                    any(isinstance(n.operation, gl.ExitSelector) for n in nodes):
                self._keep.add(tid)

    @property
    def trace_count(self):
        """Traces of the nodes' compiled functions so far (see the class docstring)."""
        return sum(fn.trace_count for fn in self._functions.values())

    def _flags(self, config):
        return tuple(op.runs_in(config) for op in self._switch_nodes) + (config.exit,)

    # -- one configuration --------------------------------------------------------------------
    def _key(self, tid, flags, recal):
        """Tensor ``tid`` under the on/off state of the switches upstream of it."""
        return (tid, recal) + tuple(flags[s] for s in self._switches[tid])

    def _value(self, tid, state):
        """(validation stream, calibration stream) of tensor ``tid``, or None (dropped)."""
        flags, local, recal, config, _ = state
        key = self._key(tid, flags, recal)
        if key in local:
            return local[key]
        cached = self.cache.get(key)
        if cached is not MISSING:
            return cached
        node = self._producer[tid]
        outs = self._compute(node, state)
        for t, v in zip(node.output_tensors, outs):
            k = self._key(id(t), flags, recal)
            local[k] = v
            if id(t) in self._keep:
                self.cache.put(k, v)
        return local[key]

    def _compute(self, node, state):
        flags, _, recal, config, _ = state
        op = node.operation
        n_out = len(node.output_tensors)
        if not node.input_tensors:  # the model input
            return [(self._val, self._recal if recal else None)]
        if isinstance(op, gl.ExitSelector):
            return [self._value(id(node.input_tensors[config.exit]), state)] * n_out
        data = [t for t in node.input_tensors if id(t) not in self._control_ids]
        if isinstance(op, (gl.PathGate, gl.ExitHead)):
            if not op.runs_in(config):
                return [None] * n_out
            x = self._value(id(data[0]), state)
            if x is None:
                return [None] * n_out
            dtype = op.compute_dtype
            return self._run(node, lambda v, training: keras.ops.cast(
                op.layer(v[0], training=training), dtype), [x], recal, state)
        ins = [self._value(id(t), state) for t in data]
        live = [v for v in ins if v is not None]
        if isinstance(op, keras.layers.Add) and len(live) < 2:
            return [live[0] if live else None] * n_out
        if not live:
            return [None] * n_out
        if len(live) != len(ins):
            raise ValueError(
                f"Cannot evaluate layer {op.name!r} ({type(op).__name__}): some of its inputs come from "
                "operations the configuration skips, and only an `Add` can drop an input.")
        ids = [id(t) for t in data]

        def call(values, training):
            args, kwargs = node.arguments.fill_in(dict(zip(ids, values)))
            return op(*args, **kwargs, training=training)

        return self._run(node, call, ins, recal, state)

    def _run(self, node, call, ins, recal, state):
        """One value per output of ``node``: the calibration stream (training mode, statistics
        averaged over the batches), then the validation stream (inference mode). A stream is a
        list of batches; both streams of a node are one call of its compiled function."""
        n_out = len(node.output_tensors)
        val = [t for v in ins for t in v[0]]
        if not recal:
            outs = self._function(node, call, False, len(ins))(*val)
            return [(outs[j::n_out], None) for j in range(n_out)]
        bns = self._bn[id(node)]
        cal = [t for v in ins for t in v[1]]
        # Marked first: a call that fails after some assigns still gets the statistics put back.
        state[4].update(id(bn) for bn in bns)
        # Traced (once) under the momentum variable; frozen layers update.
        with self.recalibrator.calibrating(bns):
            outs = self._function(node, call, True, len(ins))(*cal, *val)
        n_cal = len(ins[0][1]) * n_out
        return [(outs[n_cal + j::n_out], outs[j:n_cal:n_out]) for j in range(n_out)]

    def _function(self, node, call, recal, n_in):
        """The node's `NodeFunction` (with ``recal``, calibration passes then validation batches),
        built at first use."""
        key = (id(node), recal)
        fn = self._functions.get(key)
        if fn is None:
            fn = self._functions[key] = NodeFunction(node.operation, call, n_in,
                                                     self.recalibrator if recal else None, self.compute_dtype)
        return fn

    def _forward(self, config, recal):
        flags = self._flags(config)
        touched = set()
        state = (flags, {}, recal, config, touched)
        logger = tf.get_logger()
        logger.addFilter(_FILTER)
        try:
            out = self._value(self._output_id, state)
        finally:
            logger.removeFilter(_FILTER)
            if touched:  # every layer put back, in one compiled call (less than choosing them)
                self.recalibrator.restore()
        return out

    def scores(self, config, recalibrate=True):
        """The model's output on the validation images for ``config`` (a tensor, N x classes).

        Args:
            config: any form accepted by `tips_keras.ConfigSpace.resolve`.
            recalibrate: use the configuration's recalibrated statistics (when there is
                calibration data) or the shared ones.

        Returns:
            A float tensor of shape (N, num_classes).
        """
        resolved = self.model.config_space.canonical(self.model.config_space.resolve(config))
        recal = bool(recalibrate) and self.recalibrator is not None
        val, _ = self._forward(resolved, recal)
        return tf.concat(val, axis=0)[: self.num_examples]

    def _accuracy(self, config, recal):
        predicted = np.argmax(self.scores(config, recal).numpy(), axis=-1)
        return float(np.mean(predicted == self._y))

    def accuracy(self, config=None):
        """Top-1 accuracy of ``config`` (default: the active one) with the shared statistics.

        Args:
            config: None, or any form accepted by `tips_keras.ConfigSpace.resolve`.

        Returns:
            A float in [0, 1].
        """
        config = self.model.get_active_config() if config is None else self.model.set_config(config)
        return self._accuracy(config, False)

    def evaluate(self, config):
        """Metrics of one configuration (as `ConfigEvaluator.evaluate`).

        Args:
            config: any form accepted by `tips_keras.ConfigSpace.resolve`; it is left active.

        Returns:
            ``{"accuracy", "flops", "params"}`` (plus ``"accuracy_no_recal"`` with
            ``report_shared_statistics``).

        Raises:
            ValueError: ``config`` does not fit the supernet.
        """
        start = time.perf_counter()
        resolved = self.model.set_config(config)
        flops, params = analytic_flops.cost(self.model, resolved)
        result = {"flops": float(flops), "params": float(params)}
        if self.recalibrator is None:
            result["accuracy"] = self._accuracy(resolved, False)
        else:
            if self.report_shared_statistics:
                result["accuracy_no_recal"] = self._accuracy(resolved, False)
            result["accuracy"] = self._accuracy(resolved, True)
        self.evaluations += 1
        self.seconds += time.perf_counter() - start
        return result
