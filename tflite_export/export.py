"""`export_tflite`: convert, verify and write one deployable directory."""

import hashlib
from pathlib import Path

import numpy as np

from tflite_export import android, convert, micro as micro_mod, verify
from tflite_export._io import atomic_directory, atomic_write_bytes, \
    atomic_write_text, check_output_dir
from tflite_export.checks import (
    check_labels,
    check_metadata,
    check_quantization,
    check_representative_data,
    check_validation_data,
    model_io_spec,
)
from tflite_export.report import ExportReport

MICRO_SOURCE = "model_data.cc"
MICRO_HEADER = "model_data.h"


def _versions():
    import importlib.metadata as md

    out = {}
    for dist in ("tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def export_tflite(model, out_dir, quantization="float32", representative_data=None,
                  validation_data=None, labels=None, metadata=None, overwrite=False,
                  *, micro=None, micro_variable="g_model_data", route="signature",
                  batch_size=256, measure_latency=True):
    """Converts a plain Keras classifier to TFLite, verifies it and writes a deployable dir.

    Every argument is validated before any conversion work; the written ``model.tflite`` is read
    back and checked (output size, named signature, accuracy against Keras when
    ``validation_data`` is given). The directory is built atomically, so a failure leaves
    ``out_dir`` as it was.

    Args:
        model: single-input, single-output Keras model (no custom layers).
        out_dir: directory to create. Written atomically: built in a hidden
            sibling temp dir and renamed into place at the end.
        quantization: "float32" (default) | "float16" | "dynamic" | "int8".
        representative_data: float array `(n, *input_shape)`, required for
            "int8" (calibration); typically ~100-500 training samples.
        validation_data: optional `(x, y)`; y as class ids or one-hot. Used to
            compare Keras-float and TFLite accuracy.
        labels: optional class names (one per output) -> labels.txt.
        metadata: optional JSON-able dict; keys "config" and "flops" are
            promoted to top-level manifest fields, the rest kept under
            "metadata".
        overwrite: replace an existing non-empty `out_dir` (default False).
        micro: write the TFLM C array (`model_data.cc/.h`) and enforce the
            TFLM op allow-list. Default: True for "int8", else False.
        micro_variable: C variable name of the array (default g_model_data).
        route: "signature" (named serving signature, default) or "keras".
        batch_size: batch size of the Keras / TFLite comparison (default 256).
        measure_latency: time batch-1 invokes on the host CPU (default True).

    Returns:
        ExportReport. Files: model.tflite, manifest.json, labels.txt (if
        labels), model_data.cc/.h (if micro).

    Raises:
        ValueError: an invalid argument (model, quantization, data, labels, metadata,
            route, ``micro=True`` without int8, a ``micro_variable`` that is not a C
            identifier) or, with ``micro``, an op TensorFlow Lite Micro lacks.
        FileExistsError: ``out_dir`` is a file, or a non-empty directory and
            ``overwrite`` is False.
        RuntimeError: the written model's output size, signature or outputs do not
            match the Keras model.

    Example:
        >>> report = export_tflite(model, "out/b050", quantization="int8",
        ...                        representative_data=x_train[:500],
        ...                        validation_data=(x_test, y_test))  # doctest: +SKIP
        >>> print(report.table())  # doctest: +SKIP
    """
    # --- validate everything before doing any work -------------------------
    check_quantization(quantization)
    input_shape, num_classes = model_io_spec(model)
    rep = check_representative_data(representative_data, quantization, input_shape)
    val = check_validation_data(validation_data, input_shape, num_classes)
    labels = check_labels(labels, num_classes)
    metadata = check_metadata(metadata)
    if micro is None:
        micro = quantization == "int8"
    if micro and quantization != "int8":
        raise ValueError(
            "Invalid value for argument `micro`. Expected micro=True only with "
            f"quantization='int8'. Received: micro=True, quantization={quantization!r}"
        )
    if micro:
        micro_mod.check_variable_name(micro_variable)
    if route not in convert.ROUTES:
        raise ValueError(
            f"Invalid value for argument `route`. Expected one of "
            f"{list(convert.ROUTES)}. Received: route={route!r}"
        )
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite)

    # --- convert (in memory) -------------------------------------------------
    data = convert.convert_model(model, quantization, rep, route=route)

    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        files = {}
        model_path = tmp / android.MODEL_FILE
        atomic_write_bytes(model_path, data)
        # Verify what is on disk, not the in-memory buffer.
        written = model_path.read_bytes()
        info = verify.inspect_model(written)
        if verify.run_tflite(written, _sample(val, rep, input_shape)).shape[1] != num_classes:
            raise RuntimeError("TFLite output size differs from the Keras model.")
        if route == "signature":
            android.verify_signature(written, _sample(val, rep, input_shape))
        accuracy = None
        if val is not None:
            accuracy = verify.evaluate(model, written, val[0], val[1], batch_size)
        latency = verify.measure_latency_ms(written) if measure_latency else None
        files[android.MODEL_FILE] = len(written)

        labels_file = None
        if labels is not None:
            labels_file = android.LABELS_FILE
            atomic_write_text(tmp / labels_file, android.labels_text(labels))
            files[labels_file] = (tmp / labels_file).stat().st_size

        micro_info = None
        if micro:
            ops = micro_mod.check_micro_ops(info["ops"])
            arena = micro_mod.estimate_arena(written)
            cc, h = micro_mod.c_source(written, micro_variable, MICRO_HEADER,
                                       ops=ops, arena=arena)
            atomic_write_text(tmp / MICRO_SOURCE, cc)
            atomic_write_text(tmp / MICRO_HEADER, h)
            files[MICRO_SOURCE] = (tmp / MICRO_SOURCE).stat().st_size
            files[MICRO_HEADER] = (tmp / MICRO_HEADER).stat().st_size
            micro_info = {
                "source": MICRO_SOURCE, "header": MICRO_HEADER,
                "variable": micro_variable, "length": len(written),
                "ops": ops, "resolver": micro_mod.resolver_calls(ops),
                "arena": arena.to_dict(),
            }

        extra = {k: v for k, v in metadata.items() if k not in ("config", "flops")}
        manifest = android.build_manifest(
            quantization=quantization, info=info, params=model.count_params(),
            num_classes=num_classes, labels_file=labels_file,
            flops=metadata.get("flops"), config=metadata.get("config"),
            accuracy=accuracy, micro=micro_info, metadata=extra,
            latency_ms=latency, sha256=hashlib.sha256(written).hexdigest(),
            versions=_versions(),
        )
        android.write_manifest(tmp / android.MANIFEST_FILE, manifest)
        files[android.MANIFEST_FILE] = (tmp / android.MANIFEST_FILE).stat().st_size

    return ExportReport(
        out_dir=str(out_dir), quantization=quantization, size_bytes=len(written),
        params=int(manifest["params"]), input=manifest["input"],
        output=manifest["output"], ops=info["op_types"],
        signature={manifest["signature"]["key"]: {
            "inputs": manifest["signature"]["inputs"],
            "outputs": manifest["signature"]["outputs"]}},
        files=files, flops=manifest["flops"], accuracy=accuracy,
        latency_ms=latency, micro=micro_info, labels_file=labels_file,
        config=manifest["config"],
    )


def _sample(val, rep, input_shape, n=4):
    """A few float inputs for smoke checks (validation > representative > 0)."""
    if val is not None:
        return val[0][:n]
    if rep is not None:
        return rep[:n]
    return np.zeros((1,) + tuple(input_shape), np.float32)
