"""`TIPSCallback`: path sampling per step and the TIPS importance update per epoch, inside fit.

Per training step the callback draws the step's sub-networks from the sampler with a generator
seeded by ``(seed, epoch, batch)``, records them and hands them to the model (a variable assign:
no re-trace). At each epoch end it builds the DTMC of the sub-networks sampled in the epoch,
computes TAS per node and the per-gate importance (`tips_keras.dtmc`; with ``signal``, each
sampled sub-network weighted by the loss or gradient norm it produced, `tips_keras.signals`;
with ``importance="marginal"``, each gate's measured effect on that signal instead of the DTMC),
updates the sampler, and
writes importance and sampling probabilities into the model's `SubnetController` variables, so a
checkpoint (``BackupAndRestore``) resumes with the same distribution. Importance also goes into
the epoch logs (``importance/<gate>``), so ``History`` and ``TensorBoard`` see it.

Resuming (``keras.callbacks.BackupAndRestore``, or weights loaded before ``fit``) continues
exactly: the controller's variables are the source of truth for the sampler state, read again at
the first step of every epoch (after every callback's ``on_train_begin``, so after
``BackupAndRestore`` restored the backup, whatever the order of the callbacks), and
`AnytimeModel.fit` moves TIPS callbacks to the front of the callbacks list, so a backup or
checkpoint written at the end of an epoch already holds that epoch's update. If a run resumes
at a batch offset inside an epoch, the draws of the skipped batches (deterministic given the seed,
the epoch, the batch and the epoch's sampler state) are replayed into the epoch's DTMC. (Keras
3.15's ``BackupAndRestore`` with ``save_freq=<int>`` restarts the interrupted epoch at batch 0
with the weights of the last mid-epoch backup: the epoch's draws are then the same as in an
uninterrupted run, but the batches before the backup are trained twice.)
"""

import warnings

import keras
import numpy as np

from tips_keras import dtmc
from tips_keras import sampling
from tips_keras import signals as signals_lib
from tips_keras._callback_args import SCORES  # noqa: F401  (public: the accepted `score`s)
from tips_keras._callback_args import check_arguments
from tips_keras.batchnorm import recalibrate_batchnorm
from tips_keras.model import AnytimeModel


