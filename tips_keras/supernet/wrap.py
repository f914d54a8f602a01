"""`anytime(model)`: put path gates on the residual blocks of a user's functional model.

Like tfmot's ``prune_low_magnitude(model)``, it returns a new model built from the same layers
(weights are shared with ``model``). A *residual block* is an ``Add`` with two inputs ``s`` and
``t`` where ``t`` is computed from ``s`` alone through a self-contained branch (no tensor of the
branch is used outside it). The branch is moved into a sub-model wrapped in a `PathGate`, so a
switched-off block only passes its identity shortcut and its branch is not computed. Blocks with a
projection shortcut (both Add inputs computed) are left fixed. The model's output becomes the
single exit.

What the user's model means is kept or refused up front:

* **Nested models.** A backbone called as one layer (``x = backbone(inputs, training=False)``, the
  Keras transfer-learning pattern, or a ``Sequential`` holding one) is inlined: its layers (the same
  objects, frozen or not) are called directly in the wrapped graph, so its residual blocks are
  found. Keras 3 passes the outer call's ``training`` to every layer of a functional model anyway
  (the nested call's ``training=False`` only applies when the outer call gives none), so the
  inlined graph computes what the nested one did, in training and in inference.
* **Dtypes and precision policies.** The input keeps its dtype (``uint8`` pixels followed by
  ``Rescaling``, say); a gate computes in the dtype of the branch it switches and the exit keeps
  the dtype of the model's output (a ``mixed_float16`` model with a float32 softmax stays one).
* **Frozen layers** stay frozen: the layers are shared, not copied.
* **Dynamic dimensions.** A gate returns zeros of its branch's shape when it is off, and FLOPs, the
  search and the exports count feature maps: an input with unknown dimensions besides the batch
  (``keras.Input((None, None, 3))``) is refused unless ``input_shape`` fixes them; a fully
  convolutional model is then wrapped at that size.
"""

import keras

from tips_keras.supernet import layers as gl
from tips_keras.supernet.model import AnytimeModel


def _graph(layer):
    """The functional graph of a Sequential / functional model, or None for a leaf layer."""
    if isinstance(layer, keras.Sequential):
        return getattr(layer, "_functional", None)
    return layer if isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth") else None


def _check_functional(model):
    if isinstance(model, keras.Sequential) and _graph(model) is None:
        raise ValueError(
            "Invalid value for argument `model`. Expected a functional Keras model, or a built "
            "Sequential model (one that starts with keras.Input). Received: an unbuilt "
            f"Sequential model {model.name!r}"
        )
    if not isinstance(model, keras.Model) or _graph(model) is None:
        raise ValueError(
            "Invalid value for argument `model`. Expected a functional Keras model (built with "
            "keras.Input); subclassed models have no inspectable graph. Received: model of type "
            f"{type(model).__name__}"
        )
    graph = _graph(model)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(
            "Invalid value for argument `model`. Expected one input and one output. Received: "
            f"{len(graph.inputs)} inputs and {len(graph.outputs)} outputs"
        )
    if any(isinstance(layer, (gl.PathGate, gl.SubnetController))
           for layer in model._flatten_layers(include_self=False, recursive=True)):
        raise ValueError(
            f"Invalid value for argument `model`. The model {model.name!r} is already an anytime "
            "model (it has gated layers)."
        )
    return graph


def _input_shape(graph, input_shape):
    """The fixed input shape to wrap at (without the batch dimension)."""
    shape = tuple(graph.inputs[0].shape[1:])
    if input_shape is None:
        if any(d is None for d in shape):
            raise ValueError(
                "Invalid value for argument `model`. Expected an input shape that is fixed apart "
                "from the batch dimension: a switched-off gate returns zeros of its branch's "
                "shape, and FLOPs, the search and the exports count feature maps. Received: "
                f"model {graph.name!r} with input shape {(None,) + shape}. Pass "
                "`input_shape=` (e.g. input_shape=(224, 224, 3)) to wrap a fully convolutional "
                "model at one size, or build it on keras.Input with a fixed shape."
            )
        return shape
    fixed = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else None
    if (fixed is None or len(fixed) != len(shape)
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in fixed)
            or any(s is not None and s != d for s, d in zip(shape, fixed))):
        raise ValueError(
            "Invalid value for argument `input_shape`. Expected a tuple of positive integers "
            f"matching the model's input shape {shape} (without the batch dimension; only its "
            f"None entries may be chosen). Received: input_shape={input_shape!r}"
        )
    return fixed


