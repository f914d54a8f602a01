"""Property-based tests (hypothesis) on fuzzed inputs, and numerics of the TIPS update.

* DTMC on random DAGs and random sampled configurations: the stationary distribution is a
  distribution and the closed form equals the iterative solver on irreducible chains; TAS sums to
  1; importance is finite and in [0, 1] (disconnected graphs, all-off epochs, coupling 0 included).
* Configurations of a small supernet: FLOPs of any valid configuration lie between the smallest
  and the largest; turning a relevant gate on never lowers them; `ConfigSpace.resolve` accepts
  or refuses junk with ValueError only; budgets (tips_keras.search) refuse junk with ValueError
  and repairs always fit.
* `tips_keras.extraction.extract` of a random configuration: a working model with the FLOPs of the
  configuration and the supernet's outputs.
* Numerics: a NaN or Inf loss stops training naming the sub-network; the importance computed by
  the callback is never NaN.
"""

import math

import keras
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import connected_components

import tips_keras as tips
from tests.conftest import tiny_supernet
from tips_keras import dtmc

FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- DTMC on random DAGs ------------------------------------------------------------------------
@st.composite
def dag_and_configs(draw, min_copies=1):
    """A small DAG (labels permuted, so index order is not topological), edge gates, and T
    random configurations as a (T, E) mask of active edges (any mask: also disconnected ones)."""
    n = draw(st.integers(2, 7))
    perm = draw(st.permutations(list(range(n))))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=12))
    edges = np.array([[perm[i], perm[j]] for i, j in chosen], dtype=np.int64)
    num_gates = draw(st.integers(1, min(4, len(edges))))  # every gate switches >= 1 edge
    rest = draw(st.lists(st.integers(-1, num_gates - 1), min_size=len(edges) - num_gates,
                         max_size=len(edges) - num_gates))
    edge_gate = np.array(draw(st.permutations(list(range(num_gates)) + rest)))
    t = draw(st.integers(min_copies, 5))
    mask = np.array(draw(st.lists(st.lists(st.booleans(), min_size=len(edges), max_size=len(edges)),
                                  min_size=t, max_size=t)), dtype=bool)
    lam = draw(st.sampled_from([0.0, 1e-3, 0.5, 1.0, 3.0]))
    return n, edges, edge_gate, num_gates, mask, perm[0], perm[n - 1], lam


@FEW
@given(case=dag_and_configs())
def test_tas_is_a_distribution(case):
    n, edges, _, _, mask, source, sink, lam = case
    for prune in (True, False):
        values = dtmc.tas_from_configs(n, edges, mask, source, sink, lam=lam, prune=prune)
        assert values.shape == (n,)
        assert np.all(np.isfinite(values)) and np.all(values >= 0)
        assert math.isclose(values.sum(), 1.0, rel_tol=1e-9)


@FEW
@given(case=dag_and_configs())
def test_stationary_distribution_closed_form_equals_iterative(case):
    n, edges, _, _, mask, source, sink, lam = case
    pruned = dtmc.prune_to_paths(n, edges, mask, source, sink)
    adjs = [dtmc.adjacency(n, edges, row, source, sink) for row in pruned]
    hyper = dtmc.hyper_adjacency(adjs, lam=lam)
    # Nodes used by no configuration and not coupled have no edge: the chain is undefined there.
    assume(np.all(np.asarray(hyper.sum(axis=0)).ravel() > 0))
    closed = dtmc.stationary_distribution(hyper, method="closed_form")
    assert np.all(closed >= 0) and math.isclose(closed.sum(), 1.0, rel_tol=1e-9)
    m = dtmc.transition_matrix(hyper)
    np.testing.assert_allclose(m @ closed, closed, atol=1e-12)
    # The closed form is TAS's input: summed over copies it is `tas_from_configs`.
    np.testing.assert_allclose(dtmc.tas(closed, len(adjs), n),
                               dtmc.tas_from_configs(n, edges, pruned, source, sink, lam=lam, prune=False),
                               atol=1e-12)
    if connected_components(sp.csr_matrix(hyper), directed=False)[0] == 1:  # unique distribution
        for method in ("iterative", "power"):
            np.testing.assert_allclose(dtmc.stationary_distribution(hyper, method=method), closed, atol=1e-8)


