"""The child process of `tflite_export.qat` (tf_keras + tfmot): rebuild the sub-network in tf_keras,
annotate, quantization-aware fine-tune, convert to int8 TFLite. Loaded by file path, so it imports
nothing of tips_keras or tflite_export (Keras 3); not a public API."""

import json
from pathlib import Path

import numpy as np


def _worker(directory):
    """Runs in the child: rebuild in tf_keras, QAT fine-tune, convert. Not a public API."""
    import inspect

    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs as configs)

    directory = Path(directory)
    spec = json.loads((directory / "spec.json").read_text(encoding="utf-8"))
    opts = spec["options"]
    weights = np.load(directory / "weights.npz")
    data = np.load(directory / "data.npz")
    tf_keras.utils.set_random_seed(0)

    def make(layer_spec, index):
        cls = getattr(tf_keras.layers, layer_spec["class_name"])
        allowed = set(inspect.signature(cls.__init__).parameters) | {"name", "trainable"}
        config = {k: v for k, v in layer_spec["config"].items() if k in allowed}
        # Unique names that tf_keras' automatic ones ("conv2d", "conv2d_1", ...) cannot take: the
        # Conv2D tfmot creates when it splits a SeparableConv2D gets an automatic name, which
        # would clash with a layer of the user's model named by Keras' defaults.
        config["name"] = f"tips{index}__{config['name']}"
        return cls(**config)

    consumers = {}
    for ls in spec["layers"]:
        for name in ls["inbound"]:
            consumers[name] = consumers.get(name, 0) + 1
    inputs = tf_keras.Input(tuple(spec["input_shape"]), name=spec["input_name"])
    tensors, kinds, renamed = {spec["input_name"]: inputs}, {}, {}
    for index, ls in enumerate(spec["layers"]):
        layer = make(ls, index)
        renamed[ls["config"]["name"]] = layer.name
        ins = [tensors[n] for n in ls["inbound"]]
        tensors[ls["config"]["name"]] = layer(ins if ls["list_input"] else ins[0])
        layer.set_weights([weights[f"{ls['config']['name']}/{i}"] for i in range(ls["num_weights"])])
        # tfmot folds Conv -> BN only when the convolution feeds nothing else
        kinds[layer.name] = (ls["class_name"], [kinds.get(renamed.get(n), ("Input",))[0]
                                                for n in ls["inbound"] if consumers.get(n) == 1])
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
    (directory / "report.json").write_text(json.dumps(report), encoding="utf-8")
