"""Tests for tips_keras.extraction: configuration -> plain Keras model, and Pareto-front selection."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tips_keras as tips
from tips_keras import extraction as export
from tips_keras.supernet.analytic_flops import module_macs
from tips_keras.training.batchnorm import batchnorm_layers, recalibrated

from tests.conftest import make_blobs, tiny_supernet

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py

# largest, smallest, mixed, and exits with gates after the exit set (they must not matter)
CONFIGS = [
    "largest",
    "smallest",
    (1, [1, 0, 0, 1]),
    (1, [0, 1, 1, 0]),
    (1, [0, 0, 0, 0]),
    (0, [1, 1, 1, 1]),
    (0, [0, 1, 0, 1]),
    {"exit": 1, "gates": {"stage1_block0": 1}},
]


def _randomize_bn(model, seed=0):
    """Non-trivial BatchNorm statistics, so that every layer changes the output."""
    rng = np.random.default_rng(seed)
    for bn in batchnorm_layers(model):
        n = bn.moving_mean.shape[0]
        bn.moving_mean.assign(rng.normal(0, 0.3, n).astype("float32"))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
        bn.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
        bn.beta.assign(rng.normal(0, 0.2, n).astype("float32"))
    return model


@pytest.fixture(scope="module")
def net():
    return _randomize_bn(tiny_supernet())


@pytest.fixture(scope="module")
def images():
    return make_blobs(48, seed=3)[0]


def _tips_layers(model):
    return [
        type(layer).__name__
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if type(layer).__module__.startswith("tips_keras")
    ]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_cost_outputs_and_layers_match_the_supernet(net, images, config):
    sub = export.extract(net, config)
    macs, params = tips.cost(net, config)
    assert module_macs(sub) == macs == tips.flops(net, config)
    assert sub.count_params() == params
    assert _tips_layers(sub) == []
    net.set_config(config)
    np.testing.assert_allclose(
        sub.predict(images, verbose=0), net.predict(images, verbose=0), atol=1e-5
    )
    assert sub.output_names == ["probabilities"]
    assert sub.layers[-1].name == "probabilities"


def test_skipped_blocks_are_physically_gone(net):
    sub = export.extract(net, (0, [0, 1, 1, 1]))
    names = {layer.name for layer in sub.layers}
    assert "stage0_block1_branch_conv1" in names and "exit0_bn" in names
    assert not any(n.startswith(("stage0_block0", "stage1", "exit1")) for n in names)
    # An Add left with one input is gone; the other stays.
    assert "stage0_block0_add" not in names and "stage0_block1_add" in names
    smallest = export.extract(net, "smallest")
    assert not any(isinstance(layer, keras.layers.Add) for layer in smallest.layers)


def test_weights_are_copies_not_shared(net):
    sub = export.extract(net, "largest")
    conv = sub.get_layer("stem_conv")
    original = net.get_layer("stem_conv")
    assert conv is not original
    np.testing.assert_array_equal(conv.kernel.numpy(), original.kernel.numpy())
    conv.kernel.assign(conv.kernel.numpy() + 1.0)
    assert not np.array_equal(conv.kernel.numpy(), original.kernel.numpy())


def test_mobilenet_with_depthwise_layers(images):
    model = _randomize_bn(tips.zoo.anytime_mobilenet((12, 12, 1), 4, widths=(4, 8), expansion=2))
    for config in ("largest", (1, [0, 1, 1, 0]), (0, [1, 0, 0, 0])):
        sub = export.extract(model, config)
        assert (module_macs(sub), sub.count_params()) == tips.cost(model, config)
        model.set_config(config)
        np.testing.assert_allclose(sub.predict(images, verbose=0),
                                   model.predict(images, verbose=0), atol=1e-5)


def test_saved_model_loads_without_tips_keras(net, images, tmp_path):
    configs = [(1, [1, 0, 0, 1]), "smallest"]
    for i, config in enumerate(configs):
        sub = export.extract(net, config)
        sub.save(tmp_path / f"sub{i}.keras")
        np.save(tmp_path / f"ref{i}.npy", sub.predict(images, verbose=0))
    np.save(tmp_path / "x.npy", images)
    script = textwrap.dedent(
        f"""
        import os, sys
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        import keras, numpy as np
        x = np.load({str(tmp_path / "x.npy")!r})
        for i in range({len(configs)}):
            m = keras.models.load_model({str(tmp_path)!r} + f"/sub{{i}}.keras")
            ref = np.load({str(tmp_path)!r} + f"/ref{{i}}.npy")
            assert np.abs(m.predict(x, verbose=0) - ref).max() < 1e-6, i
        assert "tips_keras" not in sys.modules, "tips_keras was imported"
        print("OK")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("OK")


def test_extract_from_a_reloaded_supernet(net, images, tmp_path):
    net.save(tmp_path / "super.keras")
    loaded = keras.models.load_model(tmp_path / "super.keras", compile=False)
    sub = export.extract(loaded, (1, [0, 1, 1, 0]))
    ref = export.extract(net, (1, [0, 1, 1, 0]))
    np.testing.assert_allclose(sub.predict(images, verbose=0), ref.predict(images, verbose=0),
                               atol=1e-6)


def test_recalibration_is_copied_and_the_supernet_restored(net, images):
    config = (1, [0, 0, 1, 0])
    net.set_config("largest")
    before = [w.numpy().copy() for w in net.weights]
    sub = export.extract(net, config, recalibrate_data=images, batch_size=16)
    after = [w.numpy() for w in net.weights]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)  # statistics and active config restored
    assert net.get_active_config() == net.config_space.resolve("largest")
    plain = export.extract(net, config)
    with recalibrated(net, config, images, batch_size=16):
        net.set_config(config)
        expected = net.predict(images, verbose=0)
    np.testing.assert_allclose(sub.predict(images, verbose=0), expected, atol=1e-5)
    assert not np.allclose(plain.predict(images, verbose=0), expected, atol=1e-4)


