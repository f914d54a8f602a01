"""`AnytimeModel`: a functional Keras model whose active sub-network is switched at run time.

It adds three things to a functional model and nothing else (its constructor is the functional
one, so ``.keras`` files round-trip with the standard machinery):

* `set_config` / `get_active_config` to switch the sub-network (one variable assign, no re-trace);
* a `train_step` that trains several sub-networks ("paths") on the same batch in one optimizer
  step, accumulating their gradients, with optional in-place distillation of the largest path's
  soft output into the others. It is used only once `configure_paths` was called (the TIPS
  callback does this); otherwise the standard Keras step runs;
* a `paths` variable the callback fills with the paths of the next step, and a `path_signals`
  variable in which each step leaves, per path, its loss and the global norm of its gradients
  (the training signal that `TIPSCallback(signal=...)` feeds into the DTMC).
"""

import keras
import numpy as np
import tensorflow as tf

from tips_keras import topology as topology_lib


class _PathState:
    """Holds per-step path data outside Keras' weight tracking (not saved in checkpoints)."""

    def __init__(self, variable, signals, paths_per_step, distillation, record_signals):
        self.variable = variable
        self.signals = signals  # (paths_per_step, 2): loss, gradient global norm of each path
        self.record_signals = record_signals
        self.paths_per_step = paths_per_step
        self.distillation = distillation


def _tips_callbacks_first(callbacks):
    """Stable partition of a list / tuple of callbacks: TIPS callbacks first."""
    if not isinstance(callbacks, (list, tuple)):
        return callbacks
    from tips_keras.callbacks import TIPSCallback  # callbacks imports this module

    tips_callbacks = [c for c in callbacks if isinstance(c, TIPSCallback)]
    return tips_callbacks + [c for c in callbacks if not isinstance(c, TIPSCallback)]


