"""tflite_export: bad inputs, atomic writes and the ``python -m tflite_export`` CLI."""

import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tflite_export import export_tflite, load_manifest  # noqa: E402
from tflite_export import verify as verify_mod  # noqa: E402
from tflite_export._io import atomic_write_bytes  # noqa: E402
from tflite_export.__main__ import main as cli_main  # noqa: E402

from tests.tflite_fixtures import (  # noqa: E402,F401  (fixtures)
    LABELS,
    build_tiny_net,
    data,
    model,
    tiny_data,
)

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py


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
            "--report-json", str(tmp_path / "report.json"), "--micro-samples", "50"]
    assert cli_main(args) == 0
    assert "TFLite export" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["labels.txt", "manifest.json", "model.tflite",
                                       "model_data.cc", "model_data.h"]
    m = load_manifest(out)
    assert m["flops"] == 42 and m["accuracy"]["num_samples"] == 200
    assert json.loads((tmp_path / "report.json").read_text())[0]["quantization"] == "int8"
    assert m["int8_purity"]["pure"]
    if m["micro"]["tflm"]["version"] is not None:  # tflite-micro installed (CI)
        assert m["micro"]["tflm"]["num_samples"] == 50
        assert m["micro"]["arena"]["source"] == "measured"
    assert cli_main(args) == 2  # exists now, no --overwrite
    assert "overwrite" in capsys.readouterr().err


def test_cli_strict_int8_refuses_float_ops(tmp_path, capsys):
    path = tmp_path / "ln.keras"
    build_tiny_net(layer_norm=True).save(path)
    x, _ = tiny_data()
    np.savez(tmp_path / "rep.npz", x=x[:30])
    args = ["--model", str(path), "--quantization", "int8", "--out", str(tmp_path / "o"),
            "--representative", str(tmp_path / "rep.npz")]
    assert cli_main(args + ["--strict-int8"]) == 2
    err = capsys.readouterr().err
    assert "strict_int8=True" in err and "NEG" in err and not (tmp_path / "o").exists()
    assert cli_main(args + ["--micro-samples", "0"]) == 2
    assert "micro_samples" in capsys.readouterr().err
    assert cli_main(args + ["--strict-int8", "--quantization", "float32"]) == 2
    assert cli_main(args + ["--no-micro"]) == 0  # listed, not refused
    assert load_manifest(tmp_path / "o")["int8_purity"]["compute_ops"] == ["NEG"]
