"""Training cost figures: the recipe vs the old rule vs plain fit, DTMC update, sub-network steps.

Run:  .venv/bin/python benchmarks/core_benchmark.py [--quick] [--sections 1 2 3]

1. Per-epoch wall and CPU time (``time.process_time``) of ``model.fit``: the full network as a
   plain Keras model (``tips.extract(model, "largest")``), the supernet with the default recipe
   (``TIPSCallback()``, the menu recipe: the largest + 3 of the budgets' important paths per
   step, EMA teacher), with the previous default (``recipe="anytime"``: the sandwich rule, every
   reached exit), with tips-keras 0.1's rule (``recipe="single_path"``), and with uniform draws. Same data, batch 128; first
   epoch excluded (tracing); variants interleaved, median of 3 runs, ratios to plain fit.
2. DTMC epoch update (importance from T = 2,000 sampled sub-networks) on a ~40-node supernet.
3. Per-epoch time of training only the smallest / a middle / the largest configuration: a skipped
   branch is not computed (graph conditional), so time follows FLOPs.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tips_keras as tips  # noqa: E402
from tips_keras import data  # noqa: E402
from tips_keras.training import sampling  # noqa: E402

# The supernet the recorded figures were measured on: the demo's until stop 26 (the demo now uses
# widths (16, 32, 64) with a stride-2 stem); kept so that the figures stay comparable.
BENCH_WIDTHS = (8, 16, 32)


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times, self.cpu = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._cpu = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)
        self.cpu.append(time.process_time() - self._cpu)


class FixedSampler(sampling.Sampler):
    """Always the same configuration: isolates the callback's own cost."""

    name = "fixed"

    def __init__(self, space, config):
        super().__init__(space)
        self.vector = space.resolve(config).to_vector()[None, :]

    def sample(self, rng):
        return self.vector


def build(widths, blocks):
    model = tips.zoo.anytime_resnet((28, 28, 1), 10, widths=widths, blocks_per_stage=blocks)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def epoch_time(x, y, epochs, widths, blocks, callback_factory, draws=None, plain=False):
    """Median (wall, CPU) epoch time (epochs 2..); with ``draws``, also appends the mean MACs of
    2,000 paths drawn from the trained callback's final sampler (what an epoch would train next).
    ``plain``: train ``tips.extract(model, "largest")``, a plain Keras model, without callback."""
    keras.utils.set_random_seed(0)
    model = build(widths, blocks)
    if plain:
        model = tips.extract(model, "largest", recalibrate_data=None)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = EpochTimer()
    callbacks = [timer] + ([callback_factory()] if callback_factory else [])
    model.fit(x, y, batch_size=128, epochs=epochs, callbacks=callbacks, verbose=0)
    if draws is not None and callback_factory:
        sampler = callbacks[-1].sampler
        vectors = np.concatenate([sampler.sample(np.random.default_rng([7, i])) for i in range(2000)])
        draws.append(float(np.mean([m for m, _ in tips.analytic_flops.cost_vectors(model, vectors)])))
    return statistics.median(timer.times[1:]), statistics.median(timer.cpu[1:])  # epoch 1: tracing


