"""Speed of gated training and of the search (issue 14): ratios from one run, CPU and wall time.

Run:  .venv/bin/python benchmarks/speed_benchmark.py [--quick] [--sections 1 2]

1. Training step. For the largest, a middle (~50 % FLOPs) and a small (~25 % FLOPs)
   configuration of the benchmark supernet (`anytime_resnet(widths=BENCH_WIDTHS)`, the demo's until stop 26): one epoch of
   ``fit`` of the configuration extracted as a plain Keras model (``tips.extract``) against the
   supernet holding that configuration under `TIPSCallback` (one path per step, its own exit, no
   teacher: the gating machinery alone), same data and batch size. Then a k-path step (the four
   configurations largest, middle, small, smallest in one step) against the sum of their plain
   steps, the anytime recipe's step (every reached exit, EMA teacher) on the same four paths
   ("recipe 4 paths") and the default menu recipe's step on them ("default 4 paths": the largest
   at its own exit, the other paths' earlier exits at 0.3, EMA teacher). Variants interleaved; per-epoch wall and CPU time (``time.process_time``), median of the
   runs (epoch 1, with tracing, excluded).
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
   and the fused call (`Recalibrator.fused`: save, calibration passes, evaluation, restore in one
   compiled call): its trace time, its steady time per configuration against the separate compiled
   calls (interleaved), and the number of evaluations after which it pays for its trace (what
   `tips_keras.training.evaluation.FUSE_AFTER` is set from).
"""

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tips_keras as tips  # noqa: E402
from tips_keras import data  # noqa: E402
from tips_keras.demo import DEMO_STEM_STRIDE, DEMO_WIDTHS  # noqa: E402
from tips_keras.training import sampling  # noqa: E402

# The supernet the recorded figures were measured on: the demo's until stop 26 (the demo now uses
# widths (16, 32, 64) with a stride-2 stem); kept so that the figures stay comparable.
BENCH_WIDTHS = (8, 16, 32)


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


# Section 2's supernets: the README demo's (the issue's "demo supernet") and the benchmark one.
NETS = {"demo": (DEMO_WIDTHS, DEMO_STEM_STRIDE), "bench": (BENCH_WIDTHS, 1)}


def supernet(widths, blocks, stem_stride=1):
    keras.utils.set_random_seed(0)
    return tips.zoo.anytime_resnet((28, 28, 1), 10, widths=widths, blocks_per_stage=blocks,
                                   stem_stride=stem_stride)


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


def plain_epoch(widths, blocks, vector, x, y, epochs):
    model = tips.extract(supernet(widths, blocks), tips.Configuration.from_vector(vector), recalibrate_data=None)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return fit_epochs(model, x, y, epochs)


def gated_epoch(widths, blocks, vectors, x, y, epochs, recipe="single_path"):
    model = supernet(widths, blocks)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    options = dict(recipe="single_path", distillation=0.0) if recipe == "single_path" else dict(recipe=recipe)
    callback = tips.TIPSCallback(sampler=lambda s: ListSampler(s, vectors), report_configs=(),
                                 recalibration_data=None, **options)
    return fit_epochs(model, x, y, epochs, [callback])


