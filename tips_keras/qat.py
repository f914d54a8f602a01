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
        ValueError: a model that is not plain, or bad data.
        RuntimeError: the child process failed (its error output is included).

    Example:
        >>> sub = tips_keras.extraction.extract(model, config, recalibrate_data=x_train[:1024])  # doctest: +SKIP
        >>> result = quantization_aware_finetune(sub, x_train, y_train, epochs=2,
        ...                                      validation_data=(x_test, y_test))  # doctest: +SKIP
        >>> result.save("b050_qat.tflite"); result.report["qat_int8_accuracy"]  # doctest: +SKIP
    """
    if not is_available():
        raise ImportError("Quantization-aware training needs tf_keras and "
                          f"tensorflow-model-optimization: {PIP_LINE}")
    from tflite_export.checks import check_inputs_array, check_labels_array, model_io_spec

    input_shape, num_classes = model_io_spec(sub_model)
    x = check_inputs_array("x_train", x_train, input_shape)
    y = check_labels_array(y_train, len(x), num_classes)
    rep = check_inputs_array("representative_data", x[:500] if representative_data is None
                             else representative_data, input_shape)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"Invalid value for argument `epochs`. Expected a positive integer. "
                         f"Received: epochs={epochs!r}")
    spec, weights = model_spec(sub_model)
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
        (tmp / "spec.json").write_text(json.dumps(dict(spec, options=options)))
        np.savez(tmp / "weights.npz", **weights)
        np.savez(tmp / "data.npz", **arrays)
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
        try:
            proc = subprocess.run([sys.executable, "-c", _BOOTSTRAP, __file__, str(tmp)],
                                  cwd=tmp, env=env, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"Quantization-aware fine-tuning timed out after {timeout} s.") from None
        if verbose:
            print(proc.stdout, end="")
        if proc.returncode != 0 or not (tmp / "model.tflite").exists():
            raise RuntimeError("Quantization-aware fine-tuning failed in the tf_keras/tfmot "
                               f"subprocess (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        data = (tmp / "model.tflite").read_bytes()
        report = json.loads((tmp / "report.json").read_text())
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


# ------------------------------------------------------------------- child process (tf_keras)
def _worker(directory):
    """Runs in the child: rebuild in tf_keras, QAT fine-tune, convert. Not a public API."""
    import inspect

    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs as configs)

    directory = Path(directory)
    spec = json.loads((directory / "spec.json").read_text())
    opts = spec["options"]
    weights = np.load(directory / "weights.npz")
    data = np.load(directory / "data.npz")
    tf_keras.utils.set_random_seed(0)

    def make(layer_spec):
        cls = getattr(tf_keras.layers, layer_spec["class_name"])
        allowed = set(inspect.signature(cls.__init__).parameters) | {"name", "trainable"}
        config = {k: v for k, v in layer_spec["config"].items() if k in allowed}
        return cls(**config)

    consumers = {}
    for ls in spec["layers"]:
        for name in ls["inbound"]:
            consumers[name] = consumers.get(name, 0) + 1
    inputs = tf_keras.Input(tuple(spec["input_shape"]), name=spec["input_name"])
    tensors, kinds = {spec["input_name"]: inputs}, {}
    for ls in spec["layers"]:
        layer = make(ls)
        ins = [tensors[n] for n in ls["inbound"]]
        tensors[ls["config"]["name"]] = layer(ins if ls["list_input"] else ins[0])
        layer.set_weights([weights[f"{layer.name}/{i}"] for i in range(ls["num_weights"])])
        # tfmot folds Conv -> BN only when the convolution feeds nothing else
        kinds[layer.name] = (ls["class_name"], [kinds.get(n, ("Input",))[0] for n in ls["inbound"]
                                                if consumers.get(n) == 1])
    model = tf_keras.Model(inputs, tensors[spec["output"]])
    diff = float(np.abs(model.predict(data["sample"], verbose=0) - data["reference"]).max())
    if diff > 1e-3:
        raise RuntimeError(f"tf_keras rebuild differs from Keras 3 by {diff}")

    def annotate(layer):
        kind, parents = kinds.get(layer.name, ("Input", []))
        if kind == "BatchNormalization":
            if opts["freeze_batchnorm"]:
                layer.trainable = False
            if not set(parents) & {"Conv2D", "DepthwiseConv2D"}:  # tfmot: BN only after a conv
                return tfmot.quantization.keras.quantize_annotate_layer(
                    layer, configs.Default8BitOutputQuantizeConfig())
        if kind == "Input":
            return layer
        return tfmot.quantization.keras.quantize_annotate_layer(layer)

    annotated = tf_keras.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    with tfmot.quantization.keras.quantize_scope(
            {"Default8BitOutputQuantizeConfig": configs.Default8BitOutputQuantizeConfig}):
        qat = tfmot.quantization.keras.quantize_apply(annotated)
    qat.compile(optimizer=tf_keras.optimizers.Adam(opts["learning_rate"]),
                loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    val = (data["x_val"], data["y_val"]) if "x_val" in data.files else None
    history = qat.fit(data["x_train"], data["y_train"], batch_size=opts["batch_size"],
                      epochs=opts["epochs"], validation_data=val, verbose=opts["verbose"])
    report = {"tf_keras_max_abs_diff": diff,
              "history": {k: [float(v) for v in vs] for k, vs in history.history.items()}}
    if val is not None:
        report["qat_keras_accuracy"] = float(qat.evaluate(*val, verbose=0)[1])

    @tf.function(input_signature=[tf.TensorSpec([None] + spec["input_shape"], tf.float32,
                                                name="image")])
    def serve(image):
        return {"probabilities": qat(image, training=False)}

    saved = directory / "saved_model"
    tf.saved_model.save(qat, str(saved), signatures={"serving_default": serve})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), ["serving_default"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rep = data["rep"]
    converter.representative_dataset = lambda: ([rep[i: i + 1]] for i in range(len(rep)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    (directory / "model.tflite").write_bytes(converter.convert())
    (directory / "report.json").write_text(json.dumps(report))
