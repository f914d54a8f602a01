"""Argument validation with Keras-style error messages.

Everything here runs *before* any conversion work so that bad input fails
fast with a message of the form
"Invalid value for argument `x`. Expected ... Received: ...".
"""

import json
import math

import numpy as np

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")


def _invalid(arg, expected, received):
    return ValueError(
        f"Invalid value for argument `{arg}`. Expected {expected}. "
        f"Received: {received}"
    )


def check_quantization(quantization):
    if not isinstance(quantization, str) or quantization not in QUANTIZATIONS:
        raise _invalid(
            "quantization",
            f"one of {list(QUANTIZATIONS)}",
            f"quantization={quantization!r}",
        )
    return quantization


def model_io_spec(model):
    """Return `(input_shape_without_batch, num_classes)` of a plain
    single-input, single-output Keras classifier; raise ValueError otherwise."""
    inputs = getattr(model, "inputs", None)
    outputs = getattr(model, "outputs", None)
    if not inputs or not outputs:
        raise _invalid(
            "model",
            "a built Keras functional/Sequential model with defined inputs",
            f"{type(model).__name__} without `inputs`/`outputs`",
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise _invalid(
            "model",
            "a model with exactly one input and one output",
            f"{len(inputs)} input(s) and {len(outputs)} output(s)",
        )
    in_shape = tuple(inputs[0].shape)
    out_shape = tuple(outputs[0].shape)
    if any(d is None for d in in_shape[1:]):
        raise _invalid(
            "model",
            "a fixed input shape apart from the batch dimension",
            f"input shape={in_shape}",
        )
    if len(out_shape) != 2 or out_shape[1] is None:
        raise _invalid(
            "model",
            "a classifier output of shape (batch, num_classes)",
            f"output shape={out_shape}",
        )
    return tuple(int(d) for d in in_shape[1:]), int(out_shape[1])


def check_inputs_array(arg, x, input_shape):
    """Validate a batch of model inputs: ndarray-like, floating point, shape
    `(n, *input_shape)` with n >= 1, all values finite."""
    if x is None:
        raise _invalid(arg, f"an array of shape (n, {_fmt(input_shape)})", "None")
    try:
        arr = np.asarray(x)
    except Exception as e:  # ragged lists and the like
        raise _invalid(arg, "an array", f"{type(x).__name__} ({e})") from None
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.floating):
        raise _invalid(
            arg,
            "a floating-point array (float16/32/64) of preprocessed model inputs",
            f"dtype={arr.dtype}, shape={arr.shape}",
        )
    if arr.ndim != len(input_shape) + 1 or tuple(arr.shape[1:]) != input_shape:
        raise _invalid(
            arg,
            f"an array of shape (n, {_fmt(input_shape)}) matching the model input",
            f"shape={arr.shape}",
        )
    if arr.shape[0] == 0:
        raise _invalid(arg, "at least one sample", f"shape={arr.shape} (empty)")
    if not np.all(np.isfinite(arr)):
        raise _invalid(arg, "finite values only", "an array containing NaN or inf")
    return arr.astype(np.float32, copy=False)


def check_labels_array(y, n, num_classes):
    """Integer class ids `(n,)`/`(n, 1)` or one-hot `(n, num_classes)` ->
    int64 class ids of shape (n,)."""
    arr = np.asarray(y)
    if arr.ndim >= 1 and arr.shape[0] != n:
        raise _invalid(
            "validation_data",
            "x and y with the same number of samples",
            f"len(x)={n}, len(y)={arr.shape[0]}",
        )
    if arr.ndim == 2 and arr.shape[1] == num_classes and num_classes > 1:
        return np.argmax(arr, axis=1).astype(np.int64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or not (
        np.issubdtype(arr.dtype, np.integer)
        or (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)))
    ):
        raise _invalid(
            "validation_data",
            f"y as integer class ids of shape (n,) or one-hot (n, {num_classes})",
            f"y with dtype={arr.dtype}, shape={arr.shape}",
        )
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise _invalid(
            "validation_data",
            f"class ids in [0, {num_classes})",
            f"min={arr.min()}, max={arr.max()}",
        )
    return arr


def check_validation_data(validation_data, input_shape, num_classes):
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise _invalid(
            "validation_data",
            "a tuple (x, y)",
            f"{type(validation_data).__name__}"
            + (f" of length {len(validation_data)}"
               if isinstance(validation_data, (tuple, list)) else ""),
        )
    x, y = validation_data
    x = check_inputs_array("validation_data", x, input_shape)
    y = check_labels_array(y, len(x), num_classes)
    return x, y


def check_representative_data(representative_data, quantization, input_shape):
    if representative_data is None:
        if quantization == "int8":
            raise _invalid(
                "representative_data",
                "an array of shape (n, "
                f"{_fmt(input_shape)}) for calibration when quantization='int8'",
                "None",
            )
        return None
    return check_inputs_array("representative_data", representative_data, input_shape)


def check_labels(labels, num_classes):
    if labels is None:
        return None
    if isinstance(labels, str) or not hasattr(labels, "__len__"):
        raise _invalid("labels", "a list of class-name strings", f"{labels!r}")
    labels = list(labels)
    if len(labels) != num_classes:
        raise _invalid(
            "labels",
            f"{num_classes} class names (one per model output)",
            f"{len(labels)} labels",
        )
    for lab in labels:
        if not isinstance(lab, str) or not lab or "\n" in lab or "\r" in lab:
            raise _invalid(
                "labels", "non-empty single-line strings", f"label={lab!r}"
            )
    return labels


def check_metadata(metadata):
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise _invalid("metadata", "a dict", f"{type(metadata).__name__}")
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise _invalid("metadata", "a JSON-serializable dict", f"{e}") from None
    flops = metadata.get("flops")
    if flops is not None and (
        isinstance(flops, bool)
        or not isinstance(flops, (int, float))
        or not math.isfinite(flops)
        or flops < 0
    ):
        raise _invalid("metadata", "`flops` as a non-negative number", f"flops={flops!r}")
    return dict(metadata)


def _fmt(shape):
    return ", ".join(str(d) for d in shape)
