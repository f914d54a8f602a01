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
from tips_keras.training.batchnorm import recalibrated
from tips_keras.training.schedule import warmup_cosine

LEVELS = (0.10, 0.25, 0.50, 0.75, 1.00)  # FLOPs fractions of the fixed evaluation set
ALONE_LEVELS = (0.25, 0.50, 1.00)  # fixed configurations also trained alone
MENU_BUDGETS = (0.25, 0.50, 1.00)  # searched menu configurations also trained alone
METRIC_LEVELS = (0.25, 0.50, 1.00)  # configurations of the per-epoch convergence metric
BUDGETS = LEVELS  # budgets of the searched front
# Every run (supernets and networks trained alone) gets the same learning-rate schedule: the
# recipe's per-step linear warm-up (5 % of the steps) and cosine decay from the setting's rate.
SCHEDULE = dict(lr_schedule="cosine", warmup=0.05)


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
    stem_stride: int = 1
    recal: int = 1024  # training images for BN recalibration before a test evaluation
    recal_batch: int = 512
    metric_val: int = 500  # validation images of the per-epoch convergence metric
    metric_recal: int = 256  # recalibration images of the per-epoch metric (one pass)
    search_val: int = 500  # validation images of the front search
    search_recal: int = 256  # recalibration images per searched configuration (one pass)
    trials: int = 16  # configurations evaluated per supernet by the front search


SETTINGS = {
    "standard": Setting("standard", (8, 16, 32), 2, train=10000, val=1000, test=5000, epochs=18),
    "deep": Setting("deep", (8, 16, 32), 4, train=8000, val=1000, test=5000, epochs=16, augment=True,
                    trials=24),
    # --quick: smoke-test sizes (minutes, not results).
    "standard-quick": Setting("standard-quick", (4, 8, 16), 1, train=512, val=256, test=256,
                              epochs=2, recal=256, recal_batch=256, metric_val=128,
                              metric_recal=128, search_val=256, search_recal=128, trials=4),
    "deep-quick": Setting("deep-quick", (4, 8, 16), 4, train=512, val=256, test=256, epochs=2,
                          augment=True, recal=256, recal_batch=256, metric_val=128,
                          metric_recal=128, search_val=256, search_recal=128, trials=4),
}

