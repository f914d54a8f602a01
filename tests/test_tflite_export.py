"""Tests for tflite_export (Keras 3 -> TFLite / LiteRT / TFLM artefacts).

A tiny plain CNN (Conv-BN-ReLU stem, residual Add, strided convs, GAP, Dense
softmax; ~43k params) is trained for 2 epochs on a Fashion-MNIST subset
(synthetic structured fallback if the dataset files are absent) so that
accuracies mean something. All four quantizations are exported once per
module and shared by the tests.
"""

import gzip
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

import tflite_export  # noqa: E402
from tflite_export import (  # noqa: E402
    check_micro_ops,
    export_tflite,
    load_manifest,
    read_c_array,
)
from tflite_export import verify as verify_mod  # noqa: E402
from tflite_export._io import atomic_write_bytes  # noqa: E402
from tflite_export.__main__ import main as cli_main  # noqa: E402
from tflite_export.micro import c_source, estimate_arena  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
QUANTS = ("float32", "float16", "dynamic", "int8")
LABELS = ["tshirt", "trouser", "pullover", "dress", "coat",
          "sandal", "shirt", "sneaker", "bag", "boot"]
SIGNATURES = {"serving_default": {"inputs": ["image"], "outputs": ["probabilities"]}}


# --------------------------------------------------------------------------- data
def _idx(path):
    with gzip.open(path) as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _synthetic(n, seed):
    """10 classes = 10 fixed blurred templates + noise (learnable structure)."""
    rng = np.random.default_rng(0)
    templates = rng.random((10, 7, 7)).repeat(4, 1).repeat(4, 2)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = templates[y] + 0.3 * rng.standard_normal((n, 28, 28))
    return np.clip(x, 0, 1).astype("float32")[..., None], y.astype("int64")


def load_data(n_train=4000, n_test=1000):
    try:
        xtr = _idx(FASHION / "train-images-idx3-ubyte.gz")[:n_train]
        ytr = _idx(FASHION / "train-labels-idx1-ubyte.gz")[:n_train]
        xte = _idx(FASHION / "t10k-images-idx3-ubyte.gz")[:n_test]
        yte = _idx(FASHION / "t10k-labels-idx1-ubyte.gz")[:n_test]
    except OSError:
        return _synthetic(n_train, 1) + _synthetic(n_test, 2)
    f = lambda x: (x.astype("float32") / 255.0)[..., None]  # noqa: E731
    return f(xtr), ytr.astype("int64"), f(xte), yte.astype("int64")


def build_cnn():
    L = keras.layers

    def cbr(x, ch, stride=1, relu=True):
        x = L.Conv2D(ch, 3, strides=stride, padding="same", use_bias=False)(x)
        x = L.BatchNormalization(momentum=0.9)(x)  # few steps: fast-moving stats
        return L.ReLU()(x) if relu else x

    inp = keras.Input((28, 28, 1))
    x = cbr(inp, 24, 2)
    y = cbr(cbr(x, 24), 24, relu=False)
    x = L.ReLU()(L.Add()([x, y]))
    x = cbr(cbr(x, 48, 2), 48, 2)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(10, activation="softmax")(x), name="tiny_cnn")


@pytest.fixture(scope="module")
def data():
    return load_data()


@pytest.fixture(scope="module")
def model(data):
    xtr, ytr, _, _ = data
    keras.utils.set_random_seed(0)
    m = build_cnn()
    m.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    m.fit(xtr, ytr, epochs=2, batch_size=64, verbose=0)
    return m


@pytest.fixture(scope="module")
def exports(model, data, tmp_path_factory):
    xtr, _, xte, yte = data
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for q in QUANTS:
        report = export_tflite(
            model, root / q, quantization=q, representative_data=xtr[:300],
            validation_data=(xte, yte), labels=LABELS,
            metadata={"config": {"blocks": [1, 0, 1]}, "flops": 1234567, "budget": 0.5},
        )
        out[q] = (root / q, report)
    return out