def overhead_table(x, y, runs, epochs, widths, blocks):
    variants = {
        "plain Keras model, full network": None,
        "TIPSCallback() (menu recipe, tips)": lambda: tips.TIPSCallback(sampler="tips"),
        "TIPSCallback(uniform) (menu recipe)": lambda: tips.TIPSCallback(sampler="uniform"),
        "recipe='anytime' (tips, previous default)": lambda: tips.TIPSCallback(sampler="tips", recipe="anytime"),
        "recipe='single_path' (tips, 0.1's rule)": lambda: tips.TIPSCallback(sampler="tips", recipe="single_path"),
    }
    results = {name: [] for name in variants}
    macs = {name: [] for name in variants}
    load = [os.getloadavg()[0]]
    for _ in range(runs):  # interleaved: a change of machine load hits every variant alike
        for name, factory in variants.items():
            results[name].append(epoch_time(x, y, epochs, widths, blocks, factory, macs[name],
                                            plain=factory is None))
        load.append(os.getloadavg()[0])
    base = [statistics.median(t[i] for t in results["plain Keras model, full network"]) for i in (0, 1)]
    print(f"\n## 1. fit time per epoch ({len(x)} images, batch 128, median of {runs} interleaved "
          f"runs, epochs 2..{epochs}; 1-min load average {min(load):.1f}..{max(load):.1f})")
    print(f"{'variant':<42} {'wall s':>7} {'cpu s':>7} {'wall/plain':>10} {'cpu/plain':>9}  wall per run")
    for name, times in results.items():
        wall, cpu = (statistics.median(t[i] for t in times) for i in (0, 1))
        print(f"{name:<42} {wall:>7.2f} {cpu:>7.2f} {wall / base[0]:>10.2f} {cpu / base[1]:>9.2f}  "
              + " ".join(f"{t[0]:.2f}" for t in times))
    for pair in (("TIPSCallback() (menu recipe, tips)", "recipe='anytime' (tips, previous default)"),
                 ("TIPSCallback() (menu recipe, tips)", "TIPSCallback(uniform) (menu recipe)"),
                 ("TIPSCallback() (menu recipe, tips)", "recipe='single_path' (tips, 0.1's rule)")):
        a, b = (results[n] for n in pair)
        print(f"{pair[0]} / {pair[1]}: wall {statistics.median(x[0] / y[0] for x, y in zip(a, b)):.2f}, "
              f"cpu {statistics.median(x[1] / y[1] for x, y in zip(a, b)):.2f} (median of per-run ratios); "
              f"mean MACs of the drawn paths {statistics.mean(macs[pair[0]]) / statistics.mean(macs[pair[1]]):.2f}")


def dtmc_table(repeats=5):
    model = build((8, 8, 8, 8), 4)
    topo = model.topology
    callback = tips.TIPSCallback()
    callback.set_model(model)
    sampler = sampling.get_sampler("uniform", model.config_space, paths_per_step=4)
    vectors = np.concatenate([sampler.sample(np.random.default_rng([0, i])) for i in range(2000)])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        callback.compute_importance(vectors)
        times.append(time.perf_counter() - start)
    print(f"\n## 2. DTMC epoch update (masks + pruning + TAS + TPS + importance), T={len(vectors)}")
    print(f"nodes={topo.num_nodes} edges={len(topo.edges)} gates={topo.num_gates}: "
          f"median {statistics.median(times) * 1e3:.1f} ms, min {min(times) * 1e3:.1f} ms over {repeats} runs")


def subnet_table(x, y, runs, epochs, widths, blocks):
    model = build(widths, blocks)
    full = tips.flops(model, "largest")
    configs = {"largest": "largest", "middle": (1, [1, 1, 1, 1] + [0] * (model.config_space.num_gates - 4)),
               "smallest": "smallest"}
    print(f"\n## 3. training only one configuration (median of {runs} runs)")
    print(f"{'config':<9} {'FLOPs ratio':>11} {'s/epoch':>8} {'time ratio':>10}")
    base = None
    for name, config in configs.items():
        factory = lambda c=config: tips.TIPSCallback(sampler=lambda s: FixedSampler(s, c),  # noqa: E731
                                                     recipe="single_path")
        t = statistics.median([epoch_time(x, y, epochs, widths, blocks, factory)[0] for _ in range(runs)])
        base = base or t
        print(f"{name:<9} {tips.flops(model, config) / full:>11.3f} {t:>8.2f} {t / base:>10.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data, 1 run: a smoke test")
    parser.add_argument("--sections", nargs="+", type=int, choices=(1, 2, 3), default=[1, 2, 3],
                        help="tables to measure (default: all)")
    args = parser.parse_args()
    n, runs, epochs = (1024, 1, 2) if args.quick else (5000, 3, 3)
    widths, blocks = BENCH_WIDTHS, 2  # the demo's supernet until stop 26 (stride 1)
    print(f"# core benchmark: {' '.join(['.venv/bin/python', 'benchmarks/core_benchmark.py'] + sys.argv[1:])}")
    print(f"supernet anytime_resnet(widths={widths}, blocks_per_stage={blocks}); Fashion-MNIST train subset {n}")
    splits = data.load("fashion_mnist", train_size=n, val_size=1000)
    if 1 in args.sections:
        overhead_table(splits.x_train, splits.y_train, runs, epochs, widths, blocks)
    if 2 in args.sections:
        dtmc_table()
    if 3 in args.sections:
        subnet_table(splits.x_train, splits.y_train, runs, epochs, widths, blocks)


if __name__ == "__main__":
    main()
