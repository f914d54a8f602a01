"""What `TIPSCallback` takes from ``fit``'s arguments, and the deployed accuracy it reports.

Keras callbacks never see the training data. `AnytimeModel.fit` hands the TIPS callback the
arguments of the call (``set_fit_arguments``), and this module takes from them:

* a **calibration sample**: ``size`` training inputs (a seeded random subset of an array, or the
  first batches of a ``tf.data.Dataset`` / ``keras.utils.PyDataset``) used to recalibrate
  BatchNorm statistics per configuration, automatically, in validation, after training, in the
  search and in extraction (`tips_keras.training.batchnorm`);
* a **validation sample**: up to ``size`` examples of ``validation_data`` (or of the split that
  ``validation_split`` holds out, taken the way Keras takes it: the last examples).

`DeployedValidation` then evaluates named configurations on it, each after recalibration, with one
compiled function (`tips_keras.training.evaluation.ConfigEvaluator`): these are the accuracies of
the sub-networks as they would be deployed, which the callback logs as ``val_<name>_accuracy``.
`ValidationPass` is what the callback does around each of Keras' validation passes. With
``"budgets"`` among the report's configurations, each FLOPs budget's important path is reported
too (`budget_configs`), as ``val_budget<percent>_accuracy``.
"""

import math
import warnings

import numpy as np

from tips_keras.training.batchnorm import recalibrator as cached_recalibrator
from tips_keras.training.calibration import set_calibration_data
from tips_keras.training.evaluation import ConfigEvaluator
from tips_keras.training.importance import as_configurations, important_paths

# The calibration passes of every recalibration of a `fit`'s validation (`prepare`, the deployed
# report): the same sizes give the same cached `Recalibrator`, traced once for both.
CALIBRATION_BATCH_SIZE, CALIBRATION_BATCHES = 128, 8

BUDGETS = "budgets"  # the report entry that stands for each budget's important path


def _is_array(value):
    return hasattr(value, "shape") and hasattr(value, "__len__") and not hasattr(value, "element_spec")


def _first_batches(dataset, size):
    """Up to ``size`` (x, y) examples from the first batches of a dataset-like object."""
    xs, ys, count = [], [], 0
    if hasattr(dataset, "element_spec"):  # tf.data.Dataset
        iterator = iter(dataset)
    elif hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):  # keras.utils.PyDataset
        iterator = (dataset[i] for i in range(len(dataset)))
    else:
        return None, None
    for batch in iterator:
        if not isinstance(batch, (tuple, list)) or len(batch) < 1:
            return None, None
        x = np.asarray(batch[0])
        xs.append(x)
        ys.append(np.asarray(batch[1]) if len(batch) > 1 else None)
        count += len(x)
        if count >= size:
            break
    if not xs:
        return None, None
    x = np.concatenate(xs)[:size]
    y = None if any(v is None for v in ys) else np.concatenate(ys)[:size]
    return x, y


def calibration_sample(arguments, size, seed=0):
    """Training inputs for BatchNorm recalibration, taken from ``fit``'s arguments.

    Args:
        arguments: ``fit``'s arguments by name (``x``, ``validation_split``, ...).
        size: images wanted.
        seed: seed of the random subset of an array.

    Returns:
        A numpy array of up to ``size`` inputs, or ``None`` when ``x`` is neither an array nor a
        dataset-like object of ``(x, y)`` batches.

    Example:
        >>> calibration_sample({"x": np.zeros((10, 4)), "validation_split": 0.0}, 4).shape
        (4, 4)
    """
    x = arguments.get("x")
    if _is_array(x):
        x = np.asarray(x)
        split = float(arguments.get("validation_split") or 0.0)
        n = int(math.floor(len(x) * (1.0 - split))) if split else len(x)
        if n == 0:
            return None
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(n, size=min(size, n), replace=False))
        return x[rows]
    if x is None:
        return None
    sample, _ = _first_batches(x, size)
    return sample


def validation_sample(arguments, size):
    """Up to ``size`` validation examples from ``fit``'s ``validation_data`` / ``validation_split``.

    Args:
        arguments: ``fit``'s arguments by name.
        size: examples wanted (``None``: all of an array; 10,000 at most from a dataset).

    Returns:
        ``(x, y)`` numpy arrays, or ``None`` when there is no validation data (or it has no
        labels, or sample weights the report would ignore).

    Example:
        >>> xv, yv = validation_sample({"validation_data": (np.zeros((5, 2)), np.arange(5))}, 3)
        >>> xv.shape, yv.tolist()
        ((3, 2), [0, 1, 2])
    """
    data = arguments.get("validation_data")
    if data is None:
        split = float(arguments.get("validation_split") or 0.0)
        x, y = arguments.get("x"), arguments.get("y")
        if not split or not _is_array(x) or not _is_array(y):
            return None
        start = int(math.floor(len(x) * (1.0 - split)))
        x, y = np.asarray(x)[start:], np.asarray(y)[start:]
    elif isinstance(data, (tuple, list)):
        if len(data) < 2 or not _is_array(data[0]) or not _is_array(data[1]):
            return None
        x, y = np.asarray(data[0]), np.asarray(data[1])
    else:
        x, y = _first_batches(data, size or 10_000)
        if x is None or y is None:
            return None
    if size is not None:
        x, y = x[:size], y[:size]
    return (x, y) if len(x) else None


