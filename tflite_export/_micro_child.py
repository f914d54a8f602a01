"""Child process of `tflite_export.micro_run`: one TensorFlow Lite Micro run, then exit.

    python -P _micro_child.py MODEL ARENA_BYTES [INPUTS.npy RESULT.npz]

Builds ``tflite_micro``'s interpreter for MODEL with an arena of ARENA_BYTES, feeds every
sample of INPUTS (an array ``(n, *input_shape)`` already of the input tensor's dtype; default:
one all-zero sample) as a batch of one, invokes, and saves the outputs and per-invoke times
(ms) to RESULT as ``outputs`` / ``times_ms``. The arena use is printed to stderr
(``print_allocations``). Exit code 0 on success, 3 when the interpreter raised (its messages are
on stderr); a too-small arena can also kill the process with a signal, which is why this runs
in a child at all.

Run by path (not ``-m``) so that it imports nothing from tflite_export: only numpy and
tflite_micro.
"""

import sys
import time


def main(argv):
    import numpy as np
    from tflite_micro.python.tflite_micro import runtime

    model_path, arena = argv[0], int(argv[1])
    with open(model_path, "rb") as f:
        model = f.read()
    try:
        interp = runtime.Interpreter.from_bytes(model, arena_size=arena)
        details = interp.get_input_details(0)
        if len(argv) > 2:
            x = np.load(argv[2])
        else:
            x = np.zeros((1, *details["shape"][1:]), details["dtype"])
        outputs, times = [], []
        for sample in x:
            interp.set_input(np.ascontiguousarray(sample[None]), 0)
            t0 = time.perf_counter()
            interp.invoke()
            times.append((time.perf_counter() - t0) * 1e3)
            outputs.append(np.array(interp.get_output(0))[0])
        sys.stderr.flush()
        interp.print_allocations()
    except Exception as e:  # the interpreter's own messages are already on stderr
        print(f"\nTFLM_ERROR: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 3
    if len(argv) > 3:
        np.savez(argv[3], outputs=np.stack(outputs), times_ms=np.array(times))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
