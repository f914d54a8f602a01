"""Configuration -> plain Keras model: gates, skipped blocks and unused exits physically gone.

`extract` replays the supernet's functional graph on new symbolic tensors, one configuration at a
time, with fresh copies of the layers that configuration runs:

* `SubnetController` is dropped;
* a `PathGate` that is on is replaced by its wrapped operation; one that is off (or lies after the
  chosen exit) is dropped, and an ``Add`` left with a single input becomes the identity;
* the chosen `ExitHead` is replaced by its head, the other heads and everything after the chosen
  exit are dropped; `ExitSelector` is dropped (the model output is the chosen head's output);
* nested ``Sequential`` / functional blocks are flattened into the new graph;
* ``Identity`` layers are dropped (they compute nothing; `tips_keras.anytime` adds one as its
  exit, and tfmot's QAT refuses them);
* a ``Lambda`` layer gets a new ``Lambda`` on the same function (the model is in memory: no file is
  loaded, so Keras' safe mode has nothing to refuse).

The result contains only the original (built-in) layer classes, so it saves to ``.keras`` and
loads without ``tips_keras``, and its analytic cost is exactly `tips_keras.cost(model, config)`.
Its output layer is named ``"probabilities"``.

`load_front` / `select_front` / `extract_front` pick, for each FLOPs budget, the most accurate
point of a Pareto front (`tips_keras.search.ParetoFront` or its JSON) and extract it; the points'
FLOPs are first counted on the model (`recount_front`), never taken from the file.
"""

import warnings

import keras

from tips_keras.data import check_model_inputs
from tips_keras.io import _number, load_front  # noqa: F401  (load_front: public here too)
from tips_keras.supernet import layers as gl
from tips_keras.supernet import topology as topology_lib
from tips_keras.training import batchnorm
from tips_keras.training import calibration

OUTPUT_NAME = "probabilities"
_CONTROL = object()  # stands for the control vector of the SubnetController in the replay


def _is_graph(layer):
    """The functional graph of a Sequential / functional model, or None for a leaf layer."""
    if isinstance(layer, keras.Sequential):
        return getattr(layer, "_functional", None)
    return layer if hasattr(layer, "_nodes_by_depth") else None


