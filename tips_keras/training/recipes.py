"""Argument checks of `TIPSCallback` (kept apart so the callback reads as the training loop)."""

import math

from tips_keras import sampling

SCORES = ("log", "sum")


def check_arguments(sampler, paths_per_step, distillation, coupling, score, sampler_options):
    """Validates `TIPSCallback`'s sampler arguments; may set ``include_largest`` in the options.

    Args:
        sampler: a name of ``sampling.SAMPLERS`` or a callable.
        paths_per_step: ``None`` or an int.
        distillation: float in [0, 1].
        coupling: DTMC coupling >= 0.
        score: one of ``SCORES``.
        sampler_options: dict of sampler options (updated in place).

    Raises:
        ValueError: any invalid value, with what was received.
    """
    if not callable(sampler) and sampler not in sampling.SAMPLERS:
        raise ValueError(
            f"Invalid value for argument `sampler`. Expected one of {sampling.SAMPLERS} or a "
            f"callable space -> Sampler. Received: sampler={sampler!r}"
        )
    if score not in SCORES:
        raise ValueError(
            f"Invalid value for argument `score`. Expected one of {SCORES}. Received: score={score!r}"
        )
    if not isinstance(coupling, (int, float)) or not math.isfinite(coupling) or coupling < 0:
        raise ValueError(
            "Invalid value for argument `coupling`. Expected a finite float >= 0. "
            f"Received: coupling={coupling!r}"
        )
    if not 0.0 <= float(distillation) <= 1.0:
        raise ValueError(
            "Invalid value for argument `distillation`. Expected a float in [0, 1]. "
            f"Received: distillation={distillation!r}"
        )
    if distillation > 0 and sampler not in ("tips", "sandwich"):
        raise ValueError(
            "Invalid value for argument `distillation`: in-place distillation needs a "
            "sampler that trains the largest path first ('tips' or 'sandwich'). "
            f"Received: sampler={sampler!r}, distillation={distillation!r}"
        )
    if distillation > 0 and sampler == "tips":
        if paths_per_step is None or paths_per_step < 2:
            raise ValueError(
                "Invalid value for argument `paths_per_step`: distillation with TIPS trains "
                "the largest path plus at least one sampled path (>= 2). "
                f"Received: paths_per_step={paths_per_step!r}"
            )
        sampler_options.setdefault("include_largest", True)
