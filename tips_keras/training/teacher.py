"""The EMA teacher of in-place distillation: an exponential moving average of the supernet's weights.

The authors' training loop (GitHub LiGuihong/TIPS, ``dyn_slim/apis/train_slim.py``; DS-Net's
in-place ensemble bootstrapping) keeps a copy of the network whose weights follow the trained ones
with ``w_ema <- d * w_ema + (1 - d) * w`` (``d = 0.997``) and lets the smaller sub-networks learn
from the soft output of that copy's *largest* configuration. An average of recent weights is a
steadier teacher than the current largest sub-network (BigNAS' in-place distillation), which
changes with every step.

`EMATeacher` holds the copy as a Keras layer. `TIPSCallback` attaches it to the model as the
untracked attribute ``_tips_teacher`` for the duration of ``fit``: it is not among
``model.weights`` (so summaries, FLOPs, extraction and export never see it), but Keras' weight
saving walks the model's attributes, so ``model.save_weights`` and
``keras.callbacks.BackupAndRestore`` keep it and a resumed run continues with the same teacher.
"""

import keras
import tensorflow as tf

from tips_keras.supernet import topology as topology_lib

TEACHER_ATTRIBUTE = "_tips_teacher"


def _check_decay(decay):
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
        raise ValueError(
            "Invalid value for argument `ema_decay`. Expected a float in [0, 1). "
            f"Received: ema_decay={decay!r}"
        )
    return float(decay)


class EMATeacher(keras.layers.Layer):
    """A weight-averaged copy of a supernet that gives the soft targets of in-place distillation.

    The decay warms up as in ``tf.train.ExponentialMovingAverage(num_updates=...)``:
    ``d_n = min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so a teacher of a short run is
    not stuck near its random initial weights (with ``decay = 0.997`` the plain average would
    need about 300 steps to forget them).

    Args:
        model: the `AnytimeModel` being trained (built). The teacher starts as an exact copy.
        decay: the EMA decay ``d`` in [0, 1) (default 0.997, the authors' value).

    Raises:
        ValueError: ``decay`` outside [0, 1), or ``model`` without a `SubnetController`.

    Example:
        >>> teacher = EMATeacher(model, decay=0.997)  # doctest: +SKIP
        >>> soft = teacher.largest_output(x)  # the average network's largest configuration  # doctest: +SKIP
    """

    def __init__(self, model, decay=0.997, **kwargs):
        kwargs.setdefault("name", "ema_teacher")
        super().__init__(**kwargs)
        self.decay = _check_decay(decay)
        with model.distribute_strategy.scope():
            self.network = keras.models.clone_model(model)
            self.network.set_weights(model.get_weights())
            self.num_updates = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                               name="num_updates", dtype="float32",
                                               aggregation="only_first_replica")
        self._pairs = list(zip(self.network.trainable_weights, model.trainable_weights))
        for mine, theirs in self._pairs:
            if tuple(mine.shape) != tuple(theirs.shape):
                raise ValueError(  # clone_model keeps the layer order; anything else is a bug
                    f"EMATeacher: weight {theirs.path!r} of shape {tuple(theirs.shape)} paired with "
                    f"{mine.path!r} of shape {tuple(mine.shape)}"
                )
        self._controller = topology_lib.find_controller(self.network)
        space = topology_lib.read_topology(model).space
        self._largest = tf.constant(space.largest().to_vector())
        self.built = True

    def current_decay(self):
        """The decay the next update uses: ``min(decay, (1 + n) / (10 + n))``.

        Returns:
            A float32 scalar tensor.
        """
        n = tf.cast(self.num_updates, tf.float32)
        return tf.minimum(tf.constant(self.decay, tf.float32), (1.0 + n) / (10.0 + n))

    def update(self):
        """One EMA step towards the student's current trainable weights (graph-safe)."""
        d = self.current_decay()
        for mine, theirs in self._pairs:
            value = tf.cast(theirs, mine.dtype)
            mine.assign(tf.cast(d, mine.dtype) * mine + tf.cast(1.0 - d, mine.dtype) * value)
        self.num_updates.assign_add(1.0)

    def largest_output(self, x):
        """The teacher's output in the largest configuration (deepest exit), without gradient.

        BatchNorm runs on the batch's statistics (``training=True``), as the student's steps do,
        so the teacher needs no statistics of its own; dropout layers of a user's model are then
        active in the teacher too.

        Args:
            x: a batch of inputs.

        Returns:
            The deepest exit's output (batch, classes), gradient stopped.
        """
        self._controller.active.assign(self._largest)
        return tf.stop_gradient(self.network(x, training=True))

    def copy_to(self, model):
        """Writes the averaged weights into ``model`` (the student), e.g. at the end of training.

        Args:
            model: the model this teacher was built from.
        """
        for mine, theirs in self._pairs:
            theirs.assign(tf.cast(mine, theirs.dtype))


def attach(model, decay):
    """Attaches a fresh `EMATeacher` to ``model`` (replacing one left by an earlier ``fit``).

    Args:
        model: the `AnytimeModel` being trained.
        decay: the EMA decay.

    Returns:
        The `EMATeacher`.

    Example:
        >>> teacher = attach(model, 0.997)  # doctest: +SKIP
    """
    teacher = EMATeacher(model, decay)
    object.__setattr__(model, TEACHER_ATTRIBUTE, teacher)
    return teacher


def detach(model):
    """Removes the teacher from ``model`` (after training), so later saves do not carry it.

    Args:
        model: the model.

    Returns:
        The removed `EMATeacher`, or ``None``.

    Example:
        >>> detach(model)  # doctest: +SKIP
    """
    teacher = model.__dict__.pop(TEACHER_ATTRIBUTE, None)
    return teacher