class _Replay:
    """Re-calls the operations of one configuration on new symbolic tensors."""

    def __init__(self, config, rename=None, reserved=()):
        self.config = config
        self.rename = rename or {}  # id(original leaf layer) -> new name
        self.names = set(reserved)
        self.origin = {}  # id(new layer) -> original layer

    def _name(self, layer):
        name = self.rename.get(id(layer))
        if name is None:
            base, name, i = layer.name, layer.name, 0
            while name in self.names:
                i += 1
                name = f"{base}_{i}"
        self.names.add(name)
        return name

    def _leaf(self, layer, args, kwargs):
        name = self._name(layer)
        if type(layer) is keras.layers.Lambda:
            # An in-memory Lambda is the user's own function: no file is loaded, so no safe mode
            # applies (its config would serialize the function's bytecode, and safe mode refuses
            # to load that).
            new = keras.layers.Lambda(layer.function, output_shape=layer._output_shape,
                                      mask=layer.mask, arguments=dict(layer.arguments), name=name,
                                      dtype=layer.dtype_policy, trainable=layer.trainable)
        else:
            try:
                new = layer.__class__.from_config(dict(layer.get_config(), name=name))
            except Exception as e:
                raise ValueError(
                    f"Cannot extract layer {layer.name!r} ({type(layer).__name__}): tips_keras.extract "
                    "copies every layer the configuration runs with "
                    f"`from_config(get_config())`, which failed ({type(e).__name__}: {e}). Give "
                    "the layer a `get_config()` that returns its constructor arguments."
                ) from e
        outputs = new(*args, **kwargs)
        new.set_weights(layer.get_weights())
        self.origin[id(new)] = layer
        return outputs

    def call(self, layer, inputs, node=None, values=None):
        """Calls a fresh copy of ``layer`` (flattened when it is a graph) on new tensors."""
        graph = _is_graph(layer)
        if graph is not None:
            outputs = self.run(graph, inputs)
            return outputs[0] if len(outputs) == 1 else outputs
        if isinstance(layer, keras.layers.Identity) and len(inputs) == 1:
            return inputs[0]  # computes nothing (e.g. the exit `tips_keras.anytime` adds)
        if node is not None:
            args, kwargs = node.arguments.fill_in(values)
        else:
            args, kwargs = (inputs[0] if len(inputs) == 1 else inputs,), {}
        return self._leaf(layer, args, kwargs)

    def run(self, graph, new_inputs):
        """Replays ``graph`` on ``new_inputs``; returns its new outputs (None when dropped)."""
        values = {id(t): v for t, v in zip(graph.inputs, new_inputs)}
        cfg = self.config
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                op = node.operation
                if not node.input_tensors:  # InputLayer
                    continue
                ins = [values.get(id(t)) for t in node.input_tensors]
                live = [v for v in ins if v is not None and v is not _CONTROL]
                if isinstance(op, gl.SubnetController):
                    out = _CONTROL
                elif isinstance(op, (gl.PathGate, gl.ExitHead)):
                    on = op.runs_in(cfg)
                    out = self.call(op.layer, [ins[0]]) if on and ins[0] is not None else None
                elif isinstance(op, gl.ExitSelector):
                    out = ins[cfg.exit]
                elif isinstance(op, keras.layers.Add) and len(live) < 2:
                    out = live[0] if live else None
                elif not live:
                    out = None  # fed only by dropped operations: dropped too
                elif len(live) != len(ins):
                    raise ValueError(
                        f"Cannot extract layer {op.name!r} ({type(op).__name__}): some of its "
                        "inputs come from operations the configuration skips, and only an "
                        "`Add` can drop an input (a skipped branch contributes zeros)."
                    )
                else:
                    out = self.call(op, live, node, values)
                outs = node.output_tensors
                flat = [out] * len(outs) if out is None or out is _CONTROL else keras.tree.flatten(out)
                for t, v in zip(outs, flat):
                    values[id(t)] = v
        return [values.get(id(t)) for t in graph.outputs]


def _resolve(model, config):
    topo = topology_lib.read_topology(model)  # ValueError for a model that is not anytime
    space = topo.space
    return space.canonical(space.resolve(config))


def _build(model, config, name, output_name):
    spec = model.inputs[0]
    layer_name = spec._keras_history[0].name

    def replay(rename):
        inputs = keras.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype, name=layer_name)
        rp = _Replay(config, rename, reserved=(layer_name, output_name))
        (out,) = rp.run(model, [inputs])
        return rp, inputs, out

    rp, inputs, out = replay({})
    if out is None or out is _CONTROL:
        raise ValueError(f"Configuration {config} of model {model.name!r} produces no output.")
    last = out._keras_history[0]
    if id(last) in rp.origin:  # name the output layer: replay again with that name reserved
        rp, inputs, out = replay({id(rp.origin[id(last)]): output_name})
    else:
        out = keras.layers.Activation("linear", name=output_name)(out)
    return keras.Model(inputs, out, name=name)


