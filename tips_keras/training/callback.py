"""`TIPSCallback`: the anytime training recipe and TIPS path sampling, inside ``model.fit``.

``model.fit(x, y, callbacks=[TIPSCallback()])`` trains a gated supernet so that every
configuration is deployable: per step the sandwich rule's largest and smallest sub-networks plus
two paths drawn by TIPS, every exit the paths reach, soft targets from an EMA teacher, updates only
for the parameters a step used, and a warm-up + cosine learning rate (`recipes.RECIPES`). The
pieces:

* per step the callback draws the step's paths with a generator seeded by ``(seed, epoch,
  batch)``, sets the learning rate, and hands the paths to the `AnytimeStep` it attached to the
  model (variable assigns: no re-trace);
* per epoch it builds the DTMC of the sub-networks sampled in the epoch, computes TAS, and the
  importance of each gate (default: the share of FLOPs budgets whose highest-TPS path uses it,
  `tips_keras.dtmc.budget`), updates the TIPS sampler and stores importance and sampling
  probabilities in the model's `SubnetController`; ``importance/<gate>`` goes to the logs;
* validation reports the sub-networks as deployed: BatchNorm statistics are recalibrated per
  configuration on a calibration sample taken from ``fit``'s own ``x``, Keras' ``val_*`` metrics
  describe ``eval_config`` (the largest sub-network), and ``val_<name>_accuracy`` each of
  ``report_configs`` (largest and smallest by default), for History, CSVLogger and TensorBoard.

Resuming (``keras.callbacks.BackupAndRestore``, or weights loaded before ``fit``) continues
exactly: the sampler state lives in the controller's variables, the EMA teacher is saved with the
model's weights, the learning rate is a function of (epoch, batch), and the path draws depend only
on (seed, epoch, batch) and the sampler state, which is read again at the first step of every
epoch (after every callback's ``on_train_begin``, so after ``BackupAndRestore`` restored the
backup). `AnytimeModel.fit` moves this callback to the front of the list, so a backup written at
the end of an epoch already holds that epoch's update. If a run resumes at a batch offset inside
an epoch, the draws of the skipped batches are replayed into the epoch's DTMC.
"""

import warnings

import keras
import numpy as np

from tips_keras import dtmc
from tips_keras.supernet import analytic_flops
from tips_keras.supernet.model import AnytimeModel
from tips_keras.training import optimizer as optimizer_lib
from tips_keras.training import recipes
from tips_keras.training import sampling
from tips_keras.training import signals as signals_lib
from tips_keras.training import teacher as teacher_lib
from tips_keras.training import validation as validation_lib
from tips_keras.training.batchnorm import Recalibrator
from tips_keras.training.batchnorm import calibration_data  # noqa: F401  (re-exported)
from tips_keras.training.batchnorm import set_calibration_data
from tips_keras.training.schedule import warmup_cosine
from tips_keras.training.step import AnytimeStep

