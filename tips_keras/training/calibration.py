"""The calibration sample: training images kept on a supernet for BatchNorm recalibration.

`TIPSCallback` keeps a sample of ``fit``'s own ``x`` on the model (in memory, never saved);
``"auto"`` recalibration in `tips_keras.extract`, `tips_keras.search.ExitSearch` and the demo reads
it back, so a user never passes training images twice.
"""

import numpy as np

CALIBRATION_ATTRIBUTE = "_tips_calibration"


def set_calibration_data(model, x):
    """Keeps ``x`` on ``model`` (in memory, never saved) as its BatchNorm calibration sample.

    `TIPSCallback` does it with the sample it took from ``fit``; ``"auto"`` recalibration in
    `tips_keras.extract` and `tips_keras.search.ExitSearch` reads it back (`calibration_data`).

    Args:
        model: a supernet.
        x: training inputs, or ``None`` to forget them.

    Example:
        >>> set_calibration_data(model, x_train[:1024])  # doctest: +SKIP
    """
    object.__setattr__(model, CALIBRATION_ATTRIBUTE, None if x is None else np.asarray(x))


def calibration_data(model):
    """The calibration sample kept on ``model`` by the last ``fit`` with `TIPSCallback`.

    Args:
        model: a supernet.

    Returns:
        A numpy array of training inputs, or ``None``.

    Example:
        >>> calibration_data(model).shape  # doctest: +SKIP
        (1024, 28, 28, 1)
    """
    return getattr(model, "__dict__", {}).get(CALIBRATION_ATTRIBUTE)


def resolve_calibration(model, x):
    """``x`` itself, or for ``"auto"`` the sample kept on the model (``None`` when there is none).

    Args:
        model: a supernet.
        x: ``"auto"``, ``None`` or training inputs.

    Returns:
        A numpy array or ``None``.

    Raises:
        ValueError: a string other than ``"auto"``.

    Example:
        >>> resolve_calibration(model, "auto") is calibration_data(model)  # doctest: +SKIP
        True
    """
    if isinstance(x, str):
        if x != "auto":
            raise ValueError(
                "Invalid value for argument `recalibration_data`. Expected 'auto', None or training "
                f"inputs. Received: {x!r}"
            )
        return calibration_data(model)
    return x
