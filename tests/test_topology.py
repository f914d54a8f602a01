"""Reading the gate DAG from a model."""

import keras
import numpy as np
import pytest

import tips_keras as tips
from tests.conftest import tiny_supernet


def test_nodes_edges_gates_and_exits_of_tiny_supernet():
    topo = tips.read_topology(tiny_supernet())
    assert topo.space.gate_names == ("stage0_block0", "stage0_block1", "stage1_block0", "stage1_block1")
    assert topo.space.gate_min_exit == (0, 0, 1, 1)
    assert topo.space.num_exits == 2
    names = topo.node_names
    assert names[topo.source] == "input" and names[topo.sink] == "anytime_output"
    edges = {(names[u], names[v]): (g, e) for (u, v), g, e in zip(topo.edges, topo.edge_gate, topo.edge_exit)}
    # A residual block is the authors' basic block: input -> conv1 (internal node) -> conv2 (the
    # branch output) -> merge, plus the identity shortcut; all branch edges carry the gate.
    assert edges[("stem_bn", "stage0_block0/1")] == (0, -1)
    assert edges[("stage0_block0/1", "stage0_block0")] == (0, -1)
    assert edges[("stage0_block0", "stage0_block0_add")] == (0, -1)
    assert edges[("stem_bn", "stage0_block0_add")] == (-1, -1)  # identity shortcut
    # The early exit's head has its own convolution: one internal node before its output.
    assert edges[("stage0_block1_add", "exit0/1")] == (-1, 0)
    assert edges[("exit0/1", "exit0")] == (-1, 0)
    assert edges[("stage1_block1_add", "exit1")] == (-1, 1)  # the last exit pools directly
    assert edges[("exit1", "anytime_output")] == (-1, 1)
    assert "subnet_controller" not in names


def test_node_masks_follow_the_configuration():
    topo = tips.read_topology(tiny_supernet())
    names = np.array(topo.node_names)
    on = topo.node_masks([topo.space.resolve((1, [1, 0, 0, 1])).to_vector()])[0]
    assert {"stage0_block0/1", "stage0_block0", "stage1_block1/1", "exit1"} <= set(names[on])
    assert not {"stage0_block1/1", "stage0_block1", "stage1_block0", "exit0/1", "exit0"} & set(names[on])


def test_edge_masks_prune_everything_after_the_exit():
    topo = tips.read_topology(tiny_supernet())
    vec = topo.space.resolve((0, [1, 1, 1, 1])).to_vector()[None]
    mask = topo.edge_masks(vec)[0]
    used = {topo.node_names[v] for v in topo.edges[mask][:, 1]}
    assert "exit0" in used and "stage0_block1" in used
    assert not used & {"stage1_transition", "stage1_block0", "exit1"}


def test_model_without_gates_is_refused():
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="SubnetController.*Received"):
        tips.read_topology(plain)
    with pytest.raises(ValueError, match="AnytimeModel.*Received"):
        tips.TIPSCallback().set_model(plain)


def test_controller_without_gated_layers_is_refused():
    inputs = keras.Input((4,))
    control = tips.SubnetController(1, 1)(inputs)
    head = tips.ExitHead(keras.layers.Dense(2), exit_index=0)([inputs, control])
    model = tips.AnytimeModel(inputs, tips.ExitSelector()([head, control]))
    with pytest.raises(ValueError, match="no gates"):
        tips.read_topology(model)


def test_gate_indices_must_match_the_controller():
    inputs = keras.Input((4,))
    control = tips.SubnetController(2, 1)(inputs)
    branch = tips.PathGate(keras.layers.Dense(4), gate_index=0)([inputs, control])
    x = keras.layers.Add()([inputs, branch])
    head = tips.ExitHead(keras.layers.Dense(2), exit_index=0)([x, control])
    model = tips.AnytimeModel(inputs, tips.ExitSelector()([head, control]))
    with pytest.raises(ValueError, match="declares 2 gates"):
        tips.read_topology(model)


def test_edge_masks_refuse_wrong_width():
    topo = tips.read_topology(tiny_supernet())
    with pytest.raises(ValueError, match="Received: shape"):
        topo.edge_masks(np.zeros((3, 2)))
