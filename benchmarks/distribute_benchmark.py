"""Issue 7: TIPS training on one device vs `tf.distribute.MirroredStrategy` on two logical CPUs.

Run:  .venv/bin/python benchmarks/distribute_benchmark.py [--data mnist_5k|blobs] [--epochs N]
      [--seeds 0 1 2]

Both settings train the same small anytime ResNet with ``TIPSCallback(sampler="tips", recipe="anytime")``, the
same global batch size, seed and data order; the mirrored run splits each batch over two replicas
(gradients all-reduced, BatchNorm statistics per replica). Reported per setting: test accuracy of
the largest sub-network, of the shallowest exit with all its blocks and of the smallest
sub-network (BatchNorm recalibrated for each on 1,024 training images), mean ± std over the seeds, and the training wall time. The two logical CPU devices share
the host's cores, so the mirrored run is not faster here: this checks correctness, not speed.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Logical devices must exist before TensorFlow initialises its devices.
_CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import tips_keras as tips  # noqa: E402
from tips_keras.training.batchnorm import recalibrated  # noqa: E402


def load(name):
    if name == "mnist_5k":
        s = tips.data.load("mnist_5k", val_size=500, test_size=1000, seed=0)
        return (s.x_train, s.y_train), (s.x_test, s.y_test), dict(input_shape=(28, 28, 1), num_classes=10)
    from tests.conftest import make_blobs

    return make_blobs(1024, seed=0), make_blobs(512, seed=1), dict(input_shape=(12, 12, 1), num_classes=4)


def run(strategy, seed, train, test, shape, epochs, batch_size, widths=(8, 16)):
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = tips.zoo.anytime_resnet(**shape, widths=widths, blocks_per_stage=2)
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    callback = tips.TIPSCallback(sampler="tips", recipe="anytime", seed=seed)
    start = time.perf_counter()
    model.fit(*train, batch_size=batch_size, epochs=epochs, callbacks=[callback], verbose=0)
    seconds = time.perf_counter() - start
    accuracy = {}
    exit0 = (0, [1] * model.config_space.num_gates)  # shallowest exit, all its blocks on
    for config in ("largest", exit0, "smallest"):
        with recalibrated(model, config, train[0][:1024]):
            accuracy[str(config[0]) if isinstance(config, tuple) else config] = model.evaluate(*test, batch_size=256, verbose=0)[1]
    return accuracy, seconds


def mean_std(values):
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("mnist_5k", "blobs"), default="mnist_5k")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--only", choices=("single", "mirrored"), default=None)
    args = parser.parse_args()
    train, test, shape = load(args.data)
    settings = {
        "single device": tf.distribute.get_strategy(),
        "MirroredStrategy x2": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
    }
    if args.only:
        settings = {k: v for k, v in settings.items() if k.lower().startswith(args.only)}
    rows = {}
    for name, strategy in settings.items():
        results = [run(strategy, seed, train, test, shape, args.epochs, args.batch_size, tuple(args.widths))
                   for seed in args.seeds]
        rows[name] = results
        for seed, (accuracy, seconds) in zip(args.seeds, results):
            print(f"  {name:20s} seed {seed}: largest {accuracy['largest']:.4f}  exit 0 "
                  f"{accuracy['0']:.4f}  smallest {accuracy['smallest']:.4f}  ({seconds:.0f} s)", flush=True)
    print(f"\n{args.data}, {len(train[1])} training images, anytime ResNet widths {args.widths}, "
          f"{args.epochs} epochs, global batch {args.batch_size}, TIPS sampler, seeds {args.seeds}; "
          "test accuracy mean ± std\n")
    print("| setting | largest | exit 0, all gates on | smallest | train time (s) |")
    print("|---|---|---|---|---|")
    for name, results in rows.items():
        cells = [mean_std([r[0][key] for r in results]) for key in ("largest", "0", "smallest")]
        print(f"| {name} | {' | '.join(cells)} | {statistics.mean(r[1] for r in results):.0f} |")


if __name__ == "__main__":
    main()