def _ordered_nodes(model):
    return [
        node
        for depth in sorted(model._nodes_by_depth, reverse=True)
        for node in model._nodes_by_depth[depth]
        if node.operation is not None and not node.is_input
    ]


def _has_add(layer):
    return any(isinstance(sub, keras.layers.Add)
               for sub in layer._flatten_layers(include_self=False, recursive=True))


def _replay(graph, new_inputs):
    """Calls ``graph``'s layers on ``new_inputs``, inlining nested models that hold an ``Add``."""
    values = {id(t): v for t, v in zip(graph.inputs, new_inputs)}
    for node in _ordered_nodes(graph):
        args, kwargs = node.arguments.fill_in(values)
        inner = _graph(node.operation)
        if inner is not None and _has_add(node.operation):
            # The nested call's `training` / `mask` are dropped: Keras passes the outer call's
            # `training` to every layer of a functional model whenever it is given.
            outputs = _replay(inner, keras.tree.flatten(args[0] if args else kwargs["inputs"]))
            outputs = outputs[0] if len(outputs) == 1 else outputs
        else:
            outputs = node.operation(*args, **kwargs)
        for old, new in zip(node.output_tensors, keras.tree.flatten(outputs)):
            values[id(old)] = new
    return [values[id(t)] for t in graph.outputs]


def _flat(model, graph, input_shape):
    """``graph`` itself, or a functional model on the same layers: nested models inlined and the
    input at ``input_shape``."""
    nested = [node.operation for node in _ordered_nodes(graph)
              if _graph(node.operation) is not None and _has_add(node.operation)]
    if not nested and input_shape == tuple(graph.inputs[0].shape[1:]):
        return graph
    spec = graph.inputs[0]
    inputs = keras.Input(input_shape, dtype=spec.dtype, name=spec.name)
    try:
        outputs = _replay(graph, [inputs])
        return keras.Model(inputs, outputs[0], name=model.name)
    except Exception as e:
        what = (f"inlining the nested model(s) {[m.name for m in nested]}" if nested
                else f"calling it on input shape {input_shape}")
        raise ValueError(
            f"Invalid value for argument `model`: cannot wrap model {model.name!r} by {what}: "
            f"{type(e).__name__}: {e}. Layer names must be unique across the model and its nested "
            "models, and every layer must accept the fixed input shape."
        ) from e


def _branch_between(source, target, producer, consumers, add_node):
    """Nodes computing ``target`` from ``source`` alone, or None if not a self-contained branch."""
    if id(target) not in producer:
        return None
    branch, stack = {}, [producer[id(target)]]
    while stack:
        node = stack.pop()
        if id(node) in branch:
            continue
        branch[id(node)] = node
        for tensor in node.input_tensors:
            if tensor is source:
                continue
            if id(tensor) not in producer:  # reached a model input without passing `source`
                return None
            stack.append(producer[id(tensor)])
    for node in branch.values():
        for tensor in node.output_tensors:
            users = consumers.get(id(tensor), [])
            allowed = [add_node] if tensor is target else []
            if any(id(u) not in branch and u not in allowed for u in users):
                return None
    return branch


def find_residual_blocks(model):
    """Finds the gateable residual blocks of a functional model.

    A block is an ``Add`` of two inputs, one computed from the other alone through a
    self-contained branch (no tensor of the branch used outside it); a node already in an earlier
    block's branch is not claimed twice. Only the model's own graph is searched: `anytime`
    inlines nested models first.

    Args:
        model: a functional Keras model (or a built Sequential one).

    Returns:
        A list of ``(add_node, source_tensor, target_tensor, branch_nodes)`` in graph order: the
        ``Add`` node, the shortcut tensor, the branch output, and ``{id(node): node}`` of the
        branch.

    Example:
        >>> base = keras.applications.MobileNetV2((32, 32, 3), weights=None)  # doctest: +SKIP
        >>> len(find_residual_blocks(base))  # doctest: +SKIP
        10
    """
    nodes = _ordered_nodes(_graph(model) or model)
    producer, consumers = {}, {}
    for node in nodes:
        for tensor in node.output_tensors:
            producer[id(tensor)] = node
        for tensor in node.input_tensors:
            consumers.setdefault(id(tensor), []).append(node)
    blocks, used = [], set()
    for node in nodes:
        if not isinstance(node.operation, keras.layers.Add) or len(node.input_tensors) != 2:
            continue
        a, b = node.input_tensors
        for source, target in ((a, b), (b, a)):
            branch = _branch_between(source, target, producer, consumers, node)
            if branch and not used & set(branch):
                blocks.append((node, source, target, branch))
                used |= set(branch)
                break
    return blocks