def _bytes(exports, q):
    return (exports[q][0] / "model.tflite").read_bytes()


# ------------------------------------------------------------------ conversions
@pytest.mark.parametrize("q", QUANTS)
def test_each_quantization_converts_and_runs(exports, data, q):
    out_dir, report = exports[q]
    _, _, xte, yte = data
    assert sorted(os.listdir(out_dir)) == sorted(report.files)
    probs = verify_mod.run_tflite(_bytes(exports, q), xte[:100])
    assert probs.shape == (100, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.02)
    assert report.accuracy["tflite_accuracy"] > 0.5  # chance is 0.1
    assert report.quantization == q and report.size_bytes == len(_bytes(exports, q))


def test_float32_matches_keras(exports, model, data):
    x = data[2][:200]
    got = verify_mod.run_tflite(_bytes(exports, "float32"), x, batch_size=64)
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)
    assert exports["float32"][1].accuracy["max_abs_diff"] < 1e-5
    assert exports["float32"][1].accuracy["accuracy_drop"] == 0


def test_int8_io_accuracy_and_size(exports):
    info = tflite_export.inspect_model(_bytes(exports, "int8"))
    for t in info["inputs"] + info["outputs"]:
        assert t["dtype"] == "int8" and t["scale"] > 0
    acc = exports["int8"][1].accuracy
    assert acc["keras_accuracy"] > 0.6
    assert acc["tflite_accuracy"] >= acc["keras_accuracy"] - 0.03
    assert acc["top1_agreement"] > 0.95
    assert len(_bytes(exports, "int8")) < 0.35 * len(_bytes(exports, "float32"))


def test_float16_and_dynamic_keep_float_io(exports):
    f16 = tflite_export.inspect_model(_bytes(exports, "float16"))
    dyn = tflite_export.inspect_model(_bytes(exports, "dynamic"))
    assert "DEQUANTIZE" in f16["ops"]  # fp16 weights dequantized at load
    assert f16["inputs"][0]["dtype"] == dyn["inputs"][0]["dtype"] == "float32"
    f32 = len(_bytes(exports, "float32"))
    assert len(_bytes(exports, "float16")) < 0.6 * f32
    assert len(_bytes(exports, "dynamic")) < 0.35 * f32


def test_keras_route_also_works(model, data, tmp_path):
    data_bytes = tflite_export.convert_model(model, "float32", route="keras")
    x = data[2][:20]
    np.testing.assert_allclose(verify_mod.run_tflite(data_bytes, x),
                               model.predict(x, verbose=0), atol=1e-5)


# ------------------------------------------------------------------ signatures
@pytest.mark.parametrize("q", QUANTS)
def test_signature_names_are_stable(exports, data, q):
    interp = Interpreter(model_content=_bytes(exports, q))
    assert interp.get_signature_list() == SIGNATURES
    runner = interp.get_signature_runner("serving_default")
    d = runner.get_input_details()["image"]
    x = verify_mod.quantize(data[2][:5], d)
    out = runner(image=x)["probabilities"]
    assert out.shape == (5, 10)
    assert out.dtype == (np.int8 if q == "int8" else np.float32)
    assert exports[q][1].signature == SIGNATURES


# ------------------------------------------------------------------ micro / TFLM
def test_c_array_equals_tflite_bytes(exports):
    out_dir, report = exports["int8"]
    cc = (out_dir / "model_data.cc").read_text()
    h = (out_dir / "model_data.h").read_text()
    data, declared = read_c_array(cc, "g_model_data")
    assert data == _bytes(exports, "int8") and declared == len(data)
    assert "alignas(16) const unsigned char g_model_data[]" in cc
    assert "#ifndef TFLITE_EXPORT_G_MODEL_DATA_H_" in h and "#endif" in h
    assert "extern const unsigned int g_model_data_len;" in h
    assert f"g_model_data_arena_size = {report.micro['arena']['recommended_bytes']}" in h
    assert "resolver.AddConv2D();" in h
    for q in ("float32", "float16", "dynamic"):
        assert not (exports[q][0] / "model_data.cc").exists()


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")
def test_c_array_compiles_and_matches(exports, tmp_path):
    out_dir = exports["int8"][0]
    (tmp_path / "main.cc").write_text(
        '#include <cstdio>\n#include "model_data.h"\n'
        "alignas(16) static unsigned char arena[g_model_data_arena_size];\n"
        "int main() { for (unsigned i = 0; i < g_model_data_len; ++i)"
        " std::putchar(g_model_data[i]); return sizeof(arena) == 0; }\n")
    exe = tmp_path / "dump"
    subprocess.run(["g++", "-std=c++17", "-I", str(out_dir), str(tmp_path / "main.cc"),
                    str(out_dir / "model_data.cc"), "-o", str(exe)], check=True)
    assert subprocess.run([str(exe)], capture_output=True, check=True).stdout == \
        _bytes(exports, "int8")


