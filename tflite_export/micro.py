"""TensorFlow Lite Micro (TFLM) artefacts for int8 models.

* `check_micro_ops(ops)`: every op must be a builtin with a TFLM kernel
  (allow-list below); otherwise ValueError naming the op(s).
* `estimate_arena(bytes)`: tensor-arena size estimate (see its docstring).
* `c_source(bytes, ...)`: `model_data.cc` / `model_data.h` text with
  `alignas(16) const unsigned char g_model_data[]`,
  `const unsigned int g_model_data_len` and the arena constants
  `g_model_data_arena_size` / `g_model_data_arena_measured`.

The measured arena (the real TFLM interpreter) lives in `tflite_export.micro_run`.
"""

import hashlib
import keyword
import math
import re
from dataclasses import asdict, dataclass

import numpy as np

from tflite_export.verify import make_interpreter

# Builtin ops with a TFLM kernel, mapped to the MicroMutableOpResolver method
# that registers them. Source: tensorflow/tflite-micro,
# tensorflow/lite/micro/micro_mutable_op_resolver.h at commit
# e1a6329fe954f2916e36f4edfa8edf545143425a (every `AddBuiltin(BuiltinOperator_X` in the Add*
# methods); the same 100 builtins as the kernels of the pinned tflite-micro wheel
# (0.dev20261023182759, the `micro` extra). Custom ops (CIRCULAR_BUFFER, ETHOSU, the signal
# library, TFLite_Detection_PostProcess) are deliberately left out. When tflite-micro is
# installed, `export_tflite` also runs the model in it, which is the final word.
TFLM_BUILTIN_OPS = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin", "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D", "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce", "CAST": "AddCast",
    "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D",
    "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEPTH_TO_SPACE": "AddDepthToSpace", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice", "ELU": "AddElu",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup", "EQUAL": "AddEqual", "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv", "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather", "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual", "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization", "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd", "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr", "LOGISTIC": "AddLogistic", "LOG_SOFTMAX": "AddLogSoftmax",
    "MAXIMUM": "AddMaximum", "MAX_POOL_2D": "AddMaxPool2D", "MEAN": "AddMean",
    "MINIMUM": "AddMinimum", "MIRROR_PAD": "AddMirrorPad", "MUL": "AddMul", "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2",
    "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable",
    "REDUCE_ALL": "AddReduceAll", "REDUCE_MAX": "AddReduceMax", "REDUCE_MIN": "AddReduceMin",
    "RELU": "AddRelu", "RELU6": "AddRelu6", "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "REVERSE_V2": "AddReverseV2",
    "ROUND": "AddRound", "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape",
    "SIN": "AddSin", "SLICE": "AddSlice", "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQRT": "AddSqrt", "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference", "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub", "SUM": "AddSum", "SVDF": "AddSvdf",
    "TANH": "AddTanh", "TRANSPOSE": "AddTranspose", "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "UNPACK": "AddUnpack",
    "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# C and C++ keywords (C17 + C++20), none of which can name the array.
_CPP_KEYWORDS = frozenset("""
    alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t
    char32_t class compl concept const consteval constexpr constinit const_cast continue co_await
    co_return co_yield decltype default delete do double dynamic_cast else enum explicit export
    extern false float for friend goto if inline int long mutable namespace new noexcept not
    not_eq nullptr operator or or_eq private protected public register reinterpret_cast requires
    restrict return short signed sizeof static static_assert static_cast struct switch template
    this thread_local throw true try typedef typeid typename union unsigned using virtual void
    volatile wchar_t while xor xor_eq _Alignas _Alignof _Atomic _Bool _Complex _Generic
    _Imaginary _Noreturn _Static_assert _Thread_local
""".split())


