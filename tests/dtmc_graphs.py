"""Small graphs and helpers shared by the tests of `tips_keras.dtmc`.

Plain constants and functions (no pytest fixtures), imported by `tests/test_dtmc_*.py`.
"""

import numpy as np
import pytest
from hypothesis import strategies as st

from tips_keras.dtmc import adjacency

# --------------------------------------------------------------------------
# A chain of 3 residual blocks
#   nodes: 0 in, 1 mid1, 2 out1, 3 mid2, 4 out2, 5 mid3, 6 out3
# --------------------------------------------------------------------------

CHAIN_V = 7
CHAIN_EDGES = np.array(
    [
        [0, 1], [1, 2], [0, 2],  # block 1: conv branch (gate 0) + shortcut
        [2, 3], [3, 4], [2, 4],  # block 2: gate 1
        [4, 5], [5, 6], [4, 6],  # block 3: gate 2
    ]
)
CHAIN_GATE = np.array([0, 0, -1, 1, 1, -1, 2, 2, -1])
SOURCE, SINK = 0, 6


def chain_active(*bit_rows):
    """(T, E) mask from gate bits: fixed edges always on."""
    bits = np.asarray(bit_rows, dtype=bool)
    on = np.ones((bits.shape[0], len(CHAIN_GATE)), dtype=bool)
    gated = CHAIN_GATE >= 0
    on[:, gated] = bits[:, CHAIN_GATE[gated]]
    return on


def chain_adjs(active):
    return [adjacency(CHAIN_V, CHAIN_EDGES, row, SOURCE, SINK) for row in active]


# --------------------------------------------------------------------------
# Other graphs and helpers
# --------------------------------------------------------------------------

# The 3-node path 0 -> 1 -> 2 used by the error cases.
PATH3_EDGES = [[0, 1], [1, 2]]


def resnet_graph(num_blocks=19):
    """source + num_blocks residual blocks (in, mid, out) + head -> 2*B + 2 nodes."""
    edges, gates = [], []
    for b in range(num_blocks):
        i, m, o = 2 * b, 2 * b + 1, 2 * b + 2
        edges += [[i, m], [m, o], [i, o]]
        gates += [b, b, -1]
    last = 2 * num_blocks
    edges.append([last, last + 1])
    gates.append(-1)
    return last + 2, np.array(edges), np.array(gates), num_blocks


@st.composite
def random_dags(draw):
    """Small DAG with permuted labels (index order is not topological)."""
    n = draw(st.integers(3, 7))
    perm = draw(st.permutations(list(range(n))))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=12))  # duplicates ok
    edges = np.array([[perm[i], perm[j]] for i, j in chosen])
    return n, edges, perm[0], perm[n - 1]


def assert_keras_style_value_error(fn):
    """`fn()` raises a ValueError with a Keras-style message."""
    with pytest.raises(ValueError) as info:
        fn()
    message = str(info.value)
    assert "Received" in message, message
    assert message.startswith("Invalid value for argument `"), message
