"""Quantization-aware fine-tuning (QAT) of an extracted sub-network with tfmot, in a subprocess.

tensorflow-model-optimization 0.8.1 only handles legacy ``tf_keras`` models, and importing it sets
``TF_USE_LEGACY_KERAS=1`` for the whole process. So the work runs in a child Python process and
the caller's Keras 3 stays untouched:

1. the caller writes the plain Keras 3 sub-network as a layer spec (class, config, inbound
   layers; JSON) + weights (``.npz``) and the data (``.npz``) into a temporary directory;
2. the child rebuilds the model in ``tf_keras`` from built-in layer classes, copies the weights
   and checks its outputs against Keras 3; annotates every layer for quantization
   (BatchNormalization layers not preceded by a convolution, which tfmot does not support
   alone, get an output-only 8-bit config, matching TFLite's int8 MUL/ADD); applies
   `quantize_apply`, fine-tunes a few epochs at a low learning rate (BatchNorm statistics frozen
   by default) and converts to full-int8 TFLite with a named signature
   ``serving_default(image) -> probabilities`` (as `tflite_export` does);
3. the caller evaluates the ``.tflite`` in LiteRT (and, for comparison, post-training int8
   quantization of the same sub-network).

Before the child starts, the model is checked against what tfmot's default 8-bit scheme
quantizes (`unsupported_layers`: e.g. ``Rescaling``, ``Identity``, a ``relu6`` activation of a
``Dense`` layer), so such a model fails at once with every offending layer named. The child
renames the layers it rebuilds (``tips<i>__<name>``), so layers tfmot creates with automatic names
(the ``Conv2D`` it splits off a ``SeparableConv2D``) cannot clash with Keras' default names. When
the child fails, its final error line comes first in the ``RuntimeError``.

Install the optional stack without a second TensorFlow wheel:
``pip install --no-deps tf-keras==2.21.0 tensorflow-model-optimization==0.8.1 dm-tree mock``.
"""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_CHILD = str(Path(__file__).with_name("_qat_child.py"))  # loaded by path: no Keras 3 import
PIP_LINE = ("pip install --no-deps tf-keras==2.21.0 tensorflow-model-optimization==0.8.1 "
            "dm-tree mock")
_BOOTSTRAP = (
    "import importlib.util, sys; spec = importlib.util.spec_from_file_location("
    "'_tips_qat_worker', sys.argv[1]); mod = importlib.util.module_from_spec(spec); "
    "spec.loader.exec_module(mod); mod._worker(sys.argv[2])"
)


@dataclasses.dataclass
class QATResult:
    """What `quantization_aware_finetune` produced.

    Attributes:
        tflite: the full-int8 ``.tflite`` flatbuffer (int8 input and output).
        report: JSON-able dict: ``qat_int8_accuracy``, ``ptq_int8_accuracy``, ``float_accuracy``
            (with validation data), ``qat_keras_accuracy`` (fake-quant model in tf_keras),
            ``tf_keras_max_abs_diff`` (rebuild check), ``history``, ``size_bytes``, ``seconds``.

    Example:
        >>> result = quantization_aware_finetune(sub, x_train, y_train)  # doctest: +SKIP
        >>> result.save("b050_qat.tflite"), result.report["size_bytes"]  # doctest: +SKIP
    """

    tflite: bytes
    report: dict

    def save(self, path):
        """Writes the ``.tflite`` bytes to ``path``.

        Args:
            path: the destination file.

        Returns:
            ``path``, as given.

        Example:
            >>> result.save("b050_qat.tflite")  # doctest: +SKIP
            'b050_qat.tflite'
        """
        Path(path).write_bytes(self.tflite)
        return path


def is_available():
    """Whether tf_keras and tensorflow-model-optimization are installed.

    Only looks the packages up, without importing them (importing tfmot would switch this
    process to legacy Keras).

    Returns:
        True when both can be found.

    Example:
        >>> if not is_available():  # doctest: +SKIP
        ...     print(PIP_LINE)
    """
    return all(importlib.util.find_spec(m) for m in ("tf_keras", "tensorflow_model_optimization"))