class TIPSCallback(keras.callbacks.Callback):
    """Trains an anytime supernet with TIPS (or a baseline sampler) inside ``model.fit``.

    Args:
        sampler: ``"tips"`` (default), ``"uniform"``, ``"sandwich"`` or ``"stochastic_depth"``, or
            a callable ``space -> tips_keras.sampling.Sampler`` for a custom rule.
        paths_per_step: sub-networks trained per batch (gradients averaged in one optimizer
            step). Default 1, and 4 for the sandwich rule (largest + smallest + 2 random).
        distillation: in-place distillation weight in [0, 1]: paths after the first learn
            ``(1 - a) * loss + a * KL(largest || path)``. Needs the sandwich rule or TIPS with
            ``paths_per_step >= 2`` (TIPS then trains the largest path first).
        seed: seed of the path draws; the draw of step (epoch, batch) depends only on these.
        coupling: the DTMC coupling λ >= 0 between copies of a node in different sub-networks.
        score: ``"log"`` (TPS = product of TAS, in log space) or ``"sum"`` (sum of TAS).
        signal: ``None`` (default: the DTMC sees topology only), ``"loss"`` or ``"grad_norm"``:
            weight each sampled sub-network in the DTMC by the loss / gradient norm it had in its
            step, relative to the other paths that took the same exit (`tips_keras.signals`).
        importance: ``"dtmc"`` (default: TAS / TPS of the DTMC, the paper's rule) or
            ``"marginal"``: each gate's importance is how much the draws with it on beat those
            with it off on ``signal`` (``"loss"`` unless given; `tips_keras.signals.
            marginal_importance`), with no DTMC and no path-length term.
        eval_config: configuration evaluated during validation and left active after training
            (``"largest"`` by default; any form accepted by `ConfigSpace.resolve`).
        terminate_on_nan: stop training when the loss becomes NaN/Inf, naming the sub-network.
        recalibration_data: optional training inputs (a few batches); when given, BatchNorm
            statistics are recalibrated for ``eval_config`` before each validation and at the end
            of training, so the logged ``val_*`` metrics describe that sub-network as it would be
            deployed. Moving statistics are not used by training steps, so this does not change
            training.
        **sampler_options: options of the sampler (e.g. ``p_min``, ``p_max``, ``smoothing`` for
            TIPS, ``n_random`` for sandwich, ``final_survival`` for stochastic depth).

    Attributes:
        importance: ``{gate name: importance in [0, 1]}`` after the latest epoch.
        history: list of per-epoch dicts with ``importance``, ``gate_probs`` and the number of
            sampled sub-networks.

    Raises:
        ValueError: unknown sampler, score or importance rule, coupling < 0, bad distillation,
            a model without gates, or an epoch in which no step ran.

    Example:
        >>> cb = TIPSCallback(sampler="tips")
        >>> model.fit(x, y, epochs=5, callbacks=[cb])  # doctest: +SKIP
        >>> cb.importance  # doctest: +SKIP
        {'stage0_block0': 1.0, 'stage0_block1': 0.83, ...}
    """

    def __init__(
        self,
        sampler="tips",
        paths_per_step=None,
        distillation=0.0,
        seed=0,
        coupling=1.0,
        score="log",
        signal=None,
        importance="dtmc",
        eval_config="largest",
        terminate_on_nan=True,
        recalibration_data=None,
        **sampler_options,
    ):
        super().__init__()
        check_arguments(sampler, paths_per_step, distillation, coupling, score, sampler_options)
        importance = signals_lib.check_importance_rule(importance)
        if importance == "marginal" and signal is None:
            signal = "loss"
        self.sampler_name = sampler
        self.paths_per_step = paths_per_step
        self.distillation = float(distillation)
        self.seed = int(seed)
        self.coupling = float(coupling)
        self.score = score
        self.signal = signals_lib.check_signal(signal)
        self.importance_rule = importance
        self.eval_config = eval_config
        self.terminate_on_nan = terminate_on_nan
        self.sampler_options = sampler_options
        self.recalibration_data = recalibration_data
        self.sampler = None
        self.importance = {}
        self.history = []
        self.nan_config = None
        self._epoch = 0
        self._records = []
        self._signals = []
        self._epoch_started = False

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

    def on_train_begin(self, logs=None):
        """Builds the sampler, restores or stores its state, switches the model to multi-path steps.

        Args:
            logs: unused.

        Raises:
            ValueError: bad sampler options, or a ``sampler`` callable not returning a `Sampler`.
        """
        model = self.model
        space = model.config_space
        if callable(self.sampler_name):
            self.sampler = self.sampler_name(space)
            if not isinstance(self.sampler, sampling.Sampler):
                raise ValueError(
                    "Invalid value for argument `sampler`. A callable must return a "
                    f"tips_keras.sampling.Sampler. Received: {type(self.sampler).__name__}"
                )
        else:
            self.sampler = sampling.get_sampler(
                self.sampler_name, space, paths_per_step=self.paths_per_step, **self.sampler_options
            )
        # Resumed (BackupAndRestore or loaded weights): continue the stored distribution.
        if not self._load_state():
            self._store_state()
        model.configure_paths(
            self.sampler.paths_per_step, self.distillation, record_signals=self.signal is not None
        )

    def _store_state(self):
        controller = self.model.controller
        controller.gate_probs.assign(self.sampler.gate_probs.astype(np.float32))
        controller.exit_probs.assign(self.sampler.exit_probs.astype(np.float32))

    # -- per step -----------------------------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        """Starts recording the epoch's paths.

        Args:
            epoch: the epoch index.
            logs: unused.
        """
        self._epoch = epoch
        self._records = []
        self._signals = []  # per step: (paths,) signal, nan where not observed
        self._epoch_started = False

    def _load_state(self):
        """Reads the sampler state from the controller (the source of truth after a resume).

        Runs at the first step of every epoch, after every callback's ``on_train_begin`` and
        ``on_epoch_begin`` (``BackupAndRestore`` restores the backup in its ``on_train_begin``,
        possibly after this callback's). An uninterrupted run reads back what it stored at the
        previous epoch end, so both runs sample from the same (float32) probabilities.

        Returns:
            True when a stored state was restored (adaptive sampler, at least one update).
        """
        controller = self.model.controller
        if not self.sampler.adaptive or float(keras.ops.convert_to_numpy(controller.updates)) <= 0:
            return False
        self.sampler.set_state(
            keras.ops.convert_to_numpy(controller.gate_probs),
            keras.ops.convert_to_numpy(controller.exit_probs),
        )
        values = keras.ops.convert_to_numpy(controller.importance)
        self.importance = dict(zip(self.model.config_space.gate_names, map(float, values)))
        return True

    def step_paths(self, epoch, batch):
        """The paths of training step (epoch, batch): deterministic given the sampler state.

        The draw uses ``numpy.random.default_rng([seed, epoch, batch])``, so a resumed run replays
        it. Valid once training has started (the sampler is built in `on_train_begin`).

        Args:
            epoch: the epoch index.
            batch: the batch index within the epoch.

        Returns:
            A float32 array (paths_per_step, G + 1) of control vectors.

        Example:
            >>> cb.step_paths(epoch=0, batch=0)  # doctest: +SKIP
        """
        return self.sampler.sample(np.random.default_rng([self.seed, epoch, batch]))

    def on_train_batch_begin(self, batch, logs=None):
        """Draws the step's paths, records them for the epoch's DTMC and hands them to the model.

        At the first step of an epoch the sampler state is read back from the controller; after a
        resume at a batch offset, the skipped steps' draws are replayed into the record.

        Args:
            batch: the batch index.
            logs: unused.
        """
        if not getattr(self, "_epoch_started", False):
            self._epoch_started = True
            self._load_state()
            # Resumed at a batch offset: the skipped steps' draws belong to this epoch's DTMC.
            # Keras calls this hook once per `steps_per_execution` steps, with the first step.
            stride = max(int(getattr(self.model, "steps_per_execution", 1) or 1), 1)
            for skipped in range(0, int(batch), stride):
                self._records.append(self.step_paths(self._epoch, skipped))
                if self.signal is not None:  # not observed: no weight (exit_normalized_weights)
                    self._signals.append(np.full(len(self._records[-1]), np.nan))
        paths = self.step_paths(self._epoch, batch)
        self._records.append(paths)
        self.model.set_step_paths(paths)

    def on_train_batch_end(self, batch, logs=None):
        """Records the step's per-path signal (with ``signal``); stops training at a NaN / inf loss.

        With ``terminate_on_nan`` the step's configurations go to ``nan_config``, a
        ``RuntimeWarning`` and stdout.

        Args:
            batch: the batch index.
            logs: the batch logs (``"loss"`` is read).
        """
        if self.signal is not None:
            self._signals.append(signals_lib.signal_column(self.model.get_path_signals(), self.signal))
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
        if self.recalibration_data is None:
            self.model.set_config(self.eval_config)
        else:
            recalibrate_batchnorm(self.model, self.eval_config, self.recalibration_data)

    def on_test_begin(self, logs=None):
        """Activates ``eval_config`` for validation (recalibrated with ``recalibration_data``).

        Args:
            logs: unused.
        """
        self._activate_eval_config()

    def on_train_end(self, logs=None):
        """Switches the model back to single-path steps and activates ``eval_config``.

        Args:
            logs: unused.
        """
        self.model.release_paths()
        self._activate_eval_config()

    # -- per epoch ----------------------------------------------------------------------------
    def compute_importance(self, vectors, weights=None):
        """TIPS importance per gate and TAS per node for sampled control vectors.

        Builds the DTMC of the sampled sub-networks with the callback's ``coupling`` and ``score``
        (`tips_keras.dtmc.importance_from_configs`).

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
        return dtmc.importance_from_configs(
            topo.num_nodes,
            topo.edges,
            topo.edge_gate,
            topo.num_gates,
            topo.edge_masks(vectors, prune=False),
            topo.source,
            topo.sink,
            lam=self.coupling,
            mode=self.score,
            weights=weights,
        )

    def on_epoch_end(self, epoch, logs=None):
        """Updates importance and sampler from the epoch's paths and stores both in the controller.

        Also appends to ``history`` and writes ``importance/<gate>`` into ``logs``.

        Args:
            epoch: the epoch index.
            logs: the epoch logs (updated in place).

        Raises:
            ValueError: no step ran in the epoch.
        """
        vectors = np.concatenate(self._records, axis=0) if self._records else np.zeros((0, 0))
        values = np.concatenate(self._signals) if self.signal is not None and len(vectors) else None
        if self.importance_rule == "marginal" and values is not None:
            space = self.model.config_space
            importance = signals_lib.marginal_importance(
                vectors, values, space.gate_min_exit, self.signal
            )
        else:
            weights = None if values is None else signals_lib.exit_normalized_weights(vectors, values)
            importance, _ = self.compute_importance(vectors, weights)
        self.sampler.update(importance)
        controller = self.model.controller
        controller.importance.assign(importance.astype(np.float32))
        controller.updates.assign(controller.updates + 1.0)
        self._store_state()
        names = self.model.config_space.gate_names
        self.importance = dict(zip(names, map(float, importance)))
        self.history.append(
            {
                "epoch": epoch,
                "importance": dict(self.importance),
                "gate_probs": dict(zip(names, map(float, self.sampler.gate_probs))),
                "sampled": int(len(vectors)),
            }
        )
        if logs is not None:
            for name, value in self.importance.items():
                logs[f"importance/{name}"] = value