def step_table(x, y, runs, epochs, widths=BENCH_WIDTHS, blocks=2):
    probe = supernet(widths, blocks)
    space = probe.config_space
    configs = {"largest": space.largest().to_vector(), "middle": closest(probe, 0.5),
               "small": closest(probe, 0.25), "smallest": space.smallest().to_vector()}
    full = tips.flops(probe, "largest")
    steps = -(-len(x) // 128)
    four = [configs[n] for n in ("largest", "middle", "small", "smallest")]
    variants = {f"plain {n}": (plain_epoch, (configs[n],)) for n in configs}
    variants.update({f"gated {n}": (gated_epoch, ([configs[n]],)) for n in ("largest", "middle", "small")})
    variants["gated 4 paths"] = (gated_epoch, (four,))
    variants["recipe 4 paths"] = (functools.partial(gated_epoch, recipe="anytime"), (four,))
    variants["default 4 paths"] = (functools.partial(gated_epoch, recipe="menu"), (four,))
    times = {name: [] for name in variants}
    for _ in range(runs):  # interleaved
        for name, (fn, args) in variants.items():
            keras.backend.clear_session()
            times[name].append(fn(widths, blocks, *args, x, y, epochs))

    def med(name, i):
        return statistics.median(t[i] for t in times[name])

    print(f"\n## 1. training step: supernet (gated) vs the configuration as a plain Keras model "
          f"({len(x)} images, batch 128, {steps} steps/epoch, median of {runs} interleaved runs, "
          f"epochs 2..{epochs})")
    print(f"{'configuration':<10} {'FLOPs':>6} {'plain ms/step':>14} {'gated ms/step':>14} "
          f"{'wall ratio':>10} {'cpu ratio':>9}")
    for n in ("largest", "middle", "small"):
        f = tips.flops(probe, tips.Configuration.from_vector(configs[n])) / full
        print(f"{n:<10} {f:>6.2f} {med('plain ' + n, 0) / steps * 1e3:>14.1f} "
              f"{med('gated ' + n, 0) / steps * 1e3:>14.1f} {med('gated ' + n, 0) / med('plain ' + n, 0):>10.2f} "
              f"{med('gated ' + n, 1) / med('plain ' + n, 1):>9.2f}")
    plain_sum = [sum(med(f"plain {n}", i) for n in ("largest", "middle", "small", "smallest")) for i in (0, 1)]
    for name in ("gated 4 paths", "recipe 4 paths", "default 4 paths"):
        print(f"{name:<15} {med(name, 0) / steps * 1e3:>8.1f} ms/step; / sum of the 4 plain steps: "
              f"wall {med(name, 0) / plain_sum[0]:.2f}, cpu {med(name, 1) / plain_sum[1]:.2f}")


def _timed(fn, repeats=3):
    """Median wall and CPU seconds of ``fn()`` (after one untimed call)."""
    fn()
    rows = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        rows.append((time.perf_counter() - wall, time.process_time() - cpu))
    return statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)


