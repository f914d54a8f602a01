"""`TIPSCallback`: the anytime training recipes and TIPS path sampling, inside ``model.fit``.

``model.fit(x, y, callbacks=[TIPSCallback()])`` trains a gated supernet so that the menu of
FLOPs budgets is deployable (the recipe: `tips_keras.training.recipes`). Per step the callback
draws the step's paths with a generator seeded by ``(seed, epoch, batch)``, sets the learning rate
and hands the paths to the `AnytimeStep` it attached to the model (variable assigns: no re-trace).
Per epoch it builds the DTMC of the sub-networks sampled in the epoch and updates the importance,
the important paths and the sampler (`tips_keras.training.importance`), stores them in the
model's `SubnetController` (`tips_keras.training.state`) and logs ``importance/<gate>``.
Validation reports the sub-networks as deployed (`tips_keras.training.validation`).

Resuming (``keras.callbacks.BackupAndRestore``) continues exactly: the sampler state lives in
the controller, the EMA teacher is saved with the weights, the learning rate is a function of
(epoch, batch), the draws of (seed, epoch, batch) and the state, which is read again at the
first step of every epoch (after ``BackupAndRestore`` restored the backup). `AnytimeModel.fit`
moves this callback first, so an epoch-end backup holds the epoch's update. If a run resumes at a
batch offset, the draws of the skipped batches are replayed into the epoch's DTMC.
"""

import warnings

import keras
import numpy as np

from tips_keras.supernet.model import AnytimeModel
from tips_keras.training import importance as importance_lib
from tips_keras.training import optimizer as optimizer_lib
from tips_keras.training import recipes
from tips_keras.training import sampling
from tips_keras.training import signals as signals_lib
from tips_keras.training import state as state_lib
from tips_keras.training import teacher as teacher_lib
from tips_keras.training import validation as validation_lib
from tips_keras.training.epoch_record import EpochRecord
from tips_keras.training.schedule import StepSchedule, aux_weight_at, training_fraction
from tips_keras.training.step import AnytimeStep