class DeployedValidation:
    """Accuracy of named configurations as deployed: each recalibrated, on validation data.

    Args:
        model: the supernet.
        configs: ``{name: configuration}`` (any form of `ConfigSpace.resolve`).
        validation_data: ``(x, y)`` numpy arrays.
        calibration: training inputs for the recalibration (8 batches of 128 at most, as in the
            validation pass), or ``None`` (shared statistics).
        batch_size: examples per forward pass of the compiled evaluation.

    Raises:
        ValueError: a configuration that does not fit the model, or bad data.

    Example:
        >>> report = DeployedValidation(model, {"largest": "largest"}, (x_val, y_val), x_cal)  # doctest: +SKIP
        >>> report.evaluate()  # doctest: +SKIP
        {'largest_accuracy': 0.91}
    """

    def __init__(self, model, configs, validation_data, calibration=None, batch_size=256):
        space = model.config_space
        self.configs = {name: space.resolve(config) for name, config in configs.items()}
        self.evaluator = ConfigEvaluator(model, validation_data, batch_size=batch_size,
                                         recalibration_data=calibration,
                                         recalibration_batches=CALIBRATION_BATCHES,
                                         recalibration_batch_size=CALIBRATION_BATCH_SIZE)

    def evaluate(self):
        """Evaluates every configuration; the model's statistics are restored afterwards.

        Returns:
            ``{f"{name}_accuracy": accuracy}``.
        """
        model = self.evaluator.model
        active = model.get_active_config()
        try:
            return {f"{name}_accuracy": self.evaluator.evaluate(config)["accuracy"]
                    for name, config in self.configs.items()}
        finally:
            model.set_config(active)


class ValidationPass:
    """`TIPSCallback`'s side of Keras' validation: the evaluated configuration, the report.

    ``begin`` saves the shared BatchNorm statistics and activates ``eval_config``, recalibrated on
    the calibration sample when there is one (what Keras' ``val_loss`` / ``val_accuracy`` then
    measure); ``end`` puts the statistics back, then evaluates the report's configurations
    (each recalibrated and restored in turn, with the same cached `Recalibrator`).

    Args:
        model: the supernet.
        eval_config: the configuration Keras' validation evaluates.
        recalibrator: a `tips_keras.training.batchnorm.Recalibrator`, or ``None``.
        report: a `DeployedValidation`, or ``None``.

    Example:
        >>> validation = ValidationPass(model, "largest")  # doctest: +SKIP
        >>> validation.begin(); logs = validation.end()  # doctest: +SKIP
    """

    def __init__(self, model, eval_config, recalibrator=None, report=None):
        self.model, self.eval_config = model, eval_config
        self.recalibrator, self.report = recalibrator, report

    def activate(self):
        """Activates ``eval_config``, recalibrated when there is a calibration sample."""
        if self.recalibrator is None:
            self.model.set_config(self.eval_config)
        else:
            self.recalibrator(self.eval_config)

    def begin(self):
        """Saves the shared statistics and activates ``eval_config`` (Keras' validation follows)."""
        if self.recalibrator is not None:
            self.recalibrator.save()
        self.activate()

    def end(self, report=True):
        """Restores the statistics, evaluates the report (with ``report``), keeps ``eval_config``.

        Args:
            report: evaluate the report's configurations.

        Returns:
            ``{f"val_{name}_accuracy": accuracy}`` (empty without a report).
        """
        if self.recalibrator is not None:  # first: the report saves and restores with it too
            self.recalibrator.restore()
        logs = {}
        if report and self.report is not None:
            logs = {f"val_{k}": v for k, v in self.report.evaluate().items()}
        self.model.set_config(self.eval_config)
        return logs


def budget_name(budget):
    """The report name of a FLOPs budget's important path (its percent of the full FLOPs).

    Args:
        budget: a fraction of the full FLOPs.

    Returns:
        ``"budget<percent>"``.

    Example:
        >>> budget_name(0.25)
        'budget25'
    """
    return f"budget{budget * 100:g}"


