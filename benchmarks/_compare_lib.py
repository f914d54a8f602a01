"""Training and evaluation pieces of `compare_samplers.py` (settings, runs, fixed set, front).

Everything here is deterministic given the seeds: the data split is fixed (data seed 0), the run
seed fixes the weight initialisation, the shuffling, the augmentation and the path draws.
"""

import dataclasses
import math
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import tips_keras as tips
from tips_keras import sampling
from tips_keras.batchnorm import recalibrated

LEVELS = (0.10, 0.25, 0.50, 0.75, 1.00)  # FLOPs fractions of the fixed evaluation set
FIXED_LEVELS = (0.25, 0.50, 1.00)  # separately trained networks
METRIC_LEVELS = (0.25, 0.50, 1.00)  # configurations of the per-epoch convergence metric
BUDGETS = LEVELS  # budgets of the searched front


@dataclasses.dataclass(frozen=True)
class Setting:
    """Sizes of one benchmark setting (identical for every sampler)."""

    name: str
    widths: tuple
    blocks: int
    train: int
    val: int
    test: int
    epochs: int
    batch: int = 128
    lr: float = 2e-3
    augment: bool = False
    recal: int = 1024  # training images for BN recalibration before a test evaluation
    recal_batch: int = 512
    metric_val: int = 500  # validation images of the per-epoch convergence metric
    metric_recal: int = 256  # recalibration images of the per-epoch metric (one pass)
    search_val: int = 500  # validation images of the front search
    search_recal: int = 256  # recalibration images per searched configuration (one pass)
    trials: int = 16  # configurations evaluated per supernet by the front search


SETTINGS = {
    "standard": Setting("standard", (8, 16, 32), 2, train=10000, val=1000, test=5000, epochs=6),
    "deep": Setting("deep", (8, 16, 32), 4, train=8000, val=1000, test=5000, epochs=8, augment=True,
                    trials=24),
    # --quick: smoke-test sizes (minutes, not results).
    "standard-quick": Setting("standard-quick", (4, 8, 16), 1, train=1024, val=256, test=512,
                              epochs=2, recal=256, recal_batch=256, metric_val=128,
                              metric_recal=128, search_val=256, search_recal=128, trials=4),
    "deep-quick": Setting("deep-quick", (4, 8, 16), 4, train=1024, val=256, test=512, epochs=2,
                          augment=True, recal=256, recal_batch=256, metric_val=128,
                          metric_recal=128, search_val=256, search_recal=128, trials=4),
}

# TIPS variants run by --tips-variants: name -> TIPSCallback options (the run named "tips" uses the
# library defaults: p_min/p_max 0.35/0.65, smoothing 0, score "log", coupling 1, 1 path, no
# signal). The defaults were 0.2/0.8 when the first standard runs were made: those runs are stored
# as "tips[p20-80]", and the runs made as "tips[p35-65]" (identical options to today's default) as
# "tips" (see the note in benchmarks/RESULTS.md).
TIPS_VARIANTS = {
    "p05-95": {"p_min": 0.05, "p_max": 0.95},
    "p35-65": {"p_min": 0.35, "p_max": 0.65},
    "p20-80": {"p_min": 0.2, "p_max": 0.8},
    "smooth0.5": {"smoothing": 0.5},
    "score-sum": {"score": "sum"},
    "coupling0.1": {"coupling": 0.1},
    "k2-distill": {"paths_per_step": 2, "include_largest": True, "distillation": 0.5},
    # Training-aware DTMC (tips_keras.signals): each sampled sub-network weighted by its step's
    # loss / gradient norm relative to the other draws of the same exit.
    "signal-loss": {"signal": "loss"},
    "signal-grad": {"signal": "grad_norm"},
    # Importance read off training, no DTMC (tips_keras.signals.marginal_importance): per gate,
    # the exit-normalised loss / gradient norm of the draws with it on vs off.
    "marginal-loss": {"importance": "marginal", "signal": "loss"},
    "marginal-grad": {"importance": "marginal", "signal": "grad_norm"},
    "marginal-grad-p20-80": {"importance": "marginal", "signal": "grad_norm", "p_min": 0.2,
                             "p_max": 0.8},
    "marginal-grad-largest0.25": {"importance": "marginal", "signal": "grad_norm",
                                  "largest_prob": 0.25},
    # One path per step, the largest sub-network on a quarter of the steps: tests at equal
    # compute the analysis's finding that training the largest path is what decides accuracy.
    "largest0.25": {"largest_prob": 0.25},
    # TIPS inside the authors' training loop: the sandwich rule (largest + smallest + 2 paths)
    # with in-place distillation, the 2 middle paths drawn by importance instead of uniformly.
    "k4-sandwich-distill": {"paths_per_step": 4, "include_largest": True, "include_smallest": True,
                            "distillation": 0.5},
}
# Baselines with options (--baseline-variants): name -> (sampler, TIPSCallback options).
BASELINE_VARIANTS = {
    "sandwich[distill]": ("sandwich", {"distillation": 0.5}),
    # Uniform sampling with the largest path on a quarter of the steps (the TIPS sampler with a
    # flat P(on) = 0.5 is the uniform sampler plus the option).
    "uniform[largest0.25]": ("tips", {"p_min": 0.5, "p_max": 0.5, "largest_prob": 0.25}),
}
# The baseline that isolates each variant's sampling rule: same paths per step, same distillation.
MATCHED_BASELINE = {
    "tips[k4-sandwich-distill]": "sandwich[distill]",
    "tips[largest0.25]": "uniform[largest0.25]",
    "tips[marginal-grad-largest0.25]": "uniform[largest0.25]",
}
DEFAULT_VARIANTS = ("p05-95", "p20-80", "score-sum", "k2-distill", "signal-loss", "signal-grad",
                    "marginal-loss", "marginal-grad", "marginal-grad-p20-80", "marginal-grad-largest0.25",
                    "largest0.25", "k4-sandwich-distill")


