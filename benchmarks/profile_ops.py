"""Where the time goes, by TensorFlow op type: the gated training step and the search (issue 14).

Run:  .venv/bin/python benchmarks/profile_ops.py [--what step search] [--top 15]

Records TensorFlow's profiler (``tf.profiler.experimental``) over

* ``step``: one epoch (20 steps of 128 images, after two untimed epochs) of the small
  configuration (~25 % of the FLOPs) of speed_benchmark's supernet, once as the plain Keras model
  (``tips.extract``) and once gated under `TIPSCallback` (one path, its own exit, no teacher; the
  ``single_path`` recipe, then the same with ``masked_updates=True``);
* ``search``: the shared-prefix search of speed_benchmark section 2's first row (demo supernet,
  6 gates, 2,000 validation images, 4 x 128 calibration images, 40 random trials);

and sums the time of every op TensorFlow's executor ran on its compute threads by op type
(``_Mkl...`` are oneDNN's kernels), with the number of ops run per step / configuration. The
profiler adds its own cost: compare the columns of one table, not its totals with timings
elsewhere.
"""

import argparse
import collections
import glob
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

import tips_keras as tips  # noqa: E402
from tips_keras import data  # noqa: E402
from _speed_search import BENCH_WIDTHS, search_rate, supernet  # noqa: E402
from speed_benchmark import closest, gated_model, plain_model  # noqa: E402

# Executor bookkeeping events on the compute threads: not ops.
_NOT_OPS = {"Process", "StartRegion", "StopRegion", "Record", "MemoryAllocation", "MemoryDeallocation",
            "ExecutorDoneCallback", "Alloc"}


def op_times(logdir):
    """``{op type: (milliseconds, count)}`` over TensorFlow's compute threads in a profile."""
    files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    space = xplane_pb2.XSpace()
    with open(files[0], "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.defaultdict(lambda: [0.0, 0])
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith(("tf_Compute", "tf_inter")):
                continue
            for event in line.events:
                kind = names.get(event.metadata_id, "?").rsplit(":", 1)[-1]
                if kind not in _NOT_OPS:
                    totals[kind][0] += event.duration_ps / 1e9
                    totals[kind][1] += 1
    return totals


class _Profiled(keras.callbacks.Callback):
    """Profiles the third epoch of a fit."""

    def __init__(self, logdir):
        super().__init__()
        self.logdir = logdir

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            tf.profiler.experimental.start(self.logdir)

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 2:
            tf.profiler.experimental.stop()


def _table(columns, per, top):
    """Prints ms and ops per ``per`` unit for each column, op types by the largest difference."""
    names = list(columns)
    kinds = sorted(set().union(*columns.values()),
                   key=lambda k: -max(columns[n].get(k, (0.0, 0))[0] for n in names))[:top]
    print(f"{'op type':<32}" + "".join(f"{n + ' ms':>22}{'ops':>7}" for n in names))
    for kind in kinds:
        print(f"{kind:<32}" + "".join(f"{columns[n].get(kind, (0.0, 0))[0] / per:>22.2f}"
                                       f"{columns[n].get(kind, (0.0, 0))[1] / per:>7.1f}" for n in names))
    print(f"{'all ops':<32}" + "".join(f"{sum(v[0] for v in columns[n].values()) / per:>22.2f}"
                                       f"{sum(v[1] for v in columns[n].values()) / per:>7.1f}" for n in names))


def profile_step(splits, top):
    x, y = splits.x_train[:2560], splits.y_train[:2560]
    probe = supernet(BENCH_WIDTHS, 2)
    vector = closest(probe, 0.25)
    columns = {}
    for name in ("plain", "gated", "gated, masked"):
        keras.backend.clear_session()
        if name == "plain":
            model, callbacks = plain_model(BENCH_WIDTHS, 2, vector), []
        else:
            model, callback = gated_model(BENCH_WIDTHS, 2, [vector], masked=name.endswith("masked"))
            callbacks = [callback]
        with tempfile.TemporaryDirectory() as logdir:
            model.fit(x, y, batch_size=128, epochs=3, verbose=0, callbacks=callbacks + [_Profiled(logdir)])
            columns[name] = op_times(logdir)
    steps = -(-len(x) // 128)
    print(f"\n## training step, small configuration {vector.astype(int).tolist()}: ms and ops per step "
          f"(both compute threads), epoch 3 of 3, {steps} steps")
    _table(columns, steps, top)


def profile_search(splits, top, trials=40):
    with tempfile.TemporaryDirectory() as logdir:
        original = tips.search.ExitSearch.run

        def run(self, *args, **kwargs):
            tf.profiler.experimental.start(logdir)
            try:
                return original(self, *args, **kwargs)
            finally:
                tf.profiler.experimental.stop()
        tips.search.ExitSearch.run = run
        try:
            start = time.perf_counter()
            out = search_rate("demo", 2, splits.x_train, splits.x_val, splits.y_val, trials,
                              evaluation="shared_prefix")
            wall = time.perf_counter() - start
        finally:
            tips.search.ExitSearch.run = original
        columns = {"shared prefix": op_times(logdir)}
    print(f"\n## search: ms and ops per configuration (both compute threads), demo supernet, 6 gates, "
          f"2000 validation images, 4 x 128 calibration images, {out['configs']} random trials "
          f"({out['per_s']:.1f} configurations/s under the profiler; {wall:.0f} s with setup)")
    _table(columns, out["configs"], top)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", nargs="+", choices=("step", "search"), default=["step", "search"])
    parser.add_argument("--top", type=int, default=15, help="op types shown")
    args = parser.parse_args()
    print(f"# op profile: {' '.join(['.venv/bin/python', 'benchmarks/profile_ops.py'] + sys.argv[1:])}")
    splits = data.load("fashion_mnist", train_size=8000, val_size=2000)
    if "step" in args.what:
        profile_step(splits, args.top)
    if "search" in args.what:
        profile_search(splits, args.top)


if __name__ == "__main__":
    main()
