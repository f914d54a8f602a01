"""Run an int8 ``.tflite`` in the real TensorFlow Lite Micro (TFLM) interpreter.

The reference interpreter ships on PyPI as ``tflite-micro`` (pre-release wheels; the ``micro``
extra of this project pins one). Every run happens in a child process (``_micro_child.py``):
a too-small arena can kill the process with a segmentation fault instead of raising.

* `measure_arena(bytes)`: the smallest tensor arena that runs the model (16-byte steps), plus
  a stated margin (`ARENA_MARGIN`, 4 %).
* `run_micro(bytes, x_int8, arena)`: raw outputs and per-invoke host times.
* `verify_micro(bytes, x, arena)`: runs ``x`` one image at a time under TFLM and compares the
  outputs with LiteRT's (top-1 agreement, max abs difference, host latency per image).
* `failing_ops(text)`: the op names in TFLM's error messages.

Without ``tflite_micro`` installed, `tflm_version` returns None and the exporter falls back to
`tflite_export.micro.estimate_arena`.
"""

import math
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tflite_export import verify

ARENA_MARGIN = 0.04
ARENA_ALIGN = 16
NOT_INSTALLED = ("TFLite Micro not installed (pip install --pre tflite-micro, or the `micro` "
                 "extra): the arena is an estimate and the model was not run under TFLM")

_CHILD = Path(__file__).with_name("_micro_child.py")
_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
# Messages of a too-small arena (case matters: "TFLM failed to allocate tensors" is generic).
_ARENA_SHORT = re.compile(r"Failed to allocate (tail|temp|head|memory)|Failed to resize buffer|"
                          r"missing: \d+|Too many buffers")
_OP_PATTERNS = (
    re.compile(r"Didn't find op for builtin opcode '(\w+)'"),
    re.compile(r"Failed to get registration from op code (\w+)"),
    re.compile(r"Didn't find custom op for name '([^']+)'"),
    re.compile(r"Node (\w+) \(number \d+f?\) failed to (?:prepare|invoke)"),
)
_START_BYTES = 1 << 20
_MAX_BYTES = 1 << 28


def tflm_version():
    """The installed ``tflite-micro`` version, or None when it cannot be imported.

    Only looks the package up: ``tflite_micro`` itself is imported in child processes.

    Returns:
        A version string such as ``"0.dev20261023182759"``, or None.

    Example:
        >>> tflm_version() is None or tflm_version().startswith("0.")
        True
    """
    import importlib.metadata as md
    import importlib.util

    try:
        if importlib.util.find_spec("tflite_micro") is None:
            return None
    except (ImportError, ValueError):  # e.g. sys.modules["tflite_micro"] = None
        return None
    for dist in ("tflite-micro", "tflite_micro"):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            pass
    return "unknown"


def align(n, a=ARENA_ALIGN):
    """Rounds ``n`` up to a multiple of ``a``.

    Args:
        n: a non-negative integer.
        a: the alignment (default 16 bytes, TFLM's arena alignment).

    Returns:
        The smallest multiple of ``a`` that is ``>= n``.

    Example:
        >>> align(23801), align(23808)
        (23808, 23808)
    """
    return (int(n) + a - 1) // a * a


def failing_ops(text):
    """The op names TFLM's error messages blame, in order of appearance, without repeats.

    Args:
        text: the interpreter's stderr (e.g. ``"Node FULLY_CONNECTED (number 4) failed to
            prepare with status 1"`` or ``"Didn't find op for builtin opcode 'GELU'"``).

    Returns:
        A list of op names (empty when the text names none).

    Example:
        >>> failing_ops("Didn't find op for builtin opcode 'GELU'\\n"
        ...             "Failed to get registration from op code GELU")
        ['GELU']
    """
    found = []
    for line in text.splitlines():
        for pattern in _OP_PATTERNS:
            for name in pattern.findall(line):
                if name not in found:
                    found.append(name)
    return found