def extract(model, config, recalibrate_data="auto", *, name=None, output_name=OUTPUT_NAME,
            batch_size=128, max_batches=8):
    """Builds a new plain functional Keras model for one configuration of a supernet.

    Args:
        model: a gated supernet (`AnytimeModel`, e.g. from `tips_keras.supernet.zoo`).
        config: any form accepted by `ConfigSpace.resolve`: a `Configuration`, ``(exit, bits)``,
            ``{"exit": e, "gates": {name: bit}}``, ``"largest"`` or ``"smallest"``.
        recalibrate_data: input images (e.g. 1,024 training images; raw values for a model with
            an integer input), ``"auto"`` (default: the calibration sample the last ``fit`` with
            `TIPSCallback` kept on the model, none for a model loaded from a file) or ``None``.
            With images, the BatchNorm statistics (frozen layers' too) are re-estimated for this
            configuration before the weights are copied
            (`tips_keras.training.batchnorm.recalibrated`); the supernet's own statistics and its
            active configuration are restored afterwards.
        name: name of the new model (default ``"<model>_exit<e>_<bits>"``).
        output_name: name of the output layer (default ``"probabilities"``).
        batch_size, max_batches: recalibration batches (see `recalibrate_batchnorm`).

    Returns:
        A `keras.Model` with only the layers the configuration runs (fresh copies, weights
        copied); its analytic FLOPs and parameters equal `tips_keras.cost(model, config)`.

    Raises:
        ValueError: ``model`` is not an anytime supernet, ``config`` does not fit it (wrong number
            of bits, unknown gate names, exit out of range), bad recalibration data (e.g. scaled
            floats for a model whose input is raw uint8), or a layer that cannot be copied
            (the message names it and keeps the cause).

    Example:
        >>> config = {"exit": 1, "gates": {"stage0_block0": 1}}
        >>> sub = tips_keras.extraction.extract(model, config)  # doctest: +SKIP
        >>> sub.save("b050.keras")  # loads without tips_keras  # doctest: +SKIP
    """
    config = _resolve(model, config)
    recalibrate_data = calibration.resolve_calibration(model, recalibrate_data)
    if recalibrate_data is not None:
        recalibrate_data = check_model_inputs(model, recalibrate_data, "recalibrate_data")
    if name is None:
        name = f"{model.name}_exit{config.exit}_{''.join(str(b) for b in config.gates)}"
    if recalibrate_data is None:
        return _build(model, config, name, output_name)
    controller = topology_lib.find_controller(model)
    active = keras.ops.convert_to_numpy(controller.active).copy()
    try:
        with batchnorm.recalibrated(model, config, recalibrate_data, batch_size=batch_size,
                                    max_batches=max_batches):
            return _build(model, config, name, output_name)
    finally:
        controller.active.assign(active)


# ------------------------------------------------------------------------------- Pareto fronts
def recount_front(model, points):
    """The points with FLOPs and parameters counted on ``model``, as selection must use them.

    A front file states each point's FLOPs; a hand-edited or stale file (searched on another
    supernet, or before the model changed) may state fewer than the configuration costs, and a
    selection by the claim would ship a model over its budget. Each point's claim is kept under
    ``front_flops``; a warning lists the points whose claim differs.

    Args:
        model: the supernet the points are configurations of.
        points: from `load_front`.

    Returns:
        New point dicts whose ``config`` is canonical and whose ``flops`` / ``params`` are
        ``tips_keras.cost(model, config)``.

    Raises:
        ValueError: a point's configuration does not fit ``model`` (the message names the point
            and keeps the cause).

    Example:
        >>> points = recount_front(model, load_front("front.json")[0])  # doctest: +SKIP
    """
    from tips_keras.supernet.analytic_flops import cost

    space = topology_lib.read_topology(model).space
    out, differ = [], []
    for i, point in enumerate(points):
        try:
            config = space.canonical(space.resolve(point["config"]))
        except ValueError as e:
            raise ValueError(f"Invalid point {i} of the front: its configuration "
                             f"{point['config']!r} does not fit model {model.name!r}: {e}") from e
        macs, params = cost(model, config)
        if point["flops"] != macs:
            differ.append(f"point {i}: {point['flops']:,} claimed, {macs:,} counted")
        out.append(dict(point, config=config.to_dict(space.gate_names), flops=macs, params=params,
                        front_flops=point["flops"]))
    if differ:
        warnings.warn(
            f"The front's FLOPs differ from model {model.name!r}'s own count for {len(differ)} of "
            f"{len(points)} points ({'; '.join(differ[:3])}{'; ...' if len(differ) > 3 else ''}): "
            "points are chosen by the model's count. The front was edited, or searched on "
            "another supernet.", stacklevel=2)
    return out


