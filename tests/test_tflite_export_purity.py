"""tflite_export.purity: float ops and tensors left in an int8 model, and ``strict_int8``."""

import os
import re

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tflite_export import (  # noqa: E402
    check_int8_purity,
    export_tflite,
    inspect_model,
    int8_purity,
    load_manifest,
)
from tflite_export.purity import describe  # noqa: E402

from tests.tflite_fixtures import tiny_data, tiny_models  # noqa: E402,F401  (fixture)

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py


def test_layernorm_keeps_a_float_neg(tiny_models):
    p = int8_purity(tiny_models["layernorm"][1])
    assert not p["pure"] and p["compute_ops"] == ["NEG"]
    kinds = {o["op"]: o["kind"] for o in p["float_ops"]}
    assert kinds == {"DEQUANTIZE": "convert", "NEG": "compute", "QUANTIZE": "convert"}
    assert {t["dtype"] for t in p["float_tensors"]} == {"float32"}
    assert any("layer_normalization" in t["name"] for t in p["float_tensors"])
    assert describe(p).startswith("float ops NEG (#")
    with pytest.raises(ValueError, match=r"argument `model`.*strict_int8=True.*float ops NEG"):
        check_int8_purity(p)


def test_pure_model_passes(tiny_models):
    p = int8_purity(tiny_models["pure"][1])
    assert p == {"pure": True, "float_ops": [], "float_tensors": [], "compute_ops": []}
    assert check_int8_purity(p) is p and describe(p) == "pure int8"


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")
def test_float_io_boundary_is_allowed(tiny_models):
    """Float input / output around an int8 body: the edge QUANTIZE / DEQUANTIZE are the model's
    boundary, not impurity."""
    import tensorflow as tf

    model = tiny_models["pure"][0]
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    x = tiny_data()[0]
    converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(20))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    data = converter.convert()  # inference input / output types stay float32
    info = inspect_model(data)
    assert info["inputs"][0]["dtype"] == info["outputs"][0]["dtype"] == "float32"
    assert info["ops"][0] == "QUANTIZE" and info["ops"][-1] == "DEQUANTIZE"
    p = int8_purity(data)
    assert p["pure"], p


def test_strict_int8_refuses_export(tiny_models, tmp_path):
    model = tiny_models["layernorm"][0]
    x, y = tiny_data()
    with pytest.raises(ValueError, match=r"float ops NEG.*layer_normalization"):
        export_tflite(model, tmp_path / "ln", "int8", representative_data=x[:30],
                      strict_int8=True, measure_latency=False)
    assert os.listdir(tmp_path) == []  # refused before anything was written
    # default: exported, the float ops listed in the report and the manifest
    r = export_tflite(model, tmp_path / "ln", "int8", representative_data=x[:30],
                      validation_data=(x, y), measure_latency=False)
    assert r.int8_purity["compute_ops"] == ["NEG"]
    assert load_manifest(tmp_path / "ln")["int8_purity"] == r.int8_purity
    assert re.search(r"\nint8 purity +float ops NEG \(#", r.table())
    # the clean model passes strict mode
    r = export_tflite(tiny_models["pure"][0], tmp_path / "pure", "int8",
                      representative_data=x[:30], strict_int8=True, micro=False,
                      measure_latency=False)
    assert r.int8_purity["pure"]


def test_strict_int8_argument_is_checked(tiny_models, tmp_path):
    model = tiny_models["pure"][0]
    with pytest.raises(ValueError, match=r"argument `strict_int8`.*quantization='float32'"):
        export_tflite(model, tmp_path / "f", "float32", strict_int8=True)
    with pytest.raises(ValueError, match=r"argument `strict_int8`.*strict_int8='yes'"):
        export_tflite(model, tmp_path / "f", "int8", representative_data=tiny_data()[0],
                      strict_int8="yes")
    r = export_tflite(model, tmp_path / "f32", "float32", measure_latency=False)
    assert r.int8_purity is None and load_manifest(tmp_path / "f32")["int8_purity"] is None
