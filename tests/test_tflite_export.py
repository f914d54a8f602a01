"""Tests for tflite_export (Keras 3 -> TFLite / LiteRT / TFLM artefacts).

A tiny plain CNN (Conv-BN-ReLU stem, residual Add, strided convs, GAP, Dense
softmax; ~43k params) is trained for 2 epochs on a Fashion-MNIST subset
(synthetic structured fallback if the dataset files are absent) so that
accuracies mean something. All four quantizations are exported once per
module and shared by the tests.
"""

import json
import os
import re
import shutil
import subprocess

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
from tflite_export import micro_run  # noqa: E402
from tflite_export.micro import ArenaEstimate, c_source, estimate_arena  # noqa: E402
from tflite_export.micro_run import MicroArena  # noqa: E402

from tests.tflite_fixtures import (  # noqa: E402,F401  (fixtures)
    LABELS,
    QUANTS,
    data,
    model,
    tiny_data,
    tiny_models,
)

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py

needs_tflm = pytest.mark.skipif(micro_run.tflm_version() is None,
                                reason="tflite-micro (the `micro` extra) is not installed")
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")

SIGNATURES = {"serving_default": {"inputs": ["image"], "outputs": ["probabilities"]}}


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


@needs_gxx
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


def _compile_only(cc_dir, tmp_path):
    """Compiles model_data.cc and a user of model_data.h: C++17, warnings as errors, no link."""
    (tmp_path / "use_header.cc").write_text(
        '#include "model_data.h"\n'
        "alignas(16) static unsigned char arena[g_model_data_arena_size];\n"
        "static_assert(g_model_data_arena_size % 16 == 0, \"16-byte steps\");\n"
        "unsigned int arena_bytes() { return sizeof(arena) + g_model_data_len * 0u"
        " + (g_model_data_arena_measured ? 0u : 1u) + g_model_data[0] * 0u; }\n")
    for src in (cc_dir / "model_data.cc", tmp_path / "use_header.cc"):
        subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-c", "-I",
                        str(cc_dir), str(src), "-o", str(tmp_path / (src.stem + ".o"))],
                       check=True, capture_output=True)
        assert (tmp_path / (src.stem + ".o")).stat().st_size > 0


@needs_gxx
def test_exported_c_files_compile_with_warnings_as_errors(exports, tmp_path):
    _compile_only(exports["int8"][0], tmp_path)


@needs_gxx
@pytest.mark.parametrize("measured", [True, False])
def test_c_source_compiles_measured_or_estimated(tmp_path, measured):
    est = ArenaEstimate(1000, 2000, 3000, 0.25, 5120)
    arena = MicroArena(2336, 0.04, 2432, 3, True, "0.dev0") if measured else None
    cc, h = c_source(bytes(range(256)) * 3, "g_model_data", ops=["CONV_2D", "SOFTMAX"],
                     arena=est, measured=arena)
    (tmp_path / "model_data.cc").write_text(cc)
    (tmp_path / "model_data.h").write_text(h)
    _compile_only(tmp_path, tmp_path)
    if measured:
        assert "g_model_data_arena_size = 2432;" in h and "MEASURED" in h and "2336 B" in h
        assert "arena_measured = true;" in h and "static estimate was 5120 B" in h
    else:
        assert "g_model_data_arena_size = 5120;" in h and "ESTIMATED, not measured" in h
        assert "arena_measured = false;" in h


def test_c_source_variable_name_is_configurable():
    cc, h = c_source(b"\x00\x01\xff" * 5, "net_b050", header_name="net.h")
    assert read_c_array(cc, "net_b050") == (b"\x00\x01\xff" * 5, 15)
    assert '#include "net.h"' in cc and "TFLITE_EXPORT_NET_B050_H_" in h
    for bad in ("1abc", "my-model", "int", "double", "void", "while", ""):
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


@needs_tflm
def test_int8_export_runs_in_tflite_micro(exports):
    out_dir, report = exports["int8"]
    micro = load_manifest(out_dir)["micro"]
    assert micro == report.micro
    arena = micro["arena"]
    assert arena["source"] == "measured" and arena["measured"]["exact"]
    m = arena["measured"]
    assert m["min_bytes"] < arena["recommended_bytes"] == m["recommended_bytes"]
    assert arena["recommended_bytes"] <= micro_run.align(m["min_bytes"] * 1.05)
    assert arena["estimate"]["recommended_bytes"] == estimate_arena(_bytes(exports, "int8")) \
        .recommended_bytes  # the old estimate stays, labelled
    h = (out_dir / "model_data.h").read_text()
    assert f"g_model_data_arena_size = {arena['recommended_bytes']};" in h
    assert f"is {m['min_bytes']} B" in h and "arena_measured = true;" in h
    tflm = micro["tflm"]
    assert tflm["version"] == micro_run.tflm_version() and tflm["num_samples"] == 1000
    assert tflm["arena_bytes"] == m["min_bytes"]  # every image ran at the minimum arena
    assert tflm["top1_agreement"] >= 0.98 and tflm["max_abs_diff"] <= 0.05
    assert tflm["reference"]["exact_match"] >= 0.99  # vs LiteRT's reference kernels
    assert tflm["latency_ms_per_image"] > 0
    table = report.table()
    for word in ("TFLM arena ", "measured: min", "TFLM vs LiteRT", "TFLM vs LiteRT ref",
                 "TFLM latency host"):
        assert word in table
    assert load_manifest(out_dir)["versions"]["tflite-micro"] == tflm["version"]


def test_without_tflite_micro_the_arena_is_an_estimate(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setattr(micro_run, "tflm_version", lambda: None)
    x, y = tiny_data()
    r = export_tflite(tiny_models["pure"][0], tmp_path / "est", "int8",
                      representative_data=x[:30], validation_data=(x, y), measure_latency=False)
    arena = r.micro["arena"]
    assert arena["source"] == "estimate" and arena["measured"] is None
    assert arena["recommended_bytes"] == arena["estimate"]["recommended_bytes"]
    assert r.micro["tflm"] == {"version": None, "note": micro_run.NOT_INSTALLED}
    assert "TFLite Micro not installed" in r.table() and "TFLM arena (est.)" in r.table()
    h = (tmp_path / "est" / "model_data.h").read_text()
    assert "ESTIMATED, not measured" in h and "arena_measured = false;" in h
    assert load_manifest(tmp_path / "est")["micro"] == r.micro


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
    assert re.search(r"\nint8 purity +pure int8\n", table)


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
