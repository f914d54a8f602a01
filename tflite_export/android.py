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
    """Write `model` as a SavedModel whose only endpoint is
    ``signature_key(input_name) -> {output_name: model(x)}`` (inference mode,
    dynamic batch)."""
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
    """Check the signature names, then run `sample_x` (float) through the
    signature runner and compare with plain-tensor inference. Returns the
    signature dict; raises RuntimeError when something does not match."""
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
    return "".join(f"{lab}\n" for lab in labels)


def build_manifest(*, quantization, info, params, num_classes, labels_file=None,
                   flops=None, config=None, accuracy=None, micro=None,
                   metadata=None, latency_ms=None, sha256=None, versions=None,
                   signature_key=SIGNATURE_KEY):
    """Assemble the manifest dict (see README for the schema)."""
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
        "metadata": metadata or {},
        "versions": versions or {},
    }


def manifest_text(manifest):
    return json.dumps(manifest, indent=2, sort_keys=False, allow_nan=False) + "\n"


def write_manifest(path, manifest):
    """Validate and write `manifest` atomically (temp file + os.replace)."""
    validate_manifest(manifest, str(path))
    atomic_write_text(path, manifest_text(manifest))


def validate_manifest(manifest, source="manifest"):
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
    """Read and validate a manifest.json (or the export dir containing one).

    Raises FileNotFoundError if absent and ValueError (with file, line and
    column) for truncated/corrupt JSON or missing keys."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No manifest found at {str(path)!r}.")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"Corrupt manifest {str(path)!r}: {e.msg} at line {e.lineno} column "
            f"{e.colno} (file truncated or not valid JSON; re-export the model)."
        ) from None
    return validate_manifest(manifest, str(path))
