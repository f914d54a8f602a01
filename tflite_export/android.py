"""Android-facing artefacts: named signature, labels.txt, manifest.json.

The .tflite exposes one signature ``serving_default`` with input ``image``
and output ``probabilities`` (names are stable across models and
quantizations, so the app can use `Interpreter.runSignature` without
knowing tensor indices). `manifest.json` describes everything the app (or a
firmware build) needs; `load_manifest` reads it back with clear errors.
"""

import json
from pathlib import Path

import numpy as np

from tflite_export._io import atomic_write_text
from tflite_export.verify import make_interpreter, quantize, run_tflite

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"

MANIFEST_FORMAT = "tips-keras-tflite"
MANIFEST_VERSION = 1
MODEL_FILE = "model.tflite"
LABELS_FILE = "labels.txt"
MANIFEST_FILE = "manifest.json"
REQUIRED_KEYS = {
    "format": str, "format_version": int, "model_file": str,
    "quantization": str, "signature": dict, "input": dict, "output": dict,
    "params": int,
}
REQUIRED_TENSOR_KEYS = ("name", "shape", "dtype", "scale", "zero_point")


def save_serving_model(model, directory, signature_key=SIGNATURE_KEY,
                       input_name=INPUT_NAME, output_name=OUTPUT_NAME):
    """Writes ``model`` as a SavedModel whose only endpoint is a named inference signature.

    The endpoint is ``signature_key(input_name) -> {output_name: model(x, training=False)}`` with
    a dynamic batch dimension, written with `keras.export.ExportArchive` (which freezes Keras 3
    weights correctly). Converting it with ``TFLiteConverter.from_saved_model`` gives a
    ``.tflite`` whose signature names are the same for every model, so an Android app can call
    ``Interpreter.runSignature`` without knowing tensor indices. `convert_model` uses it for
    ``route="signature"``.

    Args:
        model: a built Keras model with one input; the signature's input spec is
            ``model.inputs[0]`` (shape without the batch dimension, dtype).
        directory: the SavedModel directory to write.
        signature_key: name of the endpoint (default ``"serving_default"``).
        input_name: name of the signature input (default ``"image"``).
        output_name: key of the signature output (default ``"probabilities"``).

    Returns:
        ``str(directory)``.

    Example:
        >>> save_serving_model(model, "/tmp/serving")  # doctest: +SKIP
        '/tmp/serving'
    """
    import keras
    import tensorflow as tf

    x_spec = model.inputs[0]
    spec = tf.TensorSpec(
        (None,) + tuple(x_spec.shape[1:]), tf.as_dtype(x_spec.dtype), name=input_name
    )

    def serve(x):
        return {output_name: model(x, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(signature_key, serve, input_signature=[spec])
    archive.write_out(str(directory), verbose=False)
    return str(directory)


def verify_signature(model_content, sample_x, signature_key=SIGNATURE_KEY,
                     input_name=INPUT_NAME, output_name=OUTPUT_NAME, atol=1e-6):
    """Checks a converted model's named signature and that it computes what tensor inference does.

    Run it after converting with ``route="signature"``: a missing or renamed signature would
    otherwise only show up when an app calls ``runSignature``.

    Args:
        model_content: the ``.tflite`` flatbuffer (bytes).
        sample_x: a float batch of model inputs (quantized for an integer input).
        signature_key: the expected signature (default ``"serving_default"``).
        input_name: its only input name (default ``"image"``).
        output_name: its only output name (default ``"probabilities"``).
        atol: largest absolute difference allowed between the signature runner's
            (dequantized) output and `run_tflite` on the same inputs (default 1e-6).

    Returns:
        ``{signature_key: {"inputs": [input_name], "outputs": [output_name]}}``.

    Raises:
        RuntimeError: the signature is absent or has other input / output names, or its output
            differs from tensor inference (in shape, or by more than ``atol``).
        ValueError: raw integer inputs out of range for an integer input without a scale.

    Example:
        >>> verify_signature(tflite_bytes, x_test[:4])  # doctest: +SKIP
        {'serving_default': {'inputs': ['image'], 'outputs': ['probabilities']}}
    """
    interp = make_interpreter(model_content)
    sigs = interp.get_signature_list()
    want = {"inputs": [input_name], "outputs": [output_name]}
    got = sigs.get(signature_key)
    if got is None or sorted(got["inputs"]) != want["inputs"] or sorted(
        got["outputs"]
    ) != want["outputs"]:
        raise RuntimeError(
            f"Expected signature {signature_key!r} with {want}, found {sigs}. "
            "Convert with route='signature'."
        )
    runner = interp.get_signature_runner(signature_key)
    in_details = runner.get_input_details()[input_name]
    out_details = runner.get_output_details()[output_name]
    x = np.asarray(sample_x, np.float32)
    y = runner(**{input_name: quantize(x, in_details)})[output_name]
    scale, zero_point = out_details["quantization"]
    y = (y.astype(np.float32) - zero_point) * scale if scale else y.astype(np.float32)
    ref = run_tflite(model_content, x)
    if y.shape != ref.shape or not np.allclose(y, ref, atol=atol):
        raise RuntimeError("Signature runner output differs from tensor inference.")
    return {signature_key: want}


def labels_text(labels):
    """Text of ``labels.txt``: one label per line, in class-id order.

    Args:
        labels: class names (non-empty single-line strings, as `check_labels` ensures).

    Returns:
        The file's text; every label is followed by a newline.

    Example:
        >>> labels_text(["cat", "dog"]).splitlines()
        ['cat', 'dog']
    """
    return "".join(f"{lab}\n" for lab in labels)


def build_manifest(*, quantization, info, params, num_classes, labels_file=None,
                   flops=None, config=None, accuracy=None, micro=None,
                   metadata=None, latency_ms=None, sha256=None, versions=None,
                   signature_key=SIGNATURE_KEY, int8_purity=None):
    """Assembles the ``manifest.json`` dict of one export.

    The manifest gives an app or a firmware build what it needs without opening the model: the
    model file, quantization, signature and tensor names, input / output shape, dtype and
    scale / zero-point, labels file, op list and the measured figures. `export_tflite` builds
    it; `write_manifest` validates and writes it.

    Args:
        quantization: ``"float32"``, ``"float16"``, ``"dynamic"`` or ``"int8"``.
        info: the `tflite_export.inspect_model` dict of the written model (its first input and
            output, ``op_types``, ``size_bytes`` and ``signatures`` are used).
        params: number of parameters of the Keras model.
        num_classes: number of output classes.
        labels_file: name of the labels file, or None when none was written.
        flops: FLOPs (MACs) of the model, or None.
        config: the supernet configuration the model was extracted from, or None.
        accuracy: the `tflite_export.evaluate` dict, or None.
        micro: the TFLM section (C file names, variable, ops, resolver, arena, TFLite Micro
            run), or None.
        metadata: extra JSON-able facts, stored under ``"metadata"`` (default ``{}``).
        latency_ms: host-CPU latency of one batch-1 invoke, or None.
        sha256: hex digest of the model file, or None.
        versions: package versions, stored under ``"versions"`` (default ``{}``).
        signature_key: the signature whose names are recorded; its input / output names
            become ``signature_name`` of ``input`` / ``output`` (None when the model lacks it).
        int8_purity: the `tflite_export.purity.int8_purity` dict of an int8 model, or None.

    Returns:
        A JSON-able dict with ``format``, ``format_version``, ``model_file``, ``quantization``,
        ``signature``, ``input``, ``output``, ``params`` and the fields above.

    Example:
        >>> info = tflite_export.inspect_model(tflite_bytes)  # doctest: +SKIP
        >>> manifest = build_manifest(quantization="int8", info=info, params=12345,
        ...                           num_classes=10)  # doctest: +SKIP
    """
    inp, out = info["inputs"][0], info["outputs"][0]
    sig = info["signatures"].get(signature_key, {"inputs": [], "outputs": []})
    in_name = sig["inputs"][0] if sig["inputs"] else None
    out_name = sig["outputs"][0] if sig["outputs"] else None
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "model_file": MODEL_FILE,
        "model_size_bytes": info["size_bytes"],
        "model_sha256": sha256,
        "quantization": quantization,
        "signature": {
            "key": signature_key, "inputs": sig["inputs"], "outputs": sig["outputs"],
        },
        "input": dict(inp, signature_name=in_name),
        "output": dict(out, signature_name=out_name),
        "num_classes": num_classes,
        "labels_file": labels_file,
        "ops": info["op_types"],
        "params": int(params),
        "flops": flops,
        "config": config,
        "accuracy": accuracy,
        "latency_ms_host_cpu": latency_ms,
        "micro": micro,
        "int8_purity": int8_purity,
        "metadata": metadata or {},
        "versions": versions or {},
    }


def manifest_text(manifest):
    """Serializes a manifest as indented JSON, keys in insertion order, NaN / inf rejected.

    Args:
        manifest: a manifest dict (see `build_manifest`).

    Returns:
        The JSON text, ending with a newline.

    Raises:
        ValueError: the manifest holds a NaN or infinite float.
        TypeError: it holds an object JSON cannot encode.

    Example:
        >>> manifest_text({"format_version": 1}).splitlines()
        ['{', '  "format_version": 1', '}']
    """
    return json.dumps(manifest, indent=2, sort_keys=False, allow_nan=False) + "\n"


def write_manifest(path, manifest):
    """Validates ``manifest`` and writes it atomically to ``path``.

    The text goes to a temporary file in the same directory, is fsync'ed and moved into place
    with ``os.replace``: a crash never leaves a truncated manifest behind.

    Args:
        path: the destination file (usually ``<export dir>/manifest.json``).
        manifest: a manifest dict (see `build_manifest`).

    Raises:
        ValueError: the manifest fails `validate_manifest` or holds NaN / inf.
        TypeError: it holds an object JSON cannot encode.

    Example:
        >>> manifest = load_manifest("out/b050")  # doctest: +SKIP
        >>> manifest["metadata"]["note"] = "field test"  # doctest: +SKIP
        >>> write_manifest("out/b050/manifest.json", manifest)  # doctest: +SKIP
    """
    validate_manifest(manifest, str(path))
    atomic_write_text(path, manifest_text(manifest))


def validate_manifest(manifest, source="manifest"):
    """Checks the required keys and types, the format name and the version of a manifest.

    Args:
        manifest: the decoded manifest.
        source: what error messages name, e.g. the file path (default ``"manifest"``).

    Returns:
        ``manifest`` itself, unchanged.

    Raises:
        ValueError: not a dict; a required key missing or of the wrong type (a bool is not an
            int); a ``format`` other than ``"tips-keras-tflite"``; a ``format_version`` newer
            than this package reads; or ``input`` / ``output`` without ``name``, ``shape``,
            ``dtype``, ``scale`` or ``zero_point``.

    Example:
        >>> validate_manifest(json.load(open("manifest.json")), "manifest.json")  # doctest: +SKIP
    """
    if not isinstance(manifest, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(manifest).__name__}.")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"{source}: missing required key(s) {missing}.")
    for key, typ in REQUIRED_KEYS.items():
        if not isinstance(manifest[key], typ) or isinstance(manifest[key], bool):
            raise ValueError(
                f"{source}: key {key!r} should be {typ.__name__}, got "
                f"{type(manifest[key]).__name__}."
            )
    if manifest["format"] != MANIFEST_FORMAT:
        raise ValueError(
            f"{source}: format {manifest['format']!r} is not {MANIFEST_FORMAT!r}."
        )
    if manifest["format_version"] > MANIFEST_VERSION:
        raise ValueError(
            f"{source}: format_version {manifest['format_version']} is newer than "
            f"supported ({MANIFEST_VERSION}); upgrade tflite_export."
        )
    for side in ("input", "output"):
        missing = [k for k in REQUIRED_TENSOR_KEYS if k not in manifest[side]]
        if missing:
            raise ValueError(f"{source}: {side!r} is missing key(s) {missing}.")
    return manifest


def load_manifest(path):
    """Reads and validates a ``manifest.json``, given the file or the export directory.

    Use it in tools that consume exports (device tests, app build scripts): a damaged or foreign
    file fails with one clear message instead of a ``KeyError`` later.

    Args:
        path: the manifest file, or an export directory containing ``manifest.json``.

    Returns:
        The manifest dict.

    Raises:
        FileNotFoundError: no manifest at ``path``.
        ValueError: truncated or invalid JSON (the message gives file, line and column), or a
            manifest that fails `validate_manifest` (the message names the file).

    Example:
        >>> manifest = load_manifest("out/b050")  # doctest: +SKIP
        >>> manifest["quantization"], manifest["input"]["shape"]  # doctest: +SKIP
        ('int8', [1, 28, 28, 1])
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No manifest found at {str(path)!r}.")
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)  # bytes: UTF-8 with or without a byte-order mark, UTF-16/32
    except UnicodeDecodeError as e:
        raise ValueError(f"Corrupt manifest {str(path)!r}: not UTF-8/16/32 text ({e}).") from e
    except json.JSONDecodeError as e:
        raise ValueError(
            f"Corrupt manifest {str(path)!r}: {e.msg} at line {e.lineno} column "
            f"{e.colno} (file truncated or not valid JSON; re-export the model)."
        ) from e
    return validate_manifest(manifest, str(path))
