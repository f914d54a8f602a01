"""Gated layers of an anytime supernet.

An anytime supernet is one functional Keras model whose active sub-network is chosen at run time.
Three layers make that possible without ever re-tracing or rebuilding the model:

* `SubnetController` owns the *configuration* as a non-trainable variable
  ``active = [gate_0, ..., gate_{G-1}, exit_index]`` and emits it as a small tensor. It also owns the
  sampler's state (per-gate sampling probabilities, per-exit probabilities, last importance, the
  important paths), so a checkpoint (``model.save_weights``, ``BackupAndRestore``) keeps it.
* `PathGate` wraps an operation (typically the conv branch of a residual block) and runs it inside a
  graph conditional: when the gate is off, or when the active exit comes before the gate's stage,
  the wrapped layer is not computed at all and a zero tensor of the right shape is returned (the
  residual ``Add`` then passes the shortcut through unchanged).
* `ExitHead` wraps a classifier head after a stage and computes it only when its exit is active;
  `ExitSelector` returns the active exit's output, so the model trains with a plain
  ``compile(loss=...)`` and a single label array.

Because every switch reads a *variable* inside the traced function, changing the configuration
between steps is a single ``assign`` and never re-traces the training function.
"""

import keras
from keras import ops

PACKAGE = "tips_keras"
MAX_IMPORTANT_PATHS = 8  # rows of `SubnetController.important_paths`


def _scalar(control, index):
    # A strided slice: one op (``ops.take`` adds index normalisation; ~2.5x the tracing time).
    return control[index]


@keras.saving.register_keras_serializable(package=PACKAGE)
class SubnetController(keras.layers.Layer):
    """Holds the active configuration and the sampler state of an anytime supernet.

    The layer takes the model input only to have a place in the functional graph; its output is
    the 1-D control vector ``[gate bits..., exit index]`` that every `PathGate` and `ExitHead`
    reads.

    Args:
        num_gates: number of gates (>= 1) in the supernet.
        num_exits: number of exit heads (>= 1).

    Example:
        >>> controller = SubnetController(num_gates=6, num_exits=3)
        >>> control = controller(inputs)  # doctest: +SKIP
    """

    def __init__(self, num_gates, num_exits, **kwargs):
        kwargs.setdefault("name", "subnet_controller")
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        for arg, value in (("num_gates", num_gates), ("num_exits", num_exits)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"Invalid value for argument `{arg}`. Expected a positive integer. "
                    f"Received: {arg}={value!r}"
                )
        self.num_gates = num_gates
        self.num_exits = num_exits

    def build(self, input_shape=None):
        g, e = self.num_gates, self.num_exits
        # `only_first_replica`: under tf.distribute every replica sees the same configuration,
        # and an in-step assignment (multi-path training) is taken from replica 0.
        common = dict(trainable=False, dtype="float32", aggregation="only_first_replica")
        self.active = self.add_weight(
            shape=(g + 1,),
            initializer=keras.initializers.Constant([1.0] * g + [float(e - 1)]),
            name="active",
            **common,
        )
        self.gate_probs = self.add_weight(
            shape=(g,), initializer=keras.initializers.Constant(0.5), name="gate_probs", **common
        )
        self.exit_probs = self.add_weight(
            shape=(e,),
            initializer=keras.initializers.Constant(1.0 / e),
            name="exit_probs",
            **common,
        )
        self.importance = self.add_weight(
            shape=(g,), initializer="zeros", name="importance", **common
        )
        # Number of sampler updates applied so far (0 = still the initial distribution).
        self.updates = self.add_weight(
            shape=(), initializer="zeros", name="updates", **common
        )
        # TIPS' important paths (the highest-TPS configuration per FLOPs budget), one control
        # vector per row; unused rows are -1. The TIPS sampler draws them and the search starts
        # from them.
        self.important_paths = self.add_weight(
            shape=(MAX_IMPORTANT_PATHS, g + 1), initializer=keras.initializers.Constant(-1.0),
            name="important_paths", **common
        )

    def call(self, inputs):
        del inputs  # Only anchors the layer in the graph.
        return ops.convert_to_tensor(self.active)

    def compute_output_shape(self, input_shape):
        return (self.num_gates + 1,)

    def compute_output_spec(self, inputs):
        """Symbolic output: the control vector, whatever the (anchoring) input.

        Args:
            inputs: the symbolic model input (unused).

        Returns:
            A float32 ``KerasTensor`` of shape (G + 1,).
        """
        return keras.KerasTensor((self.num_gates + 1,), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(num_gates=self.num_gates, num_exits=self.num_exits)
        return config


class _Switched(keras.layers.Wrapper):
    """Runs the wrapped layer inside ``ops.cond`` on a flag read from the control vector."""

    def build(self, input_shape):
        x_shape = tuple(input_shape[0])
        if not self.layer.built:
            self.layer.build(x_shape)
        # The zero output of a skipped operation needs the operation's output shape; compute it
        # once here (symbolically), so layers without `compute_output_shape` work too.
        spec = self.layer.compute_output_spec(keras.KerasTensor(x_shape, dtype=self.compute_dtype))
        self._output_shape = tuple(spec.shape)
        if any(d is None for d in x_shape[1:] + self._output_shape[1:]):
            kind = type(self).__name__
            raise ValueError(
                f"Invalid value for argument `layer` of {kind} {self.name!r}. Expected an operation "
                "on feature maps of fixed shape (apart from the batch dimension): a switched-off "
                "operation returns zeros of its output shape, and FLOPs are counted from the "
                f"shapes. Received: input shape {x_shape}, output shape {self._output_shape}. Build "
                "the model on a fixed input shape (e.g. keras.Input((32, 32, 3)), "
                "input_shape=(32, 32, 3) for tips_keras.zoo builders, or "
                "tips_keras.anytime(model, input_shape=(32, 32, 3)) for a fully convolutional model)."
            )
        self.built = True

    def _flag(self, control):
        raise NotImplementedError

    def call(self, inputs, training=None):
        x, control = inputs
        out_shape = self._output_shape

        def run():
            return ops.cast(self.layer(x, training=training), self.compute_dtype)

        def skip():
            batch = ops.shape(x)[0]
            return ops.zeros((batch,) + out_shape[1:], dtype=self.compute_dtype)

        return ops.cond(self._flag(control), run, skip)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],) + self._output_shape[1:]