def search_rate(net, blocks, x_train, x_val, y_val, trials, recal=(4, 128), evaluation="compiled",
                oracle="random"):
    widths, stem_stride = NETS[net]
    model = supernet(widths, blocks, stem_stride)
    with tempfile.TemporaryDirectory() as directory:
        search = tips.search.ExitSearch(model, (x_val, y_val), budgets=[0.25, 0.5, 0.75, 1.0],
                                        max_trials=trials, oracle=oracle, directory=directory,
                                        overwrite=True, recalibration_data=x_train[:recal[0] * recal[1]],
                                        recalibration_batches=recal[0], recalibration_batch_size=recal[1],
                                        progress=False, evaluation=evaluation)
        ev = search.evaluator
        setup = time.perf_counter()
        for exit_index in range(model.config_space.num_exits):  # every layer checked, every
            ev.evaluate((exit_index, [1] * model.config_space.num_gates))  # compiled call traced
        setup = time.perf_counter() - setup
        ev.evaluations, ev.seconds = 0, 0.0  # (fewer than FUSE_AFTER trials: the separate calls)
        if evaluation == "shared_prefix":
            ev.cache.clear()  # traced, but nothing computed yet: every trial pays its own maps
        start, cpu = time.perf_counter(), time.process_time()
        front = search.run()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    n = max(ev.evaluations, 1)
    out = dict(configs=ev.evaluations, per_s=ev.evaluations / wall, cpu_per_config=cpu / n,
               evaluate_ms=ev.seconds / n * 1e3, other_ms=(wall - ev.seconds) / n * 1e3, setup_s=setup,
               gates=model.config_space.num_gates, recal_images=ev.recalibrator.num_images,
               recal_ms=float("nan"), eval_ms=float("nan"))  # NaN: not measured
    if evaluation == "compiled":
        # Where the time goes, on a sample of the evaluated configurations: the calibration
        # passes alone, and the evaluation alone (both compiled).
        sample = [p.config for p in front.points[:: max(1, len(front.points) // 8)]]
        ev.recalibrator.save()
        out["recal_ms"] = statistics.mean(_timed(lambda c=c: ev.recalibrator(c))[0] for c in sample) * 1e3
        ev.recalibrator.restore()  # the shared statistics back before timing the evaluation
        out["eval_ms"] = statistics.mean(_timed(lambda c=c: ev.accuracy(c))[0] for c in sample) * 1e3
    else:
        out["maps"] = ev.cache.misses
        out["reused"] = ev.cache.hits
    return out


def fused_cost(x_train, x_val, y_val, configs=24, repeats=3):
    """The fused call against the separate compiled calls on the benchmark supernet (net bench, what
    `FUSE_AFTER` was set from), interleaved.

    Returns:
        ``{"trace": (wall, cpu), "separate": (wall, cpu), "fused": (wall, cpu)}`` in seconds (the
        trace: the first fused call minus a steady one; the others: per configuration, median over
        ``repeats`` rounds of ``configs`` random configurations).
    """
    from tips_keras.training.evaluation import ConfigEvaluator

    model = supernet(BENCH_WIDTHS, 2)
    space = model.config_space
    rng = np.random.default_rng(0)
    sample = [(int(rng.integers(space.num_exits)), rng.integers(0, 2, space.num_gates).tolist())
              for _ in range(configs)]
    separate = ConfigEvaluator(model, (x_val, y_val), recalibration_data=x_train[:512], fuse_after=None)
    fused = ConfigEvaluator(model, (x_val, y_val), recalibration_data=x_train[:512], fuse_after=0)
    fused.recalibrator = separate.recalibrator  # the same compiled calibration pass, layers checked
    for exit_index in range(space.num_exits):
        separate.evaluate((exit_index, [1] * space.num_gates))

    def clock(fn):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - wall, time.process_time() - cpu

    first = clock(lambda: fused.evaluate(sample[0]))  # traces the fused call
    rounds = {"separate": [], "fused": []}
    for _ in range(repeats):
        for name, ev in (("separate", separate), ("fused", fused)):
            total = clock(lambda ev=ev: [ev.evaluate(c) for c in sample])
            rounds[name].append((total[0] / configs, total[1] / configs))
    out = {name: (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows))
           for name, rows in rounds.items()}
    out["trace"] = (first[0] - out["fused"][0], first[1] - out["fused"][1])
    return out


def floor_row(x_val):
    """The plain Keras models (`tips.extract`) of the smallest and largest configurations: one
    compiled forward pass over the validation images, no recalibration: no search can evaluate
    a configuration faster than its own plain model runs."""
    model = supernet(DEMO_WIDTHS, 2, DEMO_STEM_STRIDE)
    x = keras.ops.convert_to_tensor(x_val)
    out = {}
    for config in ("smallest", "largest"):
        plain = tips.extract(model, config, recalibrate_data=None)
        forward = tf.function(lambda images, net=plain: net(images, training=False))
        out[config] = _timed(lambda: forward(x).numpy())
    return out


def _ms(value):
    return "-" if value != value else f"{value:.0f}"  # NaN: not measured for this evaluation


def search_table(splits, trials, quick):
    print(f"\n## 2. search: configurations/s with per-configuration BatchNorm recalibration "
          f"(ExitSearch defaults: 4 passes of 128 training images; rows with 8 x 128 and with one "
          f"pass of 512), {trials} trials, on the README demo's supernet (net demo: widths "
          f"{DEMO_WIDTHS}, stem stride {DEMO_STEM_STRIDE}; blocks per stage 2, 4, 8 for 6, 12, 24 gates) "
          f"and on the benchmark supernet of the earlier recorded figures (net bench: widths {BENCH_WIDTHS}, "
          "stride 1); compiled = ConfigEvaluator (one compiled call per configuration), shared prefix = "
          "SharedPrefixEvaluator (ExitSearch's default: each map computed once per state of the gates "
          "before it), run one after the other on the same supernet")
    print("evaluate ms: evaluate() per configuration; other: keras-tuner, oracle, FLOPs; setup s: the first "
          "evaluation of each exit (traces; not in configs/s); recal / eval ms (compiled): each part alone on 8 "
          "of the configurations; maps / reused (shared prefix): feature maps computed and kept / taken from "
          "the cache during the search")
    print(f"{'net':>5} {'gates':>5} {'val':>5} {'recal':>7} {'oracle':>7} {'trials':>6} {'evaluation':>13} "
          f"{'configs/s':>9} {'cpu s/cfg':>9} {'evaluate ms':>11} {'other ms':>8} {'setup s':>7} {'recal ms':>8} "
          f"{'eval ms':>7} {'maps':>5} {'reused':>6}")
    # (supernet, blocks per stage, validation images, (calibration passes, images each), oracle, trials)
    default = (4, 128)
    cases = [("demo", 2, 2000, default, "random", trials), ("demo", 4, 2000, default, "random", trials),
             ("demo", 8, 2000, default, "random", trials), ("demo", 2, 500, default, "random", trials),
             ("demo", 2, 1000, default, "random", trials), ("demo", 2, 2000, (8, 128), "random", trials),
             ("demo", 2, 2000, (1, 512), "random", trials), ("demo", 2, 2000, default, "tips", trials),
             ("demo", 2, 2000, default, "random", 84),  # 84: every configuration
             ("bench", 2, 2000, default, "random", trials)]
    if quick:
        cases = [("demo", 2, 500, default, "random", trials)]
    for net, blocks, n_val, recal, oracle, n_trials in cases:
        for evaluation in ("compiled", "shared_prefix"):
            keras.backend.clear_session()
            r = search_rate(net, blocks, splits.x_train, splits.x_val[:n_val], splits.y_val[:n_val],
                            n_trials, recal, evaluation, oracle)
            name = evaluation.replace("_", " ")
            print(f"{net:>5} {r['gates']:>5} {n_val:>5} {'%dx%d' % recal:>7} {oracle:>7} {r['configs']:>6} "
                  f"{name:>13} {r['per_s']:>9.2f} {r['cpu_per_config']:>9.3f} {r['evaluate_ms']:>11.0f} "
                  f"{r['other_ms']:>8.0f} {r['setup_s']:>7.1f} {_ms(r['recal_ms']):>8} {_ms(r['eval_ms']):>7} "
                  f"{r.get('maps', '-'):>5} {r.get('reused', '-'):>6}", flush=True)
    n_val = 500 if quick else 2000
    keras.backend.clear_session()
    floor = floor_row(splits.x_val[:n_val])
    print(f"floor of the compiled path (demo supernet): the plain Keras model (tips.extract, no gates) of one configuration "
          f"classifying the {n_val} validation images in one compiled call, no recalibration: smallest "
          f"{floor['smallest'][0] * 1e3:.0f} ms wall ({floor['smallest'][1] * 1e3:.0f} ms CPU), largest "
          f"{floor['largest'][0] * 1e3:.0f} ms wall ({floor['largest'][1] * 1e3:.0f} ms CPU); 20 configurations/s "
          "leaves 50 ms for recalibration and evaluation")
    keras.backend.clear_session()
    cost = fused_cost(splits.x_train, splits.x_val[:n_val], splits.y_val[:n_val], configs=4 if quick else 24)
    saving = [cost["separate"][i] - cost["fused"][i] for i in (0, 1)]
    pays = ["never" if d <= 0 else f"{cost['trace'][i] / d:.0f}" for i, d in enumerate(saving)]
    print(f"fused call (save, calibration passes, evaluation, restore in one compiled call; {n_val} validation, "
          f"512 calibration images): trace {cost['trace'][0]:.2f} s wall ({cost['trace'][1]:.2f} s CPU); per "
          f"configuration {cost['fused'][0] * 1e3:.0f} ms wall ({cost['fused'][1] * 1e3:.0f} ms CPU) vs separate "
          f"compiled calls {cost['separate'][0] * 1e3:.0f} ms ({cost['separate'][1] * 1e3:.0f} ms CPU); it pays "
          f"for its trace after {pays[0]} evaluations by wall time, {pays[1]} by CPU time")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run: a smoke test")
    parser.add_argument("--sections", nargs="+", type=int, choices=(1, 2), default=[1, 2])
    args = parser.parse_args()
    print(f"# speed benchmark: {' '.join(['.venv/bin/python', 'benchmarks/speed_benchmark.py'] + sys.argv[1:])}")
    print(f"# {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    n, runs, epochs, trials = (512, 1, 2, 4) if args.quick else (2560, 3, 3, 40)
    splits = data.load("fashion_mnist", train_size=max(n, 1024), val_size=2000)
    if 1 in args.sections:
        step_table(splits.x_train[:n], splits.y_train[:n], runs, epochs)
    if 2 in args.sections:
        search_table(splits, trials, args.quick)


if __name__ == "__main__":
    main()