@FEW
@given(case=dag_and_configs(), mode=st.sampled_from(["log", "sum"]))
def test_importance_is_finite_and_in_unit_interval(case, mode):
    n, edges, edge_gate, num_gates, mask, source, sink, lam = case
    importance, values = dtmc.importance_from_configs(n, edges, edge_gate, num_gates, mask, source, sink,
                                                      lam=lam, mode=mode)
    assert importance.shape == (num_gates,)
    assert np.all(np.isfinite(importance)) and np.all((importance >= 0) & (importance <= 1))
    assert math.isclose(values.sum(), 1.0, rel_tol=1e-9)


def test_importance_of_degenerate_epochs_is_finite():
    """No active edge at all, source and sink disconnected, a single node pair, coupling 0."""
    edges = np.array([[0, 1], [1, 2], [3, 4]])
    gates = np.array([0, 1, 2])
    for mask in (np.zeros((3, 3), bool), np.ones((1, 3), bool), np.array([[1, 0, 1], [0, 1, 0]], bool)):
        for lam in (0.0, 1.0):
            for mode in ("log", "sum"):
                importance, values = dtmc.importance_from_configs(5, edges, gates, 3, mask, 0, 4, lam=lam, mode=mode)
                assert np.all(np.isfinite(importance)) and np.all(np.isfinite(values))


# -- configurations of a small supernet ------------------------------------------------------------
@pytest.fixture(scope="module")
def net():
    return tiny_supernet()


@st.composite
def configurations(draw, num_gates=4, num_exits=2):
    return tips.Configuration(draw(st.integers(0, num_exits - 1)),
                              tuple(draw(st.lists(st.integers(0, 1), min_size=num_gates, max_size=num_gates))))


@settings(max_examples=80, deadline=None)
@given(config=configurations(), gate=st.integers(0, 3))
def test_flops_of_any_configuration_lie_between_smallest_and_largest(net, config, gate):
    smallest, largest = tips.flops(net, "smallest"), tips.flops(net, "largest")
    value = tips.flops(net, config)
    assert smallest <= value <= largest
    space = net.config_space
    if space.relevant(config.exit)[gate] and not config.gates[gate]:
        on = config.gates[:gate] + (1,) + config.gates[gate + 1:]
        assert tips.flops(net, (config.exit, on)) > value  # a relevant gate costs something
    assert tips.flops(net, space.canonical(config)) == value


junk = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 5) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6) | st.sampled_from(["largest", "smallest", "stage0_block0", "exit", "gates"])
    | st.builds(np.int64, st.integers(-2, 3)) | st.builds(np.float32, st.floats(-2, 3, width=32)),
    lambda children: (st.lists(children, max_size=5) | st.tuples(children, children)
                      | st.dictionaries(st.one_of(st.sampled_from(["exit", "gates", "stage0_block0",
                                                                    "stage1_block1", "x"]),
                                                  st.integers(0, 3)), children, max_size=4)
                      | st.builds(np.array, st.lists(st.integers(0, 1), max_size=5))
                      | st.builds(tips.Configuration, children, children)),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(config=junk)
def test_resolve_accepts_or_refuses_junk_with_value_error_only(net, config):
    space = net.config_space
    try:
        resolved = space.resolve(config)
    except ValueError as error:
        assert "config" in str(error)
        return
    assert isinstance(resolved, tips.Configuration)
    assert 0 <= resolved.exit < space.num_exits and len(resolved.gates) == space.num_gates
    assert all(b in (0, 1) for b in resolved.gates)
    assert tips.flops(net, resolved) >= tips.flops(net, "smallest")


def _optional(module):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        return None


search = _optional("tips_keras.search")
export = _optional("tips_keras.extraction")
needs_search = pytest.mark.skipif(search is None, reason="tips_keras.search not available")
needs_export = pytest.mark.skipif(export is None or not hasattr(export, "extract"),
                                  reason="tips_keras.extraction.extract not available")


@needs_search
@settings(max_examples=150, deadline=None)
@given(budget=(junk | st.floats() | st.lists(st.floats(), max_size=3)).filter(
    lambda b: not any(isinstance(v, float) and math.isfinite(v) and abs(v) >= 2.0**62
                      for v in (b if isinstance(b, list) else [b]))))
def test_budgets_refuse_junk_with_value_error_only(net, budget):
    space = search.SearchSpace(net)
    try:
        absolute = space.resolve_budgets(budget)
    except ValueError:
        return
    assert np.all(absolute >= space.smallest_flops)


@needs_search
def test_budget_beyond_int64_is_refused_with_value_error(net):
    with pytest.raises(ValueError, match="2\\*\\*63"):
        search.SearchSpace(net).resolve_budgets(9.3e18)