@keras.saving.register_keras_serializable(package=PACKAGE)
class PathGate(_Switched):
    """Switches an operation (e.g. a residual conv branch) on or off without re-tracing.

    The wrapped layer runs only when both hold: the gate's bit in the control vector is on (or
    the path is fixed, ``gate_index=None``), and the active exit index is ``>= min_exit`` (the
    operation lies before the active exit). Otherwise it is *not computed* (graph conditional)
    and zeros of the wrapped layer's output shape are returned.

    Args:
        layer: the operation to switch, a built or buildable Keras layer / model whose output
            shape does not depend on its input values.
        gate_index: index of this gate's bit in the control vector, or ``None`` for an operation
            that is always on when its stage is reached (e.g. a downsampling transition).
        min_exit: the first exit index for which this operation is needed.

    Call arguments:
        inputs: ``[x, control]`` where ``control`` is the output of `SubnetController`.

    Example:
        >>> branch = keras.Sequential([keras.layers.Conv2D(16, 3, padding="same")])
        >>> y = PathGate(branch, gate_index=0, min_exit=0)([x, control])  # doctest: +SKIP
    """

    def __init__(self, layer, gate_index=None, min_exit=0, **kwargs):
        super().__init__(layer, **kwargs)
        if gate_index is not None and (
            not isinstance(gate_index, int) or isinstance(gate_index, bool) or gate_index < 0
        ):
            raise ValueError(
                "Invalid value for argument `gate_index`. Expected a non-negative integer or "
                f"None. Received: gate_index={gate_index!r}"
            )
        if not isinstance(min_exit, int) or isinstance(min_exit, bool) or min_exit < 0:
            raise ValueError(
                "Invalid value for argument `min_exit`. Expected a non-negative integer. "
                f"Received: min_exit={min_exit!r}"
            )
        self.gate_index = gate_index
        self.min_exit = min_exit

    def _flag(self, control):
        reached = _scalar(control, -1) > (self.min_exit - 0.5)
        if self.gate_index is None:
            return reached
        return ops.logical_and(reached, _scalar(control, self.gate_index) > 0.5)

    def runs_in(self, config):
        """Whether the wrapped operation runs in ``config`` (the Python twin of the graph flag).

        Args:
            config: a `tips_keras.Configuration` (``exit`` and ``gates``).

        Returns:
            True when the active exit is ``>= min_exit`` and the gate is on (or fixed).

        Example:
            >>> gate.runs_in(tips_keras.Configuration(2, (1, 0, 1, 1, 0, 0)))  # doctest: +SKIP
        """
        return config.exit >= self.min_exit and (self.gate_index is None or bool(config.gates[self.gate_index]))

    def get_config(self):
        config = super().get_config()
        config.update(gate_index=self.gate_index, min_exit=self.min_exit)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ExitHead(_Switched):
    """A classifier head that is computed only when its exit is the active one.

    Args:
        layer: the head (e.g. ``GlobalAveragePooling2D`` + ``Dense(softmax)``).
        exit_index: this head's index; exits are ordered from shallowest to deepest.

    Example:
        >>> head = keras.Sequential([keras.layers.GlobalAveragePooling2D(),
        ...                          keras.layers.Dense(10, activation="softmax")])
        >>> p0 = ExitHead(head, exit_index=0)([features, control])  # doctest: +SKIP
    """

    def __init__(self, layer, exit_index, **kwargs):
        super().__init__(layer, **kwargs)
        if not isinstance(exit_index, int) or isinstance(exit_index, bool) or exit_index < 0:
            raise ValueError(
                "Invalid value for argument `exit_index`. Expected a non-negative integer. "
                f"Received: exit_index={exit_index!r}"
            )
        self.exit_index = exit_index

    def _flag(self, control):
        return ops.abs(_scalar(control, -1) - float(self.exit_index)) < 0.5

    def runs_in(self, config):
        """Whether this head runs in ``config`` (the Python twin of the graph flag).

        Args:
            config: a `tips_keras.Configuration`.

        Returns:
            True when ``config.exit`` is this head's exit.
        """
        return config.exit == self.exit_index

    def get_config(self):
        config = super().get_config()
        config.update(exit_index=self.exit_index)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ReachedExitHead(ExitHead):
    """An exit head computed whenever the active sub-network reaches it (joint exit training).

    The same head as an `ExitHead` (usually sharing its layer and weights), but switched on when
    ``exit_index <= active exit`` instead of ``==``: one forward pass of a sub-network then yields
    the output of every exit its trunk passes, as the early-exit literature trains them (MSDNet,
    Shallow-Deep Networks). Heads after the active exit return zeros. `AnytimeModel.exits_model`
    builds the view that uses it.

    Args:
        layer: the head (shared with the model's `ExitHead`).
        exit_index: this head's index.

    Example:
        >>> head = ReachedExitHead(model.get_layer("exit0").layer, exit_index=0)  # doctest: +SKIP
    """

    def _flag(self, control):
        return _scalar(control, -1) > (float(self.exit_index) - 0.5)

    def runs_in(self, config):
        """True when ``config`` reaches this head (``exit_index <= config.exit``)."""
        return self.exit_index <= config.exit


@keras.saving.register_keras_serializable(package=PACKAGE)
class ExitSelector(keras.layers.Layer):
    """Returns the output of the active exit head.

    Call arguments:
        inputs: ``[head_0, ..., head_{E-1}, control]``; heads ordered by exit index.

    Example:
        >>> outputs = ExitSelector()([p0, p1, p2, control])  # doctest: +SKIP
    """

    def call(self, inputs):
        *heads, control = inputs
        index = ops.cast(ops.round(_scalar(control, -1)), "int32")
        stacked = ops.stack([ops.cast(h, self.compute_dtype) for h in heads], axis=0)
        return ops.take(stacked, index, axis=0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])
