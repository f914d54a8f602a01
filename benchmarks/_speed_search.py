"""Section 2 and 3 of `speed_benchmark.py`: how fast `ExitSearch` evaluates configurations.

The search rate per evaluation and size (the table), the floor of the compiled path, bfloat16 vs
float32 accuracies on a trained supernet, the fused call's cost, and float32 vs bfloat16
search rates alternated over rounds. Run through ``benchmarks/speed_benchmark.py --sections 2 3``.
"""

import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import tips_keras as tips
from tips_keras.demo import DEMO_STEM_STRIDE, DEMO_WIDTHS

# The supernet the recorded figures were measured on: the demo's until stop 26 (the demo now uses
# widths (16, 32, 64) with a stride-2 stem); kept so that the figures stay comparable.
BENCH_WIDTHS = (8, 16, 32)
# Section 2's supernets: the README demo's (the issue's "demo supernet") and the benchmark one.
NETS = {"demo": (DEMO_WIDTHS, DEMO_STEM_STRIDE), "bench": (BENCH_WIDTHS, 1)}


def supernet(widths, blocks, stem_stride=1):
    keras.utils.set_random_seed(0)
    return tips.zoo.anytime_resnet((28, 28, 1), 10, widths=widths, blocks_per_stage=blocks,
                                   stem_stride=stem_stride)


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
                oracle="random", compute_dtype="float32"):
    widths, stem_stride = NETS[net]
    model = supernet(widths, blocks, stem_stride)
    with tempfile.TemporaryDirectory() as directory:
        search = tips.search.ExitSearch(model, (x_val, y_val), budgets=[0.25, 0.5, 0.75, 1.0],
                                        max_trials=trials, oracle=oracle, directory=directory,
                                        overwrite=True, recalibration_data=x_train[:recal[0] * recal[1]],
                                        recalibration_batches=recal[0], recalibration_batch_size=recal[1],
                                        progress=False, evaluation=evaluation, compute_dtype=compute_dtype)
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


def precision_agreement(splits, n_train=8000, n_val=2000, budgets=(0.1, 0.25, 0.5, 0.75, 1.0)):
    """Every configuration of the demo supernet, trained one epoch of the anytime recipe on
    ``n_train`` images, evaluated by the shared prefix in float32 and in bfloat16 (512 calibration images,
    ``n_val`` validation images): how far the bfloat16 accuracies move.

    Returns:
        dict: ``max_diff`` / ``mean_diff`` (accuracy points, absolute), ``spearman`` (rank
        correlation of the accuracies), ``same_best`` (budgets whose best configuration is the
        same in both), ``budgets``, ``configs``, ``per_s`` (configurations/s of each dtype over
        all configurations, one pass each, float32 first).
    """
    from scipy import stats

    from tips_keras.search.shared_prefix import SharedPrefixEvaluator

    model = supernet(DEMO_WIDTHS, 2, DEMO_STEM_STRIDE)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(splits.x_train[:n_train], splits.y_train[:n_train], batch_size=128, epochs=1, verbose=0,
              callbacks=[tips.TIPSCallback(recipe="anytime", seed=0)])
    vectors = model.config_space.all_vectors()
    flops = np.array([m for m, _ in tips.analytic_flops.cost_vectors(model, vectors)], float)
    flops /= float(tips.flops(model, "largest"))
    vectors = [tips.supernet.configs.Configuration.from_vector(v) for v in vectors]
    acc, per_s = {}, {}
    for dtype in ("float32", "bfloat16"):
        ev = SharedPrefixEvaluator(model, (splits.x_val[:n_val], splits.y_val[:n_val]), recalibration_data=splits.x_train[:512],
                                   compute_dtype=dtype)
        ev.evaluate(vectors[-1])  # traces; then nothing cached
        ev.cache.clear()
        start = time.perf_counter()
        acc[dtype] = np.array([ev.evaluate(v)["accuracy"] for v in vectors])
        per_s[dtype] = len(vectors) / (time.perf_counter() - start)
    diff = np.abs(acc["bfloat16"] - acc["float32"]) * 100

    def best(a, budget):
        return int(np.argmax(np.where(flops <= budget + 1e-9, a, -1.0)))

    same = sum(best(acc["float32"], b) == best(acc["bfloat16"], b) for b in budgets)
    return dict(max_diff=diff.max(), mean_diff=diff.mean(), configs=len(vectors), budgets=len(budgets),
                spearman=stats.spearmanr(acc["float32"], acc["bfloat16"])[0], same_best=same, per_s=per_s)


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
    # (supernet, blocks per stage, validation images, (calibration passes, images each), oracle, trials,
    #  also the shared prefix with bfloat16 convolutions)
    default = (4, 128)
    cases = [("demo", 2, 2000, default, "random", trials, True), ("demo", 4, 2000, default, "random", trials, True),
             ("demo", 8, 2000, default, "random", trials, True), ("demo", 2, 500, default, "random", trials, True),
             ("demo", 2, 1000, default, "random", trials, True), ("demo", 2, 2000, (8, 128), "random", trials, False),
             ("demo", 2, 2000, (1, 512), "random", trials, False), ("demo", 2, 2000, default, "tips", trials, False),
             ("demo", 2, 2000, default, "random", 84, True),  # 84: every configuration
             ("bench", 2, 2000, default, "random", trials, False)]
    if quick:
        cases = [("demo", 2, 500, default, "random", trials, True)]
    for net, blocks, n_val, recal, oracle, n_trials, bf16 in cases:
        runs = [("compiled", "float32"), ("shared_prefix", "float32")]
        runs += [("shared_prefix", "bfloat16")] if bf16 else []
        for evaluation, dtype in runs:
            keras.backend.clear_session()
            r = search_rate(net, blocks, splits.x_train, splits.x_val[:n_val], splits.y_val[:n_val],
                            n_trials, recal, evaluation, oracle, dtype)
            name = evaluation.replace("_", " ") + (" bf16" if dtype == "bfloat16" else "")
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
    n_train = min(8000, len(splits.x_train))
    agree = precision_agreement(splits, n_train, n_val)
    print(f"bfloat16 vs float32 (shared prefix) on the demo supernet trained 1 epoch on {n_train} images, all "
          f"{agree['configs']} configurations, {n_val} validation images: accuracy change max {agree['max_diff']:.2f} pp, "
          f"mean {agree['mean_diff']:.3f} pp; Spearman rank correlation {agree['spearman']:.4f}; best configuration "
          f"the same at {agree['same_best']} of {agree['budgets']} budgets (10/25/50/75/100 %); "
          f"{agree['per_s']['float32']:.1f} vs {agree['per_s']['bfloat16']:.1f} configurations/s over all of them")
    keras.backend.clear_session()
    cost = fused_cost(splits.x_train, splits.x_val[:n_val], splits.y_val[:n_val], configs=4 if quick else 24)
    saving = [cost["separate"][i] - cost["fused"][i] for i in (0, 1)]
    pays = ["never" if d <= 0 else f"{cost['trace'][i] / d:.0f}" for i, d in enumerate(saving)]
    print(f"fused call (save, calibration passes, evaluation, restore in one compiled call; {n_val} validation, "
          f"512 calibration images): trace {cost['trace'][0]:.2f} s wall ({cost['trace'][1]:.2f} s CPU); per "
          f"configuration {cost['fused'][0] * 1e3:.0f} ms wall ({cost['fused'][1] * 1e3:.0f} ms CPU) vs separate "
          f"compiled calls {cost['separate'][0] * 1e3:.0f} ms ({cost['separate'][1] * 1e3:.0f} ms CPU); it pays "
          f"for its trace after {pays[0]} evaluations by wall time, {pays[1]} by CPU time")


