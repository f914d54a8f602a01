"""Reads the gate DAG of an anytime supernet: nodes, edges, gates and exits.

Nodes are feature maps: the model input and the output tensor of every layer (the control vector
of `SubnetController` is not a feature map and is left out). Edges are operations: a layer with
inputs ``u_1..u_n`` and output ``v`` contributes edges ``u_i -> v``.

A gated branch or an exit head wraps a whole sub-model (two convolutions, say) in one layer. As in
the authors' block graphs (``TPS_analysis/tps_sum.py``: a basic block is the 4-cycle input ->
conv -> conv -> output plus the residual edge), such a layer gets one internal node per weighted
layer it runs before its output (``<layer>/1``, ``<layer>/2``, ...): its single edge becomes a
chain of edges, all switched by the same gate or exit. A residual block of the zoo is then the
authors' basic block: input, first convolution, second convolution (the branch output) and the
merge, with the shortcut from input to merge.

Which configuration switches which edge:

* the edge into a `PathGate` output carries the gate (``gate_index``), and so does every edge out
  of that output (a switched-off branch contributes nothing to the merge after it);
* edges into and out of an `ExitHead` output carry the head's exit index: they exist only when
  that exit is taken;
* all other edges are fixed.

Then, per configuration, only edges on some input -> output path made of switched-on edges are
kept (`tips_keras.dtmc.prune_to_paths`): everything after the chosen exit drops out.
"""

import dataclasses
import weakref

import numpy as np

from tips_keras.supernet import configs as configs_lib
from tips_keras import dtmc
from tips_keras.supernet import layers as gl


