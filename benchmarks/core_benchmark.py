"""Issue-2 figures: callback overhead, DTMC update time, small vs full sub-network step time.

Run:  .venv/bin/python benchmarks/core_benchmark.py [--quick] [--sections 1 2 3]

1. Per-epoch wall time of model.fit with TIPSCallback (1 path per step) divided by plain
   model.fit of the full network (same data, batch size; first epoch excluded: tracing). Median of
   3 runs. Also with a sampler fixed to the largest configuration (pure callback overhead).
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
from tips_keras import data, sampling  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


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


def epoch_time(x, y, epochs, widths, blocks, callback_factory, draws=None):
    """Median epoch time (epochs 2..); with ``draws``, also appends the mean MACs of 2,000 paths
    drawn from the trained callback's final sampler (what an epoch would train next)."""
    keras.utils.set_random_seed(0)
    model = build(widths, blocks)
    timer = EpochTimer()
    callbacks = [timer] + ([callback_factory()] if callback_factory else [])
    model.fit(x, y, batch_size=128, epochs=epochs, callbacks=callbacks, verbose=0)
    if draws is not None and callback_factory:
        sampler = callbacks[-1].sampler
        vectors = np.concatenate([sampler.sample(np.random.default_rng([7, i])) for i in range(2000)])
        draws.append(float(np.mean([m for m, _ in tips.analytic_flops.cost_vectors(model, vectors)])))
    return statistics.median(timer.times[1:])  # first epoch includes tracing


def overhead_table(x, y, runs, epochs, widths, blocks):
    variants = {
        "plain fit, full network": None,
        "TIPSCallback(tips), 1 path": lambda: tips.TIPSCallback(sampler="tips"),
        "TIPSCallback(uniform), 1 path": lambda: tips.TIPSCallback(sampler="uniform"),
        "TIPSCallback, fixed largest": lambda: tips.TIPSCallback(sampler=lambda s: FixedSampler(s, "largest")),
    }
    results = {name: [] for name in variants}
    macs = {name: [] for name in variants}
    load = [os.getloadavg()[0]]
    for _ in range(runs):  # interleaved: a change of machine load hits every variant alike
        for name, factory in variants.items():
            results[name].append(epoch_time(x, y, epochs, widths, blocks, factory, macs[name]))
        load.append(os.getloadavg()[0])
    base = statistics.median(results["plain fit, full network"])
    print(f"\n## 1. fit wall time per epoch ({len(x)} images, batch 128, median of {runs} interleaved "
          f"runs, epochs 2..{epochs}; 1-min load average {min(load):.1f}..{max(load):.1f})")
    print(f"{'variant':<32} {'s/epoch':>8} {'ratio to plain':>15}  runs")
    for name, times in results.items():
        print(f"{name:<32} {statistics.median(times):>8.2f} {statistics.median(times) / base:>15.3f}  "
              + " ".join(f"{t:.2f}" for t in times))
    tips_name, uniform_name = "TIPSCallback(tips), 1 path", "TIPSCallback(uniform), 1 path"
    ratios = [t / u for t, u in zip(results[tips_name], results[uniform_name])]
    print(f"\ntips / uniform, s/epoch: {statistics.median(results[tips_name]) / statistics.median(results[uniform_name]):.3f}"
          f" (per interleaved run: {' '.join(f'{r:.3f}' for r in ratios)})")
    print(f"tips / uniform, mean MACs of the paths their final samplers draw (analytic, 2,000 draws): "
          f"{statistics.mean(macs[tips_name]) / statistics.mean(macs[uniform_name]):.3f}"
          f" ({statistics.mean(macs[tips_name]):,.0f} vs {statistics.mean(macs[uniform_name]):,.0f})")


def dtmc_table(repeats=5):
    model = build((8, 8, 8, 8), 4)
    topo = model.topology
    callback = tips.TIPSCallback()
    callback.set_model(model)
    sampler = sampling.get_sampler("uniform", model.config_space)
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
        factory = lambda c=config: tips.TIPSCallback(sampler=lambda s: FixedSampler(s, c))  # noqa: E731
        t = statistics.median([epoch_time(x, y, epochs, widths, blocks, factory) for _ in range(runs)])
        base = base or t
        print(f"{name:<9} {tips.flops(model, config) / full:>11.3f} {t:>8.2f} {t / base:>10.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data, 1 run: a smoke test")
    parser.add_argument("--sections", nargs="+", type=int, choices=(1, 2, 3), default=[1, 2, 3],
                        help="tables to measure (default: all)")
    args = parser.parse_args()
    n, runs, epochs = (1024, 1, 2) if args.quick else (5000, 3, 3)
    widths, blocks = (16, 32, 64), 2
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