@dataclass
class MicroArena:
    """Tensor arena measured in the TFLM interpreter (`measure_arena`).

    Attributes:
        min_bytes: the smallest arena (a multiple of 16 bytes) with which the model runs.
        margin: the margin added on top (0.04 = +4 %).
        recommended_bytes: ``min_bytes * (1 + margin)`` rounded up to 16 bytes: the size written
            to ``model_data.h``.
        probes: child-process runs the measurement took.
        exact: True when ``min_bytes - 16`` was seen to fail (False only when ``max_probes`` cut
            the search short; ``min_bytes`` then still runs).
        tflm_version: the ``tflite-micro`` version that ran them.

    Example:
        >>> arena = measure_arena(tflite_bytes)  # doctest: +SKIP
        >>> arena.min_bytes, arena.recommended_bytes  # doctest: +SKIP
        (23808, 24768)
    """
    min_bytes: int
    margin: float
    recommended_bytes: int
    probes: int
    exact: bool
    tflm_version: str

    def to_dict(self):
        """The measurement as a JSON-able dict.

        Returns:
            ``{field name: value}`` for the six fields.
        """
        return asdict(self)


@dataclass
class _Result:
    returncode: int
    stderr: str
    outputs: object = None
    times_ms: object = None

    @property
    def ok(self):
        return self.returncode == 0

    @property
    def arena_used(self):
        m = _TOTAL.findall(self.stderr)
        return int(m[-1]) if m else None

    @property
    def arena_short(self):
        return not self.ok and bool(_ARENA_SHORT.search(self.stderr))


