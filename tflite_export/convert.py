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
"""

import tempfile

import numpy as np

from tflite_export import android
from tflite_export.checks import (
    check_quantization,
    check_representative_data,
    model_io_spec,
)

ROUTES = ("signature", "keras")


def representative_dataset(x):
    """Return a generator function yielding one-sample float32 batches, the
    form `TFLiteConverter.representative_dataset` expects."""
    x = np.asarray(x, dtype=np.float32)

    def gen():
        for i in range(len(x)):
            yield [x[i : i + 1]]

    return gen


def configure_converter(converter, quantization, representative_data=None):
    """Set the optimization options of `converter` for `quantization`."""
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
    """Create an unconfigured `tf.lite.TFLiteConverter` for `model`.

    For ``route="signature"`` a SavedModel is written into `workdir` (which
    must outlive the `convert()` call)."""
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


def convert_model(model, quantization="float32", representative_data=None, *,
                  route="signature", signature_key=None, input_name=None,
                  output_name=None):
    """Convert a plain Keras classifier to TFLite and return the bytes.

    ```python
    data = convert_model(model, "int8", representative_data=x_train[:500])
    ```
    """
    check_quantization(quantization)
    input_shape, _ = model_io_spec(model)
    rep = check_representative_data(representative_data, quantization, input_shape)
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
