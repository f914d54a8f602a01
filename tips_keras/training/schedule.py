"""Per-step schedules of the training recipes: the learning rate and the auxiliary exits' weight.

Pure Python. The learning rate: linear warm-up, then cosine decay.

The authors train with a cosine schedule and a warm-up of 5 to 10 epochs out of 80 to 140 (GitHub
LiGuihong/TIPS, ``configs/*.yml``; timm's ``CosineLRScheduler``). `TIPSCallback` applies it per
step by assigning the optimizer's learning-rate variable from the step index ``epoch *
steps_per_epoch + batch``, so it needs no optimizer of its own, never re-traces, and a resumed run
(``BackupAndRestore``) continues on the same curve.

The auxiliary exits' weight (`aux_weight_at`) is how much the exits a path passes before its own
exit count in its loss; a ``(start, end)`` pair moves from ``start`` to ``end`` by a half cosine
over the training steps, as Deeply-Supervised Nets (Lee et al., AISTATS 2015) let their companion
losses fade so that the deepest exit owns the trunk at the end. The callback assigns it per step,
from the same step index as the learning rate.
"""

import math

import keras

SCHEDULES = ("cosine", None)


def check_schedule(lr_schedule, warmup):
    """Validates ``lr_schedule`` and ``warmup`` (`TIPSCallback` arguments).

    Args:
        lr_schedule: ``"cosine"`` or ``None`` (keep the optimizer's learning rate).
        warmup: warm-up length as a fraction of all steps, in [0, 1).

    Returns:
        ``(lr_schedule, warmup)`` with ``warmup`` as a float.

    Raises:
        ValueError: anything else.

    Example:
        >>> check_schedule("cosine", 0.05)
        ('cosine', 0.05)
    """
    if lr_schedule not in SCHEDULES:
        raise ValueError(
            f"Invalid value for argument `lr_schedule`. Expected one of {SCHEDULES}. "
            f"Received: lr_schedule={lr_schedule!r}"
        )
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not 0.0 <= warmup < 1.0:
        raise ValueError(
            "Invalid value for argument `warmup`. Expected a fraction of the training steps in "
            f"[0, 1). Received: warmup={warmup!r}"
        )
    return lr_schedule, float(warmup)


def warmup_cosine(step, total_steps, warmup_steps=0, final_fraction=0.0):
    """Multiplier of the base learning rate at ``step`` (0-based).

    ``(step + 1) / warmup_steps`` during the warm-up, then
    ``final + (1 - final) * (1 + cos(pi * t)) / 2`` with ``t`` going from 0 at the first step after
    the warm-up to 1 at the last step.

    Args:
        step: the step index (0-based; values past the end give ``final_fraction``).
        total_steps: number of training steps (>= 1).
        warmup_steps: steps of linear warm-up (>= 0, < total_steps).
        final_fraction: multiplier reached at the last step, in [0, 1].

    Returns:
        A float in [0, 1].

    Example:
        >>> [round(warmup_cosine(s, 10, 2), 3) for s in (0, 1, 2, 9)]
        [0.5, 1.0, 1.0, 0.0]
    """
    total_steps = max(int(total_steps), 1)
    warmup_steps = min(max(int(warmup_steps), 0), total_steps - 1)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps - 1, 1)
    t = min(max((step - warmup_steps) / span, 0.0), 1.0)
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * t))


def check_aux_weight(aux_weight):
    """Validates ``aux_weight``: a weight in [0, 1], or a ``(start, end)`` pair of such weights.

    Args:
        aux_weight: the `TIPSCallback` / recipe argument.

    Returns:
        A ``(start, end)`` tuple of floats (``(w, w)`` for a constant weight).

    Raises:
        ValueError: anything else, with what was received.

    Example:
        >>> check_aux_weight(1.0), check_aux_weight((1, 0))
        ((1.0, 1.0), (1.0, 0.0))
    """
    pair = tuple(aux_weight) if isinstance(aux_weight, (tuple, list)) else (aux_weight, aux_weight)
    if len(pair) != 2 or any(isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w <= 1.0
                             for w in pair):
        raise ValueError(
            "Invalid value for argument `aux_weight`. Expected a weight in [0, 1] or a (start, end) "
            f"pair of such weights. Received: aux_weight={aux_weight!r}"
        )
    return float(pair[0]), float(pair[1])


