"""Configuration -> plain Keras model: gates, skipped blocks and unused exits physically gone.

`extract` replays the supernet's functional graph on new symbolic tensors, one configuration at a
time, with fresh copies of the layers that configuration runs:

* `SubnetController` is dropped;
* a `PathGate` that is on is replaced by its wrapped operation; one that is off (or lies after the
  chosen exit) is dropped, and an ``Add`` left with a single input becomes the identity;
* the chosen `ExitHead` is replaced by its head, the other heads and everything after the chosen
  exit are dropped; `ExitSelector` is dropped (the model output is the chosen head's output);
* nested ``Sequential`` / functional blocks are flattened into the new graph.

The result contains only the original (built-in) layer classes, so it saves to ``.keras`` and
loads without ``tips_keras``, and its analytic cost is exactly `tips_keras.cost(model, config)`.
Its output layer is named ``"probabilities"``.

`load_front` / `select_front` / `extract_front` pick, for each FLOPs budget, the most accurate
point of a Pareto front (`tips_keras.search.ParetoFront` or its JSON) and extract it.
"""

import json
import os

import keras

from tips_keras.supernet import layers as gl
from tips_keras.supernet import topology as topology_lib
from tips_keras.training import batchnorm

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
        config = layer.get_config()
        config["name"] = self._name(layer)
        new = layer.__class__.from_config(config)
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
                    if isinstance(op, gl.PathGate):
                        on = cfg.exit >= op.min_exit and (
                            op.gate_index is None or bool(cfg.gates[op.gate_index])
                        )
                    else:
                        on = op.exit_index == cfg.exit
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
        recalibrate_data: optional input images (e.g. 1,024 training images). When given, the
            BatchNorm statistics are re-estimated for this configuration before the weights are
            copied (`tips_keras.training.batchnorm.recalibrated`); the supernet's own statistics and its
            active configuration are restored afterwards.
        name: name of the new model (default ``"<model>_exit<e>_<bits>"``).
        output_name: name of the output layer (default ``"probabilities"``).
        batch_size, max_batches: recalibration batches (see `recalibrate_batchnorm`).

    Returns:
        A `keras.Model` with only the layers the configuration runs (fresh copies, weights
        copied); its analytic FLOPs and parameters equal `tips_keras.cost(model, config)`.

    Raises:
        ValueError: ``model`` is not an anytime supernet, ``config`` does not fit it (wrong number
            of bits, unknown gate names, exit out of range), or bad recalibration data.

    Example:
        >>> config = {"exit": 1, "gates": {"stage0_block0": 1}}
        >>> sub = tips_keras.extraction.extract(model, config)  # doctest: +SKIP
        >>> sub.save("b050.keras")  # loads without tips_keras  # doctest: +SKIP
    """
    config = _resolve(model, config)
    recalibrate_data = batchnorm.resolve_calibration(model, recalibrate_data)
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
_POINT_KEYS = ("points", "front", "pareto_front")
_FULL_KEYS = ("full_flops", "model_flops", "largest_flops", "flops_full", "max_flops")


def load_front(front):
    """Reads a Pareto front tolerantly.

    Args:
        front: a `tips_keras.search.ParetoFront` (anything with ``to_json()``), a path to its
            JSON file, or the decoded JSON: a dict with the points under ``"points"`` (or
            ``"front"`` / ``"pareto_front"``), or a plain list of points. A point has ``exit``,
            ``gates`` (``{name: bit}`` or a bit list), ``flops`` and ``accuracy`` (``params``
            optional); ``{"config": {"exit", "gates"}, ...}`` is accepted too.

    Returns:
        ``(points, info)``: a list of point dicts (each with ``config``, ``flops``, ``accuracy``,
        ``params``) and a dict with the front's ``full_flops`` and ``budgets`` (None if absent).

    Raises:
        ValueError: unreadable JSON, no points, or a point without exit / gates / flops / accuracy.

    Example:
        >>> points, info = load_front("runs/search/front.json")  # doctest: +SKIP
        >>> info["full_flops"], points[0]["config"]  # doctest: +SKIP
    """
    if hasattr(front, "to_json"):
        front = front.to_json()
        front = json.loads(front) if isinstance(front, str) else front
    elif isinstance(front, (str, os.PathLike)):
        try:
            with open(front, encoding="utf-8") as f:
                front = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"Invalid value for argument `front`: cannot read {str(front)!r}: {e}") from None
    info = {"full_flops": None, "budgets": None}
    raw = front
    if isinstance(front, dict):
        raw = next((front[k] for k in _POINT_KEYS if k in front), None)
        model_info = front.get("model") if isinstance(front.get("model"), dict) else {}
        for source in (front, model_info):
            for key in _FULL_KEYS + (("flops",) if source is model_info else ()):
                if info["full_flops"] is None and isinstance(source.get(key), (int, float)):
                    info["full_flops"] = source[key]
        info["budgets"] = front.get("budgets")
    if not isinstance(raw, list) or not raw:
        raise ValueError(
            "Invalid value for argument `front`. Expected a non-empty list of points (under "
            f"{list(_POINT_KEYS)} or at top level). Received: {type(raw).__name__}"
        )
    points = []
    for i, p in enumerate(raw):
        cfg = p.get("config", p) if isinstance(p, dict) else None
        if not isinstance(cfg, dict) or "exit" not in cfg or "gates" not in cfg or not all(
            isinstance(p.get(k), (int, float)) for k in ("flops", "accuracy")
        ):
            raise ValueError(
                f"Invalid point {i} of the front. Expected a dict with 'exit', 'gates', 'flops' "
                f"and 'accuracy'. Received: {p!r}"
            )
        points.append(dict(p, config={"exit": cfg["exit"], "gates": cfg["gates"]},
                           params=p.get("params")))
    return points, info


def budget_label(budget):
    """Directory name of a budget, as `extract_front` and the export CLI use it.

    Args:
        budget: a fraction of the full FLOPs (<= 1) or absolute FLOPs (> 1).

    Returns:
        ``"b"`` + the percentage on three digits (one decimal when not whole), or ``"f"`` + the
        rounded absolute FLOPs.

    Example:
        >>> budget_label(0.25), budget_label(0.125), budget_label(2e6)
        ('b025', 'b012.5', 'f2000000')
    """
    if budget <= 1.0:
        pct = budget * 100
        return f"b{int(round(pct)):03d}" if abs(pct - round(pct)) < 1e-9 else f"b{pct:05.1f}"
    return f"f{int(round(budget))}"


def select_front(points, budgets, full_flops):
    """For each budget, the most accurate point with ``flops <= budget`` (ties: fewer FLOPs).

    Args:
        points: from `load_front`.
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
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
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
        ValueError: no budgets (none given, none stored in the front), or the errors of
            `load_front`, `select_front` and `extract`.

    Example:
        >>> for item in extract_front(model, "front.json", [0.25, 0.5], x_train[:1024]):
        ...     item["model"].save(f"{item['label']}.keras")  # doctest: +SKIP
    """
    from tips_keras.supernet.analytic_flops import flops

    points, info = load_front(front)
    budgets = budgets if budgets is not None else info["budgets"]
    if not budgets:
        raise ValueError("Invalid value for argument `budgets`. Expected a non-empty list. "
                         f"Received: budgets={budgets!r} (and the front names none)")
    full = info["full_flops"] or flops(model, "largest")
    out = []
    for budget, _, point in select_front(points, budgets, full):
        sub = extract(model, point["config"], recalibrate_data, **kwargs)
        out.append({"budget": budget, "label": budget_label(budget), "point": point, "model": sub})
    return out