class FixedSampler(sampling.Sampler):
    """Always the same configuration: trains one fixed network ("separately trained" baseline).

    Skipped branches are not computed and get zero gradients, so training the supernet on one
    configuration is training that network from scratch (Adam leaves zero-gradient weights
    unchanged, and they are never used by the configuration).
    """

    name = "fixed"

    def __init__(self, space, config):
        super().__init__(space, paths_per_step=1)
        self.config = space.canonical(space.resolve(config))
        self.vector = self.config.to_vector()[None, :]
        self.gate_probs = np.asarray(self.config.gates, dtype=float)
        self.exit_probs = np.eye(space.num_exits)[self.config.exit]

    def sample(self, rng):
        return self.vector.copy()


@dataclasses.dataclass
class RunSpec:
    """One training run: ``group`` is "sampler", "variant" or "fixed"."""

    name: str
    group: str
    sampler: str = None
    options: dict = dataclasses.field(default_factory=dict)
    level: float = None  # FLOPs level of a fixed network

    def paths_per_step(self):
        if self.sampler == "sandwich":
            return self.options.get("paths_per_step", 4)
        return self.options.get("paths_per_step", 1)


def build_model(setting):
    return tips.zoo.anytime_resnet((28, 28, 1), 10, widths=setting.widths,
                                   blocks_per_stage=setting.blocks, name=f"supernet_{setting.name}")


def select_configs(model, levels=LEVELS):
    """The fixed evaluation set: per level the configuration whose FLOPs fraction is closest.

    Rule (deterministic): minimise |FLOPs / full FLOPs - level|; ties -> more gates on -> the
    deeper exit -> the smaller control vector. Returns ``{level: (vector, flops, fraction)}``.
    """
    vectors = model.config_space.all_vectors()
    flops = np.array([c[0] for c in tips.analytic_flops.cost_vectors(model, vectors)], float)
    full = float(tips.flops(model, "largest"))
    chosen = {}
    for level in levels:
        keys = [(round(abs(f / full - level), 9), -v[:-1].sum(), -v[-1], tuple(v))
                for v, f in zip(vectors, flops)]
        i = min(range(len(vectors)), key=keys.__getitem__)
        chosen[level] = (vectors[i], int(flops[i]), flops[i] / full)
    return chosen


def make_dataset(x, y, setting, seed):
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed,
                                                            reshuffle_each_iteration=True)
    ds = ds.batch(setting.batch)
    if setting.augment:
        augment = keras.Sequential([
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
            keras.layers.RandomFlip("horizontal", seed=seed + 1),
            keras.layers.RandomZoom((-0.1, 0.1), fill_mode="constant", seed=seed + 2),
        ], name="augment")
        ds = ds.map(lambda a, b: (augment(a, training=True), b), num_parallel_calls=1)
    return ds.prefetch(2)


