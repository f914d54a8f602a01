"""CLI ``python -m tflite_export --model supernet.keras --front front.json --budgets ...``."""

import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest

import tips_keras as tips
from tflite_export import load_manifest, run_tflite
from tflite_export.__main__ import main as cli_main
from tips_keras import extraction as export

from tests.conftest import make_blobs, tiny_supernet

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py

POINTS = [((1, (1, 1, 1, 1)), 0.9), ((1, (1, 0, 0, 1)), 0.8), ((0, (1, 1, 0, 0)), 0.85),
          ((0, (0, 0, 0, 0)), 0.5)]
LABELS = ["hstripes", "vstripes", "checker", "patch"]


def _write_front(model, path, points=POINTS, **extra):
    names = model.config_space.gate_names
    front = [{"exit": e, "gates": dict(zip(names, bits)), "flops": tips.flops(model, (e, bits)),
              "params": tips.cost(model, (e, bits))[1], "accuracy": acc}
             for (e, bits), acc in points]
    path.write_text(json.dumps(dict({"points": front, "full_flops": tips.flops(model)}, **extra)))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("front")
    model = tiny_supernet()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = make_blobs(192, seed=0)
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    model.save(root / "super.keras")
    np.savez(root / "rep.npz", x=x)
    np.savez(root / "val.npz", x=x[:96], y=y[:96])
    np.savez(root / "bad_shape.npz", x=x[:, :10])
    np.savez(root / "bad_dtype.npz", x=(x * 255).astype("uint8"))
    np.savez(root / "empty.npz", x=x[:0])
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    _write_front(model, root / "front.json")
    plain = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(4, activation="softmax")])
    plain.save(root / "plain.keras")
    return root, model, x


def _args(root, out, *extra, rep="rep.npz", front="front.json", budgets=("0.25", "0.6")):
    args = ["--model", str(root / "super.keras"), "--front", str(root / front),
            "--quantization", "int8", "--out", str(out), "--representative", str(root / rep),
            "--validation", str(root / "val.npz"), "--labels", str(root / "labels.txt")]
    return args + (["--budgets", *budgets] if budgets else []) + list(extra)


def test_tips_keras_export_command_is_the_same_export(files, tmp_path, capsys):
    from tips_keras import cli

    root, _, _ = files
    out = tmp_path / "out"
    assert cli.main(["export", *_args(root, out, budgets=("0.25",))]) == 0
    assert "TFLite export" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["b025", "index.json"]
    assert load_manifest(out / "b025")["config"]["exit"] == 0
    assert cli.main(["export", *_args(root, tmp_path / "bad", budgets=("0.25",), front="missing.json")]) == 2
    assert "tips-keras export: error:" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def _leftovers(parent):
    return [p for p in os.listdir(parent) if p.startswith(".")]


def test_front_end_to_end(files, tmp_path, capsys):
    root, model, x = files
    out = tmp_path / "out"
    assert cli_main(_args(root, out, "--report-json", str(tmp_path / "r.json"))) == 0
    assert "TFLite export" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["b025", "b060", "index.json"]
    expected = {"b025": (0, (0, 0, 0, 0)), "b060": (0, (1, 1, 0, 0))}  # 0.85 beats 0.8
    supernet = keras.models.load_model(root / "super.keras", compile=False)
    for label, config in expected.items():
        m = load_manifest(out / label)
        assert m["flops"] == tips.flops(model, config)
        assert m["params"] == tips.cost(model, config)[1]
        assert m["config"]["exit"] == config[0]
        assert list(m["config"]["gates"].values()) == list(config[1])
        assert m["metadata"]["recalibrated"] is True and m["metadata"]["budget"] in (0.25, 0.6)
        assert m["accuracy"]["num_samples"] == 96 and m["quantization"] == "int8"
        assert (out / label / "labels.txt").read_text().split() == LABELS
        # the .tflite computes what the (recalibrated) extracted sub-network computes
        sub = export.extract(supernet, config, recalibrate_data=x[:1024])
        got = run_tflite((out / label / "model.tflite").read_bytes(), x[:64])
        ref = sub.predict(x[:64], verbose=0)
        assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.9
        assert np.abs(got - ref).max() < 0.1
    index = json.loads((out / "index.json").read_text())
    assert [i["dir"] for i in index] == ["b025", "b060"]
    assert json.loads((tmp_path / "r.json").read_text())[1]["out_dir"] == str(out / "b060")
    assert _leftovers(tmp_path) == []
    # Existing output: refused without --overwrite, replaced with it.
    before = (out / "b025" / "model.tflite").read_bytes()
    assert cli_main(_args(root, out)) == 2
    assert "overwrite" in capsys.readouterr().err
    assert (out / "b025" / "model.tflite").read_bytes() == before
    assert cli_main(_args(root, out, "--overwrite", "--no-micro", "--no-recalibrate",
                          budgets=("0.25",))) == 0
    assert load_manifest(out / "b025")["metadata"]["recalibrated"] is False
    assert _leftovers(tmp_path) == []


