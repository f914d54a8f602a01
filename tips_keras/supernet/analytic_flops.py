"""Analytic FLOPs (multiply-accumulates) and parameters, per layer and per configuration.

Counting rules (per example, batch dimension excluded; one MAC = one multiply-add):

==========================  ===============================================================
Conv1D / Conv2D / Conv3D    out elements * prod(kernel_size) * in_c / groups
Conv2DTranspose             in elements * prod(kernel_size) * out_c
DepthwiseConv2D             out_h * out_w * in_c * depth_multiplier * k_h * k_w
SeparableConv2D             depthwise part + pointwise 1x1 part
Dense                       prod(input dims except last) * in_features * units
EinsumDense                 out elements * prod(contracted dims: input letters not in output)
Batch/LayerNormalization    one per output element (folded scale and shift)
Embedding                   0 (a lookup)
Max/AveragePooling2D        out elements * pool_h * pool_w
GlobalAveragePooling2D      in elements
Add / Subtract / Multiply   (number of active inputs - 1) * out elements
activations, reshapes, ...  0
nested Sequential / Model   sum over its layers
PathGate / ExitHead         the wrapped layer
==========================  ===============================================================

Biases are not counted. A layer type with weights that is not listed raises a ValueError; register
a rule with `register_flops`. Counting is analytic (from layer shapes), so it is exact, gate-aware
and about 10,000x faster than profiling a traced graph.
"""

import math
import weakref

import keras
import numpy as np

from tips_keras.supernet import layers as gl
from tips_keras.supernet import topology as topology_lib

_RULES = {}
_TABLES = weakref.WeakKeyDictionary()


def register_flops(layer_class, rule):
    """Registers a MAC-counting rule for a custom layer class.

    A layer with weights and no rule makes `flops` / `cost` raise. Registered rules are tried
    before the built-in ones (so they can also replace them) and match subclasses too. Registering
    clears the cached per-layer tables, so the next `cost` of any model uses the new rule.

    Args:
        layer_class: the layer class (matched with ``isinstance``).
        rule: ``rule(layer, input_shapes, output_shape) -> MACs``; ``input_shapes`` is a list of
            tuples (one per input), all shapes include the batch dimension.

    Example:
        >>> register_flops(MyLayer, lambda layer, ins, out: 0)  # doctest: +SKIP
    """
    _RULES[layer_class] = rule
    _TABLES.clear()


def _n(shape):
    return int(math.prod(int(d) for d in shape[1:]))


def _conv(layer, ins, out):
    k = math.prod(layer.kernel_size)
    in_c = ins[0][-1]
    return _n(out) * k * in_c // layer.groups


def _depthwise(layer, ins, out):
    return _n(out) * math.prod(layer.kernel_size)


def _separable(layer, ins, out):
    k = math.prod(layer.kernel_size)
    in_c, mult = ins[0][-1], layer.depth_multiplier
    spatial = _n(out) // out[-1]
    return spatial * in_c * mult * k + spatial * in_c * mult * out[-1]


def _dense(layer, ins, out):
    return _n(out) * ins[0][-1]


def _conv_transpose(layer, ins, out):
    # Every input element meets every kernel tap of every output channel.
    return _n(ins[0]) * math.prod(layer.kernel_size) * out[-1]


def _einsum_dense(layer, ins, out):
    # Each output element sums over the contracted indices: input letters absent from the output.
    lhs, out_spec = layer.equation.replace(" ", "").split("->")
    in_spec = lhs.split(",")[0]
    shape = ins[0]
    if "..." in in_spec:
        head, tail = in_spec.split("...")
        letters = list(zip(head, shape[: len(head)])) + list(zip(tail, shape[len(shape) - len(tail):]))
    else:
        letters = list(zip(in_spec, shape))
    return _n(out) * math.prod(int(d) for c, d in letters if c not in out_spec)


def _pool(layer, ins, out):
    return _n(out) * math.prod(layer.pool_size)


def _merge(layer, ins, out):
    return (len(ins) - 1) * _n(out)


