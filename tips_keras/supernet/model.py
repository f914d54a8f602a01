"""`AnytimeModel`: a functional Keras model whose active sub-network is switched at run time.

It adds to a functional model, and nothing else (its constructor is the functional one, so
``.keras`` files round-trip with the standard machinery):

* `set_config` / `get_active_config` to switch the sub-network (one variable assign, no re-trace);
* `exits_model`, a view that computes every exit the active sub-network's trunk reaches in one
  forward pass (joint exit training);
* a hook for the training step: `set_training_step` makes `train_step` run a step object (the
  multi-path, multi-exit step of `tips_keras.training.step`, attached by `TIPSCallback`); without
  one the standard Keras step runs. The model never imports the training package;
* `fit`, which moves callbacks marked ``runs_first`` (the TIPS callback) to the front and hands
  callbacks that ask for them (``set_fit_arguments``) the arguments of the call, so the callback
  can take its BatchNorm calibration sample and its validation data from them. Under
  `tf.distribute.MultiWorkerMirroredStrategy` it first applies `distribute.fix_multi_worker_reduce`
  (Keras 3's ``fit`` fails there otherwise, keras#20585).
"""

import inspect

import keras

from tips_keras.supernet import distribute
from tips_keras.supernet import graph_options
from tips_keras.supernet import layers as gl
from tips_keras.supernet import topology as topology_lib


def _runs_first_order(callbacks):
    """Stable partition of a list / tuple of callbacks: those marked ``runs_first`` first."""
    if not isinstance(callbacks, (list, tuple)):
        return callbacks
    first = [c for c in callbacks if getattr(c, "runs_first", False)]
    return first + [c for c in callbacks if not getattr(c, "runs_first", False)]


_FIT_SIGNATURE = inspect.signature(keras.Model.fit)


