"""Int8 purity: float ops and float tensors left in a full-integer ``.tflite``.

An "int8" conversion can still compute in float: the converter keeps an op it cannot quantize
(e.g. the NEG of a LayerNormalization) between a DEQUANTIZE and a QUANTIZE. The model runs, but
slowly on a microcontroller without an FPU, and not at all on int8-only accelerators.

* `int8_purity(bytes)`: every float tensor and every op that reads or writes one.
* `check_int8_purity(purity)`: ValueError naming the float op(s) (``strict_int8=True``).

Only a float graph input consumed by QUANTIZE, or a float graph output produced by DEQUANTIZE
(float ``inference_input_type`` / ``inference_output_type``), is allowed: those are the model's
boundary. `export_tflite` writes int8 inputs and outputs, so there every float tensor counts.
"""

import numpy as np

from tflite_export.verify import make_interpreter

CONVERSION_OPS = ("DEQUANTIZE", "QUANTIZE")


def _is_float(dtype):
    return np.dtype(dtype).kind in "fc"


def int8_purity(model_content):
    """Lists the float ops and float tensors of a ``.tflite`` (its main subgraph).

    Args:
        model_content: the ``.tflite`` flatbuffer (bytes).

    Returns:
        A JSON-able dict: ``pure`` (True when nothing is listed); ``float_ops``, one
        ``{"index", "op", "kind", "float_tensors"}`` per op that reads or writes a float tensor
        (``kind`` is ``"convert"`` for DEQUANTIZE / QUANTIZE, else ``"compute"``;
        ``float_tensors`` names the float tensors it touches); ``float_tensors``, one
        ``{"index", "name", "dtype", "shape"}`` per float tensor; and ``compute_ops``, the
        sorted names of the float compute ops.

    Example:
        >>> purity = int8_purity(tflite_bytes)  # doctest: +SKIP
        >>> purity["compute_ops"], [t["name"] for t in purity["float_tensors"]]  # doctest: +SKIP
        (['NEG'], ['tfl.dequantize', 'model/layer_normalization/Neg'])
    """
    interp = make_interpreter(model_content, delegates=False)
    tensors = {int(t["index"]): t for t in interp.get_tensor_details()}
    ops = [o for o in interp._get_ops_details() if o["op_name"] != "DELEGATE"]
    graph_in = {int(d["index"]) for d in interp.get_input_details()}
    graph_out = {int(d["index"]) for d in interp.get_output_details()}
    boundary = set()
    for op in ops:
        name = str(op["op_name"])
        if name == "QUANTIZE":
            boundary |= {int(t) for t in op["inputs"] if int(t) in graph_in}
        if name == "DEQUANTIZE":
            boundary |= {int(t) for t in op["outputs"] if int(t) in graph_out}
    floats = {i for i, t in tensors.items() if _is_float(t["dtype"]) and i not in boundary}

    float_ops = []
    for op in ops:
        touched = [int(t) for t in list(op["inputs"]) + list(op["outputs"]) if int(t) in floats]
        if touched:
            name = str(op["op_name"])
            float_ops.append({
                "index": int(op["index"]), "op": name,
                "kind": "convert" if name in CONVERSION_OPS else "compute",
                "float_tensors": [str(tensors[t]["name"]) for t in dict.fromkeys(touched)],
            })
    float_tensors = [{
        "index": i, "name": str(tensors[i]["name"]), "dtype": np.dtype(tensors[i]["dtype"]).name,
        "shape": [int(d) for d in tensors[i]["shape"]],
    } for i in sorted(floats)]
    return {
        "pure": not float_ops and not float_tensors,
        "float_ops": float_ops,
        "float_tensors": float_tensors,
        "compute_ops": sorted({o["op"] for o in float_ops if o["kind"] == "compute"}),
    }


def describe(purity):
    """One line naming the float ops of an `int8_purity` dict (``"pure int8"`` when none).

    Args:
        purity: the dict `int8_purity` returns.

    Returns:
        A string such as ``"float ops NEG (#3); conversions DEQUANTIZE (#2), QUANTIZE (#4);
        2 float tensors"``.

    Example:
        >>> describe({"pure": True, "float_ops": [], "float_tensors": []})
        'pure int8'
        >>> describe({"pure": False, "float_tensors": [{}, {}], "float_ops": [
        ...     {"index": 2, "op": "DEQUANTIZE", "kind": "convert"},
        ...     {"index": 3, "op": "NEG", "kind": "compute"}]})
        'float ops NEG (#3); conversions DEQUANTIZE (#2); 2 float tensors'
    """
    if purity["pure"]:
        return "pure int8"
    parts = []
    for kind, title in (("compute", "float ops"), ("convert", "conversions")):
        ops = [f"{o['op']} (#{o['index']})" for o in purity["float_ops"] if o["kind"] == kind]
        if ops:
            parts.append(f"{title} {', '.join(ops)}")
    parts.append(f"{len(purity['float_tensors'])} float tensor"
                 + ("s" if len(purity["float_tensors"]) != 1 else ""))
    return "; ".join(parts)


def check_int8_purity(purity):
    """Refuses an "int8" model that still holds float ops or tensors (``strict_int8=True``).

    Args:
        purity: the dict `int8_purity` returns.

    Returns:
        ``purity`` unchanged when the model is pure int8.

    Raises:
        ValueError: a float op or tensor is left; the message names the op(s) and the float
            tensors, whose names point at the Keras layer that produced them.

    Example:
        >>> check_int8_purity({"pure": True, "float_ops": [], "float_tensors": []})["pure"]
        True
    """
    if purity["pure"]:
        return purity
    names = [t["name"] for t in purity["float_tensors"]][:6]
    raise ValueError(
        "Invalid value for argument `model`. Expected a model that converts to pure int8 "
        f"(strict_int8=True). Received: an int8 model with {describe(purity)} (float tensors "
        f"{names}). Replace the layer that produces them (e.g. LayerNormalization) or export "
        "with strict_int8=False."
    )
