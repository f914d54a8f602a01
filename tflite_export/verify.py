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
    """Creates a LiteRT ``Interpreter`` for a ``.tflite`` flatbuffer.

    Args:
        model_content: the flatbuffer (bytes-like).
        delegates: keep LiteRT's default delegate (XNNPACK; default True). False when the op
            list must reflect the flatbuffer rather than the delegated graph.
        num_threads: interpreter threads (default: LiteRT's choice).

    Returns:
        An ``ai_edge_litert.interpreter.Interpreter`` (tensors not yet allocated).

    Example:
        >>> interp = make_interpreter(tflite_bytes, delegates=False)  # doctest: +SKIP
        >>> interp.get_input_details()[0]["dtype"]  # doctest: +SKIP
    """
    kwargs = {"model_content": bytes(model_content)}
    if num_threads:
        kwargs["num_threads"] = num_threads
    if not delegates:
        kwargs["experimental_op_resolver_type"] = (
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    return Interpreter(**kwargs)


def tensor_info(details):
    """JSON-able summary of one entry of ``get_input_details()`` / ``get_output_details()``.

    Args:
        details: one tensor-details dict of a LiteRT interpreter.

    Returns:
        ``{"name", "shape", "shape_signature", "dtype", "scale", "zero_point"}`` as plain Python
        values (-1 marks a dynamic dimension in ``shape_signature``; ``scale`` is 0.0 for an
        unquantized tensor).

    Example:
        >>> tensor_info(interp.get_input_details()[0])["dtype"]  # doctest: +SKIP
        'int8'
    """
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
    """Builtin op names of a ``.tflite`` in execution order (no delegate pseudo-ops).

    Args:
        model_content: the flatbuffer (bytes).

    Returns:
        A list of op names such as ``"CONV_2D"``, repetitions included.

    Example:
        >>> list_ops(tflite_bytes)[:2]  # doctest: +SKIP
        ['QUANTIZE', 'CONV_2D']
    """
    interp = make_interpreter(model_content, delegates=False)
    return [
        str(op["op_name"])
        for op in interp._get_ops_details()
        if op["op_name"] not in _PSEUDO_OPS
    ]


def inspect_model(model_content):
    """Describes a ``.tflite``: ops, input / output tensors, signatures and size.

    Args:
        model_content: the flatbuffer (bytes).

    Returns:
        A JSON-able dict: ``size_bytes``; ``ops`` (execution order) and ``op_types`` (sorted,
        unique); ``inputs`` and ``outputs`` (lists of `tensor_info` dicts); ``signatures``
        (``{key: {"inputs": [...], "outputs": [...]}}``).

    Example:
        >>> info = inspect_model(open("out/b050/model.tflite", "rb").read())  # doctest: +SKIP
        >>> info["inputs"][0]["dtype"], info["op_types"]  # doctest: +SKIP
    """
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
    """Converts float inputs to an input tensor's dtype.

    For an integer tensor with a scale: ``round(x / scale) + zero_point``, clipped to the dtype's
    range; for an integer tensor without one (the model's own integer input, e.g. raw uint8
    pixels) and for a float tensor: a cast only.

    Args:
        x: array-like of float inputs.
        details: the input tensor's details dict (``dtype``, ``quantization``, ``name``).

    Returns:
        An ndarray of the tensor's dtype.

    Raises:
        ValueError: raw values that an integer tensor without a quantization scale cannot hold
            (not integral, or outside the dtype's range).

    Example:
        >>> details = {"name": "image", "dtype": np.int8, "quantization": (1 / 255, -128)}
        >>> quantize([0.0, 1.0], details).tolist()
        [-128, 127]
    """
    dtype = np.dtype(details["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return np.asarray(x, dtype=dtype)
    scale, zero_point = details["quantization"]
    info = np.iinfo(dtype)
    if scale == 0:  # the model's own integer input (raw pixels): values pass unchanged
        x = np.asarray(x)
        if x.size and (x.min() < info.min or x.max() > info.max or not np.array_equal(x, np.round(x))):
            raise ValueError(
                f"Invalid value for argument `x`. Expected raw {dtype.name} values (integers in "
                f"[{info.min}, {info.max}]): input tensor {details['name']!r} is {dtype.name} "
                "without a quantization scale, the model's own integer input. Received: "
                f"values in [{x.min()}, {x.max()}]"
            )
        return x.astype(dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(y, details):
    """Converts output tensor values to float32.

    Integer values with a scale become ``(y - zero_point) * scale``; integer values without a
    scale and float values are only cast.

    Args:
        y: the output tensor's values.
        details: the output tensor's details dict (``quantization``).

    Returns:
        A float32 ndarray.

    Example:
        >>> y = np.array([-128, 127], np.int8)
        >>> dequantize(y, {"quantization": (1 / 256, -128)}).tolist()
        [0.0, 0.99609375]
    """
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        return y.astype(np.float32, copy=False)
    scale, zero_point = details["quantization"]
    if scale == 0:
        return y.astype(np.float32)
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


def run_tflite(model_content, x, batch_size=256, interpreter=None):
    """Batched float32 inference of a single-input, single-output ``.tflite``.

    Callers always see float32 in and out: integer tensors are quantized / dequantized with
    their scale and zero-point. A dynamic batch dimension is resized to each chunk of
    ``batch_size``; a fixed one is fed batch by batch, the last batch padded with zeros.

    Args:
        model_content: the flatbuffer (bytes); unused when ``interpreter`` is given.
        x: float inputs ``(n, *input_shape)``.
        batch_size: samples per invoke for a dynamic batch dimension (default 256).
        interpreter: an interpreter to reuse (default: a new one with XNNPACK).

    Returns:
        Float32 outputs of shape ``(n, ...)``.

    Raises:
        ValueError: raw values an integer input without a quantization scale cannot hold, or an
            empty ``x``.

    Example:
        >>> probs = run_tflite(tflite_bytes, x_test[:8])  # doctest: +SKIP
        >>> probs.argmax(axis=1)  # doctest: +SKIP
    """
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
    """Compares a Keras model (float, inference mode) with its TFLite conversion on ``(x, y)``.

    Args:
        model: the Keras model that was converted.
        model_content: the ``.tflite`` flatbuffer (bytes).
        x: float inputs ``(n, *input_shape)``.
        y: integer class ids ``(n,)``.
        batch_size: batch size of both predictions (default 256).

    Returns:
        A JSON-able dict: ``num_samples``, ``keras_accuracy``, ``tflite_accuracy``,
        ``accuracy_drop`` (Keras minus TFLite), ``top1_agreement`` (fraction of equal argmax),
        ``max_abs_diff`` and ``mean_abs_diff`` of the output probabilities.

    Raises:
        RuntimeError: the TFLite output shape differs from the Keras one.

    Example:
        >>> evaluate(model, tflite_bytes, x_test, y_test)["accuracy_drop"]  # doctest: +SKIP
        0.002
    """
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
    """Median host-CPU latency of one batch-1 invoke, with LiteRT's default XNNPACK delegate.

    Only a relative indicator for comparing exports: phones and microcontrollers differ. The
    input is all zeros; the ``warmup`` invokes are not timed.

    Args:
        model_content: the flatbuffer (bytes).
        runs: timed invokes (default 20).
        warmup: untimed invokes before them (default 3).
        num_threads: interpreter threads (default 1).

    Returns:
        The median latency in milliseconds (a float).

    Example:
        >>> measure_latency_ms(tflite_bytes, runs=50)  # doctest: +SKIP
        0.41
    """
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