def check_micro_ops(ops):
    """Checks that every op has a TensorFlow Lite Micro kernel.

    Args:
        ops: op names, e.g. ``inspect_model(data)["ops"]`` (repetitions allowed).

    Returns:
        The sorted unique op names.

    Raises:
        ValueError: ops missing from `TFLM_BUILTIN_OPS`; the message names all of them.

    Example:
        >>> check_micro_ops(["CONV_2D", "SOFTMAX", "CONV_2D"])
        ['CONV_2D', 'SOFTMAX']
    """
    unique = sorted(set(ops))
    bad = [op for op in unique if op not in TFLM_BUILTIN_OPS]
    if bad:
        raise ValueError(
            f"The model uses op(s) not supported by TensorFlow Lite Micro: {bad}. "
            "Supported builtins are listed in "
            "tflite_export.micro.TFLM_BUILTIN_OPS. Re-build the sub-network "
            "without the layer(s) producing these ops, or export with "
            "micro=False to skip the TFLM artefacts."
        )
    return unique


def resolver_calls(ops):
    """C++ lines registering ``ops`` with a ``MicroMutableOpResolver`` of the right size.

    Args:
        ops: op names (repetitions allowed).

    Returns:
        A list of strings: the resolver declaration, then ``resolver.AddX();`` per unique op.

    Raises:
        ValueError: an op without a TFLM kernel (see `check_micro_ops`).

    Example:
        >>> resolver_calls(["SOFTMAX", "CONV_2D"])[1:]
        ['resolver.AddConv2D();', 'resolver.AddSoftmax();']
    """
    unique = check_micro_ops(ops)
    lines = [f"tflite::MicroMutableOpResolver<{len(unique)}> resolver;"]
    lines += [f"resolver.{TFLM_BUILTIN_OPS[op]}();" for op in unique]
    return lines


@dataclass
class ArenaEstimate:
    """Tensor-arena size estimate of a TFLM model (`estimate_arena` explains the method).

    Attributes:
        peak_activation_bytes: largest sum of simultaneously live activations (16-byte aligned).
        total_activation_bytes: sum of all activations (the no-reuse upper bound).
        overhead_bytes: approximation of TFLM's persistent allocations.
        margin: the safety margin used (0.25 = +25 %).
        recommended_bytes: ``ceil((peak + overhead) * (1 + margin))`` rounded up to 1 KiB.

    Example:
        >>> arena = estimate_arena(tflite_bytes)  # doctest: +SKIP
        >>> arena.recommended_bytes  # doctest: +SKIP
        40960
    """
    peak_activation_bytes: int
    total_activation_bytes: int
    overhead_bytes: int
    margin: float
    recommended_bytes: int

    def to_dict(self):
        """The estimate as a JSON-able dict.

        Returns:
            ``{field name: value}`` for the five fields.
        """
        return asdict(self)


def _align(n, a=16):
    return (n + a - 1) // a * a


