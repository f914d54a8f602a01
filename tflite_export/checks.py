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
    """Validates a quantization mode name.

    Args:
        quantization: one of `QUANTIZATIONS`: ``"float32"``, ``"float16"``, ``"dynamic"``,
            ``"int8"``.

    Returns:
        ``quantization`` unchanged.

    Raises:
        ValueError: any other value (non-strings included).

    Example:
        >>> check_quantization("int8")
        'int8'
    """
    if not isinstance(quantization, str) or quantization not in QUANTIZATIONS:
        raise _invalid(
            "quantization",
            f"one of {list(QUANTIZATIONS)}",
            f"quantization={quantization!r}",
        )
    return quantization


def model_io_spec(model):
    """Input shape and number of classes of a plain Keras classifier.

    Every export path runs it first: models the converter or an app cannot handle (several
    inputs or outputs, a dynamic non-batch dimension, an output that is not 2-D) fail before any
    conversion work.

    Args:
        model: a built Keras functional or Sequential model.

    Returns:
        ``(input_shape, num_classes)``: the input shape without the batch dimension (a tuple of
        ints) and the size of the ``(batch, num_classes)`` output.

    Raises:
        ValueError: no ``inputs`` / ``outputs`` (an unbuilt or subclassed model), more than one
            input or output, a None input dimension other than the batch, or an output that is
            not ``(batch, num_classes)``.

    Example:
        >>> model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
        ...                           keras.layers.Dense(10)])  # doctest: +SKIP
        >>> model_io_spec(model)  # doctest: +SKIP
        ((28, 28, 1), 10)
    """
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


def model_input_dtype(model):
    """The dtype of a model's (single) input, as a NumPy dtype name.

    A model whose input is an integer type (``keras.Input(shape, dtype="uint8")`` followed by
    ``Rescaling(1 / 255)``, a common on-device pattern) takes *raw* values: its calibration and
    validation inputs are raw integers too, and its TFLite input tensor keeps that type.

    Args:
        model: a built Keras model with one input.

    Returns:
        A dtype name such as ``"float32"`` or ``"uint8"`` (``"float32"`` when unknown).

    Example:
        >>> model_input_dtype(keras.Sequential([keras.Input((4,), dtype="uint8")]))  # doctest: +SKIP
        'uint8'
    """
    dtype = getattr(model.inputs[0], "dtype", None) or "float32"
    return np.dtype(str(dtype).replace("bfloat16", "float32")).name


def check_inputs_array(arg, x, input_shape, dtype="float32"):
    """Validates a batch of model inputs, in the form the model takes them.

    A model with a floating-point input takes preprocessed inputs (an integer array, e.g. raw
    uint8 pixels, is refused: preprocess it as in training). A model with an integer input
    (``dtype="uint8"``: it preprocesses raw values itself) takes the raw values: integers, or
    floats holding integral values, inside the dtype's range.

    Args:
        arg: the argument name error messages give (e.g. ``"representative_data"``).
        x: array-like of shape ``(n, *input_shape)`` with ``n >= 1``, finite.
        input_shape: the model's input shape without the batch dimension (a tuple).
        dtype: the model's input dtype (`model_input_dtype`; default ``"float32"``).

    Returns:
        ``x`` as a float32 ndarray for a floating-point input (not copied when it already is
        one), else as an ndarray of the model's integer dtype.

    Raises:
        ValueError: ``x`` is None, not convertible to an array, of another shape, empty or not
            finite; integers for a floating-point input (not preprocessed); for an integer
            input, values that are not integral or outside the dtype's range.

    Example:
        >>> check_inputs_array("x", np.zeros((2, 4)), (4,)).dtype
        dtype('float32')
        >>> check_inputs_array("x", np.full((2, 4), 255.0), (4,), "uint8").dtype
        dtype('uint8')
    """
    dtype = np.dtype(dtype)
    raw = np.issubdtype(dtype, np.integer)
    if x is None:
        raise _invalid(arg, f"an array of shape (n, {_fmt(input_shape)})", "None")
    try:
        arr = np.asarray(x)
    except Exception as e:  # ragged lists and the like
        raise _invalid(arg, "an array", f"{type(x).__name__} ({e})") from e
    numeric = arr.dtype != object and (np.issubdtype(arr.dtype, np.floating)
                                       or (raw and np.issubdtype(arr.dtype, np.integer)))
    if not numeric:
        expected = (f"raw {dtype.name} values (the model's input is {dtype.name}: it "
                    "preprocesses them itself)" if raw else
                    "a floating-point array (float16/32/64) of preprocessed model inputs (the "
                    "model's input is float: scale integer images as in training)")
        raise _invalid(arg, expected, f"dtype={arr.dtype}, shape={arr.shape}")
    if arr.ndim != len(input_shape) + 1 or tuple(arr.shape[1:]) != input_shape:
        raise _invalid(
            arg,
            f"an array of shape (n, {_fmt(input_shape)}) matching the model input",
            f"shape={arr.shape}",
        )
    if arr.shape[0] == 0:
        raise _invalid(arg, "at least one sample", f"shape={arr.shape} (empty)")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise _invalid(arg, "finite values only", "an array containing NaN or inf")
    if not raw:
        return arr.astype(np.float32, copy=False)
    info = np.iinfo(dtype)
    low, high = arr.min(), arr.max()
    if low < info.min or high > info.max or (
            np.issubdtype(arr.dtype, np.floating) and not np.array_equal(arr, np.round(arr))):
        raise _invalid(
            arg,
            f"raw {dtype.name} values: integers in [{info.min}, {info.max}] (the model's input is "
            f"{dtype.name} and it preprocesses them itself, e.g. with a Rescaling layer; pass "
            "the values before scaling)",
            f"dtype={arr.dtype}, values in [{low}, {high}]",
        )
    return arr.astype(dtype, copy=False)


