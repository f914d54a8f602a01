"""Adjacency, hyper-adjacency ``H(lam)``, transition matrix and stationary distribution."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from tips_keras.dtmc._checks import _as_blocks
from tips_keras.dtmc._checks import _as_sparse_square
from tips_keras.dtmc._checks import _check_graph
from tips_keras.dtmc._checks import _check_lam
from tips_keras.dtmc._checks import _check_mask
from tips_keras.dtmc._checks import _check_positive_columns
from tips_keras.dtmc._checks import _is_int
from tips_keras.dtmc._checks import _sparse_is_symmetric

_STATIONARY_METHODS = ("auto", "closed_form", "iterative", "power")


# --------------------------------------------------------------------------
# Adjacency and hyper-adjacency
# --------------------------------------------------------------------------


def adjacency(num_nodes, edges, active_row, source, sink, self_loops=True):
    """Symmetric 0/1 adjacency of one configuration over all supernet nodes.

    Does not prune: pass a row of :func:`prune_to_paths` to drop dangling edges.

    Args:
        num_nodes: number of nodes ``V``.
        edges: ``(E, 2)`` integer array of directed edges.
        active_row: ``(E,)`` boolean mask of the active edges.
        source: index of the input node.
        sink: index of the output node.
        self_loops: put a 1 on the diagonal at ``source`` and ``sink``.

    Returns:
        ``scipy.sparse.csr_matrix`` of shape ``(V, V)``, symmetric, entries in
        ``{0, 1}`` (parallel edges still give 1).

    Raises:
        ValueError: on malformed arguments or node indices out of range.

    Example:
        >>> adjacency(3, [[0, 1], [1, 2]], [True, True], 0, 2).toarray()
        array([[1., 1., 0.],
               [1., 0., 1.],
               [0., 1., 1.]])
    """
    num_nodes, edges, source, sink = _check_graph(num_nodes, edges, source, sink)
    row = _check_mask("active_row", active_row, "(E,)", 1, len(edges))
    sel = edges[row]
    rows = [sel[:, 0], sel[:, 1]]
    cols = [sel[:, 1], sel[:, 0]]
    if self_loops:
        rows.append(np.array([source, sink]))
        cols.append(np.array([source, sink]))
    rows = np.concatenate(rows)
    cols = np.concatenate(cols)
    mat = sp.csr_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(num_nodes, num_nodes)
    )
    mat.sum_duplicates()
    mat.data[:] = 1.0
    return mat


def hyper_adjacency(adjacencies, lam=1.0):
    """Hyper-adjacency ``H(lam)`` of ``T`` configurations (explicit, small ``T``).

    ``H`` is block-diagonal with ``A_1 .. A_T`` plus ``lam * I`` coupling blocks
    between every pair of distinct copies. State ``(k, v)`` has index ``k*V + v``.
    It holds ``T * (T - 1) * V`` coupling entries: for large ``T`` use
    :class:`HyperAdjacencyOperator` or :func:`tas_from_configs`.

    Args:
        adjacencies: non-empty list of ``(V, V)`` matrices (sparse or dense).
        lam: non-negative coupling weight.

    Returns:
        ``scipy.sparse.csr_matrix`` of shape ``(T*V, T*V)``.

    Raises:
        ValueError: if ``lam < 0``, the list is empty, or shapes disagree.

    Example:
        >>> A = adjacency(2, [[0, 1]], [True], 0, 1)
        >>> hyper_adjacency([A, A], lam=0.5).toarray()
        array([[1. , 1. , 0.5, 0. ],
               [1. , 1. , 0. , 0.5],
               [0.5, 0. , 1. , 1. ],
               [0. , 0.5, 1. , 1. ]])
    """
    lam = _check_lam(lam)
    blocks = _as_blocks(adjacencies)
    num_copies = len(blocks)
    num_nodes = blocks[0].shape[0]
    hyper = sp.block_diag(blocks, format="csr")
    if num_copies > 1 and lam > 0:
        coupling = np.ones((num_copies, num_copies)) - np.eye(num_copies)
        hyper = hyper + lam * sp.kron(
            sp.csr_matrix(coupling), sp.identity(num_nodes, format="csr"), format="csr"
        )
    return sp.csr_matrix(hyper, dtype=np.float64)


class HyperAdjacencyOperator(spla.LinearOperator):
    """``H(lam)`` as a ``LinearOperator``, without the ``T^2`` coupling blocks.

    ``H x = blockdiag(A_1..A_T) x + lam * (1_T kron sum_k x_k) - lam * x`` with
    ``x`` laid out copy-major (``x[k*V + v]``). A mat-vec costs
    ``O(nnz(A) + T*V)``.

    Args:
        adjacencies: non-empty list of ``(V, V)`` matrices (sparse or dense).
        lam: non-negative coupling weight.

    Attributes:
        num_copies: ``T``.
        num_nodes: ``V``.
        lam: the coupling weight.
        is_symmetric: whether every block (hence ``H``) is symmetric.

    Raises:
        ValueError: if ``lam < 0``, the list is empty, or shapes disagree.

    Example:
        >>> A = adjacency(2, [[0, 1]], [True], 0, 1)
        >>> op = HyperAdjacencyOperator([A, A], lam=0.5)
        >>> op.matvec(np.array([1.0, 0.0, 0.0, 0.0])).tolist()
        [1.0, 1.0, 0.5, 0.0]
    """

    def __init__(self, adjacencies, lam=1.0):
        lam = _check_lam(lam)
        blocks = _as_blocks(adjacencies)
        self.num_copies = len(blocks)
        self.num_nodes = blocks[0].shape[0]
        self.lam = lam
        self.is_symmetric = all(_sparse_is_symmetric(b) for b in blocks)
        self._diag = sp.block_diag(blocks, format="csr")
        self._diag_t = sp.csr_matrix(self._diag.T)
        n = self.num_copies * self.num_nodes
        super().__init__(dtype=np.float64, shape=(n, n))

    def _apply(self, diag, x):
        x = np.asarray(x, dtype=np.float64)
        vec = x.ndim == 1
        mat = x.reshape(self.shape[1], -1)
        out = np.asarray(diag @ mat)
        if self.lam > 0:
            cols = mat.shape[1]
            per_copy = mat.reshape(self.num_copies, self.num_nodes, cols)
            total = per_copy.sum(axis=0, keepdims=True)
            out = out + self.lam * (
                np.broadcast_to(total, per_copy.shape).reshape(-1, cols) - mat
            )
        return out.ravel() if vec else out

    def _matvec(self, x):
        return self._apply(self._diag, x)

    def _rmatvec(self, x):
        return self._apply(self._diag_t, x)

    def _matmat(self, x):
        return self._apply(self._diag, x)

    def _rmatmat(self, x):
        return self._apply(self._diag_t, x)

    def column_sums(self):
        """Column sums of ``H`` (the degrees ``d(k, v)`` when symmetric), without forming ``H``.

        Returns:
            A float64 array (T*V,): the block-diagonal column sums plus ``lam * (T - 1)``.

        Example:
            >>> A = adjacency(2, [[0, 1]], [True], 0, 1)
            >>> HyperAdjacencyOperator([A, A], lam=0.5).column_sums().tolist()
            [2.5, 2.5, 2.5, 2.5]
        """
        diag_cols = np.asarray(self._diag.sum(axis=0)).ravel()
        return diag_cols + self.lam * (self.num_copies - 1)


# --------------------------------------------------------------------------
# Markov chain
# --------------------------------------------------------------------------


def _column_sums(H):
    """(H as sparse matrix or LinearOperator, column sums)."""
    if isinstance(H, HyperAdjacencyOperator):
        return H, H.column_sums()
    if isinstance(H, spla.LinearOperator):
        if H.shape[0] != H.shape[1]:
            raise ValueError(
                "Invalid value for argument `H`. Expected a square operator. "
                f"Received: H with shape {H.shape}"
            )
        try:
            sums = np.asarray(H.rmatvec(np.ones(H.shape[0])), dtype=np.float64).ravel()
        except NotImplementedError as exc:
            raise ValueError(
                "Invalid value for argument `H`. Expected a LinearOperator with "
                "`rmatvec` (needed for the column sums). Received: H without rmatvec"
            ) from exc
        return H, sums
    mat = _as_sparse_square(H)
    return mat, np.asarray(mat.sum(axis=0)).ravel()


def transition_matrix(H):
    """Column-stochastic transition matrix ``M = H D^-1``.

    Args:
        H: ``(N, N)`` non-negative matrix (sparse or dense), or a
            ``LinearOperator`` (e.g. :class:`HyperAdjacencyOperator`) with
            ``rmatvec``.

    Returns:
        ``scipy.sparse.csr_matrix`` ``M`` (or a ``LinearOperator`` when ``H`` is
        one) whose columns sum to 1.

    Raises:
        ValueError: if a column of ``H`` sums to zero (the message names the
            node index), or ``H`` is not square / has negative entries.

    Example:
        >>> transition_matrix(np.array([[1.0, 1.0], [1.0, 0.0]])).toarray()
        array([[0.5, 1. ],
               [0.5, 0. ]])
    """
    mat, sums = _column_sums(H)
    _check_positive_columns(sums)
    inv = 1.0 / sums
    if isinstance(mat, spla.LinearOperator):
        return spla.LinearOperator(
            mat.shape,
            matvec=lambda x: mat.matvec(np.ravel(x) * inv),
            rmatvec=lambda x: inv * mat.rmatvec(np.ravel(x)),
            dtype=np.float64,
        )
    return sp.csr_matrix(mat @ sp.diags(inv))


def _stationary_power(apply_m, n, tol, max_iter):
    """Power iteration on the lazy chain (I + M) / 2 from the uniform vector."""
    x = np.full(n, 1.0 / n)
    delta = np.inf
    for _ in range(int(max_iter)):
        y = 0.5 * (x + apply_m(x))
        y /= y.sum()
        delta = float(np.abs(y - x).sum())
        x = y
        if delta < tol:
            return x
    raise RuntimeError(
        f"Power iteration did not converge in max_iter={max_iter} iterations "
        f"(last L1 change {delta:.3e} >= tol={tol}). Is the chain irreducible?"
    )


def _stationary_krylov(apply_m, n, tol, max_iter):
    """ARPACK (implicitly restarted Arnoldi) eigenvector of M for eigenvalue 1.

    Returns None when the answer cannot be trusted (tiny ``n``, no convergence,
    a sign-mixed vector from a repeated eigenvalue 1, a large residual).
    """
    if n < 3:  # ARPACK needs k < n - 1
        return None
    op = spla.LinearOperator((n, n), matvec=apply_m, dtype=np.float64)
    try:
        _, vecs = spla.eigs(
            op, k=1, which="LR", v0=np.full(n, 1.0 / n), tol=0, maxiter=int(max_iter)
        )
    except (spla.ArpackNoConvergence, spla.ArpackError):
        return None
    x = np.real(vecs[:, 0])
    total = x.sum()
    if not np.isfinite(total) or abs(total) < 1e-300:
        return None
    x = x / total
    if x.min() < -1e-9 * np.abs(x).max():
        return None
    x = np.clip(x, 0.0, None)
    x /= x.sum()
    residual = float(np.abs(apply_m(x) - x).sum())
    return x if residual <= max(tol, 1e-12) else None


def stationary_distribution(H, method="auto", tol=1e-12, max_iter=100_000):
    """Stationary distribution ``pi`` of ``M = H D^-1``: ``M pi = pi, sum(pi)=1``.

    Methods:

    * ``"closed_form"``: ``pi = d / sum(d)`` with ``d`` the column sums (the
      degrees). Exact for a symmetric ``H`` only; symmetry is checked.
    * ``"iterative"``: Krylov eigensolver (ARPACK ``eigs``, largest real part)
      for the eigenvector of ``M`` with eigenvalue 1, accepted when it is a
      non-negative vector with ``||M pi - pi||_1 <= max(tol, 1e-12)``; otherwise
      (tiny ``N``, no convergence, reducible chain) falls back to ``"power"``.
      Converges in far fewer mat-vecs than the power iteration when the
      spectral gap is small (large ``T``: most of the mass of each state goes
      to the coupling edges).
    * ``"power"``: power iteration on the lazy chain ``(I + M) / 2`` (same
      stationary distribution, aperiodic; converges for an irreducible chain),
      from the uniform vector, until ``||x_{n+1} - x_n||_1 < tol``.
    * ``"auto"``: closed form when ``H`` is (known to be) symmetric, else
      ``"iterative"``.

    The iterative methods work on a sparse matrix or a ``LinearOperator`` and
    never form a dense matrix. For a reducible chain the stationary
    distribution is not unique: the methods may return different (valid)
    stationary distributions.

    Args:
        H: ``(N, N)`` non-negative matrix (sparse or dense) or a
            ``LinearOperator``. A generic operator cannot be checked for symmetry,
            :class:`HyperAdjacencyOperator` knows it.
        method: ``"auto"``, ``"closed_form"``, ``"iterative"`` or ``"power"``.
        tol: L1 tolerance (power: change per step; Krylov: residual).
        max_iter: maximum number of power iterations / ARPACK restarts.

    Returns:
        ``np.ndarray`` of shape ``(N,)``, non-negative, summing to 1.

    Raises:
        ValueError: unknown ``method``; ``"closed_form"`` on a non-symmetric (or
            unverifiable) ``H``; a zero column sum; invalid ``tol``/``max_iter``.
        RuntimeError: if the power iteration does not converge in ``max_iter``.

    Example:
        >>> A = adjacency(3, [[0, 1], [1, 2]], [True, True], 0, 2)
        >>> stationary_distribution(A).tolist()  # degrees 2, 2, 2
        [0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
    """
    if method not in _STATIONARY_METHODS:
        raise ValueError(
            f"Invalid value for argument `method`. Expected one of "
            f"{_STATIONARY_METHODS}. Received: method={method!r}"
        )
    if not (isinstance(tol, numbers.Real) and tol > 0):
        raise ValueError(
            "Invalid value for argument `tol`. Expected a positive float. "
            f"Received: tol={tol!r}"
        )
    if not (_is_int(max_iter) and max_iter >= 1):
        raise ValueError(
            "Invalid value for argument `max_iter`. Expected a positive integer. "
            f"Received: max_iter={max_iter!r}"
        )
    mat, sums = _column_sums(H)
    _check_positive_columns(sums)
    if isinstance(mat, HyperAdjacencyOperator):
        symmetric = mat.is_symmetric
    elif isinstance(mat, spla.LinearOperator):
        symmetric = None  # unknown
    else:
        symmetric = _sparse_is_symmetric(mat)

    if method == "closed_form" and not symmetric:
        reason = "a non-symmetric H" if symmetric is False else (
            "a LinearOperator whose symmetry cannot be verified"
        )
        raise ValueError(
            "Invalid value for argument `method`. The closed form pi = d / sum(d) "
            "requires a symmetric `H`; use method='iterative'. "
            f"Received: method='closed_form' with {reason}"
        )
    if method == "closed_form" or (method == "auto" and symmetric):
        return sums / sums.sum()

    inv = 1.0 / sums
    apply_h = mat.matvec if isinstance(mat, spla.LinearOperator) else mat.__matmul__

    def apply_m(x):
        return np.asarray(apply_h(np.ravel(x) * inv), dtype=np.float64).ravel()

    n = sums.shape[0]
    if method != "power":
        pi = _stationary_krylov(apply_m, n, tol, max_iter)
        if pi is not None:
            return pi
    return _stationary_power(apply_m, n, tol, max_iter)