@needs_search
@settings(max_examples=40, deadline=None)
@given(budget=st.floats(0.0, 1.0, exclude_min=True), seed=st.integers(0, 2**16))
def test_repaired_configurations_fit_their_budget(net, budget, seed):
    space = search.SearchSpace(net)
    absolute = search.space.budget_to_flops(budget, space.full_flops)
    assume(absolute >= space.smallest_flops)
    rng = np.random.default_rng(seed)
    vectors = space.random_vectors(rng, 16)
    for fitted in (space.repair(vectors, absolute), space.repair(vectors, absolute, rng=rng),
                   space.fill(space.repair(vectors, absolute), absolute)):
        flops = [tips.flops(net, tips.Configuration.from_vector(v)) for v in fitted]
        assert max(flops) <= absolute


# -- export.extract ------------------------------------------------------------------------------
@needs_export
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=configurations())
def test_extracted_random_configuration_works_and_has_its_flops(net, config):
    from tips_keras.supernet.analytic_flops import module_macs

    sub = export.extract(net, config)
    assert module_macs(sub) == tips.flops(net, config)
    x = np.random.default_rng(0).normal(size=(4, 12, 12, 1)).astype("float32")
    net.set_config(config)
    np.testing.assert_allclose(sub(x, training=False), net(x, training=False), atol=1e-5)


# -- numerics -------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    vectors=st.lists(st.tuples(st.lists(st.integers(0, 1), min_size=4, max_size=4), st.integers(0, 1)),
                     min_size=1, max_size=12),
    coupling=st.sampled_from([0.0, 1e-6, 1.0, 10.0]),
    score=st.sampled_from(["log", "sum"]),
)
def test_callback_importance_is_never_nan(net, vectors, coupling, score):
    callback = tips.TIPSCallback(coupling=coupling, score=score)
    callback.set_model(net)
    array = np.array([bits + [exit_index] for bits, exit_index in vectors], dtype=np.float32)
    importance, values = callback.compute_importance(array)
    assert np.all(np.isfinite(importance)) and np.all((importance >= 0) & (importance <= 1))
    assert np.all(np.isfinite(values))
    sampler = tips.sampling.get_sampler("tips", net.config_space)
    sampler.update(importance)  # refuses non-finite importance
    assert np.all((sampler.gate_probs >= sampler.p_min - 1e-12) & (sampler.gate_probs <= sampler.p_max + 1e-12))


@pytest.mark.parametrize(
    "vectors",
    [np.zeros((6, 5)),  # every gate off, shallowest exit, all epoch long
     np.tile([0, 0, 0, 0, 1], (3, 1)),  # every gate off, deepest exit
     np.tile([1, 1, 1, 1, 1], (1, 1))],  # a single sub-network
    ids=["all_off_exit0", "all_off_exit1", "single"],
)
@pytest.mark.parametrize("coupling", [0.0, 1.0])
def test_degenerate_epochs_give_finite_importance(net, vectors, coupling):
    callback = tips.TIPSCallback(coupling=coupling)
    callback.set_model(net)
    for score in ("log", "sum"):
        callback.score = score
        importance, _ = callback.compute_importance(vectors)
        assert np.all(np.isfinite(importance)), (score, importance)


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_loss_stops_training_naming_the_subnetwork(bad):
    keras.utils.set_random_seed(0)
    model = tiny_supernet()
    x = np.random.default_rng(0).normal(size=(64, 12, 12, 1)).astype("float32")
    if bad == "nan":
        x[:] = np.nan
        y = np.zeros((64,), "int32")
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    else:  # (1e30 - p)^2 overflows float32: the loss is +inf, not NaN
        y = np.full((64, 4), 1e30, "float32")
        model.compile(optimizer="adam", loss="mse", run_eagerly=True)
    callback = tips.TIPSCallback(sampler="uniform", seed=3)
    with pytest.warns(RuntimeWarning, match=f"loss became {bad}.*Sub-network") as record:
        history = model.fit(x, y, batch_size=32, epochs=3, callbacks=[callback], verbose=0)
    assert len(history.history["loss"]) == 1 and len(callback._record.steps) == 1  # stopped at step 1
    (message,) = [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)
                  and "loss became" in str(w.message)]
    names = model.config_space.gate_names
    drawn = [tips.Configuration.from_vector(v).to_dict(names) for v in callback._record.steps[0]]
    assert callback.nan_config == drawn and len(drawn) == 4  # the step's four paths, named
    assert str(drawn[0]) in message and set(drawn[0]["gates"]) == set(names)
