"""Speed of gated training and of the search (issue 14): ratios from one run, CPU and wall time.

Run:  .venv/bin/python benchmarks/speed_benchmark.py [--quick] [--sections 1 2 3] [--threads N]
      [--masked-updates]

1. Training step. For the largest, a middle (~50 % FLOPs) and a small (~25 % FLOPs)
   configuration of the benchmark supernet (`anytime_resnet(widths=BENCH_WIDTHS)`, the demo's until stop 26): one epoch of
   ``fit`` of the configuration extracted as a plain Keras model (``tips.extract``) against the
   supernet holding that configuration under `TIPSCallback` (one path per step, its own exit, no
   teacher: the gating machinery alone; ``--masked-updates``: with the default recipe's masked
   updates, which on this small supernet cost more than the skipped weights' Adam steps they
   save: their graph conditionals and gradient checks), same data and batch size. Then a k-path step (the four
   configurations largest, middle, small, smallest in one step) against the sum of their plain
   steps, the anytime recipe's step (every reached exit, EMA teacher) on the same four paths
   ("recipe 4 paths") and the default menu recipe's step on them ("default 4 paths": the largest
   at its own exit, the other paths' earlier exits at 0.3, EMA teacher). Variants interleaved; per-epoch wall and CPU time (``time.process_time``), median of the
   runs (epoch 1, with tracing, excluded), and the range of the CPU ratio over the runs (each
   run's gated epoch against the same run's plain one). Then the per-configuration rows and the
   4-path step again in a subprocess with TensorFlow on one thread (``--threads 1``): CPU time
   is then the work alone, without what TensorFlow's two thread pools spend running the gated
   graph's independent small ops (the conditionals' predicates and zero tensors, the masked
   updates) side by side, which shows up as CPU time but not as wall time.
2. Search. Configurations per second of `ExitSearch` (random oracle, so every trial is a new
   configuration; one row with the TIPS oracle, one over all 84 configurations) with
   per-configuration BatchNorm recalibration (the defaults, 4 x 128 = 512 training images; rows
   with 8 x 128 and with one pass of 512) and 2,000 validation images on the README
   demo's supernet (and one row on the benchmark supernet), for both evaluations, one after the
   other on the same sizes: ``compiled`` (`ConfigEvaluator`) and ``shared prefix``
   (`SharedPrefixEvaluator`, ExitSearch's default); how it grows with the number of gates (6, 12,
   24: 2, 4, 8 blocks per stage) and with the validation size (500, 1,000, 2,000); where the time
   goes (`evaluate`; for the compiled path each of its parts alone: calibration passes,
   evaluation; for the shared prefix the feature maps computed and reused; the rest: keras-tuner
   and FLOPs); the floor of the compiled path: the plain Keras
   model of the smallest and the largest configuration classifying the same validation images;
   the shared prefix with bfloat16 convolutions (``compute_dtype="bfloat16"``, `tips_keras.search.precision`)
   beside float32, and how far its accuracies move on a trained demo supernet (every configuration,
   both dtypes: largest accuracy change, rank correlation, best configuration per budget);
   and the fused call (`Recalibrator.fused`: save, calibration passes, evaluation, restore in one
   compiled call): its trace time, its steady time per configuration against the separate compiled
   calls (interleaved), and the number of evaluations after which it pays for its trace (what
   `tips_keras.training.evaluation.FUSE_AFTER` is set from).
3. Search precision, paired: the shared-prefix search of section 2's first row (demo supernet, 6
   gates, 2,000 validation images, 4 x 128 calibration images, 40 random trials) in float32 and
   with bfloat16 convolutions, alternated over several rounds on the same machine (median), and
   one 3x3 convolution in each dtype at the demo supernet's three feature-map sizes.
"""

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tips_keras as tips  # noqa: E402
from tips_keras import data  # noqa: E402
from tips_keras.training import sampling  # noqa: E402
from _speed_search import BENCH_WIDTHS, precision_rounds, search_table, supernet  # noqa: E402