def model_spec(model):
    """The layer spec (JSON-able) and weights of a plain, flat Keras 3 functional model.

    `quantization_aware_finetune` hands them to its ``tf_keras`` child process, which rebuilds
    the model from them.

    Args:
        model: a functional model with one input, one output and only built-in, unshared Keras
            layers (no nested models).

    Returns:
        ``(spec, weights)``: ``spec`` holds ``input_shape``, ``input_name``, ``output`` and
        ``layers`` (class name, plain-valued config, inbound layer names, whether the layer
        takes a list, number of weights); ``weights`` maps ``"<layer name>/<i>"`` to arrays.

    Raises:
        ValueError: several inputs or outputs, a nested model or a layer that is not built into
            Keras, or a layer called more than once.

    Example:
        >>> sub = tips_keras.extraction.extract(model, "smallest")  # doctest: +SKIP
        >>> spec, weights = model_spec(sub)  # doctest: +SKIP
    """
    import keras

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError("Invalid value for argument `sub_model`. Expected one input and one "
                         f"output. Received: {len(model.inputs)} inputs, {len(model.outputs)} outputs")
    layers, weights = [], {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        cls = type(layer)
        if not cls.__module__.startswith("keras.") or isinstance(layer, keras.Model):
            raise ValueError(
                f"Invalid value for argument `sub_model`: layer {layer.name!r} of type "
                f"{cls.__name__} is not a built-in Keras layer (extract the sub-network with "
                "tips_keras.extraction.extract first; nested models are not supported)."
            )
        if len(layer._inbound_nodes) != 1:
            raise ValueError(f"Layer {layer.name!r} is used {len(layer._inbound_nodes)} times; "
                             "shared layers are not supported.")
        node = layer._inbound_nodes[0]
        config = {k: v for k, v in layer.get_config().items()
                  if isinstance(v, (str, int, float, bool, type(None), list, tuple))}
        for i, w in enumerate(layer.get_weights()):
            weights[f"{layer.name}/{i}"] = w
        layers.append({
            "class_name": cls.__name__, "config": config,
            "inbound": [t._keras_history[0].name for t in node.input_tensors],
            "list_input": isinstance(node.arguments.args[0], (list, tuple)),
            "num_weights": len(layer.get_weights()),
        })
    spec = {"input_shape": list(model.inputs[0].shape[1:]),
            "input_name": model.inputs[0]._keras_history[0].name,
            "output": model.outputs[0]._keras_history[0].name, "layers": layers}
    return spec, weights


# tfmot 0.8.1's default 8-bit scheme (Default8BitQuantizeRegistry and its layout transforms), as
# this module annotates it (BatchNormalization gets an output-only config where tfmot cannot fold
# it into a convolution).
QAT_LAYERS = frozenset({
    "Activation", "ActivityRegularization", "Add", "AveragePooling1D", "AveragePooling2D",
    "BatchNormalization", "Concatenate", "Conv2D", "Conv2DTranspose", "Cropping1D", "Cropping2D",
    "Cropping3D", "Dense", "DepthwiseConv2D", "Dropout", "Flatten", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "GlobalMaxPooling3D", "InputLayer", "LeakyReLU", "MaxPooling2D", "Permute", "ReLU", "Reshape",
    "SeparableConv1D", "SeparableConv2D", "Softmax", "SpatialDropout1D", "SpatialDropout2D",
    "SpatialDropout3D", "UpSampling2D", "ZeroPadding1D", "ZeroPadding2D",
})
# Activation functions tfmot quantizes: as an `Activation` layer, and as a layer's `activation`.
_ACTIVATION_LAYER_FUNCTIONS = {"relu", "swish", "gelu", "relu6", "linear", "softmax", "sigmoid", "tanh"}
_LAYER_ACTIVATIONS = {"softmax", "sigmoid", "tanh", "gelu", "linear", "relu", "swish"}


def unsupported_layers(model):
    """The layers of a plain model that tfmot's default 8-bit QAT cannot quantize.

    `quantization_aware_finetune` refuses such a model before starting its child process, naming
    every offending layer at once (tfmot itself fails on the first one, deep in the child).

    Args:
        model: a plain Keras 3 model (e.g. from `tips_keras.extraction.extract`).

    Returns:
        A list of ``"name (Class)"`` or ``"name (Class, activation='...')"`` strings; empty when
        every layer is supported.

    Example:
        >>> unsupported_layers(sub)  # doctest: +SKIP
        ['rescaling (Rescaling)']
    """
    found = []
    for layer in model.layers:
        kind = type(layer).__name__
        activation = getattr(layer, "activation", None)
        name = getattr(activation, "__name__", None) if activation is not None else None
        allowed = _ACTIVATION_LAYER_FUNCTIONS if kind == "Activation" else _LAYER_ACTIVATIONS
        if kind not in QAT_LAYERS:
            found.append(f"{layer.name} ({kind})")
        elif activation is not None and name not in allowed:
            found.append(f"{layer.name} ({kind}, activation={name or activation!r})")
    return found


def _child_error(stderr):
    """The child's final exception line first (tfmot's message), then the end of its output."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    cause = next((ln for ln in reversed(lines) if not ln.startswith((" ", "\t"))
                  and ("Error" in ln or "Exception" in ln)), lines[-1] if lines else "no output")
    return cause.strip(), "\n".join(lines[-25:])


def quantization_aware_finetune(sub_model, x_train, y_train, epochs=2, *, validation_data=None,
                                representative_data=None, learning_rate=1e-4, batch_size=64,
                                freeze_batchnorm=True, compare_ptq=True, timeout=900, verbose=0):
    """Fine-tunes a plain sub-network with quantization-aware training and converts it to int8.

    Args:
        sub_model: a plain Keras 3 classifier (softmax output), e.g. from
            `tips_keras.extraction.extract`: built-in layers only, one input, one output.
        x_train, y_train: fine-tuning data (float images, integer class ids).
        epochs: fine-tuning epochs (a few are enough).
        validation_data: optional ``(x, y)`` to report accuracies on.
        representative_data: calibration images for the converter (default: the first 500 of
            ``x_train``); also used for the post-training-quantization baseline.
        learning_rate: Adam learning rate of the fine-tuning (keep it low).
        batch_size: fine-tuning batch size.
        freeze_batchnorm: keep BatchNorm statistics fixed during fine-tuning (recommended: they
            were recalibrated for the sub-network).
        compare_ptq: with ``validation_data``, also convert ``sub_model`` with post-training int8
            quantization (`tflite_export.convert_model`) and report its accuracy.
        timeout: seconds before the child process is killed.
        verbose: 0, 1 or 2: ``fit`` verbosity in the child (its output is passed through).

    Returns:
        A `QATResult` (``tflite`` bytes and ``report``).

    Raises:
        ImportError: tf_keras / tensorflow-model-optimization are not installed.
        ValueError: a model that is not plain, a layer or activation tfmot cannot quantize
            (`unsupported_layers`, all named; checked before the child process starts), a
            non-float input, or bad data.
        RuntimeError: the child process failed (its final error line first, then the end of its
            error output).

    Example:
        >>> sub = tips_keras.extraction.extract(model, config, recalibrate_data=x_train[:1024])  # doctest: +SKIP
        >>> result = quantization_aware_finetune(sub, x_train, y_train, epochs=2,
        ...                                      validation_data=(x_test, y_test))  # doctest: +SKIP
        >>> result.save("b050_qat.tflite"); result.report["qat_int8_accuracy"]  # doctest: +SKIP
    """
    if not is_available():
        raise ImportError("Quantization-aware training needs tf_keras and "
                          f"tensorflow-model-optimization: {PIP_LINE}")
    from tflite_export.checks import (check_inputs_array, check_labels_array, model_input_dtype,
                                      model_io_spec)

    input_shape, num_classes = model_io_spec(sub_model)
    # The model first (before any data is looked at or a child process started).
    spec, weights = model_spec(sub_model)
    unsupported = unsupported_layers(sub_model)
    if unsupported:
        raise ValueError(
            "Invalid value for argument `sub_model`. Expected layers that tfmot's default 8-bit "
            f"quantization-aware training supports ({', '.join(sorted(QAT_LAYERS))}; activations "
            f"{sorted(_LAYER_ACTIVATIONS)}). Received: {len(unsupported)} unsupported layer(s): "
            f"{', '.join(unsupported)}. Move preprocessing such as Rescaling out of the model (feed "
            "preprocessed inputs), or export with post-training int8 quantization "
            "(tflite_export), which handles them."
        )
    if not model_input_dtype(sub_model).startswith("float"):
        raise ValueError(
            "Invalid value for argument `sub_model`. Expected a floating-point input (the QAT "
            "child quantizes float inputs to int8). Received: input dtype "
            f"{model_input_dtype(sub_model)}")
    x = check_inputs_array("x_train", x_train, input_shape)
    y = check_labels_array(y_train, len(x), num_classes)
    rep = check_inputs_array("representative_data", x[:500] if representative_data is None
                             else representative_data, input_shape)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"Invalid value for argument `epochs`. Expected a positive integer. "
                         f"Received: epochs={epochs!r}")
    arrays = {"x_train": x, "y_train": y, "rep": rep, "sample": rep[:32],
              "reference": sub_model.predict(rep[:32], verbose=0)}
    if validation_data is not None:
        xv = check_inputs_array("validation_data", validation_data[0], input_shape)
        arrays.update(x_val=xv, y_val=check_labels_array(validation_data[1], len(xv), num_classes))
    options = dict(epochs=epochs, learning_rate=float(learning_rate), batch_size=int(batch_size),
                   freeze_batchnorm=bool(freeze_batchnorm), verbose=int(verbose))
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="tips_qat_") as tmp:
        tmp = Path(tmp)
        (tmp / "spec.json").write_text(json.dumps(dict(spec, options=options)), encoding="utf-8")
        np.savez(tmp / "weights.npz", **weights)
        np.savez(tmp / "data.npz", **arrays)
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
        try:
            proc = subprocess.run([sys.executable, "-c", _BOOTSTRAP, _CHILD, str(tmp)],
                                  cwd=tmp, env=env, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"Quantization-aware fine-tuning timed out after {timeout} s.") from e
        if verbose:
            print(proc.stdout, end="")
        if proc.returncode != 0 or not (tmp / "model.tflite").exists():
            cause, tail = _child_error(proc.stderr)
            raise RuntimeError(f"Quantization-aware fine-tuning failed in the tf_keras/tfmot child "
                               f"process (exit {proc.returncode}): {cause}\n--- end of its "
                               f"error output ---\n{tail}")
        data = (tmp / "model.tflite").read_bytes()
        report = json.loads((tmp / "report.json").read_text(encoding="utf-8"))
    report.update(size_bytes=len(data), seconds=round(time.time() - start, 1))
    if validation_data is not None:
        from tflite_export import convert_model, run_tflite

        xv, yv = arrays["x_val"], arrays["y_val"]
        report["qat_int8_accuracy"] = float(np.mean(run_tflite(data, xv).argmax(1) == yv))
        report["float_accuracy"] = float(np.mean(sub_model.predict(xv, verbose=0).argmax(1) == yv))
        if compare_ptq:
            ptq = convert_model(sub_model, "int8", rep)
            report["ptq_int8_accuracy"] = float(np.mean(run_tflite(ptq, xv).argmax(1) == yv))
            report["ptq_size_bytes"] = len(ptq)
    return QATResult(data, report)