def estimate_arena(model_content, margin=0.25):
    """Estimate the TFLM tensor arena for a batch-1 run of the model.

    Activations (graph inputs and every op output; weights stay in flash) are
    given lifetimes from their producing op to their last consumer (graph
    outputs live to the end). `peak_activation_bytes` is the largest sum of
    simultaneously live activations, each padded to 16 bytes: a lower bound
    on what TFLM's greedy memory planner can achieve.
    `total_activation_bytes` is the no-reuse upper bound. `overhead_bytes`
    approximates TFLM's persistent allocations: 2 KiB fixed + 64 B per tensor
    (TfLiteEvalTensor/TfLiteTensor) + 128 B per op (node data) + 8 B per
    per-channel quantization scale (int32 multiplier + shift per output
    channel). `recommended_bytes = ceil((peak + overhead) * (1 + margin))`
    rounded up to 1 KiB. Confirm on target with RecordingMicroInterpreter
    (`arena_used_bytes()`) and trim.

    Args:
        model_content: the ``.tflite`` flatbuffer (bytes), usually int8.
        margin: safety margin on top of peak + overhead (default 0.25, i.e. +25 %).

    Returns:
        An `ArenaEstimate`.

    Example:
        >>> arena = estimate_arena(open("out/b050/model.tflite", "rb").read())  # doctest: +SKIP
        >>> arena.recommended_bytes % 1024  # doctest: +SKIP
        0
    """
    interp = make_interpreter(model_content, delegates=False)
    interp.allocate_tensors()
    ops = [o for o in interp._get_ops_details() if o["op_name"] != "DELEGATE"]
    details = {t["index"]: t for t in interp.get_tensor_details()}
    graph_in = {d["index"] for d in interp.get_input_details()}
    graph_out = {d["index"] for d in interp.get_output_details()}
    n_ops = len(ops)

    start, end = {}, {}
    for t in graph_in:
        start[t], end[t] = 0, 0
    for i, op in enumerate(ops):
        for t in op["outputs"]:
            if t >= 0:
                start.setdefault(int(t), i)
                end[int(t)] = max(end.get(int(t), i), i)
    for i, op in enumerate(ops):
        for t in op["inputs"]:
            if int(t) in start:
                end[int(t)] = max(end[int(t)], i)
    for t in graph_out:
        if t in start:
            end[t] = max(n_ops - 1, 0)

    def nbytes(t):
        d = details[t]
        return _align(int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize)

    sizes = {t: nbytes(t) for t in start if t in details}
    peak = max(
        (sum(s for t, s in sizes.items() if start[t] <= i <= end[t])
         for i in range(max(n_ops, 1))),
        default=0,
    )
    channels = sum(
        len(d["quantization_parameters"]["scales"])
        for t, d in details.items()
        if t not in sizes and len(d["quantization_parameters"]["scales"]) > 1
    )
    overhead = 2048 + 64 * len(details) + 128 * n_ops + 8 * channels
    recommended = int(math.ceil((peak + overhead) * (1 + margin) / 1024) * 1024)
    return ArenaEstimate(peak, sum(sizes.values()), overhead, margin, recommended)


def check_variable_name(name):
    """Validates the C variable name of the embedded model array.

    Args:
        name: a C identifier (letters, digits and ``_``, not starting with a digit) that is
            neither a C/C++ keyword (``int``, ``double``, ``void``, ``class``, ...) nor a Python
            keyword.

    Returns:
        ``name`` unchanged.

    Raises:
        ValueError: anything else.

    Example:
        >>> check_variable_name("g_model_data")
        'g_model_data'
    """
    if not isinstance(name, str) or not _IDENT.match(name) or (
        name in _CPP_KEYWORDS or keyword.iskeyword(name)
    ):
        raise ValueError(
            "Invalid value for argument `variable_name`. Expected a C identifier "
            f"such as 'g_model_data'. Received: variable_name={name!r}"
        )
    return name


def c_source(model_content, variable_name="g_model_data",
             header_name="model_data.h", ops=None, arena=None, measured=None):
    """C++ source and header embedding a ``.tflite`` as a byte array for TensorFlow Lite Micro.

    The ``.cc`` defines ``alignas(16) const unsigned char <var>[]`` and
    ``const unsigned int <var>_len``; the header declares both behind an include guard and, when
    given, lists the resolver calls for ``ops`` (as comments) and defines
    ``constexpr unsigned int <var>_arena_size`` (bytes) next to
    ``constexpr bool <var>_arena_measured``. With ``measured`` the size is the measured minimum
    plus its margin; with only ``arena`` it is the estimate, and the comment says so.

    Args:
        model_content: the ``.tflite`` flatbuffer (bytes).
        variable_name: C identifier of the array (default ``"g_model_data"``).
        header_name: the header the ``.cc`` includes (default ``"model_data.h"``).
        ops: optional op names for the resolver comment.
        arena: optional `ArenaEstimate` (the fallback arena size, and named in the comment).
        measured: optional `tflite_export.micro_run.MicroArena` (the measured arena size).

    Returns:
        ``(cc_text, h_text)``.

    Raises:
        ValueError: ``variable_name`` is not a valid name (see `check_variable_name`), or an op
            has no TFLM kernel.

    Example:
        >>> cc, h = c_source(b"TFL3", "g_model")
        >>> "const unsigned int g_model_len = 4;" in cc
        True
    """
    var = check_variable_name(variable_name)
    data = bytes(model_content)
    digest = hashlib.sha256(data).hexdigest()
    banner = (
        "// Generated by tflite_export (tips-keras). Do not edit.\n"
        f"// {len(data)} bytes, sha256 {digest}\n"
    )
    rows = []
    for i in range(0, len(data), 12):
        rows.append("  " + ", ".join(f"0x{b:02x}" for b in data[i : i + 12]) + ",")
    cc = (
        banner
        + f'#include "{header_name}"\n\n'
        + f"alignas(16) const unsigned char {var}[] = {{\n"
        + "\n".join(rows)
        + "\n};\n"
        + f"const unsigned int {var}_len = {len(data)};\n"
    )
    guard = f"TFLITE_EXPORT_{var.upper()}_H_"
    h = [banner, f"#ifndef {guard}", f"#define {guard}", ""]
    if ops is not None:
        h.append("// Ops used by this model. Register them with:")
        h += [f"//   {line}" for line in resolver_calls(ops)]
        h.append("")
    h += _arena_lines(var, arena, measured)
    h += [f"extern const unsigned char {var}[];",
          f"extern const unsigned int {var}_len;", "", f"#endif  // {guard}", ""]
    return cc, "\n".join(h)


