"""Memory that repeated `fit`s keep in one process (TensorFlow keeps each training graph).

Run:  .venv/bin/python benchmarks/fit_memory.py [--fits 6]

TensorFlow 2.21 never frees a graph in which a `tf.custom_gradient` was traced
(tensorflow/tensorflow#97697), and Keras' optimizer step traces one, so every `fit` keeps its
training graph after its model is gone. This fits a fresh tiny supernet (the tests' one: 12x12x1
inputs, 4 gates, 2 exits) ``--fits`` times with the default recipe (`TIPSCallback()`, Adam,
validation data) and prints the process' resident memory after each fit, deleting the model and
collecting garbage in between. It does so in two child processes, one per column: "kept" as
TensorFlow leaves it, "released" with the registered custom gradients dropped after each fit
(`tests.conftest.release_custom_gradients`, what the test suite does after each test). The last
row is the growth per fit from the first fit to the last, in MB.
"""

import argparse
import gc
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resident_mb():
    """This process' resident set size (VmRSS), in MB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("Cannot read the resident memory: /proc/self/status has no VmRSS line (Linux only).")


def supernet_fit():
    """One default-recipe fit of a fresh tiny supernet (the model is gone when it returns)."""
    import tips_keras as tips
    from tests.conftest import make_blobs, tiny_supernet

    x, y = make_blobs(256, seed=0)
    model = tiny_supernet()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, validation_data=(x[:64], y[:64]),
              callbacks=[tips.TIPSCallback()])


def measure(fits, release, fit=supernet_fit):
    """Resident memory in MB after each of ``fits`` calls of ``fit`` (a list)."""
    from tests.conftest import release_custom_gradients

    sizes = []
    for _ in range(fits):
        fit()
        if release:
            release_custom_gradients()
        gc.collect()
        sizes.append(resident_mb())
    return sizes


def table(kept, released):
    """The printed table: one row per fit, then the growth per fit (MB)."""
    rows = ["| fit | kept (MB) | released (MB) |", "|---|---|---|"]
    rows += [f"| {i + 1} | {a:.0f} | {b:.0f} |" for i, (a, b) in enumerate(zip(kept, released))]
    slope = [(s[-1] - s[0]) / (len(s) - 1) if len(s) > 1 else float("nan") for s in (kept, released)]
    rows.append(f"| growth per fit | {slope[0]:+.0f} | {slope[1]:+.0f} |")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fits", type=int, default=6, help="fits per process (default 6)")
    parser.add_argument("--child", choices=("kept", "released"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fits < 1:
        parser.error(f"--fits must be at least 1. Received: --fits={args.fits}")
    if args.child:
        sys.path.insert(0, ROOT)  # tests.conftest, imported here, turns Grappler off as in the tests
        print(json.dumps(measure(args.fits, release=args.child == "released")))
        return
    columns = {}
    for mode in ("kept", "released"):
        print(f"[fit_memory] {args.fits} fits, {mode}...", file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--fits", str(args.fits), "--child", mode],
                             cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True,
                             text=True)
        if out.returncode != 0:
            raise SystemExit(f"[fit_memory] the {mode} process failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
        columns[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    print(table(columns["kept"], columns["released"]))


if __name__ == "__main__":
    main()
