"""Argument validation shared by the `tips_keras.dtmc` modules (pure numpy / scipy).

Every error is a ``ValueError`` with a Keras-style message:
``Invalid value for argument `name`. Expected ... Received: ...``.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

_PATH_SCORE_MODES = ("log", "sum")
_SYMMETRY_RTOL = 1e-12


# --------------------------------------------------------------------------
# Scalars, graphs and masks
# --------------------------------------------------------------------------


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_num_nodes(num_nodes):
    if not _is_int(num_nodes) or num_nodes < 1:
        raise ValueError(
            "Invalid value for argument `num_nodes`. Expected a positive integer. "
            f"Received: num_nodes={num_nodes!r}"
        )
    return int(num_nodes)


def _check_node(name, value, num_nodes):
    if not _is_int(value) or not 0 <= value < num_nodes:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a node index in "
            f"[0, {num_nodes - 1}]. Received: {name}={value!r}"
        )
    return int(value)


def _check_lam(lam):
    ok = isinstance(lam, numbers.Real) and not isinstance(lam, (bool, np.bool_))
    if not ok or not np.isfinite(lam) or lam < 0:
        raise ValueError(
            "Invalid value for argument `lam`. Expected a non-negative float. "
            f"Received: lam={lam!r}"
        )
    return float(lam)


def _check_mode(mode):
    if mode not in _PATH_SCORE_MODES:
        raise ValueError(
            f"Invalid value for argument `mode`. Expected one of {_PATH_SCORE_MODES}. "
            f"Received: mode={mode!r}"
        )
    return mode


def _check_edges(edges, num_nodes):
    arr = np.asarray(edges)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(
            "Invalid value for argument `edges`. Expected an integer array of shape "
            f"(E, 2). Received: edges with shape {arr.shape}"
        )
    if not (np.issubdtype(arr.dtype, np.integer)):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
            raise ValueError(
                "Invalid value for argument `edges`. Expected integer node indices. "
                f"Received: edges with dtype {arr.dtype}"
            )
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= num_nodes)
    if bad.any():
        e = int(np.argwhere(bad)[0, 0])
        raise ValueError(
            "Invalid value for argument `edges`. Expected node indices in "
            f"[0, {num_nodes - 1}]. Received: edges[{e}]={tuple(int(x) for x in arr[e])}"
        )
    return arr


def _check_graph(num_nodes, edges, source, sink):
    num_nodes = _check_num_nodes(num_nodes)
    edges = _check_edges(edges, num_nodes)
    source = _check_node("source", source, num_nodes)
    sink = _check_node("sink", sink, num_nodes)
    if source == sink:
        raise ValueError(
            "Invalid value for argument `sink`. Expected a node different from "
            f"`source`. Received: source={source}, sink={sink}"
        )
    return num_nodes, edges, source, sink


def _check_mask(name, mask, shape_desc, expected_ndim, num_edges):
    arr = np.asarray(mask)
    if arr.ndim != expected_ndim or arr.shape[-1] != num_edges:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a boolean array of shape "
            f"{shape_desc} with E={num_edges}. Received: {name} with shape {arr.shape}"
        )
    if arr.dtype != np.bool_:
        if arr.size and not (
            (np.issubdtype(arr.dtype, np.number)) and np.all((arr == 0) | (arr == 1))
        ):
            raise ValueError(
                f"Invalid value for argument `{name}`. Expected boolean (or 0/1) "
                f"values. Received: {name} with dtype {arr.dtype}"
            )
        arr = arr.astype(bool)
    return arr


def _check_active(active, num_edges, allow_empty=True):
    arr = _check_mask("active", active, "(T, E)", 2, num_edges)
    if not allow_empty and arr.shape[0] == 0:
        raise ValueError(
            "Invalid value for argument `active`. Expected at least one "
            f"configuration. Received: active with 0 configurations (shape {arr.shape})"
        )
    return arr


def _check_vector(name, values, length, length_desc):
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] != length:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a 1-D array of length "
            f"{length_desc}={length}. Received: {name} with shape {arr.shape}"
        )
    return arr


def _check_weights(weights, num_configs):
    """Per-configuration weights: ``None`` (all 1) or ``(T,)`` positive finite, rescaled to mean 1."""
    if weights is None:
        return np.ones(num_configs)
    arr = _check_vector("weights", weights, num_configs, "T")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(
            "Invalid value for argument `weights`. Expected positive finite weights, one per "
            f"configuration. Received: weights with min {np.min(arr)!r} and max {np.max(arr)!r}"
        )
    return arr / arr.mean()


def _check_tas_values(tas_values, num_nodes=None):
    arr = np.asarray(tas_values, dtype=np.float64)
    if arr.ndim != 1 or (num_nodes is not None and arr.shape[0] != num_nodes):
        expected = "V" if num_nodes is None else f"V={num_nodes}"
        raise ValueError(
            "Invalid value for argument `tas_values`. Expected a 1-D array of length "
            f"{expected}. Received: tas_values with shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(
            "Invalid value for argument `tas_values`. Expected finite non-negative "
            f"values. Received: tas_values={arr!r}"
        )
    return arr


# --------------------------------------------------------------------------
# Matrices
# --------------------------------------------------------------------------


def _as_blocks(adjacencies):
    if isinstance(adjacencies, (sp.spmatrix, sp.sparray, np.ndarray)) and not (
        isinstance(adjacencies, np.ndarray) and adjacencies.ndim == 3
    ):
        adjacencies = [adjacencies]
    blocks = [sp.csr_matrix(a, dtype=np.float64) for a in adjacencies]
    if not blocks:
        raise ValueError(
            "Invalid value for argument `adjacencies`. Expected a non-empty list of "
            "(V, V) matrices. Received: adjacencies with 0 matrices"
        )
    shape = blocks[0].shape
    if shape[0] != shape[1] or shape[0] == 0:
        raise ValueError(
            "Invalid value for argument `adjacencies`. Expected square (V, V) "
            f"matrices. Received: adjacencies[0] with shape {shape}"
        )
    for i, block in enumerate(blocks):
        if block.shape != shape:
            raise ValueError(
                "Invalid value for argument `adjacencies`. Expected matrices of one "
                f"shape {shape}. Received: adjacencies[{i}] with shape {block.shape}"
            )
        _check_nonnegative_entries(block, "adjacencies", f"adjacencies[{i}]")
    return blocks


def _check_nonnegative_entries(mat, argument, label):
    """Raises a ValueError when a sparse matrix has a negative or non-finite stored entry."""
    if mat.nnz and (not np.all(np.isfinite(mat.data)) or mat.data.min() < 0):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected finite non-negative entries. "
            f"Received: {label} with min entry {mat.data.min()!r}"
        )


def _sparse_is_symmetric(mat):
    diff = (mat - mat.T).tocsr()
    diff.eliminate_zeros()
    if diff.nnz == 0:
        return True
    scale = max(1.0, float(abs(mat).max()))
    return float(abs(diff).max()) <= _SYMMETRY_RTOL * scale


def _as_sparse_square(H):
    mat = sp.csr_matrix(H, dtype=np.float64)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1] or mat.shape[0] == 0:
        raise ValueError(
            "Invalid value for argument `H`. Expected a non-empty square matrix. "
            f"Received: H with shape {mat.shape}"
        )
    _check_nonnegative_entries(mat, "H", "H")
    return mat


def _check_positive_columns(sums):
    zero = np.flatnonzero(~(sums > 0))
    if zero.size:
        shown = zero[:10].tolist()
        raise ValueError(
            "Invalid value for argument `H`. Expected positive column sums (every "
            "state needs an outgoing transition). Received: H with zero column sum "
            f"at node index {shown}{' ...' if zero.size > 10 else ''}"
        )