def aux_weight_at(aux_weight, fraction):
    """The auxiliary exits' weight after ``fraction`` of the training steps.

    ``end + (start - end) * (1 + cos(pi * fraction)) / 2``: ``start`` at the first step, ``end`` at
    the last.

    Args:
        aux_weight: ``(start, end)`` (`check_aux_weight`).
        fraction: share of the training steps done, in [0, 1] (clipped).

    Returns:
        A float between ``start`` and ``end``.

    Example:
        >>> [round(aux_weight_at((1.0, 0.0), t), 2) for t in (0.0, 0.5, 1.0)]
        [1.0, 0.5, 0.0]
    """
    start, end = aux_weight
    t = min(max(float(fraction), 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def training_fraction(params, epoch, batch):
    """Share of the ``fit`` call's steps done before step (epoch, batch), in [0, 1].

    Args:
        params: the callback's ``params`` (``epochs`` and ``steps`` of the ``fit`` call).
        epoch: the epoch index.
        batch: the batch index (ignored when the steps per epoch are unknown).

    Returns:
        A float, or ``None`` outside ``fit`` (no ``epochs``).

    Example:
        >>> training_fraction({"epochs": 2, "steps": 10}, 1, 5)
        0.7894736842105263
    """
    index = _step_index(params, epoch, batch)
    if index is None:
        return None
    step, total = index
    return step / max(total - 1, 1)


def _step_index(params, epoch, batch):
    """``(step, total)`` of step (epoch, batch) in the ``fit`` call; per epoch when the steps per
    epoch are unknown; ``None`` outside ``fit``."""
    params = params or {}
    if not params.get("epochs"):
        return None
    epochs, steps = int(params["epochs"]), params.get("steps")
    if not steps:
        return epoch, epochs
    return epoch * int(steps) + batch, epochs * int(steps)


class StepSchedule:
    """The callback's per-step learning rate: ``base * warmup_cosine(step)``, restored after fit.

    The base is the optimizer's learning rate when training starts; an optimizer built with a
    ``LearningRateSchedule`` keeps its own (nothing is scheduled).

    Args:
        warmup: warm-up fraction of all steps, or ``None`` for no schedule.

    Example:
        >>> schedule = StepSchedule(0.05)  # doctest: +SKIP
        >>> schedule.start(model.optimizer); schedule.rate(callback.params, 0, 0)  # doctest: +SKIP
    """

    def __init__(self, warmup):
        self.warmup = warmup
        self.base = None

    def start(self, optimizer):
        """Reads the base learning rate (none for a scheduled optimizer or ``warmup=None``).

        Args:
            optimizer: the model's optimizer.
        """
        self.base = None
        if self.warmup is not None and not isinstance(
                optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            self.base = float(keras.ops.convert_to_numpy(optimizer.learning_rate))

    def rate(self, params, epoch, batch):
        """The learning rate of step (epoch, batch).

        Args:
            params: the callback's ``params`` (``epochs`` and ``steps`` of the ``fit`` call).
            epoch: the epoch index.
            batch: the batch index.

        Returns:
            A float, or ``None`` when not scheduling (or outside ``fit``). With an unknown
            number of steps per epoch, one value per epoch.
        """
        index = _step_index(params, epoch, batch)
        if self.base is None or index is None:
            return None
        step, total = index
        return self.base * warmup_cosine(step, total, round(self.warmup * total))

    def stop(self, optimizer):
        """Puts the base learning rate back (a later ``fit`` starts from it again).

        Args:
            optimizer: the model's optimizer.
        """
        if self.base is not None:
            optimizer.learning_rate = self.base