_BUILTIN = (
    (keras.layers.DepthwiseConv2D, _depthwise),
    (keras.layers.SeparableConv2D, _separable),
    (keras.layers.Conv2DTranspose, _conv_transpose),
    (keras.layers.Conv2D, _conv),
    (keras.layers.Conv1D, _conv),
    (keras.layers.Conv3D, _conv),
    (keras.layers.Dense, _dense),
    (keras.layers.EinsumDense, _einsum_dense),
    (keras.layers.BatchNormalization, lambda layer, ins, out: _n(out)),
    (keras.layers.LayerNormalization, lambda layer, ins, out: _n(out)),
    (keras.layers.Embedding, lambda layer, ins, out: 0),  # a lookup, no multiply
    (keras.layers.MaxPooling2D, _pool),
    (keras.layers.AveragePooling2D, _pool),
    (keras.layers.GlobalAveragePooling2D, lambda layer, ins, out: _n(ins[0])),
    (keras.layers.GlobalMaxPooling2D, lambda layer, ins, out: _n(ins[0])),
    (keras.layers.Add, _merge),
    (keras.layers.Subtract, _merge),
    (keras.layers.Multiply, _merge),
)
_MERGES = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply)


def _shapes(knode):
    ins = [tuple(t.shape) for t in knode.input_tensors]
    return ins, tuple(knode.output_tensors[0].shape)


def _inner_nodes(model):
    return [n for depth in sorted(model._nodes_by_depth, reverse=True) for n in model._nodes_by_depth[depth]]


def _as_functional(layer):
    if isinstance(layer, keras.Sequential):
        return getattr(layer, "_functional", None)
    return layer if hasattr(layer, "_nodes_by_depth") else None


def layer_macs(layer, input_shapes, output_shape):
    """MACs of one call of ``layer`` with the given shapes.

    A `PathGate` / `ExitHead` counts its wrapped layer, a nested model the sum of its layers;
    `SubnetController`, `ExitSelector` and layers without weights or rule count 0.

    Args:
        layer: a Keras layer or model.
        input_shapes: the shapes of the call's inputs (batch dimension included, ignored).
        output_shape: the shape of its output (batch dimension included, ignored).

    Returns:
        Multiply-accumulates per example, an int.

    Raises:
        ValueError: the layer has weights and no counting rule (see `register_flops`), or
            shapes with unknown dimensions besides the batch.

    Example:
        >>> layer_macs(keras.layers.Dense(10), [(None, 64)], (None, 10))
        640
    """
    if isinstance(layer, (gl.PathGate, gl.ExitHead)):
        inner = layer.layer
        if _as_functional(inner) is not None or inner._inbound_nodes:
            return module_macs(inner)
        # A plain layer built by its wrapper: it sees the wrapper's data input and output shapes.
        return layer_macs(inner, list(input_shapes)[:1], output_shape)
    if isinstance(layer, (gl.SubnetController, gl.ExitSelector)):
        return 0
    if _as_functional(layer) is not None:
        return module_macs(layer)
    shapes = [tuple(s) for s in input_shapes] + [tuple(output_shape)]
    if any(d is None for s in shapes for d in s[1:]):
        raise ValueError(
            f"Cannot count FLOPs of layer {layer.name!r} of type {type(layer).__name__}: its shapes "
            f"{shapes[:-1]} -> {shapes[-1]} have unknown dimensions besides the batch, and its cost "
            "depends on them. Count a model built on a fixed input shape (e.g. keras.Input((32, 32, "
            "3)); tips_keras.anytime(model, input_shape=...) wraps a fully convolutional model at "
            "one size)."
        )
    for cls, rule in list(_RULES.items()) + list(_BUILTIN):
        if isinstance(layer, cls):
            return int(rule(layer, [tuple(s) for s in input_shapes], tuple(output_shape)))
    if layer.weights:
        raise ValueError(
            f"Cannot count FLOPs of layer {layer.name!r} of type {type(layer).__name__}: no rule "
            "for this layer type. Register one with tips_keras.supernet.analytic_flops.register_flops(cls, rule)."
        )
    return 0


def module_macs(layer):
    """Total MACs of a layer or a whole plain (ungated) model, all parts counted.

    Args:
        layer: a functional / Sequential model (every layer call counted), or a layer that was
            called on a symbolic input (the shapes of its first call are used).

    Returns:
        Multiply-accumulates per example, an int.

    Raises:
        ValueError: a layer never called on a symbolic input, or one without a counting rule.

    Example:
        >>> module_macs(tips_keras.extraction.extract(model, "smallest"))  # doctest: +SKIP
    """
    functional = _as_functional(layer)
    if functional is None:
        nodes = layer._inbound_nodes
        if not nodes:
            raise ValueError(
                f"Cannot count FLOPs of layer {layer.name!r}: it has never been called on a "
                "symbolic input, so its shapes are unknown. Build it with keras.Input first."
            )
        return layer_macs(layer, *_shapes(nodes[0]))
    total = 0
    for knode in _inner_nodes(functional):
        if knode.input_tensors:
            total += layer_macs(knode.operation, *_shapes(knode))
    return total