def test_c_source_variable_name_is_configurable():
    cc, h = c_source(b"\x00\x01\xff" * 5, "net_b050", header_name="net.h")
    assert read_c_array(cc, "net_b050") == (b"\x00\x01\xff" * 5, 15)
    assert '#include "net.h"' in cc and "TFLITE_EXPORT_NET_B050_H_" in h
    for bad in ("1abc", "my-model", "int", ""):
        with pytest.raises(ValueError, match="variable_name"):
            c_source(b"\x00", bad)


def test_micro_op_check_passes_for_tiny_model(exports):
    ops = check_micro_ops(tflite_export.list_ops(_bytes(exports, "int8")))
    assert {"CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED", "SOFTMAX"} <= set(ops)
    assert "DELEGATE" not in ops
    micro = load_manifest(exports["int8"][0])["micro"]
    assert micro["ops"] == ops and micro["resolver"][0].startswith(
        f"tflite::MicroMutableOpResolver<{len(ops)}>")


def test_micro_op_check_rejects_unsupported_ops():
    with pytest.raises(ValueError, match=r"GELU.*FlexErf|not supported by TensorFlow Lite Micro"):
        check_micro_ops(["CONV_2D", "GELU", "FlexErf", "SOFTMAX"])
    try:
        check_micro_ops(["CONV_2D", "GELU", "FlexErf"])
    except ValueError as e:
        assert "GELU" in str(e) and "FlexErf" in str(e) and "CONV_2D" not in str(e)


def test_int8_export_of_model_with_unsupported_op_fails_cleanly(data, tmp_path):
    inp = keras.Input((28, 28, 1))
    x = keras.layers.Dense(8, activation="gelu")(keras.layers.Flatten()(inp))
    m = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))
    with pytest.raises(ValueError, match="GELU"):
        export_tflite(m, tmp_path / "gelu", "int8", representative_data=data[0][:20],
                      measure_latency=False)
    assert os.listdir(tmp_path) == []  # no partial output, no temp dir left
    # micro=False skips the TFLM check: the Android artefacts still export
    r = export_tflite(m, tmp_path / "gelu", "int8", representative_data=data[0][:20],
                      micro=False, measure_latency=False)
    assert "GELU" in r.ops and r.micro is None


def test_arena_estimate_is_consistent(exports):
    est = estimate_arena(_bytes(exports, "int8"))
    # largest activation: 14x14x24 int8 feature map; two must coexist at the Add
    assert est.peak_activation_bytes >= 2 * 14 * 14 * 24
    assert est.peak_activation_bytes <= est.total_activation_bytes
    assert est.recommended_bytes >= (est.peak_activation_bytes + est.overhead_bytes) * 1.25
    assert est.recommended_bytes % 1024 == 0


