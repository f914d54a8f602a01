"""One node of a supernet's graph as a compiled function: the shared-prefix evaluation's unit of work.

`SharedPrefixEvaluator` replays the supernet node by node. For a node it needs, on every
calibration batch, the node's layer in training mode (the BatchNorm statistics of a configuration
are re-estimated there, batch after batch) and then, on every validation batch, the layer in
inference mode with those statistics. `NodeFunction` does all of it in one compiled call: before
the pass of calibration batch ``i`` it sets the recalibrator's momentum to ``i / (i + 1)`` inside
the graph (the moving statistics end as the average of the batch statistics, as
`tips_keras.training.batchnorm.Recalibrator` leaves them for the whole model), and the inference
passes follow in program order, so they read the statistics the passes left. While it is traced,
the node's layers compute in the search's dtype (`tips_keras.search.precision`) and its
BatchNormalization layers through TensorFlow's fused kernel (`tips_keras.search.fused_batchnorm`).
It replaces one call per batch and an eager assign per calibration batch; with the fused BatchNorm
it took the search from about 16 to about 25 configurations/s (``benchmarks/speed_benchmark.py``,
sections 2 and 3, the README's "Search speed"). The batches are unrolled in the graph, so its size
and trace time grow with their number (4 calibration + 1 validation batch by default).
"""

import keras
import tensorflow as tf

from tips_keras.search import precision
from tips_keras.search.fused_batchnorm import fused_in


class NodeFunction:
    """A node's layer calls over both streams as one compiled function, traced once per shape.

    Args:
        operation: the node's layer (for the dtype and BatchNorm swaps while tracing).
        call: ``call(inputs, training)`` -> the node's outputs for one batch of each input.
        num_inputs: the node's data inputs.
        recalibrator: a `tips_keras.training.batchnorm.Recalibrator` whose ``batches`` the
            calibration stream comes from, or None (inference passes only).
        compute_dtype: ``"float32"`` or ``"bfloat16"`` (outputs are cast back to float32).

    Call arguments:
        *tensors: each input's calibration batches (``len(recalibrator.batches)`` per input,
            none without a recalibrator), then each input's validation batches (the same count
            per input).

    Returns (of a call):
        A list of tensors: the node's outputs for each calibration batch in turn, then for each
        validation batch.

    Attributes:
        trace_count: how often it was traced (1 per distinct input shapes).

    Example:
        >>> fn = NodeFunction(layer, lambda v, training: layer(v[0], training=training), 1, recal)  # doctest: +SKIP
        >>> with recal.calibrating(bns):  # doctest: +SKIP
        ...     outs = fn(*calibration_batches, *validation_batches)
    """

    def __init__(self, operation, call, num_inputs, recalibrator=None, compute_dtype="float32"):
        self.operation = operation
        self.num_inputs = num_inputs
        self.recalibrator = recalibrator
        self.compute_dtype = precision.check_compute_dtype(compute_dtype)
        self.num_calibration = 0 if recalibrator is None else int(recalibrator.batches.shape[0])
        self.trace_count = 0
        self._call = call
        self._compiled = tf.function(self._run, autograph=False)  # no Python control flow
        self._concrete = {}

    def _run(self, *tensors):
        self.trace_count += 1  # Python side effect: runs only while tracing
        n_in, n_cal = self.num_inputs, self.num_calibration
        cal, val = tensors[: n_cal * n_in], tensors[n_cal * n_in:]
        n_val = len(val) // n_in
        outs = []
        with precision.compute_in(self.operation, self.compute_dtype), fused_in(self.operation):
            for i in range(n_cal):
                self.recalibrator.set_momentum(i)
                outs += keras.tree.flatten(self._call([cal[k * n_cal + i] for k in range(n_in)], True))
            for i in range(n_val):
                outs += keras.tree.flatten(self._call([val[k * n_val + i] for k in range(n_in)], False))
        if self.compute_dtype == "float32":
            return outs
        return [tf.cast(o, tf.float32) if o.dtype == tf.bfloat16 else o for o in outs]

    def __call__(self, *tensors):
        # Through the concrete function: a tf.function call would rebuild the input signature
        # every time, which costs more than some layers' work.
        shapes = tuple(tuple(t.shape) for t in tensors)
        concrete = self._concrete.get(shapes)
        if concrete is None:
            concrete = self._concrete[shapes] = self._compiled.get_concrete_function(*tensors)
        return concrete(*tensors)
