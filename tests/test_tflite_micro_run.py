"""tflite_export.micro_run: the int8 model in the real TensorFlow Lite Micro interpreter.

Needs ``tflite-micro`` (the ``micro`` extra; CI installs it). Every interpreter run happens in a
child process, so the crashes of a too-small arena are exercised here on purpose.
"""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tflite_export import micro_run  # noqa: E402
from tflite_export.micro_run import (  # noqa: E402
    align,
    failing_ops,
    measure_arena,
    run_micro,
    verify_micro,
)

from tests.tflite_fixtures import tiny_data, tiny_models  # noqa: E402,F401  (fixture)

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py

pytest.importorskip("tflite_micro", reason="tflite-micro (the `micro` extra) is not installed")


def _int8_inputs(model_content, x):
    from tflite_export import verify

    interp = verify.make_interpreter(model_content, delegates=False)
    return verify.quantize(x, interp.get_input_details()[0])


@pytest.mark.parametrize("key", ["pure", "layernorm"])
def test_measured_arena_is_the_smallest_that_runs(tiny_models, key):
    data = tiny_models[key][1]
    arena = measure_arena(data)
    assert arena.exact and arena.min_bytes % 16 == 0 and arena.probes <= 24
    assert arena.margin == micro_run.ARENA_MARGIN <= 0.05
    assert arena.min_bytes < arena.recommended_bytes <= align(arena.min_bytes * 1.05)
    assert arena.recommended_bytes % 16 == 0 and arena.tflm_version == micro_run.tflm_version()
    x = _int8_inputs(data, tiny_data(3)[0])
    out, times = run_micro(data, x, arena.min_bytes)  # fresh process: the minimum runs
    assert out.shape == (3, 3) and out.dtype == np.int8 and len(times) == 3
    with pytest.raises(ValueError, match=r"argument `arena_size`.*arena_size=" +
                       str(arena.min_bytes - 16)):
        run_micro(data, x, arena.min_bytes - 16)  # 16 bytes less: refused


def test_crashing_arena_is_contained(tiny_models):
    data = tiny_models["pure"][1]
    x = _int8_inputs(data, tiny_data(1)[0])
    # 16 bytes segfaults inside TFLM: the child dies, this process reports it
    with pytest.raises(ValueError, match="arena_size"):
        run_micro(data, x, 16)


def test_tflm_agrees_with_litert(tiny_models):
    data = tiny_models["pure"][1]
    x = tiny_data(40, seed=3)[0]
    arena = measure_arena(data)
    r = verify_micro(data, x, arena.min_bytes)
    assert r["num_samples"] == 40 and r["arena_bytes"] == arena.min_bytes
    assert r["top1_agreement"] >= 0.95
    assert r["max_abs_diff"] <= 2 / 256 + 1e-6  # at most 2 steps of the output scale
    assert 0 < r["exact_match"] <= 1 and r["latency_ms_per_image"] > 0
    # TFLM's kernels are ports of LiteRT's reference kernels: identical outputs
    assert r["reference"] == {"top1_agreement": 1.0, "max_abs_diff": 0.0, "exact_match": 1.0}


def test_model_tflm_cannot_run_names_the_op(tiny_models):
    # dynamic-range quantization: float input x int8 weights, which TFLM's kernels refuse
    with pytest.raises(ValueError, match=r"argument `model`.*\['FULLY_CONNECTED'\].*"
                       "FLOAT32 with filter type: INT8"):
        measure_arena(tiny_models["dynamic"][1])


def test_failing_ops_parses_tflm_messages():
    text = ("Input type: FLOAT32 with filter type: INT8 not supported.\n"
            "Node FULLY_CONNECTED (number 4) failed to prepare with status 1\n"
            "Didn't find custom op for name 'MyOp'\nNode CONV_2D (number 0f) failed to invoke\n")
    assert failing_ops(text) == ["FULLY_CONNECTED", "MyOp", "CONV_2D"]
    assert failing_ops("all good") == []


def test_margin_is_at_most_five_percent(tiny_models):
    for bad in (0.06, -0.01, "4%"):
        with pytest.raises(ValueError, match="argument `margin`"):
            measure_arena(tiny_models["pure"][1], margin=bad)


def test_not_installed_is_a_clear_error(tiny_models, monkeypatch):
    monkeypatch.setattr(micro_run, "tflm_version", lambda: None)
    with pytest.raises(RuntimeError, match="TFLite Micro not installed"):
        measure_arena(tiny_models["pure"][1])