def module_params(layer):
    """Number of parameters (trainable and not) of a layer.

    Args:
        layer: a Keras layer or model (an unbuilt one has none yet).

    Returns:
        The parameter count, an int.

    Example:
        >>> dense = keras.layers.Dense(10)
        >>> dense.build((None, 64))
        >>> module_params(dense)
        650
    """
    return int(sum(np.prod(w.shape) for w in layer.weights))


def _table(model):
    """Per layer call of the supernet: (input edge indices, macs, params, elements, is_merge)."""
    if model in _TABLES:
        return _TABLES[model]
    topo = topology_lib.read_topology(model)
    by_layer = {}
    for e, name in enumerate(topo.edge_layer):
        by_layer.setdefault(name, []).append(e)
    rows = []
    for knode in _inner_nodes(model):
        op = knode.operation
        if op.name not in by_layer or isinstance(op, gl.SubnetController):
            continue
        ins = [t for t in knode.input_tensors if not isinstance(t._keras_history[0], gl.SubnetController)]
        ins_shapes = [tuple(t.shape) for t in ins]
        out_shape = tuple(knode.output_tensors[0].shape)
        is_merge = isinstance(op, _MERGES)
        macs = 0 if is_merge else layer_macs(op, ins_shapes, out_shape)
        rows.append((np.asarray(by_layer[op.name]), macs, module_params(op), _n(out_shape), is_merge))
    _TABLES[model] = rows
    return rows


def cost(model, config):
    """FLOPs and parameters of one configuration of a supernet.

    A layer counts when its output lies on the input -> output path of the configuration (for a
    merge: per active input beyond the first). This is exactly the cost of the plain model that
    `tips_keras.extraction.extract` builds for the configuration.

    Args:
        model: a gated supernet.
        config: any form accepted by `ConfigSpace.resolve` (e.g. ``"largest"``).

    Returns:
        ``(macs, params)`` as Python ints.

    Raises:
        ValueError: not a gated supernet, a ``config`` that does not fit it, or a layer without
            a counting rule.

    Example:
        >>> macs, params = tips_keras.cost(model, "smallest")  # doctest: +SKIP
    """
    topo = topology_lib.read_topology(model)
    vector = topo.space.resolve(config).to_vector()[None, :]
    return cost_vectors(model, vector)[0]


def cost_vectors(model, vectors):
    """Vectorised `cost` for many configurations given as control vectors.

    One pass over the supernet's per-layer table for all configurations at once: this is how
    the search costs thousands of candidates.

    Args:
        model: a gated supernet.
        vectors: array-like (T, G + 1) of control vectors ``[gate bits..., exit]``.

    Returns:
        A list of T tuples ``(macs, params)`` of Python ints.

    Raises:
        ValueError: not a gated supernet, or ``vectors`` not of shape (T, G + 1).

    Example:
        >>> costs = cost_vectors(model, model.config_space.all_vectors())  # doctest: +SKIP
    """
    topo = topology_lib.read_topology(model)
    masks = topo.edge_masks(np.asarray(vectors, dtype=np.float32))
    macs = np.zeros(len(masks), dtype=np.int64)
    params = np.zeros(len(masks), dtype=np.int64)
    for edges, layer_cost, layer_params, elements, is_merge in _table(model):
        active = masks[:, edges].sum(axis=1)
        if is_merge:
            macs += np.maximum(active - 1, 0) * elements
        else:
            macs += (active > 0) * layer_cost
            params += (active > 0) * layer_params
    return [(int(m), int(p)) for m, p in zip(macs, params)]


def flops(model, config="largest"):
    """Analytic FLOPs (MACs) of one configuration of a gated supernet.

    Args:
        model: a gated supernet (e.g. from `tips_keras.supernet.zoo`).
        config: a `Configuration`, ``(exit, bits)``, ``{"exit": e, "gates": {...}}``,
            ``"largest"`` or ``"smallest"``.

    Returns:
        The number of multiply-accumulates per example, as an int.

    Raises:
        ValueError: the configuration does not fit the model (wrong length, unknown gate names,
            exit out of range) or the model has no gates.

    Example:
        >>> model = tips_keras.supernet.zoo.anytime_resnet()  # doctest: +SKIP
        >>> tips_keras.flops(model, "smallest") < tips_keras.flops(model, "largest")  # doctest: +SKIP
        True
    """
    return cost(model, config)[0]
