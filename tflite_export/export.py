"""`export_tflite`: convert, verify and write one deployable directory."""

import hashlib
from pathlib import Path

import numpy as np

from tflite_export import android, convert, micro_run, verify
from tflite_export import micro as micro_mod
from tflite_export import purity as purity_mod
from tflite_export._io import atomic_directory, atomic_write_bytes, \
    atomic_write_text, check_output_dir
from tflite_export.checks import (
    check_labels,
    check_metadata,
    check_quantization,
    check_representative_data,
    check_validation_data,
    model_input_dtype,
    model_io_spec,
)
from tflite_export.report import ExportReport

MICRO_SOURCE = "model_data.cc"
MICRO_HEADER = "model_data.h"


def _versions():
    import importlib.metadata as md

    out = {}
    for dist in ("tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert", "tflite-micro"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def export_tflite(model, out_dir, quantization="float32", representative_data=None,
                  validation_data=None, labels=None, metadata=None, overwrite=False,
                  *, micro=None, micro_variable="g_model_data", route="signature",
                  batch_size=256, measure_latency=True, strict_int8=False, micro_samples=1000):
    """Converts a plain Keras classifier to TFLite, verifies it and writes a deployable dir.

    Every argument is validated before any conversion work; the written ``model.tflite`` is read
    back and checked (output size, named signature, accuracy against Keras when
    ``validation_data`` is given). The directory is built atomically, so a failure leaves
    ``out_dir`` as it was.

    An int8 model is checked for float ops and tensors (``int8_purity`` in the manifest). With
    ``micro`` and tflite-micro installed (the ``micro`` extra), it also runs in the TensorFlow
    Lite Micro interpreter (in child processes): the smallest working tensor arena is measured
    and written, +4 %, to ``model_data.h`` and the manifest, and the first ``micro_samples``
    validation images are compared with LiteRT. Without tflite-micro the arena is the static
    estimate, labelled as such.

    Args:
        model: single-input, single-output Keras model (no custom layers).
        out_dir: directory to create. Written atomically: built in a hidden
            sibling temp dir and renamed into place at the end.
        quantization: "float32" (default) | "float16" | "dynamic" | "int8".
        representative_data: array `(n, *input_shape)` of model inputs, required
            for "int8" (calibration); typically ~100-500 training samples. Floats
            (preprocessed) for a float input; raw integers for a model with an
            integer input (e.g. uint8 pixels and a Rescaling layer), whose
            TFLite input then keeps that type in every mode.
        validation_data: optional `(x, y)`; x as for representative_data, y as
            class ids or one-hot. Used to compare Keras-float and TFLite accuracy.
        labels: optional class names (one per output) -> labels.txt.
        metadata: optional JSON-able dict; keys "config" and "flops" are
            promoted to top-level manifest fields, the rest kept under
            "metadata".
        overwrite: replace an existing non-empty `out_dir` (default False).
        micro: write the TFLM C array (`model_data.cc/.h`), enforce the
            TFLM op allow-list and run the model under TFLM when it is
            installed. Default: True for "int8", else False.
        micro_variable: C variable name of the array (default g_model_data).
        route: "signature" (named serving signature, default) or "keras".
        batch_size: batch size of the Keras / TFLite comparison (default 256).
        measure_latency: time batch-1 invokes on the host CPU (default True).
        strict_int8: refuse an int8 model that still holds float ops or
            tensors (default False: they are only listed). Only with "int8".
        micro_samples: at most this many validation images run under TFLM
            (default 1000; TFLM's reference kernels are slow). Without
            validation data, a few representative samples run.

    Returns:
        ExportReport. Files: model.tflite, manifest.json, labels.txt (if
        labels), model_data.cc/.h (if micro).

    Raises:
        ValueError: an invalid argument (model, quantization, data, labels, metadata,
            route, ``micro=True`` or ``strict_int8=True`` without int8, a
            ``micro_variable`` that is not a C identifier, ``micro_samples`` < 1); with
            ``strict_int8``, a float op left in the int8 model (named); with ``micro``, an
            op TensorFlow Lite Micro lacks or a model that fails in its interpreter (the
            message names the op).
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
    dtype = model_input_dtype(model)
    rep = check_representative_data(representative_data, quantization, input_shape, dtype)
    val = check_validation_data(validation_data, input_shape, num_classes, dtype)
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
    if not isinstance(strict_int8, bool) or (strict_int8 and quantization != "int8"):
        raise ValueError(
            "Invalid value for argument `strict_int8`. Expected a bool, True only with "
            f"quantization='int8'. Received: strict_int8={strict_int8!r}, "
            f"quantization={quantization!r}")
    if isinstance(micro_samples, bool) or not isinstance(micro_samples, int) or micro_samples < 1:
        raise ValueError("Invalid value for argument `micro_samples`. Expected an int >= 1. "
                         f"Received: micro_samples={micro_samples!r}")
    if route not in convert.ROUTES:
        raise ValueError(
            f"Invalid value for argument `route`. Expected one of "
            f"{list(convert.ROUTES)}. Received: route={route!r}"
        )
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite)

    # --- convert (in memory) -------------------------------------------------
    data = convert.convert_model(model, quantization, rep, route=route)
    purity = None
    if quantization == "int8":  # float ops left in an int8 model: listed, or refused
        purity = purity_mod.int8_purity(data)
        if strict_int8:
            purity_mod.check_int8_purity(purity)

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
            micro_info = _micro_artefacts(tmp, written, info["ops"], micro_variable,
                                          _sample(val, rep, input_shape, micro_samples))
            files[MICRO_SOURCE] = (tmp / MICRO_SOURCE).stat().st_size
            files[MICRO_HEADER] = (tmp / MICRO_HEADER).stat().st_size

        extra = {k: v for k, v in metadata.items() if k not in ("config", "flops")}
        manifest = android.build_manifest(
            quantization=quantization, info=info, params=model.count_params(),
            num_classes=num_classes, labels_file=labels_file,
            flops=metadata.get("flops"), config=metadata.get("config"),
            accuracy=accuracy, micro=micro_info, metadata=extra,
            latency_ms=latency, sha256=hashlib.sha256(written).hexdigest(),
            versions=_versions(), int8_purity=purity,
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
        config=manifest["config"], int8_purity=purity,
    )


def _micro_artefacts(tmp, written, ops, variable, x):
    """Op check, arena (measured under TFLM when installed) and C files; the manifest section."""
    ops = micro_mod.check_micro_ops(ops)
    estimate = micro_mod.estimate_arena(written)
    measured = None
    tflm = {"version": None, "note": micro_run.NOT_INSTALLED}
    if micro_run.tflm_version() is not None:
        measured = micro_run.measure_arena(written, start_bytes=4 * estimate.recommended_bytes)
        # Runs at the measured minimum: every image passing proves the minimum is enough.
        tflm = dict(micro_run.verify_micro(written, x, measured.min_bytes),
                    version=measured.tflm_version)
    cc, h = micro_mod.c_source(written, variable, MICRO_HEADER, ops=ops, arena=estimate,
                               measured=measured)
    atomic_write_text(tmp / MICRO_SOURCE, cc)
    atomic_write_text(tmp / MICRO_HEADER, h)
    return {
        "source": MICRO_SOURCE, "header": MICRO_HEADER,
        "variable": variable, "length": len(written),
        "ops": ops, "resolver": micro_mod.resolver_calls(ops),
        "arena": {
            "recommended_bytes": (measured or estimate).recommended_bytes,
            "source": "measured" if measured else "estimate",
            "measured": measured.to_dict() if measured else None,
            "estimate": estimate.to_dict(),
        },
        "tflm": tflm,
    }


def _sample(val, rep, input_shape, n=4):
    """Up to ``n`` float inputs for checks (validation > representative[:4] > zeros)."""
    if val is not None:
        return val[0][:n]
    if rep is not None:
        return rep[:min(n, 4)]
    return np.zeros((1,) + tuple(input_shape), np.float32)
