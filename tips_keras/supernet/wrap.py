"""`anytime(model)`: put path gates on the residual blocks of a user's functional model.

Like tfmot's ``prune_low_magnitude(model)``, it returns a new model built from the same layers
(weights are shared with ``model``). A *residual block* is an ``Add`` with two inputs ``s`` and
``t`` where ``t`` is computed from ``s`` alone through a self-contained branch (no tensor of the
branch is used outside it). The branch is moved into a sub-model wrapped in a `PathGate`, so a
switched-off block only passes its identity shortcut and its branch is not computed. Blocks with a
projection shortcut (both Add inputs computed) are left fixed. The model's output becomes the
single exit.
"""

import keras

from tips_keras.supernet import layers as gl
from tips_keras.supernet.model import AnytimeModel


def _check_functional(model):
    if isinstance(model, keras.Sequential):
        raise ValueError(
            "Invalid value for argument `model`. Expected a functional Keras model: a Sequential "
            "model has no residual (Add) blocks to gate. Received: model of type Sequential"
        )
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise ValueError(
            "Invalid value for argument `model`. Expected a functional Keras model (built with "
            "keras.Input); subclassed models have no inspectable graph. Received: model of type "
            f"{type(model).__name__}"
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "Invalid value for argument `model`. Expected one input and one output. Received: "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs"
        )
    if any(isinstance(layer, (gl.PathGate, gl.SubnetController)) for layer in model.layers):
        raise ValueError(
            f"Invalid value for argument `model`. The model {model.name!r} is already an anytime "
            "model (it has gated layers)."
        )


def _ordered_nodes(model):
    return [
        node
        for depth in sorted(model._nodes_by_depth, reverse=True)
        for node in model._nodes_by_depth[depth]
        if node.operation is not None and not node.is_input
    ]


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
    block's branch is not claimed twice. `anytime` gates every block found.

    Args:
        model: a functional Keras model.

    Returns:
        A list of ``(add_node, source_tensor, target_tensor, branch_nodes)`` in graph order: the
        ``Add`` node, the shortcut tensor, the branch output, and ``{id(node): node}`` of the
        branch.

    Example:
        >>> base = keras.applications.MobileNetV2((32, 32, 3), weights=None)  # doctest: +SKIP
        >>> len(find_residual_blocks(base))  # doctest: +SKIP
        10
    """
    nodes = _ordered_nodes(model)
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


def anytime(model, name=None):
    """Wraps a functional model into an `AnytimeModel` with one gate per residual block.

    Args:
        model: a functional Keras model with residual blocks (``Add`` of an identity shortcut and
            a branch), e.g. a hand-built ResNet or ``keras.applications.MobileNetV2``.
        name: name of the new model (default ``"anytime_" + model.name``).

    Returns:
        An `AnytimeModel` sharing ``model``'s layers and weights; with all gates on it computes
        exactly ``model``'s outputs. Its single exit is ``model``'s output.

    Raises:
        ValueError: a Sequential or subclassed model, several inputs/outputs, an already wrapped
            model, or a model without residual blocks.

    Example:
        >>> base = keras.applications.MobileNetV2((32, 32, 3), weights=None, classes=10)
        >>> wrapped = tips_keras.anytime(base)
        >>> wrapped.config_space.num_gates
        10
    """
    _check_functional(model)
    blocks = find_residual_blocks(model)
    if not blocks:
        raise ValueError(
            "Invalid value for argument `model`. Expected at least one residual block (an Add "
            "layer whose inputs are an identity shortcut and a branch computed from it). "
            f"Received: model {model.name!r} with no residual blocks"
        )
    order = _ordered_nodes(model)
    in_branch = {key for _, _, _, branch in blocks for key in branch}
    gates_by_add = {id(add): (index, source, target, branch) for index, (add, source, target, branch) in enumerate(blocks)}

    inputs = keras.Input(tuple(model.inputs[0].shape[1:]), dtype=model.inputs[0].dtype, name=model.inputs[0].name)
    control = gl.SubnetController(len(blocks), 1)(inputs)
    tensors = {id(model.inputs[0]): inputs}
    for node in order:
        if id(node) in in_branch:
            continue
        if id(node) in gates_by_add:
            index, source, target, branch = gates_by_add[id(node)]
            add_name = node.operation.name
            sub = _branch_model(source, target, branch, order, f"{add_name}_branch")
            gate = gl.PathGate(sub, gate_index=index, min_exit=0, name=f"{add_name}_gate")
            tensors[id(target)] = gate([tensors[id(source)], control])
        args, kwargs = node.arguments.fill_in(tensors)
        outputs = node.operation(*args, **kwargs)
        for old, new in zip(node.output_tensors, keras.tree.flatten(outputs)):
            tensors[id(old)] = new
    out = tensors[id(model.outputs[0])]
    head = gl.ExitHead(keras.layers.Identity(name="exit0_identity"), exit_index=0, name="exit0")([out, control])
    outputs = gl.ExitSelector(name="anytime_output")([head, control])
    return AnytimeModel(inputs, outputs, name=name or f"anytime_{model.name}")