def _arena_lines(var, arena, measured):
    if measured is not None:
        lines = [
            "// Tensor arena size in bytes, MEASURED in the TensorFlow Lite Micro interpreter",
            f"// (tflite-micro {measured.tflm_version}, reference kernels, 64-bit host): the "
            f"smallest arena",
            f"// that runs the model is {measured.min_bytes} B; +{measured.margin * 100:g}% "
            "margin, rounded up to 16 B.",
        ]
        if arena is not None:
            lines.append(f"// (The static estimate was {arena.recommended_bytes} B.)")
        lines.append("// Optimized kernels (e.g. CMSIS-NN) may need extra scratch: confirm with "
                     "RecordingMicroInterpreter.")
        size, flag = measured.recommended_bytes, "true"
    elif arena is not None:
        lines = [
            "// Tensor arena size in bytes, ESTIMATED, not measured (tflite-micro was not "
            "installed",
            f"// at export time). tflite_export.micro.estimate_arena: peak activations "
            f"{arena.peak_activation_bytes} B",
            f"// + overhead {arena.overhead_bytes} B, +{int(arena.margin * 100)}% margin. "
            "Verify with RecordingMicroInterpreter.",
        ]
        size, flag = arena.recommended_bytes, "false"
    else:
        return []
    return lines + [f"constexpr unsigned int {var}_arena_size = {size};",
                    f"constexpr bool {var}_arena_measured = {flag};", ""]


def read_c_array(cc_text, variable_name="g_model_data"):
    """Parses the bytes and the declared length back out of a generated ``.cc`` file.

    Tests and CI use it to check that a C array still matches the ``.tflite`` it came from.

    Args:
        cc_text: the text of a ``.cc`` written by `c_source`.
        variable_name: the array's C name (default ``"g_model_data"``).

    Returns:
        ``(data, length)``: the array's bytes and the value of ``<variable_name>_len``.

    Raises:
        ValueError: ``cc_text`` has no array or no length of that name.

    Example:
        >>> cc, _ = c_source(b"TFL3", "g_model")
        >>> read_c_array(cc, "g_model")
        (b'TFL3', 4)
    """
    var = re.escape(variable_name)
    m = re.search(var + r"\[\]\s*=\s*\{(.*?)\};", cc_text, re.S)
    n = re.search(var + r"_len\s*=\s*(\d+)\s*;", cc_text)
    if not m or not n:
        raise ValueError(f"No C array named {variable_name!r} found.")
    values = re.findall(r"0x([0-9a-fA-F]{2})", m.group(1))
    return bytes(int(v, 16) for v in values), int(n.group(1))
