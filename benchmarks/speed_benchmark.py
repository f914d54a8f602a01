"""Speed of gated training and of the search (issue 14): ratios from one run, CPU and wall time.

Run:  .venv/bin/python benchmarks/speed_benchmark.py [--quick] [--sections 1 2 3] [--threads N]
      [--masked-updates]

1. Training step. For the largest, a middle (~50 % FLOPs) and a small (~25 % FLOPs)
   configuration of the benchmark supernet (`anytime_resnet(widths=BENCH_WIDTHS)`, the demo's until stop 26): one epoch of
   ``fit`` of the configuration extracted as a plain Keras model (``tips.extract``) against the
   supernet holding that configuration under `TIPSCallback` (one path per step, its own exit, no
   teacher: the gating machinery alone; ``--masked-updates`` adds the same steps with the default
   recipe's masked updates, interleaved with them), same data and batch size. Then a k-path step (the four
   configurations largest, middle, small, smallest in one step) against the sum of their plain
   steps, the anytime recipe's step (every reached exit, EMA teacher) on the same four paths
   ("recipe 4 paths") and the default menu recipe's step on them ("default 4 paths": the largest
   at its own exit, the other paths' earlier exits at 0.3, EMA teacher); both recipe rows again
   ("+T") against the same teacher work done on plain networks: the sum of the four plain steps
   plus `PlainTeacherWork` (the EMA teacher's forward pass and update on plain copies of the
   largest configuration). Every variant is built
   once and trains in its own thread, one epoch at a time (``_interleave.py``): 15 rounds, each
   one epoch of every variant, a gated variant right after its plain one, the order reversed
   every other round (epoch 1, with tracing, left out). Wall and CPU time (``time.process_time``)
   per epoch; a ratio is taken between epochs of the same round (a gated variant's and its plain
   one's are adjacent), and reported as the median over the rounds with its 95 % bootstrap
   interval (scipy.stats.bootstrap; it describes one run: runs differ by more). An A/A row times
   a second plain model of the small configuration (two places after the first) against the
   first: the method's own spread. Then the per-configuration rows and the 4-path step again in a
   subprocess with TensorFlow on one thread (``--threads 1``): no second thread then spins or
   waits for ops (tf.data's and Python's own threads remain).
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
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tips_keras as tips  # noqa: E402
from tips_keras import data  # noqa: E402
from tips_keras.training import sampling  # noqa: E402
from tips_keras.training import teacher as teacher_lib  # noqa: E402
from _interleave import interleaved_epochs, median_ci, paired_ratios  # noqa: E402
from _speed_search import BENCH_WIDTHS, precision_rounds, search_table, supernet  # noqa: E402


class ListSampler(sampling.Sampler):
    """The same paths every step."""

    def __init__(self, space, vectors):
        super().__init__(space, paths_per_step=len(vectors))
        self.vectors = np.asarray(vectors, np.float32)

    def sample(self, rng):
        return self.vectors.copy()


def closest(model, fraction):
    """The control vector whose FLOPs are nearest ``fraction`` of the largest configuration's
    (ties: more gates on, then the later exit)."""
    vectors = model.config_space.all_vectors()
    flops = np.array([m for m, _ in tips.analytic_flops.cost_vectors(model, vectors)], float)
    full = float(tips.flops(model, "largest"))
    keys = [(abs(f / full - fraction), -v[:-1].sum(), -v[-1]) for v, f in zip(vectors, flops)]
    return vectors[min(range(len(vectors)), key=keys.__getitem__)]


def plain_model(widths, blocks, vector):
    """The configuration ``vector`` extracted as a plain Keras model, compiled."""
    model = tips.extract(supernet(widths, blocks), tips.Configuration.from_vector(vector), recalibrate_data=None)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


class PlainTeacherWork(keras.Model):
    """The EMA teacher's work in a recipe step, done on plain networks: the baseline that the
    recipe rows add to the sum of the four plain steps.

    Per step, as `tips_keras.training.teacher.EMATeacher` does it (its ``update`` and
    ``current_decay``, called here): a training-mode forward pass of the teacher's copy of the
    largest configuration extracted as a plain model, and one EMA update of that copy's weights
    towards a second copy (the student's weights; the student's own step is the plain largest
    step). Not included: the distillation losses and the earlier exits' heads of the recipe's
    paths (the recipe's own extra work), and the EMA of the shallower exits' heads (not in the
    plain largest model).
    """

    current_decay = teacher_lib.EMATeacher.current_decay
    update = teacher_lib.EMATeacher.update

    def __init__(self, widths, blocks, vector, decay=0.997):
        super().__init__()
        self.network = plain_model(widths, blocks, vector)
        self.student = plain_model(widths, blocks, vector)
        self.decay = decay
        self.num_updates = self.add_weight(shape=(), initializer="zeros", trainable=False, name="num_updates")
        self._pairs = list(zip(self.network.trainable_weights, self.student.trainable_weights))

    def call(self, x, training=False):
        return self.network(x, training=training)

    def train_step(self, data):
        x = data[0]
        output = tf.stop_gradient(self.network(x, training=True))
        self.update()
        return {"teacher_mean": tf.reduce_mean(output)}  # an output, so the pass is not pruned


def gated_model(widths, blocks, vectors, recipe="single_path", masked=False):
    """The compiled supernet and the `TIPSCallback` that trains ``vectors`` in every step."""
    model = supernet(widths, blocks)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    # single_path: one path, its own exit, no teacher; its Adam steps every weight (the skipped
    # blocks' by their momentum). masked: only the path's weights, as the default recipe does
    # (one graph conditional per layer; its cost: the `masked` rows of README "Training step
    # speed").
    options = dict(recipe="single_path", distillation=0.0, masked_updates=masked) if recipe == "single_path" \
        else dict(recipe=recipe)
    callback = tips.TIPSCallback(sampler=lambda s: ListSampler(s, vectors), report_configs=(),
                                 recalibration_data=None, **options)
    return model, callback


def step_table(x, y, rounds, widths=BENCH_WIDTHS, blocks=2, recipes=True, masked=False):
    """Prints section 1's table (see the module docstring) for one thread setting.

    Args:
        x: training images.
        y: their labels.
        rounds: timed rounds (one more, which traces, is run first).
        widths: the supernet's stage widths.
        blocks: its blocks per stage.
        recipes: add the anytime and default recipes' 4-path steps.
        masked: add the gated one-path and 4-path steps with masked updates (``masked`` rows),
            interleaved with the unmasked ones.
    """
    probe = supernet(widths, blocks)
    space = probe.config_space
    configs = {"largest": space.largest().to_vector(), "middle": closest(probe, 0.5),
               "small": closest(probe, 0.25), "smallest": space.smallest().to_vector()}
    full = tips.flops(probe, "largest")
    steps = -(-len(x) // 128)
    four = [configs[n] for n in ("largest", "middle", "small", "smallest")]

    def gated(vectors, **options):
        model, callback = gated_model(widths, blocks, vectors, **options)
        return model, [callback]

    fits = {}  # a round's order: each gated variant right after its plain one
    for n in ("largest", "middle", "small"):
        fits[f"plain {n}"] = (plain_model(widths, blocks, configs[n]), [])
        fits[f"gated {n}"] = gated([configs[n]])
        if masked:
            fits[f"masked {n}"] = gated([configs[n]], masked=True)
    # the A/A control: a second plain model of the small configuration, timed against the first
    fits["plain small again"] = (plain_model(widths, blocks, configs["small"]), [])
    fits["plain smallest"] = (plain_model(widths, blocks, configs["smallest"]), [])
    fits["gated 4 paths"] = gated(four)
    if masked:
        fits["masked 4 paths"] = gated(four, masked=True)
    if recipes:
        teacher_work = PlainTeacherWork(widths, blocks, configs["largest"])
        teacher_work.compile(optimizer="adam")  # fit needs it; its optimizer is never used
        fits["plain teacher"] = (teacher_work, [])
        fits["recipe 4 paths"] = gated(four, recipe="anytime")
        fits["default 4 paths"] = gated(four, recipe="menu")
    times = interleaved_epochs(fits, x, y, rounds + 1)

    def ms(name):
        return statistics.median(t[0] for t in times[name]) / steps * 1e3

    def ratio(name, plain_names):
        cpu = median_ci(paired_ratios(times, name, plain_names, 1))
        wall = statistics.median(paired_ratios(times, name, plain_names, 0))
        return f"{wall:>10.2f} {cpu[0]:>9.2f} {f'{cpu[1]:.2f}-{cpu[2]:.2f}':>13}"

    threads = tf.config.threading.get_inter_op_parallelism_threads(), tf.config.threading.get_intra_op_parallelism_threads()
    print(f"\n## 1. training step: supernet (gated) vs the configuration as a plain Keras model "
          f"({len(x)} images, batch 128, {steps} steps/epoch; {rounds} rounds, each one epoch of every "
          f"variant, interleaved; ratios of the two epochs of a round, median over the rounds and its 95 % "
          f"bootstrap interval; TensorFlow threads inter-op / intra-op: "
          f"{' / '.join(str(t) if t else 'default' for t in threads)})")
    print(f"{'configuration':<18} {'FLOPs':>6} {'plain ms/step':>14} {'gated ms/step':>14} "
          f"{'wall ratio':>10} {'cpu ratio':>9} {'cpu 95 % CI':>13}")
    for n in ("largest", "middle", "small"):
        f = tips.flops(probe, tips.Configuration.from_vector(configs[n])) / full
        print(f"{n:<18} {f:>6.2f} {ms('plain ' + n):>14.1f} {ms('gated ' + n):>14.1f} "
              f"{ratio('gated ' + n, ['plain ' + n])}")
        if masked:
            print(f"{n + ', masked':<18} {f:>6.2f} {ms('plain ' + n):>14.1f} {ms('masked ' + n):>14.1f} "
                  f"{ratio('masked ' + n, ['plain ' + n])}")
    print(f"{'A/A: plain small':<18} {'':>6} {ms('plain small'):>14.1f} {ms('plain small again'):>14.1f} "
          f"{ratio('plain small again', ['plain small'])}  (a second plain model: the method's noise)")
    plains = [f"plain {n}" for n in ("largest", "middle", "small", "smallest")]
    names = ["gated 4 paths"] + ["masked 4 paths"] * masked + ["recipe 4 paths", "default 4 paths"] * recipes
    for name in names:
        print(f"{name:<18} {'':>6} {sum(ms(p) for p in plains):>14.1f} {ms(name):>14.1f} {ratio(name, plains)}"
              f"  (/ the sum of the 4 plain steps)")
    for name in ["recipe 4 paths", "default 4 paths"] * recipes:  # the same work on plain networks
        with_teacher = plains + ["plain teacher"]
        print(f"{name + ' +T':<18} {'':>6} {sum(ms(p) for p in with_teacher):>14.1f} {ms(name):>14.1f} "
              f"{ratio(name, with_teacher)}  (/ the 4 plain steps + the plain EMA teacher's forward and update)")
    print("(ms/step: each variant's median epoch alone; a ratio: the median of the rounds' ratios, "
          "which need not be the ratio of the two ms/step columns when the machine's speed drifts)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 rounds: a smoke test")
    parser.add_argument("--sections", nargs="+", type=int, choices=(1, 2, 3), default=[1, 2, 3])
    parser.add_argument("--masked-updates", action="store_true",
                        help="section 1: also the gated steps with masked updates (as the default recipe), "
                             "interleaved with the unmasked ones")
    parser.add_argument("--threads", type=int, default=None,
                        help="TensorFlow inter-op and intra-op threads (default: TensorFlow's); section 1 "
                             "then measures the per-configuration rows, the A/A row and the 4-path step only")
    args = parser.parse_args()
    if args.threads is not None:  # before TensorFlow runs anything
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    print(f"# speed benchmark: {' '.join(['.venv/bin/python', 'benchmarks/speed_benchmark.py'] + sys.argv[1:])}")
    print(f"# {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    n, rounds, trials = (512, 3, 4) if args.quick else (2560, 15, 40)
    splits = data.load("fashion_mnist", train_size=max(n, 1024) if args.quick else 8000, val_size=2000)
    if 1 in args.sections:
        step_table(splits.x_train[:n], splits.y_train[:n], rounds, recipes=args.threads is None,
                   masked=args.masked_updates)
        if args.threads is None:  # the same rows with TensorFlow on one thread
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
