"""Keras model -> TFLite flatbuffer bytes.

Two routes (both produce the same ops and numerics):

* ``route="signature"`` (default): the model is written as a SavedModel with
  `keras.export.ExportArchive` exposing one endpoint
  ``serving_default(image) -> {"probabilities": ...}`` and converted with
  `tf.lite.TFLiteConverter.from_saved_model`. The .tflite then carries a
  named signature with stable input/output names (see `android.py`).
* ``route="keras"``: `tf.lite.TFLiteConverter.from_keras_model(model)`.
  Simpler, but the signature input is named after the Keras input layer and
  the output is always ``output_0``.

Dead end (do not use): saving a `tf.Module` holding the Keras 3 model with
`tf.saved_model.save` keeps VAR_HANDLE/READ_VARIABLE ops in the .tflite and
inference returns garbage / int8 calibration fails. `ExportArchive` freezes
the weights correctly.

Quantization modes:

* ``float32``: no optimization.
* ``float16``: `Optimize.DEFAULT` + `supported_types=[tf.float16]` (weights
  stored as fp16, DEQUANTIZE ops up front; inputs/outputs stay float32).
* ``dynamic``: `Optimize.DEFAULT` without representative data: int8 weights,
  float activations (dynamic-range quantization).
* ``int8``: full integer: `Optimize.DEFAULT` + representative dataset +
  `TFLITE_BUILTINS_INT8` + int8 input and output tensors.

Models with an integer input (raw uint8 pixels and a ``Rescaling`` layer inside) keep it in the
float modes (the app passes raw bytes); full-int8 converts `float_input_twin`, whose int8 input
is quantized from the raw values like any int8 model's.
"""

import tempfile

import numpy as np

from tflite_export import android
from tflite_export.checks import (
    check_quantization,
    check_representative_data,
    model_input_dtype,
    model_io_spec,
)

ROUTES = ("signature", "keras")


