"""DTMC model of supernet training: TAS, TPS and per-gate importance (TIPS).

This package is pure numpy / scipy (it must never import Keras or TensorFlow), so
that every formula can be tested against hand-computed graphs. Layout:

* :mod:`tips_keras.dtmc.graph`: DAG utilities (:func:`topological_order`,
  :func:`prune_to_paths`, :func:`enumerate_paths`);
* :mod:`tips_keras.dtmc.chain`: adjacency, hyper-adjacency and the Markov chain
  (:func:`adjacency`, :func:`hyper_adjacency`, :class:`HyperAdjacencyOperator`,
  :func:`transition_matrix`, :func:`stationary_distribution`);
* :mod:`tips_keras.dtmc.scores`: TAS, TPS and importance (:func:`tas`,
  :func:`tas_from_configs`, :func:`path_score`, :func:`best_path_score_per_edge`,
  :func:`gate_importance`, :func:`importance_from_configs`);
* :mod:`tips_keras.dtmc.budget`: the important path of each FLOPs budget
  (:func:`best_configurations`, :func:`budget_importance`);
* ``tips_keras.dtmc._checks``: argument validation shared by the above.

Every public name is re-exported here: ``tips_keras.dtmc.X`` is the API.

The method (TIPS, ICML 2023), as implemented here:

1. **Subnetwork adjacency.** A supernet is a DAG whose nodes are feature maps
   and whose edges are operations. A configuration ``k`` activates a subset of
   the edges; ``A_k`` is the symmetric 0/1 ``(V, V)`` adjacency of the active
   edges over *all* supernet nodes, with self-loops on the source (input) and the
   sink (output) so that the chain is aperiodic (:func:`adjacency`).
2. **Training as a DTMC.** Training visits configurations ``z_1 .. z_T``. The
   hyper-adjacency ``H(lam)`` (:func:`hyper_adjacency`) is the ``(T*V, T*V)``
   matrix with ``A_1 .. A_T`` on the block diagonal and ``lam * I`` coupling
   blocks between every pair of distinct copies (node ``v`` of copy ``i`` is tied
   to node ``v`` of copy ``j``). State ``(k, v)`` has the flat index ``k*V + v``
   (copy-major).
3. **Transition matrix and stationary distribution.** ``M = H D^-1`` with ``D``
   the diagonal of column sums (column-stochastic, :func:`transition_matrix`);
   ``pi`` solves ``M pi = pi, sum(pi) = 1`` (:func:`stationary_distribution`).
   For a symmetric ``H`` (always the case for the hyper-adjacency) ``pi`` is the
   normalised degree vector ``d / sum(d)`` - a random walk on an undirected
   graph is reversible with ``pi(x) M(y|x) = H[x, y] / sum(d)`` symmetric. A
   sparse power iteration on the lazy chain ``(I + M) / 2`` (same fixed points,
   aperiodic by construction) and a Krylov eigensolver (ARPACK) cover the
   general, non-symmetric case and are used by the tests to confirm the closed
   form.
4. **TAS** (Topological Accumulated Score, :func:`tas`):
   ``TAS(v) = sum_k pi(k, v)``; it sums to 1 over the ``V`` supernet nodes.
   With the closed form, ``d(k, v) = deg_{A_k}(v) + lam * (T - 1)``, so
   :func:`tas_from_configs` computes TAS directly from the ``(T, E)`` mask of
   active edges in ``O(T * E)`` without building ``H`` at all.
5. **TPS** (Topological Path Score, :func:`path_score`) of a source->sink node
   path ``P``: ``prod_{v in P} TAS(v)``, computed in log space as
   ``sum_{v in P} log TAS(v)`` (``mode="log"``); ``mode="sum"`` is the plain sum
   of TAS that the authors use in one analysis.
6. **Importance.** :func:`best_path_score_per_edge` gives, for every edge, the
   best TPS of any source->sink path through it (one forward and one backward
   dynamic programme over the DAG). :func:`gate_importance` turns it into a
   per-gate importance in ``[0, 1]`` with the rule:

   * ``score_g = max`` of the edge scores over the edges switched by gate ``g``;
   * gates with a finite score are min-max normalised:
     ``(score_g - min) / (max - min)`` over the finite scores;
   * gates whose score is ``-inf`` (no source->sink path, or a path through a
     node of TAS 0 in log mode) get ``0``;
   * if the finite scores all agree (spread ``< 1e-12``) those gates get ``1``.

   :func:`importance_from_configs` chains the whole pipeline.

Why closed forms and operators: the callback rebuilds the DTMC every epoch
from thousands of sampled configurations. ``H`` has ``(T*V)^2`` entries and
``T^2`` coupling blocks, so it is never formed in the hot path; the closed form
costs ``O(T * E)``. :class:`HyperAdjacencyOperator` applies ``H`` as
``blockdiag(A) x + lam * (1_T kron sum_k x_k) - lam * x`` in ``O(T * (E + V))``
per mat-vec, so the iterative solver also scales to large ``T``. Dense matrix
powers or dense ``(T*V)^2`` matrices are never formed.

Graph conventions: nodes are ``0 .. V-1``; ``edges`` is an ``(E, 2)`` integer
array of directed edges ``(u, v)`` (``u -> v``); node indices need not be in
topological order (a topological order is computed, a cycle raises
``ValueError``); ``edge_gate[e]`` is the gate index of edge ``e`` or ``-1`` for a
fixed edge; a set of ``T`` configurations is a boolean ``(T, E)`` mask.
"""

from tips_keras.dtmc.budget import best_configurations
from tips_keras.dtmc.budget import budget_importance
from tips_keras.dtmc.chain import HyperAdjacencyOperator
from tips_keras.dtmc.chain import adjacency
from tips_keras.dtmc.chain import hyper_adjacency
from tips_keras.dtmc.chain import stationary_distribution
from tips_keras.dtmc.chain import transition_matrix
from tips_keras.dtmc.graph import enumerate_paths
from tips_keras.dtmc.graph import prune_to_paths
from tips_keras.dtmc.graph import topological_order
from tips_keras.dtmc.scores import best_path_score_per_edge
from tips_keras.dtmc.scores import gate_importance
from tips_keras.dtmc.scores import importance_from_configs
from tips_keras.dtmc.scores import path_score
from tips_keras.dtmc.scores import tas
from tips_keras.dtmc.scores import tas_from_configs

__all__ = [
    "topological_order",
    "prune_to_paths",
    "adjacency",
    "hyper_adjacency",
    "HyperAdjacencyOperator",
    "transition_matrix",
    "stationary_distribution",
    "tas",
    "tas_from_configs",
    "path_score",
    "enumerate_paths",
    "best_path_score_per_edge",
    "best_configurations",
    "budget_importance",
    "gate_importance",
    "importance_from_configs",
]