# ------------------------------------------------------------------ manifest
def test_manifest_round_trip_and_report(exports, model):
    out_dir, report = exports["int8"]
    m = load_manifest(out_dir / "manifest.json")
    assert m == json.loads((out_dir / "manifest.json").read_text())
    assert load_manifest(out_dir) == m
    interp = Interpreter(model_content=_bytes(exports, "int8"))
    d = interp.get_input_details()[0]
    assert (m["input"]["scale"], m["input"]["zero_point"]) == pytest.approx(d["quantization"])
    assert m["input"]["shape_signature"] == [-1, 28, 28, 1]
    assert m["input"]["dtype"] == "int8" and m["input"]["signature_name"] == "image"
    assert m["params"] == model.count_params() and m["flops"] == 1234567
    assert m["config"] == {"blocks": [1, 0, 1]} and m["metadata"] == {"budget": 0.5}
    assert m["labels_file"] == "labels.txt"
    assert (out_dir / "labels.txt").read_text().splitlines() == LABELS
    assert m["accuracy"]["tflite_accuracy"] == report.accuracy["tflite_accuracy"]
    assert json.loads(json.dumps(report.to_dict())) == report.to_dict()
    table = report.table()
    for word in ("accuracy TFLite", "TFLM arena", "scale=", "image", "probabilities"):
        assert word in table


def test_load_manifest_errors(exports, tmp_path):
    text = (exports["float32"][0] / "manifest.json").read_text()
    p = tmp_path / "manifest.json"
    p.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="Corrupt manifest.*line"):
        load_manifest(p)
    broken = json.loads(text)
    del broken["input"], broken["params"]
    p.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['input', 'params'\]"):
        load_manifest(p)
    broken = json.loads(text)
    del broken["input"]["scale"]
    p.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="'input' is missing key"):
        load_manifest(p)
    p.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_manifest(p)
    with pytest.raises(FileNotFoundError):
        load_manifest(tmp_path / "nope")