class TIPSCallback(keras.callbacks.Callback):
    """Trains an anytime supernet inside ``model.fit``: the recipe, TIPS sampling, deployed metrics.

    Args:
        sampler: rule for the drawn paths: ``"tips"`` (default), ``"uniform"``, ``"sandwich"``
            (uniform, always with the largest and smallest) or ``"stochastic_depth"``, or a
            callable ``space -> tips_keras.training.sampling.Sampler``.
        recipe: ``"menu"`` (default: the largest and the ``budgets``' important paths, the menu
            a search then finds), ``"anytime"`` (the sandwich rule over the whole space) or
            ``"single_path"`` (tips-keras 0.1's rule, a baseline); see
            `tips_keras.training.recipes`. The arguments from `paths_per_step` to
            `final_weights` default to the recipe's.
        paths_per_step: sub-networks trained per batch (gradients averaged in one step).
        sandwich: the largest and the smallest sub-network are paths of every step.
        exits: ``"reached"`` (every exit a path's trunk reaches learns), ``"active"`` or
            ``"reached_except_largest"`` (the largest path learns at its own exit only).
        aux_weight: weight in [0, 1] of the auxiliary exits (reached before a path's own exit) in
            its loss, or ``(start, end)``: a half cosine from ``start`` to ``end`` over the steps
            (`tips_keras.training.schedule.aux_weight_at`, as Deeply-Supervised Nets fade theirs).
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
        budgets: FLOPs budgets, fractions of the full FLOPs, of the important paths (with
            ``recipe="menu"``: the menu trained).
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
            ``val_<name>_accuracy``: a sequence of ``"largest"`` / ``"smallest"`` / ``"budgets"``
            (each budget's important path, ``val_budget25_accuracy`` for 0.25) or a dict
            ``{name: configuration}``; empty to skip. Default (``None``): the largest and the
            smallest, with ``recipe="menu"`` also the budgets.
        recalibration_data: ``"auto"`` (default: ``calibration_size`` inputs of ``fit``'s own
            ``x``), training inputs, or ``None`` (evaluate with the shared statistics).
        calibration_size: inputs taken for ``"auto"``.
        validation_size: validation examples used by the deployed report (``None``: all).
        terminate_on_nan: stop training when the loss becomes NaN/Inf, naming the sub-network.
        **sampler_options: options of the sampler (``p_min``, ``p_max``, ``smoothing``, ``focus``
            for TIPS, ``final_survival`` for stochastic depth, ``largest_prob``, and
            ``include_largest`` / ``include_smallest``, which the sandwich rule sets unless given:
            ``include_smallest=False`` trains the largest path and ``paths_per_step - 1`` drawn
            ones, e.g. only the menu's important paths with ``budgets`` and ``focus=1.0``).

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

    def __init__(self, sampler="tips", recipe="menu", paths_per_step=None, sandwich=None, exits=None,
                 aux_weight=None, teacher=None, distillation=None, ema_decay=None, lr_schedule=None, warmup=None,
                 masked_updates=None, final_weights=None, seed=0, importance="budget_paths",
                 budgets=(0.1, 0.25, 0.5, 0.75), coupling=1.0, score="sum", signal=None, eval_config="largest",
                 report_configs=None, recalibration_data="auto", calibration_size=1024,
                 validation_size=None, terminate_on_nan=True, **sampler_options):
        super().__init__()
        recipes.check_dtmc_arguments(sampler, coupling, score)
        overrides = dict(paths_per_step=paths_per_step, sandwich=sandwich, exits=exits, aux_weight=aux_weight,
                         teacher=teacher, distillation=distillation, ema_decay=ema_decay,
                         lr_schedule=lr_schedule, warmup=warmup, masked_updates=masked_updates,
                         final_weights=final_weights)
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
        (self.report_configs, self._report_budgets, self.recalibration_data, self.calibration_size,
         self.validation_size) = validation_lib.check_arguments(report_configs, recalibration_data, calibration_size,
                                                                validation_size, menu=recipe == "menu")
        self.terminate_on_nan = terminate_on_nan
        self.sampler_options = recipes.sampler_options(self.recipe_values, sampler, sampler_options, recipe)
        self.sampler = None
        self.step = None
        self.importance = {}
        self.important_paths = {}
        self.history = []
        self.nan_config = None
        self._fit_arguments = {}
        self._epoch = 0
        self._record = EpochRecord(with_signal=self.signal is not None)
        self._epoch_started = False
        self._validation = None
        self._schedule = StepSchedule(None)
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
        self._validation = validation_lib.ValidationPass(model, self.eval_config)  # fit replaces it

    def set_fit_arguments(self, arguments):
        """Receives ``fit``'s arguments (called by `AnytimeModel.fit` before training).

        Args:
            arguments: ``{name: value}`` of the ``fit`` call.
        """
        self._fit_arguments = dict(arguments)

    def on_train_begin(self, logs=None):
        """Builds sampler, step, teacher, schedule and calibration; switches the model to the step.

        Raises:
            ValueError: bad sampler options, or a ``sampler`` callable not returning a `Sampler`.
        """
        model, values = self.model, self.recipe_values
        space = model.config_space
        self.sampler = sampling.get_sampler(self.sampler_name, space, self.recipe_values["paths_per_step"],
                                            **self.sampler_options)
        if not self._load_state():  # resumed (BackupAndRestore, loaded weights): keep the stored state
            state_lib.store_state(self.sampler, model.controller)
        teacher = None
        if values["distillation"] > 0:
            teacher = teacher_lib.attach(model, values["ema_decay"]) if values["teacher"] == "ema" else "inplace"
        first_is_largest = bool(getattr(self.sampler, "include_largest", False))
        self.step = AnytimeStep(model, self.sampler.paths_per_step, exits=values["exits"], teacher=teacher,
                                distillation=values["distillation"], first_is_largest=first_is_largest,
                                record_signals=self.signal is not None)
        self.step.set_aux_weight(values["aux_weight"][0])
        if values["masked_updates"]:
            # one conditional per top-level layer (a gated block's variables take part together)
            optimizer_lib.mask_updates(model.optimizer, groups=[l.trainable_variables for l in model.layers])
        self._schedule = StepSchedule(values["warmup"]) if values["lr_schedule"] == "cosine" else StepSchedule(None)
        self._schedule.start(model.optimizer)
        self._validation = validation_lib.prepare(
            model, self._fit_arguments, self.recalibration_data, self.calibration_size,
            {**self.report_configs, **self._budget_report()}, self.validation_size, self.seed, self.eval_config)
        model.set_training_step(self.step)
        self._training = True

    def _budget_report(self):
        if not self._report_budgets:
            return {}
        return validation_lib.budget_configs(self.model, self.budgets, self.important_paths)

    def _load_state(self):
        """Reads the sampler state from the controller (the source of truth after a resume).

        Returns:
            True when a stored state was restored (adaptive sampler, at least one update).
        """
        importance = state_lib.load_state(self.sampler, self.model.controller)
        if importance is None:
            return False
        self.importance = dict(zip(self.model.config_space.gate_names, map(float, importance)))
        return True

    # -- per step -----------------------------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        """Starts recording the epoch's paths (``epoch``: its index)."""
        self._epoch = epoch
        self._record = EpochRecord(with_signal=self.signal is not None)
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
        return self._schedule.rate(self.params, epoch, batch)

    def on_train_batch_begin(self, batch, logs=None):
        """Draws the step's paths, records them, sets the learning rate and hands the paths over."""
        if not self._epoch_started:
            self._epoch_started = True
            self._load_state()
            stride = max(int(getattr(self.model, "steps_per_execution", 1) or 1), 1)
            # resumed at a batch offset: the skipped batches' draws go into the epoch's DTMC
            self._record.replay(lambda b: self.step_paths(self._epoch, b), range(0, int(batch), stride))
        paths = self.step_paths(self._epoch, batch)
        self._record.add(paths)
        lr = self.learning_rate(self._epoch, batch)
        if lr is not None:
            self.model.optimizer.learning_rate = lr
        start, end = self.recipe_values["aux_weight"]
        fraction = training_fraction(self.params, self._epoch, batch)
        if start != end and fraction is not None:
            self.step.set_aux_weight(aux_weight_at((start, end), fraction))
        self.step.set_paths(paths)

    def on_train_batch_end(self, batch, logs=None):
        """Records the step's per-path signal (with ``signal``); stops training at a NaN / inf loss.

        Args:
            batch: the batch index.
            logs: the batch logs (``"loss"`` is read).
        """
        if self.signal is not None:
            self._record.add_signal(signals_lib.signal_column(self.step.path_signals(), self.signal))
        loss = (logs or {}).get("loss")
        if self.terminate_on_nan and loss is not None and not np.isfinite(float(loss)):
            space = self.model.config_space
            paths = [space.resolve((int(v[-1]), [int(b) for b in v[:-1]])) for v in self._record.last()]
            self.nan_config = [p.to_dict(space.gate_names) for p in paths]
            message = (
                f"TIPSCallback: loss became {float(loss)} at epoch {self._epoch}, batch {batch}; "
                f"training stopped. Sub-network(s) trained in that step: {self.nan_config}"
            )
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            print(message)
            self.model.stop_training = True

    # -- validation ---------------------------------------------------------------------------
    def on_test_begin(self, logs=None):
        """Activates ``eval_config`` for validation, recalibrated on the calibration sample; the
        ``"budgets"`` report takes the important paths the epoch trained."""
        report = self._validation.report
        if self._training and report is not None:
            report.configs.update(self._budget_report())
        self._validation.begin()

    def on_test_end(self, logs=None):
        """Evaluates every report configuration; `on_epoch_end` logs ``val_<name>_accuracy``."""
        self._pending = self._validation.end(report=self._training)

    def on_train_end(self, logs=None):
        """Restores the standard step, optimizer and learning rate; activates ``eval_config``.

        With ``final_weights="ema"`` the EMA teacher's weights replace the trained ones first.
        ``eval_config`` is left recalibrated on the calibration sample."""
        model = self.model
        self._training = False
        model.set_training_step(None)
        optimizer_lib.unmask_updates(model.optimizer)
        self._schedule.stop(model.optimizer)
        teacher = teacher_lib.detach(model)
        if teacher is not None and self.recipe_values["final_weights"] == "ema":
            teacher.copy_to(model)
        self._validation.activate()

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
            ValueError: no vectors, or the errors of
                `tips_keras.training.importance.dtmc_importance`.

        Example:
            >>> importance, tas = cb.compute_importance(vectors)  # doctest: +SKIP
        """
        importance, tas, paths = importance_lib.dtmc_importance(
            self.model, importance_lib.check_vectors(vectors), self.importance_rule, self.coupling, self.score,
            self.budgets, weights)
        if paths is not None:
            self.important_paths = dict(zip(self.budgets, paths))
        return importance, tas

    def on_epoch_end(self, epoch, logs=None):
        """Updates importance and sampler from the epoch's paths and stores both in the controller.

        Args:
            epoch: the epoch index.
            logs: the epoch logs (``val_<name>_accuracy`` of the report and ``importance/<gate>``
                added).

        Raises:
            ValueError: no step ran in the epoch.
        """
        vectors, values = self._record.vectors(), self._record.values()
        importance, paths = importance_lib.epoch_importance(
            self.model, vectors, values, self.importance_rule, self.signal, self.coupling, self.score, self.budgets)
        if paths is not None:
            self.important_paths = dict(zip(self.budgets, paths))
        paths = [c.to_vector() for c in self.important_paths.values() if c is not None]
        self.sampler.update(importance, np.stack(paths) if paths else None)
        state_lib.record_update(self.sampler, self.model.controller, importance)
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