def test_budgets_default_to_the_fronts(files, tmp_path):
    root, model, _ = files
    _write_front(model, tmp_path / "f.json", budgets=[1.0])
    (tmp_path / "f.json").replace(root / "f_budgets.json")
    out = tmp_path / "out"
    args = _args(root, out, "--no-micro", front="f_budgets.json", budgets=None)
    args[args.index("int8")] = "float32"
    assert cli_main(args) == 0
    assert os.listdir(out) == ["b100"] or sorted(os.listdir(out)) == ["b100", "index.json"]
    assert load_manifest(out / "b100")["flops"] == tips.flops(model)


@pytest.mark.parametrize(
    "case, message",
    [
        ("budgets_without_front", "--budgets requires --front"),
        ("plain_model", "supernet"),
        ("unknown_gate", "unknown gate names"),
        ("budget_too_small", "smallest point"),
        ("duplicate_labels", "duplicate"),
        ("bad_shape", "shape"),
        ("bad_dtype", "floating-point"),
        ("empty", "at least one sample"),
        ("other_content", "not empty"),
        ("missing_front", "cannot read"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(files, tmp_path, capsys, case, message):
    root, model, _ = files
    out = tmp_path / "out"
    args = _args(root, out)
    if case == "budgets_without_front":
        args = ["--model", str(root / "super.keras"), "--out", str(out), "--budgets", "0.5"]
    elif case == "plain_model":
        args[1] = str(root / "plain.keras")
    elif case == "unknown_gate":
        front = json.loads((root / "front.json").read_text())
        front["points"][3]["gates"] = {"block_that_does_not_exist": 1}
        (tmp_path / "f.json").write_text(json.dumps(front))
        args[3] = str(tmp_path / "f.json")
    elif case == "budget_too_small":
        args = _args(root, out, budgets=("0.01",))
    elif case == "duplicate_labels":
        args = _args(root, out, budgets=("0.5", "0.50"))
    elif case in ("bad_shape", "bad_dtype", "empty"):
        args = _args(root, out, rep=f"{case}.npz")
    elif case == "other_content":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif case == "missing_front":
        args = _args(root, out, front="nope.json")
    assert cli_main(args) == 2
    assert message in capsys.readouterr().err
    if case == "other_content":
        assert os.listdir(out) == ["notes.txt"]
    else:
        assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_failure_in_a_later_budget_leaves_nothing(files, tmp_path, monkeypatch, capsys):
    import tflite_export.export as export_mod

    root, _, _ = files
    real, calls = export_mod.export_tflite, []

    def flaky(model, out_dir, **kwargs):
        calls.append(Path(out_dir).name)
        if len(calls) == 2:
            raise RuntimeError("converter crashed")
        return real(model, out_dir, **kwargs)

    monkeypatch.setattr(export_mod, "export_tflite", flaky)
    out = tmp_path / "out"
    assert cli_main(_args(root, out, "--no-micro")) == 1
    assert "converter crashed" in capsys.readouterr().err
    assert calls == ["b025", "b060"]
    assert not out.exists() and _leftovers(tmp_path) == []


def test_default_data_needs_28x28_inputs(files, tmp_path, capsys):
    root, _, _ = files
    args = ["--model", str(root / "super.keras"), "--front", str(root / "front.json"),
            "--budgets", "0.5", "--quantization", "int8", "--out", str(tmp_path / "o")]
    assert cli_main(args) == 2  # 12x12 inputs: no Fashion-MNIST fallback for int8 calibration
    assert "representative_data" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_help_explains_the_front_options(capsys):
    assert cli_main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in ("--front", "--budgets", "Fashion-MNIST", "--no-default-data", "--no-recalibrate"):
        assert word in text


def test_default_data_is_fashion_mnist_for_28x28_supernets(tmp_path, capsys):
    from tips_keras import data

    try:
        data.load("fashion_mnist", val_size=0, train_size=1, test_size=1)
    except (FileNotFoundError, ValueError) as e:
        pytest.skip(f"Fashion-MNIST not available: {e}")
    model = tips.zoo.anytime_resnet((28, 28, 1), 10, widths=(4,), blocks_per_stage=1)
    model.save(tmp_path / "super28.keras")
    _write_front(model, tmp_path / "f.json", points=[((0, (1,)), 0.7), ((0, (0,)), 0.6)])
    out = tmp_path / "out"
    args = ["--model", str(tmp_path / "super28.keras"), "--front", str(tmp_path / "f.json"),
            "--budgets", "0.5", "--quantization", "int8", "--no-micro", "--out", str(out),
            "--num-representative", "50", "--num-recalibrate", "128"]
    assert cli_main(args) == 0
    assert "Fashion-MNIST" in capsys.readouterr().err
    m = load_manifest(out / "b050")
    assert m["accuracy"]["num_samples"] == 10000 and m["num_classes"] == 10
    assert (out / "b050" / "labels.txt").read_text().splitlines()[0] == "T-shirt/top"