def conv_rates(shapes=((14, 16), (7, 32), (4, 64)), images=2000, repeats=20):
    """One 3x3 convolution (stride 1, ReLU) over ``images`` maps of each (side, channels) in
    ``shapes``, float32 against bfloat16 inputs and kernel, in one compiled call each.

    Returns:
        ``[(side, channels, {dtype: (wall ms, GMAC/s)})]``, the median of ``repeats`` calls.
    """
    rng = np.random.default_rng(0)
    rows = []
    for side, channels in shapes:
        x = rng.normal(size=(images, side, side, channels)).astype("float32")
        k = rng.normal(size=(3, 3, channels, channels)).astype("float32")
        macs = images * side * side * channels * channels * 9
        rates = {}
        for dtype in (tf.float32, tf.bfloat16):
            xs, ks = tf.cast(x, dtype), tf.cast(k, dtype)
            conv = tf.function(lambda a, b: tf.nn.relu(tf.nn.conv2d(a, b, 1, "SAME")))
            wall = _timed(lambda: conv(xs, ks).numpy(), repeats)[0]
            rates[dtype.name] = (wall * 1e3, macs / wall / 1e9)
        rows.append((side, channels, rates))
    return rows


def precision_rounds(splits, rounds, trials):
    print(f"\n## 3. search in float32 vs bfloat16 convolutions (shared prefix, demo supernet, 6 gates, "
          f"{len(splits.y_val)} validation images, 4 x 128 calibration images, {trials} random trials), "
          f"alternated, {rounds} rounds, median")
    runs = {"float32": [], "bfloat16": []}
    for _ in range(rounds):
        for dtype in runs:
            keras.backend.clear_session()
            runs[dtype].append(search_rate("demo", 2, splits.x_train, splits.x_val, splits.y_val, trials,
                                           evaluation="shared_prefix", compute_dtype=dtype))
    for side, channels, rates in conv_rates():
        print(f"one 3x3 convolution over 2000 maps of {side}x{side}x{channels}: float32 {rates['float32'][0]:.1f} ms "
              f"({rates['float32'][1]:.0f} GMAC/s), bfloat16 {rates['bfloat16'][0]:.1f} ms "
              f"({rates['bfloat16'][1]:.0f} GMAC/s)")
    for dtype, rows in runs.items():
        each = ", ".join(f"{r['per_s']:.2f}" for r in rows)
        print(f"{dtype:>9}: {statistics.median(r['per_s'] for r in rows):6.2f} configurations/s (rounds: {each}); "
              f"CPU {statistics.median(r['cpu_per_config'] for r in rows) * 1e3:.0f} ms per configuration")