def budget_configs(model, budgets, paths=None):
    """``{budget_name(b): configuration}``: each budget's important path, as the report evaluates it.

    Args:
        model: the supernet.
        budgets: fractions of the full FLOPs.
        paths: ``{budget: Configuration or None}``, the callback's ``important_paths``; a budget
            without one (before the first epoch's importance, or after a resume until the
            resumed epoch ends) gets the configuration with the most nodes within it (the
            highest-TPS path when every node scores the same).

    Returns:
        A dict without the budgets that no configuration fits.

    Example:
        >>> budget_configs(model, (0.25, 0.5))  # doctest: +SKIP
        {'budget25': Configuration(exit=1, ...), 'budget50': Configuration(exit=1, ...)}
    """
    paths = dict(paths or {})
    missing = [b for b in budgets if paths.get(b) is None]
    if missing:
        found = important_paths(model, np.ones(model.topology.num_nodes), missing)
        paths.update(zip(missing, as_configurations(model.config_space, found)))
    return {budget_name(b): paths[b] for b in budgets if paths[b] is not None}


def check_arguments(report_configs, recalibration_data, calibration_size, validation_size, menu=False):
    """Validates the validation arguments of `TIPSCallback`.

    Args:
        report_configs: a sequence of ``"largest"`` / ``"smallest"`` / ``"budgets"`` (each
            budget's important path, `budget_configs`), a dict ``{name: config}`` (a
            configuration named ``"budgets"`` stays a configuration), or ``None``: the largest
            and the smallest, with ``menu`` also the budgets.
        recalibration_data: ``"auto"``, ``None`` or training inputs.
        calibration_size: a positive int.
        validation_size: ``None`` or a positive int.
        menu: the callback trains the menu recipe (the default report includes the budgets).

    Returns:
        ``(report_configs as a dict without the "budgets" entry, whether the report includes the
        budgets' important paths, recalibration_data, calibration_size, validation_size)``.

    Raises:
        ValueError: a size that is not a positive integer, or a string other than ``"auto"``.

    Example:
        >>> check_arguments(("largest", "budgets"), "auto", 1024, None)[:2]
        ({'largest': 'largest'}, True)
    """
    if report_configs is None:
        report_configs = ("largest", "smallest") + ((BUDGETS,) if menu else ())
    if isinstance(report_configs, dict):
        configs = dict(report_configs)
    else:
        configs = {str(name): name for name in report_configs}
    report_budgets = configs.get(BUDGETS) == BUDGETS
    if report_budgets:
        del configs[BUDGETS]
    if isinstance(recalibration_data, str) and recalibration_data != "auto":
        raise ValueError("Invalid value for argument `recalibration_data`. Expected 'auto', None or "
                         f"training inputs. Received: recalibration_data={recalibration_data!r}")
    if recalibration_data is not None and not isinstance(recalibration_data, str) \
            and not hasattr(recalibration_data, "shape"):
        recalibration_data = np.asarray(recalibration_data)
    for arg, value in (("calibration_size", calibration_size),
                       ("validation_size", 1 if validation_size is None else validation_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Invalid value for argument `{arg}`. Expected a positive integer. "
                             f"Received: {arg}={value!r}")
    return configs, report_budgets, recalibration_data, calibration_size, validation_size


def prepare(model, arguments, recalibration_data, calibration_size, report_configs, validation_size, seed=0,
            eval_config="largest"):
    """The validation pass of a ``fit``: recalibrator and deployed report (at the start of training).

    Takes the calibration sample (``"auto"``: from ``fit``'s ``x``), keeps it on the model
    (`tips_keras.training.calibration.set_calibration_data`) and builds the report on the
    validation sample when there is one.

    Args:
        model: the supernet.
        arguments: ``fit``'s arguments by name.
        recalibration_data: ``"auto"``, ``None`` or training inputs.
        calibration_size: inputs taken for ``"auto"``.
        report_configs: ``{name: config}`` (empty: no report).
        validation_size: validation examples of the report (``None``: all).
        seed: seed of the calibration subset.
        eval_config: the configuration Keras' validation evaluates.

    Returns:
        A `ValidationPass`.

    Example:
        >>> validation = prepare(model, {"x": x}, "auto", 1024, {}, None)  # doctest: +SKIP
    """
    data = recalibration_data
    if isinstance(data, str):  # "auto"
        data = calibration_sample(arguments, calibration_size, seed)
        if data is None and arguments.get("x") is not None:
            warnings.warn(
                "TIPSCallback: no calibration sample could be taken from fit's x (neither an "
                "array nor a dataset of (x, y) batches); validation uses the shared BatchNorm "
                "statistics. Pass recalibration_data=<training inputs>.", RuntimeWarning, stacklevel=4)
    set_calibration_data(model, data)
    recalibrator = None if data is None else cached_recalibrator(model, data, CALIBRATION_BATCH_SIZE,
                                                                 CALIBRATION_BATCHES)
    report = None
    if report_configs:
        sample = validation_sample(arguments, validation_size)
        if sample is not None:
            report = DeployedValidation(model, report_configs, sample, data)
    return ValidationPass(model, eval_config, recalibrator, report)