# The runs: name -> (sampler, TIPSCallback options). "tips" and "uniform" are the anytime recipe
# (`recipe="anytime"`; `tips[menu4]` / `uniform[menu4]` below are the default recipe) with TIPS /
# uniform draws for the two middle paths (the matched pair); "single_path" is
# tips-keras 0.1's default rule (one TIPS path per step, its own exit only, no teacher).
RUNS = {
    "tips": ("tips", {"recipe": "anytime"}),
    "uniform": ("uniform", {"recipe": "anytime"}),
    "single_path": ("tips", {"recipe": "single_path"}),
}
# --variants: ablations of the recipe and of the TIPS rule (1 seed is enough to look; 3 to claim).
# Those measured before the menu recipe became the default name recipe="anytime", as they ran.
VARIANTS = {
    "tips[distill0]": ("tips", {"recipe": "anytime", "distillation": 0.0}),
    "tips[distill1]": ("tips", {"recipe": "anytime", "distillation": 1.0}),
    "tips[exits-active]": ("tips", {"recipe": "anytime", "exits": "active"}),
    "tips[k6]": ("tips", {"recipe": "anytime", "paths_per_step": 6}),
    "uniform[k6]": ("uniform", {"recipe": "anytime", "paths_per_step": 6}),
    "tips[ema-weights]": ("tips", {"recipe": "anytime", "final_weights": "ema"}),
    "tips[p20-80]": ("tips", {"recipe": "anytime", "p_min": 0.2, "p_max": 0.8}),
    # The menu first: the important paths of the menu's budgets are the only drawn paths.
    "tips[menu]": ("tips", {"recipe": "anytime", "budgets": (0.25, 0.5), "focus": 1.0}),
    # ... and each path learns at its own exit only (the largest path as the network trained alone).
    "tips[menu-exits-active]": ("tips", {"recipe": "anytime", "budgets": (0.25, 0.5), "focus": 1.0,
                                         "exits": "active"}),
    # ... every reached exit, but the largest path at its own exit only.
    "tips[menu-exits-mixed]": ("tips", {"recipe": "anytime", "budgets": (0.25, 0.5), "focus": 1.0,
                                        "exits": "reached_except_largest"}),
    # ... every reached exit, the auxiliary (earlier) exits' weight fading 1 -> 0 (Deeply-Supervised Nets).
    "tips[menu-aux-fade]": ("tips", {"recipe": "anytime", "budgets": (0.25, 0.5), "focus": 1.0,
                                     "aux_weight": (1.0, 0.0)}),
    # ... every reached exit, the auxiliary exits at a constant 0.3 (GoogLeNet's / DSN's weight): Adam
    # keeps the early heads learning at full speed, the shared trunk takes 0.3 of their pull.
    "tips[menu-aux0.3]": ("tips", {"recipe": "anytime", "budgets": (0.25, 0.5), "focus": 1.0, "aux_weight": 0.3}),
    # ... both: the largest path at its own exit only, the others' auxiliary exits at 0.3.
    "tips[menu-mixed-aux0.3]": ("tips", {"recipe": "anytime", "budgets": (0.25, 0.5), "focus": 1.0,
                                         "exits": "reached_except_largest", "aux_weight": 0.3}),
    # ... and no smallest path: the largest + 3 draws among the menu's important paths, so the
    # step share the smallest sub-network (10 % FLOPs, off the menu) took goes to the menu paths.
    # This is `TIPSCallback(budgets=(0.25, 0.5))`, the menu recipe (the explicit options above, as
    # tests/test_callback.py checks).
    "tips[menu-mixed-aux0.3-no-smallest]": ("tips", {"recipe": "menu", "budgets": (0.25, 0.5)}),
    # The default, `TIPSCallback()`: the menu recipe with its default budgets (10 / 25 / 50 / 75 %).
    "tips[menu4]": ("tips", {"recipe": "menu"}),
    # ... and its baseline: the largest + 3 uniform draws over the whole space, the same recipe.
    "uniform[menu4]": ("uniform", {"recipe": "menu"}),
    # ... with one more draw per step: each budget's path trained once per step on average, not 0.75.
    "tips[menu4-k5]": ("tips", {"recipe": "menu", "paths_per_step": 5}),
    # ... or without the 10 % budget, whose important path (no block, the last exit) shares the last
    # exit's head with the largest: the largest + 3 draws among three budgets' paths.
    "tips[menu3]": ("tips", {"recipe": "menu", "budgets": (0.25, 0.5, 0.75)}),
    "tips[best_path-log]": ("tips", {"recipe": "anytime", "importance": "best_path", "score": "log"}),
    "tips[marginal-grad]": ("tips", {"recipe": "anytime", "importance": "marginal", "signal": "grad_norm"}),
    "uniform[single_path]": ("uniform", {"recipe": "single_path"}),
    "sandwich[single_path-distill]": ("sandwich", {"recipe": "single_path", "distillation": 0.5}),
}
# The baseline that isolates each run's sampling rule: same recipe, uniform draws.
MATCHED_BASELINE = {
    "single_path": "uniform[single_path]",
    "tips[k6]": "uniform[k6]",
    "tips[menu4]": "uniform[menu4]",
}


@dataclasses.dataclass
class RunSpec:
    """One supernet training run: ``name``, the sampler and the `TIPSCallback` options."""

    name: str
    sampler: str
    options: dict = dataclasses.field(default_factory=dict)

    def paths_per_step(self):
        recipe = tips.training.recipes.resolve_recipe(self.options.get("recipe", "anytime"),
                                                      {k: v for k, v in self.options.items()
                                                       if k in tips.training.recipes.RECIPES["anytime"]},
                                                      self.sampler)
        return recipe["paths_per_step"]