def _run_child(workdir, arena, x=None, timeout=600):
    """One TFLM run of ``workdir/model.tflite`` in a child process."""
    cmd = [sys.executable, "-P", str(_CHILD), str(workdir / "model.tflite"), str(int(arena))]
    result_path = workdir / "result.npz"
    if x is not None:
        np.save(workdir / "inputs.npy", x)
        cmd += [str(workdir / "inputs.npy"), str(result_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"The TFLite Micro run did not finish within {timeout} s.") from e
    if proc.returncode == 1 and "Traceback" in proc.stderr:  # not the interpreter: the child
        raise RuntimeError("The TFLite Micro child process failed: "
                           f"{proc.stderr.strip().splitlines()[-1]}")
    res = _Result(proc.returncode, proc.stderr)
    if res.ok and x is not None:
        with np.load(result_path) as z:
            res.outputs, res.times_ms = z["outputs"], z["times_ms"]
    return res


def _model_error(res, model_content):
    """The ValueError for a model TFLM cannot run (names the op when it can)."""
    ops = failing_ops(res.stderr)
    if not ops:  # no op named: fall back to the ops the op resolver lacks
        from tflite_export.micro import TFLM_BUILTIN_OPS

        ops = sorted({op for op in verify.list_ops(model_content)
                      if op not in TFLM_BUILTIN_OPS})
    lines = [ln.strip() for ln in res.stderr.splitlines()
             if ln.strip() and not ln.startswith("[RecordingMicroAllocator]")]
    how = (f"killed by signal {-res.returncode}" if res.returncode < 0
           else f"exit code {res.returncode}")
    return ValueError(
        "Invalid value for argument `model`. Expected a model that runs in the TensorFlow Lite "
        f"Micro interpreter. Received: a model whose op(s) {ops or '(none named)'} fail under "
        f"TFLM ({how}): {' | '.join(lines[-4:])}. Re-build the sub-network without the layer "
        "producing them, or export with micro=False."
    )


def _with_model(model_content):
    workdir = tempfile.TemporaryDirectory(prefix="tflite_export_tflm_")
    (Path(workdir.name) / "model.tflite").write_bytes(bytes(model_content))
    return workdir


def measure_arena(model_content, start_bytes=None, margin=ARENA_MARGIN, max_probes=24):
    """Measures the smallest TFLM tensor arena that runs the model, plus a margin.

    One run with a generous arena (``start_bytes``, grown 8x while the arena is short) reports
    the arena use (``print_allocations``). That size must run and 16 bytes less must fail, both
    checked in fresh child processes; usually they do (3 runs in all). The memory planner's
    transient scratch can need more than the reported use: then the size grows in doubling
    steps from 256 bytes until it runs, and a bisection in 16-byte steps finds the smallest
    working size between the last failing and the first working one (at most ``max_probes``
    runs; ``exact`` says whether the bisection finished). The result holds for this host's
    build of TFLM (64-bit pointers, reference kernels); 32-bit targets need a little less,
    optimized kernels (e.g. CMSIS-NN) may need extra scratch memory.

    Args:
        model_content: the ``.tflite`` flatbuffer (bytes), usually int8.
        start_bytes: the first arena to try (default 1 MiB, or more when given).
        margin: fraction added to the minimum, at most 0.05 (default `ARENA_MARGIN`, 0.04).
        max_probes: upper bound on child-process runs (default 24).

    Returns:
        A `MicroArena`.

    Raises:
        ValueError: ``margin`` outside ``[0, 0.05]``; the model does not run under TFLM (the
            message names the op(s)); or it needs more than 256 MiB of arena.
        RuntimeError: tflite-micro is not installed, or a run hangs.

    Example:
        >>> arena = measure_arena(open("out/b050/model.tflite", "rb").read())  # doctest: +SKIP
        >>> arena.recommended_bytes <= arena.min_bytes * 1.05 + 16  # doctest: +SKIP
        True
    """
    if not isinstance(margin, (int, float)) or not 0 <= margin <= 0.05:
        raise ValueError("Invalid value for argument `margin`. Expected a fraction in "
                         f"[0, 0.05]. Received: margin={margin!r}")
    version = tflm_version()
    if version is None:
        raise RuntimeError(NOT_INSTALLED)
    with _with_model(model_content) as tmp:
        workdir = Path(tmp)
        probes = 0

        def probe(size):
            nonlocal probes
            probes += 1
            return _run_child(workdir, size, timeout=120)

        big = align(max(start_bytes or 0, _START_BYTES))
        first = probe(big)
        while first.arena_short and big < _MAX_BYTES:
            big = min(big * 8, _MAX_BYTES)
            first = probe(big)
        if first.arena_short:
            raise ValueError(
                "Invalid value for argument `model`. Expected a model whose TFLite Micro arena "
                f"fits in {_MAX_BYTES:,} bytes. Received: a model that does not run with "
                f"{big:,} bytes.")
        if not first.ok:
            raise _model_error(first, model_content)
        # The model runs with `big`; below it every failure is a short arena. The reported use
        # is usually the minimum, but the memory planner's transient scratch can need more.
        used = align(first.arena_used or big)
        lo, hi = 0, big  # invariant: lo fails (0 always does), hi runs
        if probe(used).ok:
            hi = used
            if probe(used - ARENA_ALIGN).ok:
                hi = used - ARENA_ALIGN
            else:
                lo = used - ARENA_ALIGN
        else:  # gallop up from `used` in doubling steps, then bisect the last step
            lo, step = used, 256
            while lo + step < big and probes < max_probes:
                if probe(lo + step).ok:
                    hi = lo + step
                    break
                lo, step = lo + step, step * 2
        while hi - lo > ARENA_ALIGN and probes < max_probes:
            mid = align((lo + hi) // 2)  # lo < mid < hi: both are multiples of 16
            if probe(mid).ok:
                hi = mid
            else:
                lo = mid
    recommended = align(math.ceil(hi * (1 + margin)))
    return MicroArena(hi, float(margin), recommended, probes, hi - lo <= ARENA_ALIGN, version)


def run_micro(model_content, x, arena_size):
    """Runs inputs through the TFLM interpreter one at a time (batch of one) in a child process.

    Args:
        model_content: the ``.tflite`` flatbuffer (bytes).
        x: inputs ``(n, *input_shape)`` of the input tensor's dtype (int8 for an int8 model;
            quantize floats with `tflite_export.verify.quantize`).
        arena_size: the tensor arena in bytes.

    Returns:
        ``(outputs, times_ms)``: the raw outputs ``(n, *output_shape)`` and the host time of each
        ``invoke()`` in milliseconds.

    Raises:
        ValueError: the model does not run under TFLM (names the op), or the arena is too small.
        RuntimeError: tflite-micro is not installed, or the run hangs.

    Example:
        >>> out, ms = run_micro(tflite_bytes, x_int8, arena_size=24768)  # doctest: +SKIP
    """
    if tflm_version() is None:
        raise RuntimeError(NOT_INSTALLED)
    with _with_model(model_content) as tmp:
        x = np.asarray(x)
        res = _run_child(Path(tmp), arena_size, x=x, timeout=max(600, 2 * len(x)))
    if res.arena_short:
        raise ValueError(
            "Invalid value for argument `arena_size`. Expected at least the arena the model "
            f"needs (see measure_arena). Received: arena_size={arena_size}")
    if not res.ok:
        raise _model_error(res, model_content)
    return res.outputs, res.times_ms


def _agreement(got, ref):
    return {
        "top1_agreement": float(np.mean(got.argmax(axis=1) == ref.argmax(axis=1))),
        "max_abs_diff": float(np.abs(got - ref).max()),
        "exact_match": float(np.mean(np.all(got == ref, axis=1))),
    }


def verify_micro(model_content, x, arena_size):
    """Compares TFLM with LiteRT on the same batch-of-one int8 inputs.

    ``x`` is quantized once with the LiteRT input tensor's scale and zero point
    (`tflite_export.verify.quantize`); all outputs are dequantized with the output tensor's. Two
    LiteRT references: the default one (XNNPACK, what an app runs and what ``accuracy`` in the
    manifest used) and LiteRT's reference kernels (``BUILTIN_REF``), which TFLM's kernels are
    ports of: there the outputs should be identical.

    Args:
        model_content: the ``.tflite`` flatbuffer (bytes).
        x: float inputs ``(n, *input_shape)``, preprocessed as for Keras.
        arena_size: the TFLM tensor arena in bytes (e.g. `MicroArena.min_bytes`).

    Returns:
        A JSON-able dict: ``num_samples``, ``arena_bytes`` (the arena used); against default
        LiteRT ``top1_agreement`` (fraction of equal argmax), ``max_abs_diff`` of the
        dequantized outputs and ``exact_match`` (fraction of samples with identical outputs);
        ``reference``, the same three against LiteRT's reference kernels; and
        ``latency_ms_per_image`` (median host time of one TFLM invoke, reference kernels).

    Raises:
        ValueError: the model does not run under TFLM, or the arena is too small.
        RuntimeError: tflite-micro is not installed.

    Example:
        >>> verify_micro(tflite_bytes, x_test[:1000], 24768)["reference"]  # doctest: +SKIP
        {'top1_agreement': 1.0, 'max_abs_diff': 0.0, 'exact_match': 1.0}
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = verify.make_interpreter(model_content, delegates=False)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    x = np.asarray(x, np.float32)
    raw, times = run_micro(model_content, verify.quantize(x, inp), arena_size)
    got = verify.dequantize(raw, out).reshape(len(x), -1)
    ref = verify.run_tflite(model_content, x).reshape(len(x), -1)  # same dequantization
    kernels = Interpreter(model_content=bytes(model_content),
                          experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    ref_kernels = verify.run_tflite(model_content, x, interpreter=kernels).reshape(len(x), -1)
    return dict(
        num_samples=int(len(x)), arena_bytes=int(arena_size), **_agreement(got, ref),
        reference=_agreement(got, ref_kernels),
        latency_ms_per_image=float(np.median(times)),
    )