def _branch_model(source, target, branch, order, name):
    inputs = keras.Input(tuple(source.shape[1:]), dtype=source.dtype, name=f"{name}_input")
    tensors = {id(source): inputs}
    for node in order:
        if id(node) in branch:
            args, kwargs = node.arguments.fill_in(tensors)
            outputs = node.operation(*args, **kwargs)
            for old, new in zip(node.output_tensors, keras.tree.flatten(outputs)):
                tensors[id(old)] = new
    return keras.Model(inputs, tensors[id(target)], name=name)


def _dtype_of(tensor):
    """``{"dtype": ...}`` keeping a floating tensor's dtype (precision policies), else ``{}``."""
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    return {"dtype": dtype} if keras.backend.is_float_dtype(dtype) else {}


def anytime(model, name=None, *, input_shape=None):
    """Wraps a functional model into an `AnytimeModel` with one gate per residual block.

    Args:
        model: a functional Keras model (or a built Sequential one) with residual blocks
            (``Add`` of an identity shortcut and a branch), e.g. a hand-built ResNet or
            ``keras.applications.MobileNetV2``. Nested models holding residual blocks (a backbone
            called as one layer) are inlined; see the module docstring for what is kept.
        name: name of the new model (default ``"anytime_" + model.name``).
        input_shape: the input shape (without the batch dimension) to wrap the model at; needed
            only when ``model``'s input has unknown dimensions (``keras.Input((None, None, 3))``);
            only those may be chosen.

    Returns:
        An `AnytimeModel` sharing ``model``'s layers and weights; with all gates on it computes
        exactly ``model``'s outputs. Its single exit is ``model``'s output.

    Raises:
        ValueError: a subclassed model, several inputs/outputs, an already wrapped model, a model
            without residual blocks, an input with unknown dimensions and no ``input_shape``, a
            bad ``input_shape``, or nested models whose layer names clash with the outer ones.

    Example:
        >>> base = keras.applications.MobileNetV2((32, 32, 3), weights=None, classes=10)
        >>> wrapped = tips_keras.anytime(base)
        >>> wrapped.config_space.num_gates
        10
    """
    graph = _check_functional(model)
    flat = _flat(model, graph, _input_shape(graph, input_shape))
    blocks = find_residual_blocks(flat)
    if not blocks:
        kind = "Sequential model" if isinstance(model, keras.Sequential) else "model"
        raise ValueError(
            "Invalid value for argument `model`. Expected at least one residual block (an Add "
            "layer whose inputs are an identity shortcut and a branch computed from it; nested "
            "models are searched too). Received: "
            f"{kind} {model.name!r} with no residual blocks"
        )
    order = _ordered_nodes(flat)
    in_branch = {key for _, _, _, branch in blocks for key in branch}
    gates_by_add = {id(add): (index, source, target, branch) for index, (add, source, target, branch) in enumerate(blocks)}

    spec = flat.inputs[0]
    inputs = keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype, name=spec.name)
    control = gl.SubnetController(len(blocks), 1)(inputs)
    tensors = {id(spec): inputs}
    names = set()
    for node in order:
        if id(node) in in_branch:
            continue
        if id(node) in gates_by_add:
            index, source, target, branch = gates_by_add[id(node)]
            base, k = node.operation.name, 1
            while base in names:  # an Add layer called twice (a shared nested block)
                base, k = f"{node.operation.name}_{k}", k + 1
            names.add(base)
            sub = _branch_model(source, target, branch, order, f"{base}_branch")
            gate = gl.PathGate(sub, gate_index=index, min_exit=0, name=f"{base}_gate", **_dtype_of(target))
            tensors[id(target)] = gate([tensors[id(source)], control])
        args, kwargs = node.arguments.fill_in(tensors)
        outputs = node.operation(*args, **kwargs)
        for old, new in zip(node.output_tensors, keras.tree.flatten(outputs)):
            tensors[id(old)] = new
    out = tensors[id(flat.outputs[0])]
    kept = _dtype_of(out)
    head = gl.ExitHead(keras.layers.Identity(name="exit0_identity", **kept), exit_index=0, name="exit0",
                       **kept)([out, control])
    outputs = gl.ExitSelector(name="anytime_output", **kept)([head, control])
    return AnytimeModel(inputs, outputs, name=name or f"anytime_{model.name}")