@keras.saving.register_keras_serializable(package="tips_keras")
class AnytimeModel(keras.Model):
    """A functional model with gated layers (`PathGate`, `ExitHead`) and a `SubnetController`.

    Build it like any functional model: ``AnytimeModel(inputs, outputs)``; `tips_keras.supernet.zoo` and
    `tips_keras.anytime` do so for you.

    Example:
        >>> model = tips_keras.supernet.zoo.anytime_resnet()  # doctest: +SKIP
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
        """The gate DAG (`tips_keras.supernet.topology.Topology`), read once and cached per model.

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
        from tips_keras.supernet.configs import Configuration

        return Configuration.from_vector(keras.ops.convert_to_numpy(self.controller.active))

    def exits_model(self):
        """A view of the supernet that outputs every exit the active sub-network reaches.

        Built once and cached (not saved): the same layers and weights, with each `ExitHead`
        replaced by a `ReachedExitHead` on the same head, so one forward pass of configuration
        ``(e, bits)`` computes exits ``0..e`` of that trunk; later exits are zeros. The training step
        uses it to train every reached exit at once.

        Returns:
            A functional ``keras.Model`` from the model input to a list of E outputs, ordered by
            exit index.

        Raises:
            ValueError: the model is not a gated supernet (see `tips_keras.read_topology`).

        Example:
            >>> model.set_config((1, [1, 1, 0, 0, 0, 0]))  # doctest: +SKIP
            >>> p0, p1, p2 = model.exits_model()(x)  # p2 is zeros: exit 2 is not reached  # doctest: +SKIP
        """
        view = self.__dict__.get("_tips_exits_model")
        if view is None:
            self.topology  # raises for a model without gates
            heads = sorted((layer for layer in self.layers if isinstance(layer, gl.ExitHead)),
                           key=lambda layer: layer.exit_index)
            outputs = []
            for head in heads:
                x, control = head.input
                reached = gl.ReachedExitHead(head.layer, exit_index=head.exit_index,
                                             name=f"{head.name}_reached")
                outputs.append(reached([x, control]))
            inputs = self.inputs[0] if len(self.inputs) == 1 else self.inputs
            view = keras.Model(inputs, outputs, name=f"{self.name}_exits")
            object.__setattr__(self, "_tips_exits_model", view)  # untracked: no second copy saved
        return view

    @property
    def training_step(self):
        """The step object `train_step` runs (``None``: the standard Keras step).

        Returns:
            The object set by `set_training_step`, or ``None``.
        """
        return self.__dict__.get("_tips_training_step")

    def set_training_step(self, step):
        """Makes `train_step` run ``step.train_step(data)`` (``None`` restores the standard step).

        `TIPSCallback` attaches a `tips_keras.training.step.AnytimeStep` at the start of training
        and removes it at the end. The train function is rebuilt (traced at its first call).

        Args:
            step: an object with a ``train_step(data)`` method returning the metric results, or
                ``None``.

        Raises:
            ValueError: ``step`` has no ``train_step`` method.

        Example:
            >>> model.set_training_step(None)  # back to keras.Model.train_step  # doctest: +SKIP
        """
        if step is not None and not callable(getattr(step, "train_step", None)):
            raise ValueError(
                "Invalid value for argument `step`. Expected an object with a train_step(data) "
                f"method, or None. Received: step of type {type(step).__name__}"
            )
        object.__setattr__(self, "_tips_training_step", step)
        self.train_function = None
        if step is not None:  # `fit` may have made its train function already (before on_train_begin)
            self.make_train_function(force=True)

    def train_step(self, data):
        """Runs the attached training step (`set_training_step`), else Keras' standard step.

        Args:
            data: a batch ``(x, y)`` or ``(x, y, sample_weight)``.

        Returns:
            The metric results, as `keras.Model.train_step`.
        """
        step = self.training_step
        if step is None:
            return super().train_step(data)
        return step.train_step(data)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, with callbacks marked ``runs_first`` (the TIPS callback) moved first.

        At the end of an epoch the TIPS callback writes the epoch's importance and sampler state
        into the controller and its deployed-accuracy metrics into the logs. Callbacks that save
        the model then (``BackupAndRestore``, ``ModelCheckpoint``) must run after it, or a resumed
        run would continue from the previous epoch's sampler state; so must callbacks reading the
        logs (``CSVLogger``, ``TensorBoard``, ``EarlyStopping``). The order among the other
        callbacks is kept; a ``CallbackList`` is passed on unchanged.

        Callbacks with a ``set_fit_arguments(arguments)`` method receive the call's arguments by
        name (``x``, ``y``, ``validation_data``, ``validation_split``, ...) before training starts:
        `TIPSCallback` takes its BatchNorm calibration images and validation data from them.
        Under `tf.distribute.MultiWorkerMirroredStrategy` the model's strategy first gets
        `tips_keras.supernet.distribute.fix_multi_worker_reduce` (Keras 3's ``fit`` fails there
        otherwise, keras#20585). Where only CPUs are visible, ``fit`` runs under
        `tips_keras.supernet.graph_options.no_addn_scheduling`: its functions are optimized
        without Grappler's AddN scheduling rewrite, which a CPU's nominal 256 MiB memory limit
        sets off on gated steps.

        Args:
            *args: positional arguments of `keras.Model.fit`.
            **kwargs: keyword arguments of `keras.Model.fit`.

        Returns:
            The ``History`` of `keras.Model.fit`.

        Raises:
            TypeError: arguments that `keras.Model.fit` does not accept.

        Example:
            >>> model.fit(x, y, epochs=5, callbacks=[keras.callbacks.CSVLogger("log.csv"),
            ...                                      tips_keras.TIPSCallback()])  # doctest: +SKIP
        """
        bound = _FIT_SIGNATURE.bind(self, *args, **kwargs)
        distribute.fix_multi_worker_reduce(self.distribute_strategy)
        callbacks = bound.arguments.get("callbacks")
        if callbacks is not None:
            callbacks = _runs_first_order(callbacks)
            bound.arguments["callbacks"] = callbacks
            members = callbacks.callbacks if isinstance(callbacks, keras.callbacks.CallbackList) else callbacks
            arguments = {k: v for k, v in bound.arguments.items() if k not in ("self", "kwargs")}
            for callback in members:
                if callable(getattr(callback, "set_fit_arguments", None)):
                    callback.set_fit_arguments(arguments)
        with graph_options.no_addn_scheduling():
            return super().fit(*bound.args[1:], **bound.kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Builds metrics and optimizer before the train function is traced, strategy or not.

        Keras 3 on TensorFlow builds them symbolically from the first batch only under a
        distribution strategy; otherwise their variables are created inside the first trace, and a
        `tf.function` whose first trace creates variables is traced a second time. The anytime
        step (k paths, every exit, distillation) is the costliest graph of ``fit``: measured on the
        tests' 4-gate supernet, two traces of about 11 s each. Here the default strategy takes the
        same symbolic build, so the step is traced once (``fit`` resets the iterator afterwards, as
        it does under a strategy). Once everything is built (later ``fit`` calls, the validation
        ``evaluate`` of every epoch) no batch is read. Pinned to keras 3.15.1's private trainer hook.
        """
        if self._distribute_strategy is not None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        parts = (getattr(self, "optimizer", None), self._compile_metrics, self._compile_loss)
        if all(part is None or part.built for part in parts) and all(
                layer.built for layer in self._flatten_layers()):
            return
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = next(batches)
                break
        if data_batch is not None:
            self._symbolic_build(data_batch=data_batch)