class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.rows = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append((time.perf_counter() - self._start[0], time.process_time() - self._start[1]))


class ListSampler(sampling.Sampler):
    """The same paths every step."""

    def __init__(self, space, vectors):
        super().__init__(space, paths_per_step=len(vectors))
        self.vectors = np.asarray(vectors, np.float32)

    def sample(self, rng):
        return self.vectors.copy()






def closest(model, fraction):
    vectors = model.config_space.all_vectors()
    flops = np.array([m for m, _ in tips.analytic_flops.cost_vectors(model, vectors)], float)
    full = float(tips.flops(model, "largest"))
    keys = [(abs(f / full - fraction), -v[:-1].sum(), -v[-1]) for v, f in zip(vectors, flops)]
    return vectors[min(range(len(vectors)), key=keys.__getitem__)]


def fit_epochs(model, x, y, epochs, callbacks=()):
    timer = EpochTimer()
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=[timer, *callbacks])
    rows = timer.rows[1:]  # epoch 1 traces
    return statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)


def plain_model(widths, blocks, vector):
    """The configuration ``vector`` extracted as a plain Keras model, compiled."""
    model = tips.extract(supernet(widths, blocks), tips.Configuration.from_vector(vector), recalibrate_data=None)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def gated_model(widths, blocks, vectors, recipe="single_path", masked=False):
    """The compiled supernet and the `TIPSCallback` that trains ``vectors`` in every step."""
    model = supernet(widths, blocks)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    # single_path: one path, its own exit, no teacher; its Adam steps every weight (the skipped
    # blocks' by their momentum). masked: only the path's weights, as the default recipe does
    # (one graph conditional per layer; measured dearer at this size, see the module docstring).
    options = dict(recipe="single_path", distillation=0.0, masked_updates=masked) if recipe == "single_path" \
        else dict(recipe=recipe)
    callback = tips.TIPSCallback(sampler=lambda s: ListSampler(s, vectors), report_configs=(),
                                 recalibration_data=None, **options)
    return model, callback


def plain_epoch(widths, blocks, vector, x, y, epochs):
    return fit_epochs(plain_model(widths, blocks, vector), x, y, epochs)


def gated_epoch(widths, blocks, vectors, x, y, epochs, recipe="single_path", masked=False):
    model, callback = gated_model(widths, blocks, vectors, recipe, masked)
    return fit_epochs(model, x, y, epochs, [callback])