# ------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("case", [
    "rep_shape", "rep_dtype", "rep_empty", "rep_missing", "rep_nan",
    "quant_name", "val_length", "val_not_tuple", "labels_count", "metadata_json",
])
def test_bad_inputs_raise_value_error(model, data, tmp_path, case):
    xtr, _, xte, yte = data
    kw = dict(quantization="int8", representative_data=xtr[:10])
    match = {
        "rep_shape": r"argument `representative_data`.*Received: shape=\(10, 28, 28\)",
        "rep_dtype": r"argument `representative_data`.*floating-point.*dtype=uint8",
        "rep_empty": r"argument `representative_data`.*at least one sample",
        "rep_missing": r"argument `representative_data`.*Received: None",
        "rep_nan": r"argument `representative_data`.*NaN",
        "quant_name": r"argument `quantization`.*Received: quantization='int4'",
        "val_length": r"argument `validation_data`.*len\(x\)=20, len\(y\)=19",
        "val_not_tuple": r"argument `validation_data`.*tuple \(x, y\)",
        "labels_count": r"argument `labels`.*10 class names.*Received: 3 labels",
        "metadata_json": r"argument `metadata`.*JSON-serializable",
    }[case]
    if case == "rep_shape":
        kw["representative_data"] = xtr[:10, :, :, 0]
    elif case == "rep_dtype":
        kw["representative_data"] = (xtr[:10] * 255).astype(np.uint8)
    elif case == "rep_empty":
        kw["representative_data"] = xtr[:0]
    elif case == "rep_missing":
        kw["representative_data"] = None
    elif case == "rep_nan":
        kw["representative_data"] = np.full_like(xtr[:10], np.nan)
    elif case == "quant_name":
        kw["quantization"] = "int4"
    elif case == "val_length":
        kw["validation_data"] = (xte[:20], yte[:19])
    elif case == "val_not_tuple":
        kw["validation_data"] = xte[:20]
    elif case == "labels_count":
        kw["labels"] = ["a", "b", "c"]
    elif case == "metadata_json":
        kw["metadata"] = {"fn": print}
    with pytest.raises(ValueError, match=match):
        export_tflite(model, tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ atomic writes
def _quick(model, out, **kw):
    return export_tflite(model, out, "float32", measure_latency=False, **kw)


def test_existing_output_dir_needs_overwrite(model, tmp_path):
    out = tmp_path / "b050"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        _quick(model, out)
    assert os.listdir(out) == ["keep.txt"]
    _quick(model, out, overwrite=True)
    assert sorted(os.listdir(out)) == ["manifest.json", "model.tflite"]
    assert sorted(os.listdir(tmp_path)) == ["b050"]  # no temp/backup siblings
    empty = tmp_path / "empty"
    empty.mkdir()
    _quick(model, empty)  # an existing empty dir is fine
    assert (empty / "model.tflite").is_file()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        _quick(model, tmp_path / "afile", overwrite=True)


def test_failure_midway_leaves_nothing(model, data, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("verification exploded")

    monkeypatch.setattr(verify_mod, "evaluate", boom)
    val = (data[2][:50], data[3][:50])
    with pytest.raises(RuntimeError, match="exploded"):
        _quick(model, tmp_path / "new", validation_data=val)
    assert os.listdir(tmp_path) == []
    # with overwrite=True a failed export keeps the previous one intact
    monkeypatch.undo()
    _quick(model, tmp_path / "old", labels=LABELS)
    before = {p: (tmp_path / "old" / p).read_bytes() for p in os.listdir(tmp_path / "old")}
    monkeypatch.setattr(verify_mod, "evaluate", boom)
    with pytest.raises(RuntimeError):
        _quick(model, tmp_path / "old", validation_data=val, overwrite=True)
    after = {p: (tmp_path / "old" / p).read_bytes() for p in os.listdir(tmp_path / "old")}
    assert after == before and os.listdir(tmp_path) == ["old"]


def test_atomic_write_bytes_replaces_without_leftovers(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"one")
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two" and os.listdir(tmp_path) == ["f.bin"]

    def fail(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(p, b"three")
    assert p.read_bytes() == b"two" and os.listdir(tmp_path) == ["f.bin"]


# ------------------------------------------------------------------ CLI
def test_cli_bad_usage_exit_code_2(model, data, tmp_path, capsys):
    assert cli_main(["--out", str(tmp_path / "o")]) == 2  # no --model
    assert cli_main(["--model", "m.keras", "--out", "o", "--quantization", "int4"]) == 2
    assert cli_main(["--model", str(tmp_path / "missing.keras"), "--out", "o"]) == 2
    path = tmp_path / "m.keras"
    model.save(path)
    np.savez(tmp_path / "rep.npz", images=data[0][:10])
    args = ["--model", str(path), "--out", str(tmp_path / "o"), "--quantization", "int8"]
    assert cli_main(args) == 2  # int8 without representative data
    assert "representative_data" in capsys.readouterr().err
    assert cli_main(args + ["--representative", str(tmp_path / "rep.npz"),
                            "--representative-key", "x"]) == 2  # wrong key
    assert not (tmp_path / "o").exists()


def test_cli_int8_end_to_end(model, data, tmp_path, capsys):
    path = tmp_path / "m.keras"
    model.save(path)
    np.savez(tmp_path / "rep.npz", x=data[0][:100])
    np.savez(tmp_path / "val.npz", x=data[2][:200], y=data[3][:200])
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (tmp_path / "meta.json").write_text(json.dumps({"flops": 42, "config": {"b": 1}}))
    out = tmp_path / "out" / "b050"
    args = ["--model", str(path), "--quantization", "int8", "--out", str(out),
            "--representative", str(tmp_path / "rep.npz"),
            "--validation", str(tmp_path / "val.npz"), "--labels",
            str(tmp_path / "labels.txt"), "--metadata", str(tmp_path / "meta.json"),
            "--report-json", str(tmp_path / "report.json")]
    assert cli_main(args) == 0
    assert "TFLite export" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["labels.txt", "manifest.json", "model.tflite",
                                       "model_data.cc", "model_data.h"]
    m = load_manifest(out)
    assert m["flops"] == 42 and m["accuracy"]["num_samples"] == 200
    assert json.loads((tmp_path / "report.json").read_text())[0]["quantization"] == "int8"
    assert cli_main(args) == 2  # exists now, no --overwrite
    assert "overwrite" in capsys.readouterr().err
