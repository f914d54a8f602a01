"""The training step of an anytime supernet: several paths, every reached exit, one update.

`AnytimeStep` is what `AnytimeModel.train_step` runs while `TIPSCallback` trains the model. Per
batch it trains the ``k`` sub-networks ("paths") the callback drew for the step (control vectors
in a variable: switching them is an assign, never a re-trace):

1. With an EMA teacher (`tips_keras.training.teacher`), one forward pass of the teacher's
   largest configuration gives the soft target of the step.
2. For each path in turn it activates the path and runs the supernet. With ``exits="reached"``
   it uses `AnytimeModel.exits_model`, so the path's loss is the sum over every exit its trunk
   reaches (exits ``0..e`` of configuration ``(e, bits)``): the joint exit supervision of
   early-exit networks (MSDNet, Shallow-Deep Networks), where an early exit learns in every step
   that passes it, not only in the steps that stop there. With ``exits="active"`` only the
   path's own exit is trained (tips-keras 0.1). ``exits="reached_except_largest"`` trains every
   reached exit except on a path that is the largest sub-network, which learns at its own exit
   only, as the same network trained alone does. Measured in the deep benchmark setting (README,
   "Deep setting"): ``"active"`` brings the largest configuration 1.4 pp closer to the network
   trained alone than ``"reached"``, this mode does not (the other paths' early-exit losses
   shape the shared trunk), with the best mean over the menu by a margin within the seeds' spread.
   The auxiliary exits (those before the path's own exit) are weighted by ``aux_weight``, a
   variable the callback can move over training (`set_aux_weight`; 1 by default). Fading it from
   1 to 0 (Deeply-Supervised Nets' companion losses) did not help in the deep setting (two seeds:
   menu mean −1.93 pp vs −1.70 with ``"reached"``, 50 % below −2 on both): the trunk keeps what
   the early exits shaped.
3. Each exit's loss is the compiled loss against the labels, mixed for every path but a
   largest-first path with the distillation loss ``KL(teacher || exit output)``:
   ``(1 - a) * loss + a * KL``. The teacher is the EMA teacher's deepest exit in the largest
   configuration (``teacher="ema"``, as the authors' loop) or the step's first, largest path
   (``teacher="inplace"``, BigNAS' in-place distillation).
4. The gradients of the ``k`` paths are averaged into one optimizer step (with
   `tips_keras.training.optimizer.mask_updates` in effect, weights no path used are not stepped),
   then the EMA teacher moves towards the new weights.

The loss in the logs is the mean of the path losses; the compiled metrics see the first path's
output at its exit (the largest sub-network under the sandwich rule). Each path's loss and gradient
norm can be recorded for the training-signal options of the TIPS DTMC.
"""

import keras
import numpy as np
import tensorflow as tf
from keras.src.losses import loss as loss_module

EXIT_MODES = ("reached", "active", "reached_except_largest")
TEACHERS = ("ema", "inplace", None)