def build_model(setting):
    return tips.zoo.anytime_resnet((28, 28, 1), 10, widths=setting.widths, blocks_per_stage=setting.blocks,
                                   stem_stride=setting.stem_stride, name=f"supernet_{setting.name}")


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
        if self.evaluate is None:  # a network trained alone: times only
            self.rows.append({"epoch": epoch + 1, "train_time": train_time, "cpu_time": cpu_time,
                              "loss": float((logs or {}).get("loss", np.nan))})
            return
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
    """Trains one supernet and returns (model, accuracy function, record)."""
    keras.utils.set_random_seed(seed)
    model = build_model(setting)
    model.compile(optimizer=keras.optimizers.Adam(setting.lr), loss="sparse_categorical_crossentropy")
    options = dict(SCHEDULE, **spec.options)
    callback = tips.TIPSCallback(sampler=spec.sampler, seed=seed, report_configs=(),
                                 recalibration_data=splits.x_train[: setting.recal], **options)
    metric_configs = [as_config(configs[level][0]) for level in METRIC_LEVELS]
    accuracy = Accuracy(model)
    xv, yv = splits.x_val[: setting.metric_val], splits.y_val[: setting.metric_val]
    xr = splits.x_train[: setting.metric_recal]
    progress = Progress(label, lambda c: accuracy(c, xv, yv, xr, setting.metric_recal), metric_configs,
                        setting.epochs)
    model.fit(make_dataset(splits.x_train, splits.y_train, setting, seed), epochs=setting.epochs,
              callbacks=[callback, progress], verbose=0, shuffle=False)  # tf.data shuffles
    record = {"name": spec.name, "group": "supernet", "seed": seed, "sampler": spec.sampler,
              "paths_per_step": callback.sampler.paths_per_step, "options": spec.options,
              "epochs": progress.rows, "tips_history": callback.history,
              "important_paths": {str(b): None if c is None else c.to_vector().tolist()
                                  for b, c in callback.important_paths.items()}}
    return model, accuracy, record


class _StepSchedule(keras.callbacks.Callback):
    """The recipe's learning-rate schedule for a plain model (same function, same steps)."""

    def __init__(self, base, epochs, steps):
        super().__init__()
        self.base, self.epochs, self.steps = base, epochs, steps

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        total = self.epochs * self.steps
        self.model.optimizer.learning_rate = self.base * warmup_cosine(
            self.epoch * self.steps + batch, total, round(SCHEDULE["warmup"] * total))


def train_alone(vector, setting, splits, seed, label):
    """The configuration ``vector`` as a plain Keras network (`tips.extract` of a fresh supernet
    with the seed's initial weights), trained alone on the same data, epochs, batches and schedule;
    returns its record with the test accuracy (its own BatchNorm statistics, as deployed)."""
    keras.utils.set_random_seed(seed)
    net = tips.extract(build_model(setting), as_config(vector), recalibrate_data=None)
    net.compile(optimizer=keras.optimizers.Adam(setting.lr), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
    steps = math.ceil(setting.train / setting.batch)
    timer = Progress(label, None, [], setting.epochs)
    net.fit(make_dataset(splits.x_train, splits.y_train, setting, seed), epochs=setting.epochs, verbose=0, shuffle=False,
            callbacks=[_StepSchedule(setting.lr, setting.epochs, steps), timer])
    accuracy = float(net.evaluate(splits.x_test, splits.y_test, batch_size=256, verbose=0)[1])
    print(f"  {label}: test {accuracy:.4f}", flush=True)
    return {"vector": [float(v) for v in vector], "seed": seed, "test_acc": accuracy, "epochs": timer.rows}


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
    smallest = tips.flops(model, "smallest") / tips.flops(model, "largest")
    budgets = [b for b in BUDGETS if b >= smallest]  # the search refuses budgets nothing fits
    with tempfile.TemporaryDirectory(prefix="tips_compare_search_") as directory:
        search = ExitSearch(model, validation_data=(splits.x_val[: setting.search_val],
                                                    splits.y_val[: setting.search_val]),
                            budgets=budgets, max_trials=setting.trials, oracle=oracle,
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
    smallest = float(tips.flops(model, "smallest"))
    xr = splits.x_train[: setting.recal]
    rows = []
    for budget in BUDGETS:
        if budget * full + 1e-6 < smallest:  # no configuration of this architecture fits: no row
            continue
        fits = [c for c in candidates if c[1] <= budget * full + 1e-6]
        vector, flops, val_acc = max(fits, key=lambda c: (c[2], -c[1]))
        key = tuple(float(v) for v in vector)
        if key not in test_cache:
            test_cache[key] = accuracy(as_config(vector), splits.x_test, splits.y_test, xr,
                                       setting.recal_batch)
        rows.append({"budget": budget, "vector": list(key), "flops_frac": flops / full,
                     "val_acc": val_acc, "test_acc": test_cache[key]})
    return rows, len(candidates)