def step_table(x, y, runs, epochs, widths=BENCH_WIDTHS, blocks=2, recipes=True, masked=False):
    probe = supernet(widths, blocks)
    space = probe.config_space
    configs = {"largest": space.largest().to_vector(), "middle": closest(probe, 0.5),
               "small": closest(probe, 0.25), "smallest": space.smallest().to_vector()}
    full = tips.flops(probe, "largest")
    steps = -(-len(x) // 128)
    four = [configs[n] for n in ("largest", "middle", "small", "smallest")]
    variants = {f"plain {n}": (plain_epoch, (configs[n],)) for n in configs}
    gated = functools.partial(gated_epoch, masked=masked)
    variants.update({f"gated {n}": (gated, ([configs[n]],)) for n in ("largest", "middle", "small")})
    variants["gated 4 paths"] = (gated, (four,))
    if recipes:
        variants["recipe 4 paths"] = (functools.partial(gated_epoch, recipe="anytime"), (four,))
        variants["default 4 paths"] = (functools.partial(gated_epoch, recipe="menu"), (four,))
    times = {name: [] for name in variants}
    for _ in range(runs):  # interleaved
        for name, (fn, args) in variants.items():
            keras.backend.clear_session()
            times[name].append(fn(widths, blocks, *args, x, y, epochs))

    def med(name, i):
        return statistics.median(t[i] for t in times[name])

    def paired(name, plain_names):
        """cpu ratio of each run (gated / the same run's plain steps), as 'min-max'."""
        ratios = [times[name][r][1] / sum(times[p][r][1] for p in plain_names) for r in range(runs)]
        return f"{min(ratios):.2f}-{max(ratios):.2f}"

    threads = tf.config.threading.get_inter_op_parallelism_threads(), tf.config.threading.get_intra_op_parallelism_threads()
    print(f"\n## 1. training step: supernet (gated) vs the configuration as a plain Keras model "
          f"({len(x)} images, batch 128, {steps} steps/epoch, median of {runs} interleaved runs, "
          f"epochs 2..{epochs}; TensorFlow threads inter-op / intra-op: "
          f"{' / '.join(str(t) if t else 'default' for t in threads)})")
    print(f"{'configuration':<10} {'FLOPs':>6} {'plain ms/step':>14} {'gated ms/step':>14} "
          f"{'wall ratio':>10} {'cpu ratio':>9} {'cpu ratio per run':>18}")
    for n in ("largest", "middle", "small"):
        f = tips.flops(probe, tips.Configuration.from_vector(configs[n])) / full
        print(f"{n:<10} {f:>6.2f} {med('plain ' + n, 0) / steps * 1e3:>14.1f} "
              f"{med('gated ' + n, 0) / steps * 1e3:>14.1f} {med('gated ' + n, 0) / med('plain ' + n, 0):>10.2f} "
              f"{med('gated ' + n, 1) / med('plain ' + n, 1):>9.2f} {paired('gated ' + n, ['plain ' + n]):>18}")
    plains = [f"plain {n}" for n in ("largest", "middle", "small", "smallest")]
    plain_sum = [sum(med(p, i) for p in plains) for i in (0, 1)]
    for name in ("gated 4 paths", "recipe 4 paths", "default 4 paths")[: 3 if recipes else 1]:
        print(f"{name:<15} {med(name, 0) / steps * 1e3:>8.1f} ms/step; / sum of the 4 plain steps: "
              f"wall {med(name, 0) / plain_sum[0]:.2f}, cpu {med(name, 1) / plain_sum[1]:.2f} "
              f"(per run {paired(name, plains)})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run: a smoke test")
    parser.add_argument("--sections", nargs="+", type=int, choices=(1, 2, 3), default=[1, 2, 3])
    parser.add_argument("--masked-updates", action="store_true",
                        help="section 1: the gated one-path steps with masked updates (as the default recipe)")
    parser.add_argument("--threads", type=int, default=None,
                        help="TensorFlow inter-op and intra-op threads (default: TensorFlow's); section 1 "
                             "then measures the per-configuration rows and the 4-path step only")
    args = parser.parse_args()
    if args.threads is not None:  # before TensorFlow runs anything
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    print(f"# speed benchmark: {' '.join(['.venv/bin/python', 'benchmarks/speed_benchmark.py'] + sys.argv[1:])}")
    print(f"# {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    n, runs, epochs, trials = (512, 1, 2, 4) if args.quick else (2560, 5, 4, 40)
    splits = data.load("fashion_mnist", train_size=max(n, 1024) if args.quick else 8000, val_size=2000)
    if 1 in args.sections:
        step_table(splits.x_train[:n], splits.y_train[:n], runs, epochs, recipes=args.threads is None,
                   masked=args.masked_updates)
        if args.threads is None:  # the same rows with TensorFlow on one thread: the work alone
            sys.stdout.flush()
            command = [sys.executable, __file__, "--sections", "1", "--threads", "1"] + ["--quick"] * args.quick \
                + ["--masked-updates"] * args.masked_updates
            subprocess.run(command, check=True)
    if 2 in args.sections:
        search_table(splits, trials, args.quick)
    if 3 in args.sections:
        precision_rounds(splits, 1 if args.quick else 5, trials)


if __name__ == "__main__":
    main()