@keras.saving.register_keras_serializable(package="tips_keras")
class AnytimeModel(keras.Model):
    """A functional model with gated layers (`PathGate`, `ExitHead`) and a `SubnetController`.

    Build it like any functional model: ``AnytimeModel(inputs, outputs)``; `tips_keras.zoo` and
    `tips_keras.anytime` do so for you.

    Example:
        >>> model = tips_keras.zoo.anytime_resnet()  # doctest: +SKIP
        >>> model.set_config("smallest")             # doctest: +SKIP
        >>> model.predict(x)  # runs the smallest sub-network  # doctest: +SKIP
    """

    @property
    def controller(self):
        """The model's `SubnetController` layer (active configuration and sampler state).

        Returns:
            The `SubnetController`.

        Raises:
            ValueError: the model has no ``SubnetController`` or several.

        Example:
            >>> model.controller.num_gates  # doctest: +SKIP
            6
        """
        return topology_lib.find_controller(self)

    @property
    def topology(self):
        """The gate DAG (`tips_keras.topology.Topology`), read once and cached per model.

        Returns:
            A `Topology`.

        Raises:
            ValueError: the model is not a valid gated supernet (see `tips_keras.read_topology`).

        Example:
            >>> model.topology.num_nodes  # doctest: +SKIP
        """
        return topology_lib.read_topology(self)

    @property
    def config_space(self):
        """The `ConfigSpace` of this supernet (gate names, stages, exits).

        Returns:
            A `ConfigSpace`.

        Example:
            >>> model.config_space.gate_names[:2]  # doctest: +SKIP
            ('stage0_block0', 'stage0_block1')
        """
        return self.topology.space

    def set_config(self, config):
        """Makes ``config`` the active sub-network for predict / evaluate / plain fit.

        One variable assign: nothing is re-traced or rebuilt.

        Args:
            config: any form accepted by `ConfigSpace.resolve`.

        Returns:
            The resolved `Configuration`.

        Raises:
            ValueError: ``config`` does not fit the model (see `ConfigSpace.resolve`).

        Example:
            >>> model.set_config({"exit": 0, "gates": {"stage0_block1": 1}})  # doctest: +SKIP
            Configuration(exit=0, gates=(0, 1, 0, 0, 0, 0))
        """
        resolved = self.config_space.resolve(config)
        self.controller.active.assign(resolved.to_vector())
        return resolved

    def get_active_config(self):
        """Returns the active `Configuration`, read from the controller.

        Returns:
            A `Configuration` (as set: not canonicalised).

        Example:
            >>> model.get_active_config()  # doctest: +SKIP
            Configuration(exit=2, gates=(1, 1, 1, 1, 1, 1))
        """
        from tips_keras.configs import Configuration

        return Configuration.from_vector(keras.ops.convert_to_numpy(self.controller.active))

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, with every `TIPSCallback` moved to the front of ``callbacks``.

        At the end of an epoch the TIPS callback writes the epoch's importance and sampler state
        into the controller and the ``importance/*`` logs. Callbacks that save the model then
        (``BackupAndRestore``, ``ModelCheckpoint``) must run after it, or a resumed run would
        continue from the previous epoch's sampler state; so must callbacks reading the logs
        (``CSVLogger``, ``TensorBoard``, ``EarlyStopping``). The order among the other callbacks
        is kept; a ``CallbackList`` is passed on unchanged.

        Args:
            *args: positional arguments of `keras.Model.fit` (``callbacks`` is the sixth).
            **kwargs: keyword arguments of `keras.Model.fit`.

        Returns:
            The ``History`` of `keras.Model.fit`.

        Example:
            >>> model.fit(x, y, epochs=5, callbacks=[keras.callbacks.CSVLogger("log.csv"),
            ...                                      tips_keras.TIPSCallback()])  # doctest: +SKIP
        """
        if len(args) > 5:  # fit(x, y, batch_size, epochs, verbose, callbacks, ...)
            args = args[:5] + (_tips_callbacks_first(args[5]),) + args[6:]
        elif "callbacks" in kwargs:
            kwargs["callbacks"] = _tips_callbacks_first(kwargs["callbacks"])
        return super().fit(*args, **kwargs)

    def configure_paths(self, paths_per_step=1, distillation=0.0, record_signals=False):
        """Switches `train_step` to multi-path training; called by `TIPSCallback`.

        Args:
            paths_per_step: sub-networks trained on each batch (gradients averaged over them).
            distillation: weight ``a`` in ``(1 - a) * loss + a * KL(teacher || student)`` for
                paths after the first; the first path is the teacher (the callback makes it the
                largest sub-network when ``a > 0``). 0 disables distillation. Assumes the
                model outputs probabilities (softmax heads).
            record_signals: also record each path's loss and gradient global norm for
                `get_path_signals` (one extra norm per path and step; `TIPSCallback` asks for it
                only with ``signal``).

        Raises:
            ValueError: ``paths_per_step`` is not a positive integer, ``distillation`` is not in
                [0, 1], or ``record_signals`` is not a bool.

        Example:
            >>> model.configure_paths(paths_per_step=2)  # doctest: +SKIP
            >>> space = model.config_space  # doctest: +SKIP
            >>> model.set_step_paths([space.largest().to_vector(),
            ...                       space.smallest().to_vector()])  # doctest: +SKIP
        """
        if isinstance(paths_per_step, bool) or not isinstance(paths_per_step, int) or paths_per_step < 1:
            raise ValueError(
                "Invalid value for argument `paths_per_step`. Expected a positive integer. "
                f"Received: paths_per_step={paths_per_step!r}"
            )
        if not 0.0 <= float(distillation) <= 1.0:
            raise ValueError(
                "Invalid value for argument `distillation`. Expected a float in [0, 1]. "
                f"Received: distillation={distillation!r}"
            )
        if not isinstance(record_signals, bool):
            raise ValueError(
                "Invalid value for argument `record_signals`. Expected a bool. "
                f"Received: record_signals={record_signals!r}"
            )
        state = getattr(self, "_tips_paths", None)
        width = self.controller.num_gates + 1
        if state is None or state.variable.shape[0] != paths_per_step:
            with self.distribute_strategy.scope():
                variable = tf.Variable(
                    np.tile(keras.ops.convert_to_numpy(self.controller.active), (paths_per_step, 1)),
                    trainable=False,
                    dtype=tf.float32,
                    shape=(paths_per_step, width),
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                    name="tips_paths",
                )
                signals = tf.Variable(
                    tf.zeros((paths_per_step, 2)),
                    trainable=False,
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                    name="tips_path_signals",
                )
        else:
            variable, signals = state.variable, state.signals
        object.__setattr__(
            self,
            "_tips_paths",
            _PathState(variable, signals, paths_per_step, float(distillation), record_signals),
        )
        self.train_function = None
        self.make_train_function(force=True)

    def release_paths(self):
        """Goes back to the standard single-configuration `train_step`.

        `TIPSCallback` calls it at the end of training.

        Example:
            >>> model.release_paths()  # doctest: +SKIP
        """
        object.__setattr__(self, "_tips_paths", None)
        self.train_function = None

    def set_step_paths(self, vectors):
        """Sets the control vectors that the next multi-path train step trains.

        `TIPSCallback` calls it before every batch: a variable assign, no re-trace. Only valid after
        `configure_paths`.

        Args:
            vectors: array-like (paths_per_step, G + 1) of control vectors.

        Raises:
            ValueError: called before `configure_paths`, or vectors of the wrong shape.

        Example:
            >>> model.set_step_paths([model.config_space.largest().to_vector()])  # doctest: +SKIP
        """
        state = getattr(self, "_tips_paths", None)
        vectors = np.asarray(vectors, dtype=np.float32)
        if state is None:
            raise ValueError(
                "Invalid call: set_step_paths needs multi-path training, set up by "
                "configure_paths(paths_per_step) (TIPSCallback does it in on_train_begin). "
                f"Received: vectors of shape {vectors.shape} before configure_paths"
            )
        if vectors.shape != tuple(state.variable.shape):
            raise ValueError(
                "Invalid value for argument `vectors`. Expected control vectors of shape "
                f"{tuple(state.variable.shape)} (paths_per_step, G + 1). Received: shape {vectors.shape}"
            )
        state.variable.assign(vectors)

    def get_path_signals(self):
        """Per-path training signal of the latest multi-path step.

        Returns:
            A numpy array (paths_per_step, 2): column 0 the path's loss (distilled loss for the
            paths after the teacher), column 1 the global norm of its gradients. ``None`` before
            `configure_paths`.

        Raises:
            ValueError: paths configured without ``record_signals=True``.

        Example:
            >>> loss, grad_norm = model.get_path_signals()[0]  # doctest: +SKIP
        """
        state = getattr(self, "_tips_paths", None)
        if state is None:
            return None
        if not state.record_signals:
            raise ValueError(
                "Invalid call: get_path_signals needs configure_paths(..., record_signals=True) "
                "(TIPSCallback asks for it when `signal` is set). Received: record_signals=False"
            )
        return keras.ops.convert_to_numpy(state.signals)

    def train_step(self, data):
        """One optimizer step: multi-path after `configure_paths`, else Keras' standard step.

        Multi-path: each control vector of `set_step_paths` is activated in turn, its loss computed
        (distilled from the first path's output when ``distillation > 0``) and its gradients
        accumulated; one update applies their mean. The loss tracker gets the mean loss, the metrics
        the first path's predictions; the last path stays active. With ``record_signals`` each
        path's loss and gradient norm go to `get_path_signals`.

        Args:
            data: a batch ``(x, y)`` or ``(x, y, sample_weight)``.

        Returns:
            The metric results, as `keras.Model.train_step`.
        """
        state = getattr(self, "_tips_paths", None)
        if state is None:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        active = self.controller.active
        weights = self.trainable_weights
        accumulated = [tf.zeros_like(w) for w in weights]
        teacher, first_pred, total_loss = None, None, 0.0
        kl = keras.losses.KLDivergence(reduction="sum_over_batch_size")
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        signals = []
        for i in range(state.paths_per_step):
            active.assign(state.variable[i])
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self._compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
                )
                if teacher is not None:
                    loss = (1.0 - state.distillation) * loss + state.distillation * kl(
                        teacher, y_pred
                    )
                total_loss += loss
                scaled = self.optimizer.scale_loss(loss) if self.optimizer is not None else loss
            grads = tape.gradient(scaled, weights)
            # Weights of skipped branches get no gradient in eager mode (`run_eagerly=True`:
            # only the taken branch of a gate's `cond` runs); `UnconnectedGradients.ZERO` fails
            # there on Keras variables, so add nothing for them instead.
            accumulated = [a if g is None else a + g for a, g in zip(accumulated, grads)]
            if state.record_signals:
                norm = tf.linalg.global_norm([g for g in grads if g is not None])
                signals.append(tf.stack([tf.cast(loss, tf.float32), tf.cast(norm, tf.float32)]))
            if i == 0:
                first_pred = y_pred
                if state.distillation > 0:
                    teacher = tf.stop_gradient(y_pred)
        k = float(state.paths_per_step)
        if state.record_signals:
            state.signals.assign(tf.stack(signals))
        self._loss_tracker.update_state(
            keras.src.losses.loss.unscale_loss_for_distribution(total_loss / k),
            sample_weight=batch,
        )
        self.optimizer.apply_gradients(zip([a / k for a in accumulated], weights))
        return self.compute_metrics(x, y, first_pred, sample_weight=sample_weight)