@pytest.mark.parametrize(
    "config, match",
    [
        ((1, [1, 0]), "Expected 4 gate bits"),
        ({"exit": 0, "gates": {"no_such_block": 1}}, "unknown gate names"),
        ((2, [1, 1, 1, 1]), "exit index"),
        ((0, [1, 2, 0, 0]), "0, 1"),
        ("medium", "largest"),
    ],
)
def test_unknown_configuration_raises(net, config, match):
    with pytest.raises(ValueError, match=match):
        export.extract(net, config)


def test_non_anytime_model_raises():
    inputs = keras.Input((8, 8, 1))
    plain = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    for model in (plain, keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), "model"):
        with pytest.raises(ValueError, match="SubnetController"):
            export.extract(model, "largest")


# ------------------------------------------------------------------------------- fronts
def _front(model):
    names = model.config_space.gate_names
    points = []
    for exit_index, bits, acc in [(1, (1, 1, 1, 1), 0.9), (1, (1, 0, 0, 1), 0.8),
                                  (0, (1, 1, 0, 0), 0.85), (0, (0, 0, 0, 0), 0.5)]:
        macs, params = tips.cost(model, (exit_index, bits))
        points.append({"exit": exit_index, "gates": dict(zip(names, bits)), "flops": macs,
                       "params": params, "accuracy": acc})
    return {"points": points, "full_flops": tips.flops(model), "budgets": [0.25, 1.0]}


def test_load_front_accepts_the_usual_forms(net, tmp_path):
    front = _front(net)
    path = tmp_path / "front.json"
    path.write_text(json.dumps(front))
    for source in (front, str(path), path, front["points"], {"front": front["points"]}):
        points, info = export.load_front(source)
        assert len(points) == 4 and points[0]["config"]["exit"] == 1
    assert export.load_front(path)[1] == {"full_flops": front["full_flops"], "budgets": [0.25, 1.0]}
    nested = [{"config": {"exit": 0, "gates": [0, 0, 0, 0]}, "flops": 5, "accuracy": 0.1}]
    assert export.load_front(nested)[0][0]["config"] == {"exit": 0, "gates": [0, 0, 0, 0]}
    for bad in ({"points": []}, [{"exit": 0, "flops": 1, "accuracy": 0.5}], str(tmp_path / "x")):
        with pytest.raises(ValueError, match="front"):
            export.load_front(bad)


def test_select_front_picks_the_most_accurate_point_under_each_budget():
    net = tiny_supernet(exit_head="pool")  # FLOPs shares this test was written for
    points, info = export.load_front(_front(net))
    full = info["full_flops"]
    chosen = export.select_front(points, [0.25, 0.55, 1.0, 100_000], full)
    picked = [(p["config"]["exit"], p["accuracy"]) for _, _, p in chosen]
    # 0.55 * full fits both the exit-1 mixed (0.8) and the exit-0 point (0.85): take 0.85
    assert picked == [(0, 0.5), (0, 0.85), (1, 0.9), (0, 0.85)]
    with pytest.raises(ValueError, match="smallest point"):
        export.select_front(points, [0.01], full)
    with pytest.raises(ValueError, match="budgets"):
        export.select_front(points, [-1], full)
    assert [export.budget_label(b) for b in (0.25, 0.5, 1.0, 0.125, 2e6)] == [
        "b025", "b050", "b100", "b012.5", "f2000000"]


def test_extract_front(net, images):
    items = export.extract_front(net, _front(net), recalibrate_data=images)
    assert [i["label"] for i in items] == ["b025", "b100"]
    for item in items:
        assert module_macs(item["model"]) == item["point"]["flops"]


def test_reads_the_search_modules_pareto_front(net, tmp_path):
    front_mod = pytest.importorskip("tips_keras.search.front")
    raw = _front(net)
    points = [front_mod.ParetoPoint(**p) for p in raw["points"]]
    front = front_mod.ParetoFront(points, raw["full_flops"], budgets=[0.25, 0.55, 1.0])
    path = front.to_json(tmp_path / "front.json")
    for source in (front, path):
        loaded, info = export.load_front(source)
        assert info == {"full_flops": raw["full_flops"], "budgets": [0.25, 0.55, 1.0]}
        for budget, _, point in export.select_front(loaded, info["budgets"], info["full_flops"]):
            best = front.best(budget)
            assert (point["flops"], point["accuracy"]) == (best.flops, best.accuracy)


def test_wrapped_user_model(images):
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(6, 3, padding="same", name="c0")(inputs)
    for i in range(2):
        y = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name=f"c{i}a")(x)
        y = keras.layers.BatchNormalization(name=f"bn{i}")(y)
        x = keras.layers.Add(name=f"add{i}")([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    base = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="out")(x))
    model = _randomize_bn(tips.anytime(base))
    for config in ("largest", "smallest", (0, [0, 1])):
        sub = export.extract(model, config)
        assert (module_macs(sub), sub.count_params()) == tips.cost(model, config)
        assert _tips_layers(sub) == []
        model.set_config(config)
        np.testing.assert_allclose(sub.predict(images, verbose=0),
                                   model.predict(images, verbose=0), atol=1e-5)
    np.testing.assert_allclose(export.extract(model, "largest").predict(images, verbose=0),
                               base.predict(images, verbose=0), atol=1e-5)