def budget_label(budget):
    """Directory name of a budget, as `extract_front` and the export CLI use it.

    Args:
        budget: a fraction of the full FLOPs (<= 1) or absolute FLOPs (> 1).

    Returns:
        ``"b"`` + the percentage on three digits (with the decimals it needs, up to six, when
        not whole), or ``"f"`` + the rounded absolute FLOPs.

    Example:
        >>> budget_label(0.25), budget_label(0.125), budget_label(0.1251), budget_label(2e6)
        ('b025', 'b012.5', 'b012.51', 'f2000000')
    """
    if budget <= 1.0:
        pct = budget * 100
        if abs(pct - round(pct)) < 1e-9:
            return f"b{int(round(pct)):03d}"
        whole, _, decimals = f"{pct:.6f}".rstrip("0").partition(".")
        return f"b{int(whole):03d}.{decimals}"
    return f"f{int(round(budget))}"


def select_front(points, budgets, full_flops):
    """For each budget, the most accurate point with ``flops <= budget`` (ties: fewer FLOPs).

    Args:
        points: from `load_front` (use `recount_front` first, so that the model's FLOPs count).
        budgets: each a fraction of ``full_flops`` if <= 1.0, else absolute FLOPs.
        full_flops: FLOPs of the full network.

    Returns:
        A list of ``(budget, limit_flops, point)``.

    Raises:
        ValueError: a non-positive budget, or no point fits one of them.

    Example:
        >>> points, info = load_front("front.json")  # doctest: +SKIP
        >>> chosen = select_front(points, [0.25, 0.5], info["full_flops"])  # doctest: +SKIP
    """
    chosen = []
    for budget in budgets:
        if not _number(budget) or not budget > 0:
            raise ValueError(
                "Invalid value for argument `budgets`. Expected positive numbers (a fraction of "
                f"the full FLOPs if <= 1, else absolute FLOPs). Received: {budget!r}"
            )
        limit = budget * full_flops if budget <= 1.0 else budget
        fits = [p for p in points if p["flops"] <= limit]
        if not fits:
            smallest = min(p["flops"] for p in points)
            raise ValueError(
                f"No point of the front fits the budget {budget!r} ({limit:,.0f} FLOPs): the "
                f"smallest point has {smallest:,} FLOPs."
            )
        chosen.append((budget, limit, max(fits, key=lambda p: (p["accuracy"], -p["flops"]))))
    return chosen


def extract_front(model, front, budgets=None, recalibrate_data="auto", **kwargs):
    """Extracts the best sub-network of a Pareto front for each FLOPs budget.

    Points are chosen by the model's own FLOPs count (`recount_front`; a warning names points
    whose stated FLOPs differ), and fractions are of the model's own full FLOPs.

    Args:
        model: the supernet the front was searched on.
        front: see `load_front`.
        budgets: fractions of the full FLOPs (<= 1) or absolute FLOPs; default: the front's.
        recalibrate_data: images for per-configuration BatchNorm recalibration, ``"auto"``
            (default; see `extract`) or ``None``.
        **kwargs: passed to `extract`.

    Returns:
        A list of dicts ``{"budget", "label", "point", "model"}``, one per budget.

    Raises:
        ValueError: no budgets (none given, none stored in the front), budgets that give the
            same label twice, or the errors of `load_front`, `recount_front`, `select_front`
            and `extract`.

    Example:
        >>> for item in extract_front(model, "front.json", [0.25, 0.5], x_train[:1024]):
        ...     item["model"].save(f"{item['label']}.keras")  # doctest: +SKIP
    """
    from tips_keras.supernet.analytic_flops import flops

    points, info = load_front(front)
    budgets = list(budgets) if budgets is not None else info["budgets"]
    if not budgets:
        raise ValueError("Invalid value for argument `budgets`. Expected a non-empty list. "
                         f"Received: budgets={budgets!r} (and the front names none)")
    chosen = select_front(recount_front(model, points), budgets, flops(model, "largest"))
    labels = [budget_label(b) for b, _, _ in chosen]
    if len(set(labels)) != len(labels):
        raise ValueError("Invalid value for argument `budgets`. Expected distinct budgets. "
                         f"Received: budgets={budgets!r} (labels {labels})")
    out = []
    for (budget, _, point), label in zip(chosen, labels):
        sub = extract(model, point["config"], recalibrate_data, **kwargs)
        out.append({"budget": budget, "label": label, "point": point, "model": sub})
    return out