class TIPSCallback(keras.callbacks.Callback):
    """Trains an anytime supernet inside ``model.fit``: the recipe, TIPS sampling, deployed metrics.

    Args:
        sampler: rule for the drawn paths: ``"tips"`` (default), ``"uniform"``, ``"sandwich"``
            (uniform, always with the largest and smallest) or ``"stochastic_depth"``, or a
            callable ``space -> tips_keras.training.sampling.Sampler``.
        recipe: ``"anytime"`` (default) or ``"single_path"`` (tips-keras 0.1's rule, a baseline);
            see `tips_keras.training.recipes`. The next nine arguments default to the recipe's.
        paths_per_step: sub-networks trained per batch (gradients averaged in one step).
        sandwich: the largest and the smallest sub-network are paths of every step.
        exits: ``"reached"`` (every exit a path's trunk reaches learns) or ``"active"``.
        teacher: ``"ema"`` (an exponential moving average of the weights, its largest
            configuration) or ``"inplace"`` (the step's first, largest path).
        distillation: weight ``a`` in [0, 1]: the paths after the largest learn
            ``(1 - a) * loss + a * KL(teacher || path)``; 0 disables the teacher.
        ema_decay: decay of the EMA teacher (warmed up, `EMATeacher`).
        lr_schedule: ``"cosine"`` (linear warm-up, then cosine decay to 0, per step; the
            optimizer's learning rate at the start of ``fit`` is the peak) or ``"constant"``. An
            optimizer built with a ``LearningRateSchedule`` keeps its own.
        warmup: warm-up length, a fraction of all training steps.
        masked_updates: parameters that no path of a step used are not stepped (no momentum, no
            weight decay; `tips_keras.training.optimizer`).
        final_weights: ``"trained"`` (default) or ``"ema"``: copy the EMA teacher's weights into
            the model at the end of training.
        seed: seed of the path draws; the draw of step (epoch, batch) depends only on these.
        importance: how the DTMC's scores become a per-gate importance: ``"budget_paths"``
            (default: the share of ``budgets`` whose highest-TPS configuration switches the gate
            on, `tips_keras.dtmc.budget`), ``"best_path"`` (the best TPS of any path through the
            gate, min-max normalised: tips-keras 0.1) or ``"marginal"`` (no DTMC: each gate's
            measured effect on ``signal``, `tips_keras.training.signals`).
        budgets: FLOPs budgets, fractions of the full FLOPs, of the important paths.
        coupling: λ >= 0, the total weight that ties each node to its copies in the other
            sampled sub-networks of the epoch (each of the ``T - 1`` pairs gets ``λ / (T - 1)``;
            the paper's pairwise weight of 1 would swamp the sub-networks' own edges once ``T``
            is the number of training steps).
        score: ``"sum"`` (TPS = sum of TAS along the path, the authors' analysis; default) or
            ``"log"`` (the product of TAS, in log space).
        signal: ``None``, ``"loss"`` or ``"grad_norm"``: weight each sampled sub-network in the
            DTMC by the loss / gradient norm it had (`tips_keras.training.signals`).
        eval_config: configuration evaluated by Keras' validation and left active after training.
        report_configs: configurations whose deployed validation accuracy is logged as
            ``val_<name>_accuracy``: a sequence of ``"largest"`` / ``"smallest"`` or a dict
            ``{name: configuration}``; empty to skip.
        recalibration_data: ``"auto"`` (default: ``calibration_size`` inputs of ``fit``'s own
            ``x``), training inputs, or ``None`` (evaluate with the shared statistics).
        calibration_size: inputs taken for ``"auto"``.
        validation_size: validation examples used by the deployed report (``None``: all).
        terminate_on_nan: stop training when the loss becomes NaN/Inf, naming the sub-network.
        **sampler_options: options of the sampler (``p_min``, ``p_max``, ``smoothing``, ``focus``
            for TIPS, ``final_survival`` for stochastic depth, ``largest_prob``).

    Attributes:
        importance: ``{gate name: importance in [0, 1]}`` after the latest epoch.
        important_paths: ``{budget: Configuration}``, the highest-TPS configuration per budget
            after the latest epoch (``importance="budget_paths"``).
        history: per-epoch dicts with ``importance``, ``gate_probs`` and ``sampled``.
        recipe_values: the resolved recipe.

    Raises:
        ValueError: an unknown sampler, recipe, score or importance rule, or any invalid value
            (the message gives what was received), a model that is not a gated supernet, or an
            epoch in which no step ran.

    Example:
        >>> model.fit(x, y, epochs=10, validation_data=(x_val, y_val),
        ...           callbacks=[TIPSCallback()])  # doctest: +SKIP
        >>> history.history["val_smallest_accuracy"][-1]  # doctest: +SKIP
    """

    runs_first = True  # AnytimeModel.fit moves it before checkpointing / logging callbacks

    def __init__(self, sampler="tips", recipe="anytime", paths_per_step=None, sandwich=None, exits=None,
                 teacher=None, distillation=None, ema_decay=None, lr_schedule=None, warmup=None,
                 masked_updates=None, final_weights=None, seed=0, importance="budget_paths",
                 budgets=(0.1, 0.25, 0.5, 0.75), coupling=1.0, score="sum", signal=None, eval_config="largest",
                 report_configs=("largest", "smallest"), recalibration_data="auto", calibration_size=1024,
                 validation_size=None, terminate_on_nan=True, **sampler_options):
        super().__init__()
        recipes.check_dtmc_arguments(sampler, coupling, score)
        overrides = dict(paths_per_step=paths_per_step, sandwich=sandwich, exits=exits, teacher=teacher,
                         distillation=distillation, ema_decay=ema_decay, lr_schedule=lr_schedule,
                         warmup=warmup, masked_updates=masked_updates, final_weights=final_weights)
        self.recipe = recipe
        self.recipe_values = recipes.resolve_recipe(recipe, overrides, sampler)
        importance = signals_lib.check_importance_rule(importance)
        if importance == "marginal" and signal is None:
            signal = "loss"
        self.sampler_name = sampler
        self.seed = int(seed)
        self.coupling = float(coupling)
        self.score = score
        self.signal = signals_lib.check_signal(signal)
        self.importance_rule = importance
        self.budgets = recipes.check_budgets(budgets)
        self.eval_config = eval_config
        if isinstance(report_configs, dict):
            self.report_configs = dict(report_configs)
        else:
            self.report_configs = {str(name): name for name in report_configs}
        if not (isinstance(recalibration_data, str) and recalibration_data == "auto") and \
                recalibration_data is not None and not hasattr(recalibration_data, "shape"):
            recalibration_data = np.asarray(recalibration_data)
        self.recalibration_data = recalibration_data
        for arg, value in (("calibration_size", calibration_size),
                           ("validation_size", 1 if validation_size is None else validation_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid value for argument `{arg}`. Expected a positive integer. "
                                 f"Received: {arg}={value!r}")
        self.calibration_size = calibration_size
        self.validation_size = validation_size
        self.terminate_on_nan = terminate_on_nan
        self.sampler_options = dict(sampler_options)
        values = self.recipe_values
        if values["sandwich"] and sampler != "sandwich" and not callable(sampler):
            self.sampler_options.setdefault("include_largest", True)
            self.sampler_options.setdefault("include_smallest", True)
        elif values["distillation"] > 0 and values["teacher"] == "inplace" and sampler in ("tips", "uniform"):
            self.sampler_options.setdefault("include_largest", True)
        self.sampler = None
        self.step = None
        self.importance = {}
        self.important_paths = {}
        self.history = []
        self.nan_config = None
        self._fit_arguments = {}
        self._epoch = 0
        self._records = []
        self._signals = []
        self._epoch_started = False
        self._recalibrator = None
        self._report = None
        self._base_lr = None
        self._training = False
        self._pending = {}

    # -- set-up -------------------------------------------------------------------------------
    def set_model(self, model):
        """Attaches the callback to ``model`` after checking that it is a gated supernet.

        Args:
            model: the model being trained.

        Raises:
            ValueError: not an `AnytimeModel`, or one whose gate DAG cannot be read.
        """
        if not isinstance(model, AnytimeModel):
            raise ValueError(
                "Invalid value for argument `model`. TIPSCallback needs an AnytimeModel with "
                "gated layers (tips_keras.zoo builders or tips_keras.anytime(model)). "
                f"Received: model of type {type(model).__name__}"
            )
        model.topology  # Raises a clear ValueError for a model without gates.
        super().set_model(model)

    def set_fit_arguments(self, arguments):
        """Receives ``fit``'s arguments (called by `AnytimeModel.fit` before training).

        Args:
            arguments: ``{name: value}`` of the ``fit`` call.
        """
        self._fit_arguments = dict(arguments)

    def _build_sampler(self, space):
        k = self.recipe_values["paths_per_step"]
        if callable(self.sampler_name):
            sampler = self.sampler_name(space)
            if not isinstance(sampler, sampling.Sampler):
                raise ValueError(
                    "Invalid value for argument `sampler`. A callable must return a "
                    f"tips_keras.training.sampling.Sampler. Received: {type(sampler).__name__}"
                )
            return sampler
        return sampling.get_sampler(self.sampler_name, space, paths_per_step=k, **self.sampler_options)

    def on_train_begin(self, logs=None):
        """Builds sampler, step, teacher, schedule and calibration; switches the model to the step.

        Args:
            logs: unused.

        Raises:
            ValueError: bad sampler options, or a ``sampler`` callable not returning a `Sampler`.
        """
        model, values = self.model, self.recipe_values
        space = model.config_space
        self.sampler = self._build_sampler(space)
        if not self._load_state():  # resumed (BackupAndRestore, loaded weights): keep the stored state
            self._store_state()
        teacher = None
        if values["distillation"] > 0:
            teacher = teacher_lib.attach(model, values["ema_decay"]) if values["teacher"] == "ema" else "inplace"
        first_is_largest = bool(getattr(self.sampler, "include_largest", False))
        self.step = AnytimeStep(model, self.sampler.paths_per_step, exits=values["exits"], teacher=teacher,
                                distillation=values["distillation"], first_is_largest=first_is_largest,
                                record_signals=self.signal is not None)
        if values["masked_updates"]:
            optimizer_lib.mask_updates(model.optimizer)
        self._base_lr = None
        if values["lr_schedule"] == "cosine" and not isinstance(
                model.optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            self._base_lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        self._prepare_calibration()
        model.set_training_step(self.step)
        self._training = True

    def _prepare_calibration(self):
        model = self.model
        data = self.recalibration_data
        if isinstance(data, str):  # "auto"
            data = validation_lib.calibration_sample(self._fit_arguments, self.calibration_size, self.seed)
            if data is None and self._fit_arguments.get("x") is not None:
                warnings.warn(
                    "TIPSCallback: no calibration sample could be taken from fit's x (neither an "
                    "array nor a dataset of (x, y) batches); validation uses the shared BatchNorm "
                    "statistics. Pass recalibration_data=<training inputs>.", RuntimeWarning, stacklevel=3)
        self._recalibrator = None if data is None else Recalibrator(model, data)
        set_calibration_data(model, data)
        self._report = None
        if self.report_configs:
            sample = validation_lib.validation_sample(self._fit_arguments, self.validation_size)
            if sample is not None:
                self._report = validation_lib.DeployedValidation(model, self.report_configs, sample, data)

    def _store_state(self):
        controller = self.model.controller
        controller.gate_probs.assign(self.sampler.gate_probs.astype(np.float32))
        controller.exit_probs.assign(self.sampler.exit_probs.astype(np.float32))
        rows = np.full(tuple(controller.important_paths.shape), -1.0, np.float32)
        important = np.asarray(getattr(self.sampler, "important", ()), np.float32).reshape(-1, rows.shape[1])
        rows[: len(important)] = important[: len(rows)]
        controller.important_paths.assign(rows)

    def _load_state(self):
        """Reads the sampler state from the controller (the source of truth after a resume).

        Returns:
            True when a stored state was restored (adaptive sampler, at least one update).
        """
        controller = self.model.controller
        if not self.sampler.adaptive or float(keras.ops.convert_to_numpy(controller.updates)) <= 0:
            return False
        self.sampler.set_state(keras.ops.convert_to_numpy(controller.gate_probs),
                               keras.ops.convert_to_numpy(controller.exit_probs),
                               keras.ops.convert_to_numpy(controller.important_paths))
        values = keras.ops.convert_to_numpy(controller.importance)
        self.importance = dict(zip(self.model.config_space.gate_names, map(float, values)))
        return True

    # -- per step -----------------------------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        """Starts recording the epoch's paths.

        Args:
            epoch: the epoch index.
            logs: unused.
        """
        self._epoch = epoch
        self._records = []
        self._signals = []
        self._epoch_started = False

    def step_paths(self, epoch, batch):
        """The paths of training step (epoch, batch): deterministic given the sampler state.

        Args:
            epoch: the epoch index.
            batch: the batch index within the epoch.

        Returns:
            A float32 array (paths_per_step, G + 1) of control vectors.

        Example:
            >>> cb.step_paths(epoch=0, batch=0)  # doctest: +SKIP
        """
        return self.sampler.sample(np.random.default_rng([self.seed, epoch, batch]))

    def learning_rate(self, epoch, batch):
        """The learning rate of step (epoch, batch) under ``lr_schedule="cosine"``.

        Args:
            epoch: the epoch index.
            batch: the batch index.

        Returns:
            A float, or ``None`` when the callback does not schedule the learning rate (or runs
            outside ``fit``).
        """
        params = self.params or {}
        if self._base_lr is None or not params.get("epochs"):
            return None  # not scheduling, or not inside fit
        epochs = int(params["epochs"])
        steps = params.get("steps")
        if not steps:  # unknown epoch length: one value per epoch
            return self._base_lr * warmup_cosine(epoch, epochs, round(self.recipe_values["warmup"] * epochs))
        total = epochs * int(steps)
        return self._base_lr * warmup_cosine(epoch * int(steps) + batch, total,
                                             round(self.recipe_values["warmup"] * total))

    def on_train_batch_begin(self, batch, logs=None):
        """Draws the step's paths, records them, sets the learning rate and hands the paths over.

        Args:
            batch: the batch index.
            logs: unused.
        """
        if not self._epoch_started:
            self._epoch_started = True
            self._load_state()
            stride = max(int(getattr(self.model, "steps_per_execution", 1) or 1), 1)
            for skipped in range(0, int(batch), stride):  # resumed at a batch offset
                self._records.append(self.step_paths(self._epoch, skipped))
                if self.signal is not None:
                    self._signals.append(np.full(len(self._records[-1]), np.nan))
        paths = self.step_paths(self._epoch, batch)
        self._records.append(paths)
        lr = self.learning_rate(self._epoch, batch)
        if lr is not None:
            self.model.optimizer.learning_rate = lr
        self.step.set_paths(paths)

    def on_train_batch_end(self, batch, logs=None):
        """Records the step's per-path signal (with ``signal``); stops training at a NaN / inf loss.

        Args:
            batch: the batch index.
            logs: the batch logs (``"loss"`` is read).
        """
        if self.signal is not None:
            self._signals.append(signals_lib.signal_column(self.step.path_signals(), self.signal))
        loss = (logs or {}).get("loss")
        if self.terminate_on_nan and loss is not None and not np.isfinite(float(loss)):
            space = self.model.config_space
            paths = [space.resolve((int(v[-1]), [int(b) for b in v[:-1]])) for v in self._records[-1]]
            self.nan_config = [p.to_dict(space.gate_names) for p in paths]
            message = (
                f"TIPSCallback: loss became {float(loss)} at epoch {self._epoch}, batch {batch}; "
                f"training stopped. Sub-network(s) trained in that step: {self.nan_config}"
            )
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            print(message)
            self.model.stop_training = True

    # -- validation ---------------------------------------------------------------------------
    def _activate_eval_config(self):
        if self._recalibrator is None:
            self.model.set_config(self.eval_config)
        else:
            self._recalibrator(self.eval_config)

    def on_test_begin(self, logs=None):
        """Activates ``eval_config`` for validation, recalibrated on the calibration sample.

        Args:
            logs: unused.
        """
        if self._recalibrator is not None:
            self._recalibrator.save()
        self._activate_eval_config()

    def on_test_end(self, logs=None):
        """Evaluates every report configuration; `on_epoch_end` logs ``val_<name>_accuracy``.

        Args:
            logs: unused (Keras passes callbacks a copy of the validation logs).
        """
        if self._report is not None and self._training:
            # Keras hands callbacks a copy of the validation logs: the epoch logs get these.
            self._pending = {f"val_{k}": v for k, v in self._report.evaluate().items()}
        if self._recalibrator is not None:
            self._recalibrator.restore()
        self.model.set_config(self.eval_config)

    def on_train_end(self, logs=None):
        """Restores the standard step, optimizer and learning rate; activates ``eval_config``.

        With ``final_weights="ema"`` the EMA teacher's weights replace the trained ones first.
        ``eval_config`` is left recalibrated on the calibration sample.

        Args:
            logs: unused.
        """
        model = self.model
        self._training = False
        model.set_training_step(None)
        optimizer_lib.unmask_updates(model.optimizer)
        if self._base_lr is not None:
            model.optimizer.learning_rate = self._base_lr
        teacher = teacher_lib.detach(model)
        if teacher is not None and self.recipe_values["final_weights"] == "ema":
            teacher.copy_to(model)
        self._activate_eval_config()

    # -- per epoch ----------------------------------------------------------------------------
    def compute_importance(self, vectors, weights=None):
        """TIPS importance per gate and TAS per node for sampled control vectors.

        Builds the DTMC of the sampled sub-networks (each node tied to its copies with a total
        weight ``coupling``), computes TAS, then the importance by the ``importance`` rule
        (``"budget_paths"`` also fills ``important_paths``).

        Args:
            vectors: array (T, G + 1) of sampled control vectors, T >= 1.
            weights: optional (T,) positive weights of the sub-networks in the DTMC.

        Returns:
            ``(importance, tas)``: arrays (G,) in [0, 1] and (V,) summing to 1.

        Raises:
            ValueError: no vectors (an epoch in which no step ran).

        Example:
            >>> importance, tas = cb.compute_importance(vectors)  # doctest: +SKIP
        """
        topo = self.model.topology
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError(
                "Invalid value: empty epoch. Expected at least one sampled sub-network to build "
                f"the DTMC. Received: {len(vectors)} sub-networks in epoch {self._epoch}"
            )
        lam = self.coupling / max(len(vectors) - 1, 1)
        if self.importance_rule == "best_path":
            return dtmc.importance_from_configs(
                topo.num_nodes, topo.edges, topo.edge_gate, topo.num_gates, topo.edge_masks(vectors, prune=False),
                topo.source, topo.sink, lam=lam, mode=self.score, weights=weights)
        tas = dtmc.tas_from_configs(topo.num_nodes, topo.edges, topo.edge_masks(vectors), topo.source,
                                    topo.sink, lam=lam, prune=False, weights=weights)
        node_value = tas if self.score == "sum" else np.log(np.maximum(tas, 1e-300))
        paths = important_paths(self.model, node_value, self.budgets)
        space = self.model.config_space
        self.important_paths = {b: None if p is None else space.resolve((p[0], list(p[1])))
                                for b, p in zip(self.budgets, paths)}
        return dtmc.budget_importance(paths, topo.num_gates), tas

    def on_epoch_end(self, epoch, logs=None):
        """Updates importance and sampler from the epoch's paths and stores both in the controller.

        Args:
            epoch: the epoch index.
            logs: the epoch logs (``val_<name>_accuracy`` of the report and ``importance/<gate>``
                added).

        Raises:
            ValueError: no step ran in the epoch.
        """
        vectors = np.concatenate(self._records, axis=0) if self._records else np.zeros((0, 0))
        values = np.concatenate(self._signals) if self.signal is not None and len(vectors) else None
        if self.importance_rule == "marginal" and values is not None:
            importance = signals_lib.marginal_importance(vectors, values, self.model.config_space.gate_min_exit,
                                                         self.signal)
        else:
            weights = None if values is None else signals_lib.exit_normalized_weights(vectors, values)
            importance, _ = self.compute_importance(vectors, weights)
        paths = [c.to_vector() for c in self.important_paths.values() if c is not None]
        self.sampler.update(importance, np.stack(paths) if paths else None)
        controller = self.model.controller
        controller.importance.assign(importance.astype(np.float32))
        controller.updates.assign(controller.updates + 1.0)
        self._store_state()
        names = self.model.config_space.gate_names
        self.importance = dict(zip(names, map(float, importance)))
        self.history.append({"epoch": epoch, "importance": dict(self.importance),
                             "gate_probs": dict(zip(names, map(float, self.sampler.gate_probs))),
                             "sampled": int(len(vectors))})
        if logs is not None:
            logs.update(self._pending)
            for name, value in self.importance.items():
                logs[f"importance/{name}"] = value
        self._pending = {}


def important_paths(model, node_value, budgets):
    """The highest-TPS configuration of ``model`` within each FLOPs budget.

    TPS and FLOPs are additive over the gates (`tips_keras.dtmc.budget`): the base value and cost
    of each exit and each gate's increment are read off ``E + G`` probe configurations.

    Args:
        model: a gated supernet.
        node_value: (V,) score of each node (TAS for the sum TPS, log TAS for the product).
        budgets: fractions of the full FLOPs.

    Returns:
        The list of `tips_keras.dtmc.best_configurations` (``(exit, bits, tps, flops)`` or None).

    Example:
        >>> important_paths(model, tas, [0.25, 0.5])  # doctest: +SKIP
    """
    topo = model.topology
    space = topo.space
    g, e = space.num_gates, space.num_exits
    base = np.zeros((e, g + 1), np.float32)
    base[:, -1] = np.arange(e)
    probes = np.concatenate([np.eye(g, dtype=np.float32),  # gate g alone, at the first exit reaching it
                             np.asarray(space.gate_min_exit, np.float32)[:, None]], axis=1)
    vectors = np.concatenate([base, probes])
    nodes = topo.node_masks(vectors).astype(np.float64)
    value = nodes @ np.asarray(node_value, dtype=np.float64)
    cost = np.array([c for c, _ in analytic_flops.cost_vectors(model, vectors)], dtype=np.float64)
    exit_of_gate = np.asarray(space.gate_min_exit)
    gate_value = value[e:] - value[exit_of_gate]
    gate_cost = cost[e:] - cost[exit_of_gate]
    full = float(analytic_flops.flops(model, "largest"))
    return dtmc.best_configurations(value[:e], gate_value, cost[:e], gate_cost, exit_of_gate,
                                    [b * full for b in budgets])