class Accuracy:
    """Top-1 accuracy of the active configuration, one compiled function for every data set."""

    def __init__(self, model, batch=256):
        self.model, self.batch = model, batch
        spec = [tf.TensorSpec((None, batch) + tuple(model.inputs[0].shape[1:]), tf.float32),
                tf.TensorSpec((None, batch), tf.int32)]
        self.function = tf.function(self._count, input_signature=spec)
        self._cache = {}

    def _count(self, x, y):
        correct = tf.constant(0, tf.int32)
        for i in tf.range(tf.shape(x)[0]):
            predicted = tf.argmax(self.model(x[i], training=False), axis=-1, output_type=tf.int32)
            correct += tf.reduce_sum(tf.cast(tf.equal(predicted, y[i]), tf.int32))
        return correct

    def _batched(self, x, y):
        key = (x.ctypes.data, x.shape, y.ctypes.data)  # views of the long-lived splits
        if key not in self._cache:
            n = -(-len(x) // self.batch)
            pad = n * self.batch - len(x)
            xp = np.concatenate([x, np.zeros((pad,) + x.shape[1:], np.float32)])
            yp = np.concatenate([y, np.full(pad, -1, np.int32)])
            self._cache[key] = (tf.constant(xp.reshape((n, self.batch) + x.shape[1:])),
                                tf.constant(yp.reshape(n, self.batch)))
        return self._cache[key]

    def __call__(self, config, x, y, recal_x, recal_batch):
        """Accuracy of ``config`` on (x, y) after BN recalibration on ``recal_x``."""
        with recalibrated(self.model, config, recal_x, batch_size=recal_batch,
                          max_batches=-(-len(recal_x) // recal_batch)):
            return int(self.function(*self._batched(x, y))) / len(x)


def as_config(vector):
    return tips.Configuration.from_vector(vector)


class Progress(keras.callbacks.Callback):
    """Per epoch: training wall time (DTMC update included, evaluation excluded), loss and the
    convergence metric (mean validation accuracy of the metric configurations, recalibrated)."""

    def __init__(self, label, evaluate, metric_configs, epochs):
        super().__init__()
        self.label, self.evaluate, self.epochs = label, evaluate, epochs
        self.metric_configs = metric_configs
        self.rows = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._cpu = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        train_time, cpu_time = time.perf_counter() - self._start, time.process_time() - self._cpu
        start = time.perf_counter()
        accs = [self.evaluate(c) for c in self.metric_configs]
        row = {"epoch": epoch + 1, "train_time": train_time, "cpu_time": cpu_time,
               "loss": float((logs or {}).get("loss", np.nan)), "metric": float(np.mean(accs)),
               "metric_accs": accs, "eval_time": time.perf_counter() - start}
        self.rows.append(row)
        print(f"  {self.label}  epoch {epoch + 1}/{self.epochs}  train {train_time:6.1f}s "
              f"(cpu {cpu_time:6.1f}s)  "
              f"loss {row['loss']:.3f}  metric {row['metric']:.4f}  (eval {row['eval_time']:.1f}s)",
              flush=True)


def train_run(spec, setting, splits, seed, configs, label):
    """Trains one supernet (or fixed network) and returns (model, record)."""
    keras.utils.set_random_seed(seed)
    model = build_model(setting)
    steps = math.ceil(setting.train / setting.batch)
    schedule = keras.optimizers.schedules.CosineDecay(setting.lr, steps * setting.epochs, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy")
    options = dict(spec.options)
    if spec.group == "fixed":
        vector = configs[spec.level][0]
        callback = tips.TIPSCallback(sampler=lambda space: FixedSampler(space, as_config(vector)),
                                     seed=seed)
        metric_configs = [as_config(vector)]
    else:
        callback = tips.TIPSCallback(sampler=spec.sampler, seed=seed, **options)
        metric_configs = [as_config(configs[level][0]) for level in METRIC_LEVELS]
    accuracy = Accuracy(model)
    xv, yv = splits.x_val[: setting.metric_val], splits.y_val[: setting.metric_val]
    xr = splits.x_train[: setting.metric_recal]
    progress = Progress(label, lambda c: accuracy(c, xv, yv, xr, setting.metric_recal), metric_configs,
                        setting.epochs)
    model.fit(make_dataset(splits.x_train, splits.y_train, setting, seed), epochs=setting.epochs,
              callbacks=[callback, progress], verbose=0, shuffle=False)  # tf.data shuffles
    record = {"name": spec.name, "group": spec.group, "seed": seed, "level": spec.level,
              "paths_per_step": spec.paths_per_step(), "options": options, "epochs": progress.rows,
              "tips_history": callback.history}
    return model, accuracy, record


def evaluate_fixed(model, accuracy, setting, splits, configs, levels=None):
    """Test accuracy (recalibrated) of the fixed configurations: ``{level: acc}``."""
    xr = splits.x_train[: setting.recal]
    out = {}
    for level in levels or configs:
        out[level] = accuracy(as_config(configs[level][0]), splits.x_test, splits.y_test, xr,
                              setting.recal_batch)
    return out


# -- searched Pareto front (pluggable) ------------------------------------------------------------
def _search_candidates(model, accuracy, setting, splits, seed, oracle="random"):
    """Candidates from `tips_keras.search.ExitSearch` (``trials`` configurations, validation)."""
    from tips_keras.search import ExitSearch

    xr = splits.x_train[: setting.search_recal]
    with tempfile.TemporaryDirectory(prefix="tips_compare_search_") as directory:
        search = ExitSearch(model, validation_data=(splits.x_val[: setting.search_val],
                                                    splits.y_val[: setting.search_val]),
                            budgets=list(BUDGETS), max_trials=setting.trials, oracle=oracle,
                            directory=directory, project_name="front", overwrite=True,
                            recalibration_data=xr, recalibration_batches=1,
                            recalibration_batch_size=len(xr), seed=seed, progress=False)
        front = search.run()
    return [(p.config.to_vector(), int(p.flops), float(p.accuracy)) for p in front.points]


def _exhaustive_candidates(model, accuracy, setting, splits, seed, oracle=None):
    """Every configuration when there are at most ``4 * trials``, else a FLOPs-stratified subset of
    that many (evenly spaced in FLOPs rank, largest and smallest included), on validation."""
    vectors = model.config_space.all_vectors()
    flops = np.array([c[0] for c in tips.analytic_flops.cost_vectors(model, vectors)])
    order = np.argsort(flops, kind="stable")
    limit = 4 * setting.trials
    if len(order) > limit:
        order = order[np.unique(np.linspace(0, len(order) - 1, limit).round().astype(int))]
    xv, yv = splits.x_val[: setting.search_val], splits.y_val[: setting.search_val]
    xr = splits.x_train[: setting.search_recal]
    return [(vectors[i], int(flops[i]), accuracy(as_config(vectors[i]), xv, yv, xr, len(xr)))
            for i in order]


def _auto_candidates(*args, **kwargs):
    try:
        import tips_keras.search  # noqa: F401
    except ImportError:
        return _exhaustive_candidates(*args, **kwargs)
    return _search_candidates(*args, **kwargs)


FRONT_METHODS = {"auto": _auto_candidates, "search": _search_candidates,
                 "exhaustive": _exhaustive_candidates}


def searched_front(method, model, accuracy, setting, splits, seed, oracle, test_cache, anchors=()):
    """Best validation configuration per budget, then its recalibrated test accuracy.

    The candidates are the method's plus ``anchors`` (the smallest configuration and the fixed
    set, evaluated on validation the same way), so every budget has a candidate. Returns a list
    of ``{budget, vector, flops_frac, val_acc, test_acc}`` and the number of candidates evaluated. ``test_cache`` maps control-vector tuples to test accuracies already
    measured (the fixed set), so no configuration is evaluated twice on test.
    """
    candidates = FRONT_METHODS[method](model, accuracy, setting, splits, seed, oracle=oracle)
    seen = {tuple(float(v) for v in c[0]) for c in candidates}
    xv, yv = splits.x_val[: setting.search_val], splits.y_val[: setting.search_val]
    xs = splits.x_train[: setting.search_recal]
    for vector in [model.config_space.smallest().to_vector()] + list(anchors):
        if tuple(float(v) for v in vector) not in seen:
            seen.add(tuple(float(v) for v in vector))
            flops = tips.flops(model, as_config(vector))
            candidates.append((vector, flops, accuracy(as_config(vector), xv, yv, xs, len(xs))))
    full = float(tips.flops(model, "largest"))
    xr = splits.x_train[: setting.recal]
    rows = []
    for budget in BUDGETS:
        fits = [c for c in candidates if c[1] <= budget * full + 1e-6]
        if not fits:  # counts as 0 in the front statistics
            rows.append({"budget": budget, "vector": None, "flops_frac": 0.0, "val_acc": None,
                         "test_acc": 0.0})
            continue
        vector, flops, val_acc = max(fits, key=lambda c: (c[2], -c[1]))
        key = tuple(float(v) for v in vector)
        if key not in test_cache:
            test_cache[key] = accuracy(as_config(vector), splits.x_test, splits.y_test, xr,
                                       setting.recal_batch)
        rows.append({"budget": budget, "vector": list(key), "flops_frac": flops / full,
                     "val_acc": val_acc, "test_acc": test_cache[key]})
    return rows, len(candidates)
