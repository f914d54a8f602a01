"""Run a .tflite in the LiteRT Interpreter and compare it with Keras.

* `inspect_model(bytes)`: op list, input/output tensor details (dtype, shape,
  scale/zero-point), signatures, size.
* `run_tflite(bytes, x)`: batched inference (the input tensor is resized to
  the batch when its batch dimension is dynamic, else a per-batch loop);
  float inputs are quantized with the input scale/zero-point and integer
  outputs dequantized, so callers always see float32 in / float32 out.
* `evaluate(model, bytes, x, y)`: Keras-float vs TFLite accuracy, top-1
  agreement, max/mean abs difference of the output probabilities.
"""

import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

# Pseudo-op that shows up in `_get_ops_details()` once XNNPACK is applied.
_PSEUDO_OPS = {"DELEGATE"}


def make_interpreter(model_content, delegates=True, num_threads=None):
    """LiteRT interpreter; `delegates=False` disables the default XNNPACK
    delegate (needed when the op list must reflect the flatbuffer)."""
    kwargs = {"model_content": bytes(model_content)}
    if num_threads:
        kwargs["num_threads"] = num_threads
    if not delegates:
        kwargs["experimental_op_resolver_type"] = (
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    return Interpreter(**kwargs)


def tensor_info(details):
    """JSON-able summary of one entry of get_input/output_details()."""
    scale, zero_point = details.get("quantization", (0.0, 0))
    shape_sig = details.get("shape_signature", details["shape"])
    return {
        "name": str(details["name"]),
        "shape": [int(d) for d in details["shape"]],
        "shape_signature": [int(d) for d in shape_sig],
        "dtype": np.dtype(details["dtype"]).name,
        "scale": float(scale),
        "zero_point": int(zero_point),
    }


def list_ops(model_content):
    """Builtin op names in execution order (no delegate pseudo-ops)."""
    interp = make_interpreter(model_content, delegates=False)
    return [
        str(op["op_name"])
        for op in interp._get_ops_details()
        if op["op_name"] not in _PSEUDO_OPS
    ]


def inspect_model(model_content):
    interp = make_interpreter(model_content, delegates=False)
    inputs = interp.get_input_details()
    outputs = interp.get_output_details()
    ops = [str(o["op_name"]) for o in interp._get_ops_details()
           if o["op_name"] not in _PSEUDO_OPS]
    return {
        "size_bytes": len(model_content),
        "ops": ops,
        "op_types": sorted(set(ops)),
        "inputs": [tensor_info(d) for d in inputs],
        "outputs": [tensor_info(d) for d in outputs],
        "signatures": {
            k: {"inputs": list(v["inputs"]), "outputs": list(v["outputs"])}
            for k, v in interp.get_signature_list().items()
        },
    }


def quantize(x, details):
    """Float array -> the input tensor's dtype (no-op for float tensors)."""
    dtype = np.dtype(details["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return np.asarray(x, dtype=dtype)
    scale, zero_point = details["quantization"]
    if scale == 0:
        raise ValueError(
            f"Input tensor {details['name']!r} is {dtype.name} but has no "
            "quantization scale."
        )
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(y, details):
    """Output tensor values -> float32 (uses scale/zero-point when integer)."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        return y.astype(np.float32, copy=False)
    scale, zero_point = details["quantization"]
    if scale == 0:
        return y.astype(np.float32)
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


def run_tflite(model_content, x, batch_size=256, interpreter=None):
    """Float32 outputs of the (single-input, single-output) .tflite on `x`."""
    interp = interpreter or make_interpreter(model_content)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    dynamic = int(inp["shape_signature"][0]) == -1
    if not dynamic:
        batch_size = int(inp["shape"][0])
    current = None
    results = []
    for start in range(0, len(x), batch_size):
        chunk = np.asarray(x[start : start + batch_size], dtype=np.float32)
        n = len(chunk)
        if not dynamic and n < batch_size:  # pad the last fixed-size batch
            pad = np.zeros((batch_size - n,) + chunk.shape[1:], np.float32)
            chunk = np.concatenate([chunk, pad])
        if current != len(chunk):
            if dynamic:
                interp.resize_tensor_input(inp["index"], [len(chunk), *chunk.shape[1:]])
            interp.allocate_tensors()
            current = len(chunk)
        interp.set_tensor(inp["index"], quantize(chunk, inp))
        interp.invoke()
        y = interp.get_tensor(out["index"])
        results.append(dequantize(y, out)[:n])
    return np.concatenate(results, axis=0)


def evaluate(model, model_content, x, y, batch_size=256):
    """Compare Keras (float, inference mode) with the TFLite model on (x, y).

    Returns a JSON-able dict with `keras_accuracy`, `tflite_accuracy`,
    `accuracy_drop`, `top1_agreement`, `max_abs_diff`, `mean_abs_diff`,
    `num_samples`."""
    ref = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), np.float32)
    got = run_tflite(model_content, x, batch_size=batch_size)
    if ref.shape != got.shape:
        raise RuntimeError(
            f"TFLite output shape {got.shape} differs from Keras {ref.shape}."
        )
    k_pred, t_pred = ref.argmax(axis=1), got.argmax(axis=1)
    diff = np.abs(ref - got)
    keras_acc = float(np.mean(k_pred == y))
    tflite_acc = float(np.mean(t_pred == y))
    return {
        "num_samples": int(len(x)),
        "keras_accuracy": keras_acc,
        "tflite_accuracy": tflite_acc,
        "accuracy_drop": keras_acc - tflite_acc,
        "top1_agreement": float(np.mean(k_pred == t_pred)),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
    }


def measure_latency_ms(model_content, runs=20, warmup=3, num_threads=1):
    """Median host-CPU latency (ms) of one batch-1 invoke with XNNPACK.
    Only a relative indicator: phones and MCUs differ."""
    interp = make_interpreter(model_content, num_threads=num_threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=inp["dtype"]))
    for _ in range(warmup):
        interp.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))