class AnytimeStep:
    """Multi-path, multi-exit training step (see the module docstring).

    Args:
        model: the `AnytimeModel` (compiled).
        paths_per_step: sub-networks trained per batch (>= 1).
        exits: ``"reached"`` (every exit the path's trunk reaches learns), ``"active"`` (only
            the path's own exit) or ``"reached_except_largest"`` (``"reached"``, but a path that
            is the largest sub-network learns at its own exit only).
        teacher: ``None``, ``"inplace"`` (the first path, which must be the largest, teaches the
            others) or an `EMATeacher`.
        distillation: weight ``a`` in [0, 1] of the distillation loss for the taught paths.
        first_is_largest: the first path of every step is the largest sub-network; it then learns
            from the labels only (the authors' rule) and is the in-place teacher.
        exit_weights: optional weight of each exit's loss (E,), default all 1.
        record_signals: record each path's loss and gradient norm (`path_signals`).

    Raises:
        ValueError: bad ``paths_per_step``, ``exits``, ``teacher``, ``distillation`` or
            ``exit_weights``, or ``teacher="inplace"`` without a largest first path.

    Example:
        >>> step = AnytimeStep(model, paths_per_step=2, exits="reached")  # doctest: +SKIP
        >>> model.set_training_step(step)  # doctest: +SKIP
        >>> step.set_paths([space.largest().to_vector(), space.smallest().to_vector()])  # doctest: +SKIP
        >>> model.train_on_batch(x, y)  # doctest: +SKIP
    """

    def __init__(self, model, paths_per_step=1, exits="reached", teacher=None, distillation=0.0,
                 first_is_largest=False, exit_weights=None, record_signals=False):
        if isinstance(paths_per_step, bool) or not isinstance(paths_per_step, int) or paths_per_step < 1:
            raise ValueError(
                "Invalid value for argument `paths_per_step`. Expected a positive integer. "
                f"Received: paths_per_step={paths_per_step!r}"
            )
        if exits not in EXIT_MODES:
            raise ValueError(
                f"Invalid value for argument `exits`. Expected one of {EXIT_MODES}. Received: exits={exits!r}"
            )
        if not (teacher in ("inplace", None) or hasattr(teacher, "largest_output")):
            raise ValueError(
                "Invalid value for argument `teacher`. Expected None, 'inplace' or an EMATeacher. "
                f"Received: teacher={teacher!r}"
            )
        if isinstance(distillation, bool) or not isinstance(distillation, (int, float)) or not 0.0 <= distillation <= 1.0:
            raise ValueError(
                "Invalid value for argument `distillation`. Expected a float in [0, 1]. "
                f"Received: distillation={distillation!r}"
            )
        if teacher == "inplace" and not first_is_largest:
            raise ValueError(
                "Invalid value for argument `teacher`: in-place distillation learns from the "
                "step's first path, which must be the largest sub-network (first_is_largest=True). "
                "Received: teacher='inplace', first_is_largest=False"
            )
        if not isinstance(record_signals, bool):
            raise ValueError(
                "Invalid value for argument `record_signals`. Expected a bool. "
                f"Received: record_signals={record_signals!r}"
            )
        space = model.config_space
        if exit_weights is None:
            exit_weights = [1.0] * space.num_exits
        exit_weights = np.asarray(exit_weights, dtype=np.float32)
        if exit_weights.shape != (space.num_exits,) or not np.all(np.isfinite(exit_weights)) \
                or np.any(exit_weights < 0) or not exit_weights.sum() > 0:
            raise ValueError(
                f"Invalid value for argument `exit_weights`. Expected {space.num_exits} non-negative "
                f"finite weights, not all 0. Received: exit_weights={exit_weights.tolist()}"
            )
        self.model = model
        self.paths_per_step = paths_per_step
        self.exits = exits
        self.teacher = teacher
        self.distillation = float(distillation) if teacher is not None else 0.0
        self.first_is_largest = bool(first_is_largest)
        self.exit_weights = exit_weights
        self.record_signals = record_signals
        self._view = model.exits_model() if exits != "active" else None
        # read only by "reached_except_largest"
        self._largest = (tf.constant(space.largest().to_vector(), tf.float32)
                         if exits == "reached_except_largest" else None)
        self._kl = keras.losses.KLDivergence(reduction="sum_over_batch_size")
        width = space.num_gates + 1
        with model.distribute_strategy.scope():
            aggregation = tf.VariableAggregation.ONLY_FIRST_REPLICA
            self.paths = tf.Variable(np.tile(space.largest().to_vector(), (paths_per_step, 1)),
                                     trainable=False, dtype=tf.float32, shape=(paths_per_step, width),
                                     aggregation=aggregation, name="tips_paths")
            self.signals = tf.Variable(tf.zeros((paths_per_step, 2)), trainable=False,
                                       aggregation=aggregation, name="tips_path_signals")
            self.aux_weight = tf.Variable(1.0, trainable=False, aggregation=aggregation,
                                          name="tips_aux_weight")

    # -- the callback's interface ---------------------------------------------------------------
    def set_paths(self, vectors):
        """Sets the control vectors of the next step (a variable assign: no re-trace).

        Args:
            vectors: array-like (paths_per_step, G + 1).

        Raises:
            ValueError: vectors of the wrong shape.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != tuple(self.paths.shape):
            raise ValueError(
                "Invalid value for argument `vectors`. Expected control vectors of shape "
                f"{tuple(self.paths.shape)} (paths_per_step, G + 1). Received: shape {vectors.shape}"
            )
        self.paths.assign(vectors)

    def set_aux_weight(self, weight):
        """Sets the weight of the auxiliary exits (a variable assign: no re-trace).

        With the reached exit modes, the loss of a path with exit ``e`` is
        ``sum_j w_j * l_j`` over its reached exits ``j <= e``, each auxiliary exit ``j < e``
        weighted ``exit_weights[j] * weight`` and the path's own exit ``exit_weights[e]``.

        Args:
            weight: a float in [0, 1].

        Raises:
            ValueError: a weight outside [0, 1].
        """
        weight = float(weight)
        if not 0.0 <= weight <= 1.0:
            raise ValueError(
                f"Invalid value for argument `weight`. Expected a float in [0, 1]. Received: weight={weight!r}"
            )
        self.aux_weight.assign(weight)

    def path_signals(self):
        """Per-path training signal of the latest step.

        Returns:
            A numpy array (paths_per_step, 2): column 0 the path's loss (mean over the replicas,
            not scaled for distribution), column 1 the global norm of its gradients.

        Raises:
            ValueError: the step was built without ``record_signals=True``.
        """
        if not self.record_signals:
            raise ValueError(
                "Invalid call: path_signals needs AnytimeStep(..., record_signals=True) "
                "(TIPSCallback asks for it when `signal` is set). Received: record_signals=False"
            )
        return keras.ops.convert_to_numpy(self.signals)

    # -- the step -------------------------------------------------------------------------------
    def _exit_losses(self, y, outputs, sample_weight, target, alpha):
        """Loss of each output: compiled loss vs the labels, mixed with the distillation loss."""
        model = self.model
        losses = []
        for out in outputs:
            loss = tf.cast(model._compile_loss(y, out, sample_weight), tf.float32)
            if target is not None:
                kl = tf.cast(self._kl(target, out, sample_weight=sample_weight), tf.float32)
                loss = (1.0 - alpha) * loss + alpha * kl
            losses.append(loss)
        return losses

    def _path_loss(self, x, y, sample_weight, vector, target, alpha):
        """Forward pass of the active path; returns (loss, output at the path's exit)."""
        model = self.model
        if self._view is None:
            out = model(x, training=True)
            loss = self._exit_losses(y, [out], sample_weight, target, alpha)[0]
        else:
            outputs = self._view(x, training=True)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            exit_index = tf.cast(tf.round(vector[-1]), tf.int32)
            losses = self._exit_losses(y, outputs, sample_weight, target, alpha)
            indices = tf.range(len(outputs))
            reached = indices <= exit_index
            if self.exits == "reached_except_largest":
                is_largest = tf.reduce_all(tf.equal(vector, self._largest))
                reached = tf.logical_and(reached, tf.logical_or(tf.logical_not(is_largest),
                                                                tf.equal(indices, exit_index)))
            reached = tf.unstack(reached)
            own = tf.unstack(tf.equal(indices, exit_index))
            # where, not a product: an unreached exit's loss may be inf (its output is zeros)
            loss = tf.add_n([tf.where(r, float(w) * tf.where(o, 1.0, self.aux_weight) * l, 0.0)
                             for r, o, w, l in zip(reached, own, self.exit_weights, losses)])
            out = tf.gather(tf.stack([tf.cast(o, tf.float32) for o in outputs]), exit_index)
        extra = [model._aggregate_additional_loss(l) for l in model.losses]
        if extra:
            loss = loss + tf.add_n([tf.cast(l, tf.float32) for l in extra])
        return loss, out

    def train_step(self, data):
        """One optimizer step over the step's paths (see the module docstring).

        The paths run in a ``tf.while_loop``: the loop body (one path's forward and backward
        pass) is traced once whatever ``paths_per_step`` (unrolled for one path, and under a
        distribution strategy with several replicas, where switching paths is a synchronisation
        point).

        Args:
            data: a batch ``(x, y)`` or ``(x, y, sample_weight)``.

        Returns:
            The metric results, as `keras.Model.train_step`.
        """
        model = self.model
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        active = model.controller.active
        weights = model.trainable_weights
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        out_shape = tuple(model.outputs[0].shape[1:])
        zeros_out = tf.zeros(tf.concat([[batch], out_shape], axis=0), tf.float32)
        teacher_out = zeros_out
        if hasattr(self.teacher, "largest_output") and self.distillation > 0:
            teacher_out = tf.cast(self.teacher.largest_output(x), tf.float32)
        distill = self.distillation > 0
        inplace = self.teacher == "inplace" and distill

        def body(i, accumulated, total, first_out, target, signals):
            vector = tf.gather(self.paths, i)
            active.assign(vector)
            alpha = tf.where(tf.logical_and(tf.equal(i, 0), self.first_is_largest), 0.0, self.distillation)
            with tf.GradientTape() as tape:
                loss, out = self._path_loss(x, y, sample_weight, vector, target if distill else None, alpha)
                scaled = model.optimizer.scale_loss(loss) if model.optimizer is not None else loss
            grads = tape.gradient(scaled, weights)
            # Eager mode (`run_eagerly=True`) runs only the taken branch of a gate's `cond`, and
            # skipped weights get None: they add nothing.
            accumulated = [a if g is None else a + tf.cast(g, a.dtype) for a, g in zip(accumulated, grads)]
            if self.record_signals:
                norm = tf.linalg.global_norm([g for g in grads if g is not None])
                value = tf.stack([tf.cast(loss_module.unscale_loss_for_distribution(loss), tf.float32),
                                  tf.cast(norm, tf.float32)])
                context = tf.distribute.get_replica_context()
                if context is not None:
                    value = context.all_reduce(tf.distribute.ReduceOp.MEAN, value)
                signals = tf.tensor_scatter_nd_update(signals, [[i]], value[None, :])
            first = tf.equal(i, 0)
            out = tf.cast(out, tf.float32)
            first_out = tf.where(first, out, first_out)
            if inplace:
                target = tf.where(first, tf.stop_gradient(out), target)
            return i + 1, accumulated, total + tf.cast(loss, tf.float32), first_out, target, signals

        state = (tf.constant(0), [tf.zeros_like(w) for w in weights], tf.constant(0.0), zeros_out,
                 teacher_out, tf.zeros((self.paths_per_step, 2)))
        if self.paths_per_step == 1 or tf.distribute.get_strategy().num_replicas_in_sync > 1:
            # Assigning the mirrored control variable is a cross-replica synchronisation, which a
            # while loop cannot contain: unroll the paths (traced k times) under several replicas.
            # One path needs no loop: on the demo supernet's ~25 % configuration the loop alone
            # cost ~12 % of an epoch's CPU time (profiled: 1.19x -> 1.07x the plain model's).
            for i in range(self.paths_per_step):
                state = body(tf.constant(i), *state[1:])
            _, accumulated, total, first_out, _, signals = state
        else:
            _, accumulated, total, first_out, _, signals = tf.while_loop(
                lambda i, *rest: i < self.paths_per_step, body, state)
        k = float(self.paths_per_step)
        if self.record_signals:
            self.signals.assign(signals)
        model._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(total / k),
                                         sample_weight=batch)
        model.optimizer.apply_gradients(zip([a / k for a in accumulated], weights))
        if hasattr(self.teacher, "update"):
            self.teacher.update()
        return model.compute_metrics(x, y, first_out, sample_weight=sample_weight)