def check_labels_array(y, n, num_classes):
    """Converts labels to int64 class ids, checking their count, form and range.

    Args:
        y: integer class ids of shape ``(n,)`` or ``(n, 1)`` (floats with integral values are
            accepted), or one-hot rows ``(n, num_classes)`` (their argmax is taken).
        n: the number of samples of the matching inputs.
        num_classes: the model's number of classes.

    Returns:
        An int64 array of shape ``(n,)``.

    Raises:
        ValueError: ``len(y) != n``, another shape or dtype, or a class id outside
            ``[0, num_classes)``. Messages name the argument ``validation_data``.

    Example:
        >>> check_labels_array(np.eye(3)[[2, 0]], 2, 3).tolist()
        [2, 0]
    """
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


def check_validation_data(validation_data, input_shape, num_classes, dtype="float32"):
    """Validates the optional ``validation_data`` of an export.

    Args:
        validation_data: None, or a pair ``(x, y)`` (tuple or list): inputs as for
            `check_inputs_array`, labels as for `check_labels_array`.
        input_shape: the model's input shape without the batch dimension.
        num_classes: the model's number of classes.
        dtype: the model's input dtype (see `check_inputs_array`).

    Returns:
        None when ``validation_data`` is None, else ``(x, y)``: inputs as `check_inputs_array`
        returns them and int64 ids.

    Raises:
        ValueError: not a pair, or invalid ``x`` or ``y``.

    Example:
        >>> x, y = check_validation_data((x_test, y_test), (28, 28, 1), 10)  # doctest: +SKIP
    """
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
    x = check_inputs_array("validation_data", x, input_shape, dtype)
    y = check_labels_array(y, len(x), num_classes)
    return x, y


def check_representative_data(representative_data, quantization, input_shape, dtype="float32"):
    """Validates the calibration inputs for a quantization mode.

    Args:
        representative_data: None, or inputs as for `check_inputs_array`.
        quantization: the quantization mode; ``"int8"`` requires data.
        input_shape: the model's input shape without the batch dimension.
        dtype: the model's input dtype (see `check_inputs_array`).

    Returns:
        None when no data was given (and none is required), else the inputs as
        `check_inputs_array` returns them.

    Raises:
        ValueError: no data with ``quantization="int8"``, or invalid data.

    Example:
        >>> check_representative_data(None, "float16", (28, 28, 1)) is None
        True
    """
    if representative_data is None:
        if quantization == "int8":
            raise _invalid(
                "representative_data",
                "an array of shape (n, "
                f"{_fmt(input_shape)}) for calibration when quantization='int8'",
                "None",
            )
        return None
    return check_inputs_array("representative_data", representative_data, input_shape, dtype)


def check_labels(labels, num_classes):
    """Validates the optional class names written to ``labels.txt``.

    Args:
        labels: None, or a sequence (not a string) of ``num_classes`` non-empty strings without
            line breaks, one per model output.
        num_classes: the model's number of classes.

    Returns:
        None, or the labels as a list.

    Raises:
        ValueError: a string or an object without a length, the wrong number of labels, or a
            label that is not a non-empty single-line string.

    Example:
        >>> check_labels(("cat", "dog"), 2)
        ['cat', 'dog']
    """
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
    """Validates the optional user metadata of an export.

    Args:
        metadata: None, or a dict that JSON can encode without NaN / inf. Its optional
            ``"flops"`` entry must be a non-negative finite number (not a bool).

    Returns:
        A shallow copy of the dict (``{}`` for None).

    Raises:
        ValueError: not a dict, not JSON-serializable, or a bad ``"flops"``.

    Example:
        >>> check_metadata({"flops": 1200, "budget": 0.5})
        {'flops': 1200, 'budget': 0.5}
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise _invalid("metadata", "a dict", f"{type(metadata).__name__}")
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise _invalid("metadata", "a JSON-serializable dict", f"{e}") from e
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
