"""`ExitSearch`: the one-call search for the best configuration of a supernet per FLOPs budget."""

import hashlib

import keras

from tips_keras.data import check_model_inputs
from tips_keras.supernet.model import AnytimeModel
from tips_keras.search import front as front_lib
from tips_keras.search import tuner as tuner_lib
from tips_keras.training.calibration import resolve_calibration
from tips_keras.training.evaluation import ConfigEvaluator
from tips_keras.search.oracle import get_oracle
from tips_keras.search.space import SearchSpace
from tips_keras.search import precision
from tips_keras.search.shared_prefix import SharedPrefixEvaluator, UnsupportedModelError

EVALUATIONS = ("auto", "shared_prefix", "compiled")


def _weights_digest(model):
    """Digest of the supernet's weights (not the controller's state, which the search changes)."""
    controller = model.controller
    own = {id(v) for v in controller.weights}
    digest = hashlib.sha1()
    for variable in model.weights:
        if id(variable) not in own:
            digest.update(keras.ops.convert_to_numpy(variable).tobytes())
    return digest.hexdigest()[:16]


class ExitSearch:
    """Searches exits and gates of a trained supernet under FLOPs budgets with keras-tuner.

    Each trial is one configuration, evaluated on the validation data without training or
    rebuilding (`ConfigEvaluator`; with recalibration, one compiled call per trial saves the
    shared BatchNorm statistics, runs the calibration passes and the evaluation and restores
    them); the oracle enforces the budgets (`TIPSOracle` guided by the supernet's TIPS
    importance, or the `RandomOracle` baseline). The keras-tuner project in
    ``directory/project_name`` records every trial; ``overwrite=False`` resumes it (the trial
    count continues up to the new ``max_trials``). Run the same script with keras-tuner's
    ``KERASTUNER_TUNER_ID`` / ``KERASTUNER_ORACLE_IP`` / ``KERASTUNER_ORACLE_PORT`` set to search
    with one chief and several workers (workers never delete the project directory).

    Args:
        model: a trained `tips_keras.AnytimeModel`.
        validation_data: ``(x_val, y_val)`` NumPy arrays (integer or one-hot labels).
        budgets: FLOPs budgets: fractions of the full FLOPs (<= 1) or absolute FLOPs (> 1).
        max_trials: configurations to evaluate (the search stops earlier when every
            configuration under the largest budget was evaluated).
        oracle: ``"tips"`` (importance-guided), ``"random"``, or a `ConfigOracle` instance.
        directory: keras-tuner working directory.
        project_name: keras-tuner project name (a folder in ``directory``).
        overwrite: start afresh (True) or resume an existing project (False).
        recalibration_data: training images for per-configuration BatchNorm recalibration;
            ``"auto"`` (default): the calibration sample the last ``fit`` with `TIPSCallback`
            kept on the model (`tips_keras.training.calibration.calibration_data`), or none if there
            is none (a model loaded from a file); ``None``: evaluate with the shared statistics.
        recalibration_batches: forward passes per recalibration (of
            ``recalibration_batch_size`` images).
        recalibration_batch_size: images per recalibration pass.
        report_shared_statistics: with recalibration, also evaluate each configuration with the
            supernet's shared BatchNorm statistics (``accuracy_no_recal`` in the front; twice the
            evaluation time).
        batch_size: validation images per forward pass; None (default): each evaluation's own
            default (2,048 for ``"shared_prefix"``, 256 for ``"compiled"``).
        seed: seed of the oracle's proposals.
        importance: per-gate importance (default: ``model.controller.importance``; all zeros
            means uniform).
        progress: show a tqdm progress bar.
        evaluation: how trials are evaluated (the same accuracies either way):
            ``"shared_prefix"`` (`SharedPrefixEvaluator`: layer by layer, each feature map computed
            once per on/off state of the gates before it and cached, BatchNorm recalibrated per
            block; the fast choice for a search), ``"compiled"`` (`ConfigEvaluator`: the whole
            configuration in one compiled call per trial), or ``"auto"`` (default: shared-prefix
            unless the model has a layer it cannot replay, then compiled).
        cache_bytes: the shared-prefix cache's size in bytes (feature maps kept between trials).
        compute_dtype: ``"float32"`` (default) or ``"bfloat16"``: the shared-prefix evaluation's
            convolutions in bfloat16 (see `SharedPrefixEvaluator`; faster on CPUs with native
            bfloat16 kernels, accuracies within rounding of float32). The compiled evaluation
            is float32 only.
        **oracle_kwargs: more oracle options (e.g. ``mutation_rate`` for ``"tips"``).

    Raises:
        ValueError: not an anytime supernet, bad budgets (e.g. one below the smallest
            configuration: the message names its FLOPs; or one given twice), bad validation or
            recalibration data (scaled floats for a model whose input is raw uint8), unknown oracle,
            or a resumed project made with other supernet weights / budgets / validation data,
            or an unknown ``evaluation`` or ``compute_dtype``, or ``compute_dtype="bfloat16"`` with
            the compiled evaluation (asked for, or the fallback for a model the shared-prefix
            evaluation cannot replay).

    Example:
        >>> search = tips.search.ExitSearch(model, validation_data=(x_val, y_val),
        ...                                 budgets=[0.25, 0.5, 0.75, 1.0], max_trials=300,
        ...                                 directory="runs/search")  # doctest: +SKIP
        >>> front = search.run()  # doctest: +SKIP
        >>> print(front.table()); front.best(0.5); front.plot("pareto.png")  # doctest: +SKIP
    """

    def __init__(self, model, validation_data, budgets=(0.25, 0.5, 0.75, 1.0), max_trials=100,
                 oracle="tips", directory="runs/search", project_name="exit_search", overwrite=False,
                 recalibration_data="auto", recalibration_batches=4, recalibration_batch_size=128,
                 report_shared_statistics=False, batch_size=None, seed=0, importance=None, progress=True,
                 evaluation="auto", cache_bytes=1 << 30, compute_dtype="float32", **oracle_kwargs):
        if not isinstance(model, AnytimeModel):
            raise ValueError("Invalid value for argument `model`. Expected a tips_keras.AnytimeModel "
                             "(a gated supernet from tips_keras.supernet.zoo or tips_keras.anytime). "
                             f"Received: model of type {type(model).__name__}")
        self.model = model
        recalibration_data = resolve_calibration(model, recalibration_data)
        if recalibration_data is not None:  # raw values for a model with an integer input
            recalibration_data = check_model_inputs(model, recalibration_data, "recalibration_data")
        if isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
            validation_data = (check_model_inputs(model, validation_data[0], "validation_data"),
                               validation_data[1])
        self.space = SearchSpace(model, importance=importance)
        if evaluation not in EVALUATIONS:
            raise ValueError(f"Invalid value for argument `evaluation`. Expected one of {EVALUATIONS}. "
                             f"Received: evaluation={evaluation!r}")
        compute_dtype = precision.check_compute_dtype(compute_dtype)
        common = dict(recalibration_data=recalibration_data,
                      recalibration_batches=recalibration_batches,
                      recalibration_batch_size=recalibration_batch_size,
                      report_shared_statistics=report_shared_statistics)
        if batch_size is not None:
            common["batch_size"] = batch_size
        self.evaluator = None
        if evaluation != "compiled":
            try:
                self.evaluator = SharedPrefixEvaluator(model, validation_data, cache_bytes=cache_bytes,
                                                       compute_dtype=compute_dtype, **common)
            except UnsupportedModelError:
                if evaluation == "shared_prefix":
                    raise
        if self.evaluator is None:
            if compute_dtype != "float32":
                raise ValueError(
                    "Invalid value for argument `compute_dtype`. The compiled evaluation "
                    f"(evaluation={evaluation!r}{' fell back to it for this model' if evaluation == 'auto' else ''}) "
                    "computes in float32 only; bfloat16 needs the shared-prefix evaluation. "
                    f"Received: compute_dtype={compute_dtype!r}")
            self.evaluator = ConfigEvaluator(model, validation_data, **common)
        recal = None if recalibration_data is None else [
            len(self.evaluator.recalibration_data), recalibration_batches, recalibration_batch_size]
        fingerprint = {"weights": _weights_digest(model), "validation": self.evaluator.fingerprint,
                       "recalibration": recal}
        if compute_dtype != "float32":  # (absent for float32: projects made before it resume)
            fingerprint["compute_dtype"] = compute_dtype
        self.oracle = get_oracle(oracle, self.space, budgets, max_trials=max_trials, seed=seed,
                                 fingerprint=fingerprint, **oracle_kwargs)
        self.budgets = list(self.oracle.budget_values)
        self.tuner = tuner_lib.ConfigTuner(
            self.oracle, self.evaluator, self.space, progress=progress, directory=directory,
            project_name=project_name, overwrite=bool(overwrite) and not tuner_lib.is_worker())
        self.metadata = {
            "model": model.name, "oracle": self.oracle.kind, "seed": seed,
            "importance": dict(zip(self.space.gate_names, map(float, self.space.importance))),
            "importance_from_training": self.space.importance_given,
            "validation_examples": self.evaluator.num_examples,
            "evaluation": "compiled" if isinstance(self.evaluator, ConfigEvaluator) else "shared_prefix",
            "compute_dtype": compute_dtype,
            "recalibration": None if recal is None else dict(zip(("images", "batches", "batch_size"), recal)),
        }

    def run(self):
        """Runs the search (keras-tuner drives it) and returns the `ParetoFront`.

        In a keras-tuner worker process the front holds only the configurations that worker
        evaluated; the chief's front holds all of them. The supernet's active configuration is
        restored afterwards.

        Returns:
            A `tips_keras.search.ParetoFront`.

        Example:
            >>> search = ExitSearch(model, (x_val, y_val), budgets=[0.5, 1.0])  # doctest: +SKIP
            >>> front = search.run()  # doctest: +SKIP
        """
        active = self.model.get_active_config()
        try:
            self.tuner.search(verbose=0)
        finally:
            self.model.set_config(active)
        return self.front()

    def front(self):
        """The `ParetoFront` of the trials completed so far (a worker: its own trials).

        Use it to look at a resumed or interrupted search without running trials.

        Returns:
            A `tips_keras.search.ParetoFront`.

        Example:
            >>> print(search.front().table())  # doctest: +SKIP
        """
        metadata = dict(self.metadata)
        if tuner_lib.is_worker():
            points = [front_lib.make_point(self.space, values, metrics, trial_id)
                      for trial_id, values, metrics in self.tuner.results]
            metadata["trials"] = len(points)
            return front_lib.ParetoFront(points, self.space.full_flops, self.budgets, metadata)
        trials = list(self.oracle.trials.values())
        metadata["trials"] = len(trials)
        return front_lib.from_trials(trials, self.space, self.budgets, metadata)