@dataclasses.dataclass(frozen=True)
class Topology:
    """The gate DAG of a supernet (pure data, usable without Keras).

    `read_topology` builds it; the FLOPs tables (`tips_keras.cost`), the TIPS callback and the
    search read which operations each configuration runs from it.

    Attributes:
        node_names: name of each node (the producing layer's name, ``input`` for the input).
        edges: int array (E, 2) of directed edges (u, v).
        edge_gate: int array (E,): the gate switching each edge, -1 when fixed.
        edge_exit: int array (E,): the exit an edge belongs to, -1 when shared by all exits.
        edge_layer: name of the layer each edge belongs to.
        source: index of the input node.
        sink: index of the output node.
        space: the `ConfigSpace` (gate names, gate stages, number of exits).

    Example:
        >>> topo = read_topology(tips_keras.supernet.zoo.anytime_resnet())  # doctest: +SKIP
        >>> topo.num_gates, topo.space.num_exits  # doctest: +SKIP
        (6, 3)
    """

    node_names: tuple
    edges: np.ndarray
    edge_gate: np.ndarray
    edge_exit: np.ndarray
    edge_layer: tuple
    source: int
    sink: int
    space: configs_lib.ConfigSpace

    @property
    def num_nodes(self):
        """Number of nodes ``V`` (feature maps, the input included).

        Returns:
            An int.
        """
        return len(self.node_names)

    @property
    def num_gates(self):
        """Number of gates ``G``.

        Returns:
            An int.
        """
        return self.space.num_gates

    def node_masks(self, vectors):
        """Nodes on the input -> output paths of many configurations.

        Args:
            vectors: array (T, G + 1) of control vectors.

        Returns:
            Boolean array (T, V): node ``v`` is an endpoint of an active (pruned) edge.

        Raises:
            ValueError: ``vectors`` is not of shape (T, G + 1).

        Example:
            >>> topo.node_masks([topo.space.smallest().to_vector()]).sum()  # doctest: +SKIP
        """
        edges = self.edge_masks(vectors)
        nodes = np.zeros((len(edges), self.num_nodes), dtype=bool)
        for column in (0, 1):
            np.logical_or.at(nodes, (slice(None), self.edges[:, column]), edges)
        return nodes

    def edge_masks(self, vectors, prune=True):
        """Active edges for many configurations.

        Args:
            vectors: array (T, G + 1) of control vectors ``[bits..., exit]``.
            prune: keep only edges on an input -> output path of active edges (default True).

        Returns:
            Boolean array (T, E).

        Raises:
            ValueError: ``vectors`` is not of shape (T, G + 1).

        Example:
            >>> topo.edge_masks([topo.space.largest().to_vector()]).shape  # doctest: +SKIP
            (1, 60)
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.num_gates + 1:
            raise ValueError(
                f"Invalid value for argument `vectors`. Expected shape (T, {self.num_gates + 1}). "
                f"Received: shape={vectors.shape}"
            )
        bits = vectors[:, :-1] > 0.5
        exits = np.rint(vectors[:, -1]).astype(int)
        gate_on = np.ones((len(vectors), len(self.edges)), dtype=bool)
        gated = self.edge_gate >= 0
        gate_on[:, gated] = bits[:, self.edge_gate[gated]]
        exit_on = (self.edge_exit[None, :] < 0) | (self.edge_exit[None, :] == exits[:, None])
        active = gate_on & exit_on
        if prune:
            active = dtmc.prune_to_paths(self.num_nodes, self.edges, active, self.source, self.sink)
        return active


_CACHE = weakref.WeakKeyDictionary()


def _history(tensor):
    return tensor._keras_history  # (operation, node_index, tensor_index)


def _weighted_layers(layer):
    """Number of layers with a kernel (convolutions, dense layers) inside ``layer``."""
    count = 0
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        if any(hasattr(sub, name) for name in ("kernel", "depthwise_kernel", "pointwise_kernel")):
            count += 1
    return count


def find_controller(model):
    """Returns the model's `SubnetController` layer.

    Args:
        model: a functional anytime model (anything with ``layers``).

    Returns:
        The one `SubnetController` among ``model.layers``.

    Raises:
        ValueError: none or several ``SubnetController`` layers (the message gives the count).

    Example:
        >>> find_controller(tips_keras.supernet.zoo.anytime_resnet()).num_gates  # doctest: +SKIP
        6
    """
    found = [layer for layer in getattr(model, "layers", []) if isinstance(layer, gl.SubnetController)]
    if len(found) != 1:
        raise ValueError(
            "Invalid value for argument `model`. Expected a functional anytime model with "
            "exactly one SubnetController and gated layers (build one with tips_keras.supernet.zoo or "
            f"tips_keras.anytime). Received: model={getattr(model, 'name', model)!r} with "
            f"{len(found)} SubnetController layers"
        )
    return found[0]


def read_topology(model):
    """Reads nodes, edges, gates and exits from a gated functional model.

    Args:
        model: a functional Keras model built with `PathGate` / `ExitHead` / `ExitSelector`
            layers and one `SubnetController`.

    Returns:
        A `Topology`.

    Raises:
        ValueError: the model is not functional, has no gates, its gate or exit indices are not
            ``0..G-1`` / ``0..E-1`` as declared by the controller.

    Example:
        >>> topo = read_topology(tips_keras.supernet.zoo.anytime_resnet())  # doctest: +SKIP
        >>> topo.space.gate_names[:2]  # doctest: +SKIP
        ('stage0_block0', 'stage0_block1')
    """
    try:
        return _CACHE[model]
    except (KeyError, TypeError):
        pass
    controller = find_controller(model)
    if not hasattr(model, "_nodes_by_depth") or len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "Invalid value for argument `model`. Expected a functional model with one input and "
            f"one output. Received: model={model.name!r}"
        )
    control_id = id(controller._inbound_nodes[0].output_tensors[0])
    node_index, node_names = {}, []

    def node_of(tensor):
        key = id(tensor)
        if key not in node_index:
            node_index[key] = len(node_names)
            op = _history(tensor)[0]
            node_names.append("input" if op is model.inputs[0]._keras_history[0] else op.name)
        return node_index[key]

    source = node_of(model.inputs[0])
    edges, edge_gate, edge_exit, edge_layer = [], [], [], []
    gate_of_node, exit_of_node = {}, {}
    gate_layers, exit_layers = {}, {}
    depths = sorted(model._nodes_by_depth, reverse=True)
    for depth in depths:
        for knode in model._nodes_by_depth[depth]:
            op = knode.operation
            if isinstance(op, gl.SubnetController) or not knode.input_tensors:
                continue
            inputs = [t for t in knode.input_tensors if id(t) != control_id]
            out = node_of(knode.output_tensors[0])
            gate, exit_index = -1, -1
            if isinstance(op, gl.PathGate) and op.gate_index is not None:
                gate = op.gate_index
                gate_of_node[out] = gate
                gate_layers.setdefault(gate, []).append(op)
            if isinstance(op, gl.ExitHead):
                exit_index = op.exit_index
                exit_of_node[out] = exit_index
                exit_layers.setdefault(exit_index, []).append(op)
            chain = []  # internal nodes of a wrapped sub-model (one per weighted layer but the last)
            if isinstance(op, (gl.PathGate, gl.ExitHead)) and len(inputs) == 1:
                for k in range(1, _weighted_layers(op.layer)):
                    chain.append(len(node_names))
                    node_names.append(f"{op.name}/{k}")
            for tensor in inputs:
                u = node_of(tensor)
                gate_u = gate if gate >= 0 else gate_of_node.get(u, -1)
                exit_u = exit_index if exit_index >= 0 else exit_of_node.get(u, -1)
                for a, b in zip([u] + chain, chain + [out]):
                    edges.append((a, b))
                    edge_gate.append(gate_u)
                    edge_exit.append(exit_u)
                    edge_layer.append(op.name)
    sink = node_of(model.outputs[0])

    num_gates, num_exits = controller.num_gates, controller.num_exits
    if not gate_layers:
        raise ValueError(
            "Invalid value for argument `model`. Expected a model with at least one gated "
            f"PathGate layer (gate_index set). Received: model={model.name!r} with no gates"
        )
    if sorted(gate_layers) != list(range(num_gates)):
        raise ValueError(
            f"Invalid gate indices in model {model.name!r}: the controller declares "
            f"{num_gates} gates (indices 0..{num_gates - 1}), the PathGate layers use "
            f"{sorted(gate_layers)}"
        )
    if sorted(exit_layers) != list(range(num_exits)):
        raise ValueError(
            f"Invalid exit indices in model {model.name!r}: the controller declares "
            f"{num_exits} exits (indices 0..{num_exits - 1}), the ExitHead layers use "
            f"{sorted(exit_layers)}"
        )
    gate_names = tuple(gate_layers[g][0].name for g in range(num_gates))
    gate_min_exit = tuple(min(layer.min_exit for layer in gate_layers[g]) for g in range(num_gates))
    topo = Topology(
        node_names=tuple(node_names),
        edges=np.asarray(edges, dtype=np.int64).reshape(-1, 2),
        edge_gate=np.asarray(edge_gate, dtype=np.int64),
        edge_exit=np.asarray(edge_exit, dtype=np.int64),
        edge_layer=tuple(edge_layer),
        source=source,
        sink=sink,
        space=configs_lib.ConfigSpace(gate_names, gate_min_exit, num_exits),
    )
    _CACHE[model] = topo
    return topo