def representative_dataset(x):
    """Wraps calibration inputs in the generator function a TFLite converter expects.

    Args:
        x: array-like of model inputs ``(n, *input_shape)``: floats (converted to float32), or
            raw integers for a model with an integer input (kept in their dtype: the converter
            feeds them to the model's own input).

    Returns:
        A function that yields ``[x[i:i + 1]]`` (one-sample batches) for every sample in order;
        assign it to ``converter.representative_dataset``.

    Example:
        >>> gen = representative_dataset(np.zeros((3, 4)))
        >>> [batch[0].shape for batch in gen()]
        [(1, 4), (1, 4), (1, 4)]
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32, copy=False)

    def gen():
        for i in range(len(x)):
            yield [x[i : i + 1]]

    return gen


def configure_converter(converter, quantization, representative_data=None):
    """Sets the optimization options of a TFLite converter for a quantization mode.

    ``"float32"`` leaves the converter as it is; ``"float16"`` stores the weights as fp16;
    ``"dynamic"`` quantizes the weights to int8 (float activations); ``"int8"`` is full-integer
    quantization calibrated on ``representative_data``, with int8 input and output tensors (see
    the module docstring for the exact settings).

    Args:
        converter: a ``tf.lite.TFLiteConverter`` (e.g. from `make_converter`).
        quantization: ``"float32"``, ``"float16"``, ``"dynamic"`` or ``"int8"``.
        representative_data: calibration inputs ``(n, *input_shape)``; required for ``"int8"``,
            ignored otherwise.

    Returns:
        The same ``converter``, configured in place.

    Raises:
        ValueError: an unknown quantization, or ``"int8"`` without ``representative_data``.

    Example:
        >>> converter = tf.lite.TFLiteConverter.from_keras_model(model)  # doctest: +SKIP
        >>> data = configure_converter(converter, "int8", x_train[:500]).convert()  # doctest: +SKIP
    """
    import tensorflow as tf

    check_quantization(quantization)
    if quantization == "float32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        if representative_data is None:
            raise ValueError(
                "Invalid value for argument `representative_data`. Expected an "
                "array for calibration when quantization='int8'. Received: None"
            )
        converter.representative_dataset = representative_dataset(representative_data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter


def make_converter(model, route="signature", *, signature_key=None,
                   input_name=None, output_name=None, workdir=None):
    """Creates an unconfigured ``tf.lite.TFLiteConverter`` for ``model``.

    With ``route="signature"`` the model is first written into ``workdir`` as a SavedModel with
    one named endpoint (`tflite_export.android.save_serving_model`); ``workdir`` must outlive the
    ``convert()`` call. ``route="keras"`` reads the Keras model directly (the signature input is
    then named after the Keras input layer and the output ``output_0``).

    Args:
        model: a plain Keras model.
        route: ``"signature"`` (default) or ``"keras"``.
        signature_key: signature name (default ``"serving_default"``; signature route only).
        input_name: signature input name (default ``"image"``; signature route only).
        output_name: signature output name (default ``"probabilities"``; signature route only).
        workdir: directory of the SavedModel; required for the signature route.

    Returns:
        A ``tf.lite.TFLiteConverter``.

    Raises:
        ValueError: an unknown ``route``, or the signature route without ``workdir``.

    Example:
        >>> with tempfile.TemporaryDirectory() as tmp:  # doctest: +SKIP
        ...     data = make_converter(model, workdir=tmp).convert()
    """
    import tensorflow as tf

    if route == "keras":
        return tf.lite.TFLiteConverter.from_keras_model(model)
    if route != "signature":
        raise ValueError(
            f"Invalid value for argument `route`. Expected one of {list(ROUTES)}. "
            f"Received: route={route!r}"
        )
    if workdir is None:
        raise ValueError("`workdir` is required for route='signature'.")
    key = signature_key or android.SIGNATURE_KEY
    android.save_serving_model(
        model,
        workdir,
        signature_key=key,
        input_name=input_name or android.INPUT_NAME,
        output_name=output_name or android.OUTPUT_NAME,
    )
    return tf.lite.TFLiteConverter.from_saved_model(str(workdir), signature_keys=[key])


def float_input_twin(model):
    """The same model (its very layers) on a float32 input that takes the raw values.

    A model with an integer input (raw uint8 pixels, scaled inside by ``Rescaling``) converted
    as it is keeps a uint8 input and a CAST op, which TensorFlow Lite Micro lacks for uint8.
    Full-int8 export converts this twin instead: calibrated on the raw values, its int8 input's
    scale and zero point map raw values to the int8 tensor (scale 1 and zero point -128 for
    pixels spanning 0..255), as every int8 model's input does.

    Args:
        model: a functional Keras model with one input.

    Returns:
        A functional ``keras.Model`` sharing ``model``'s layers, whose input is float32.

    Example:
        >>> twin = float_input_twin(uint8_model)  # doctest: +SKIP
        >>> twin.inputs[0].dtype  # doctest: +SKIP
        'float32'
    """
    import keras

    spec = model.inputs[0]
    inputs = keras.Input(tuple(spec.shape[1:]), dtype="float32", name=spec.name)
    return keras.models.clone_model(model, input_tensors=inputs, clone_function=lambda layer: layer)


def convert_model(model, quantization="float32", representative_data=None, *,
                  route="signature", signature_key=None, input_name=None,
                  output_name=None):
    """Converts a plain Keras classifier to a TFLite flatbuffer.

    The model and the calibration data are validated first (`model_io_spec`,
    `check_representative_data`); the SavedModel of the signature route goes to a temporary
    directory that is removed afterwards. `export_tflite` also verifies the result and writes a
    deployable directory: use it unless you only need the bytes.

    Args:
        model: a built single-input, single-output Keras classifier with a fixed input shape.
        quantization: ``"float32"`` (default), ``"float16"``, ``"dynamic"`` or ``"int8"``.
        representative_data: calibration inputs ``(n, *input_shape)`` as the model takes them
            (floats, or raw integers for an integer input); required for ``"int8"``.
        route: ``"signature"`` (default; named signature ``serving_default(image) ->
            probabilities``) or ``"keras"``.
        signature_key: signature name (default ``"serving_default"``).
        input_name: signature input name (default ``"image"``).
        output_name: signature output name (default ``"probabilities"``).

    Returns:
        The ``.tflite`` flatbuffer as ``bytes``.

    Raises:
        ValueError: an invalid quantization, model, calibration data or route.

    Example:
        >>> data = convert_model(model, "int8", representative_data=x_train[:500])  # doctest: +SKIP
        >>> len(data) < 100_000  # doctest: +SKIP
        True
    """
    check_quantization(quantization)
    input_shape, _ = model_io_spec(model)
    rep = check_representative_data(representative_data, quantization, input_shape,
                                    model_input_dtype(model))
    if quantization == "int8" and np.issubdtype(np.dtype(model_input_dtype(model)), np.integer):
        model, rep = float_input_twin(model), rep.astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="tflite_export_sm_") as workdir:
        converter = make_converter(
            model,
            route,
            signature_key=signature_key,
            input_name=input_name,
            output_name=output_name,
            workdir=workdir,
        )
        configure_converter(converter, quantization, rep)
        return bytes(converter.convert())
