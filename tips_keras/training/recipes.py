"""Training recipes of `TIPSCallback`: named sets of defaults, and the checks of its arguments.

A recipe fixes how a step trains (paths, exits, teacher, schedule, masked updates); the sampler
decides which sub-networks the drawn paths are. Every recipe value can be overridden by the
callback argument of the same name.

* ``"menu"`` (the default): for the menu of FLOPs ``budgets`` a user will deploy (default
  10 / 25 / 50 / 75 % and the largest): the largest sub-network and ``paths_per_step - 1`` paths
  drawn among the budgets' important paths (TIPS: their highest-TPS configurations, ``focus=1.0``)
  in every step, no smallest sub-network; the largest learns at its own exit only, every other
  path at every exit it reaches with the earlier (auxiliary) exits weighted 0.3 (GoogLeNet's and
  Deeply-Supervised Nets' companion-loss weight); the paths other than the largest learn from an
  EMA teacher (decay 0.997, the authors' value) mixed with the labels; only the parameters a step
  used are stepped; a cosine learning rate with a short linear warm-up. Measured in
  benchmarks/RESULTS.md and benchmarks/deep/RESULTS.md (variant ``tips[menu4]``): the searched
  menu is on average 0.9 (standard setting) and 1.8 (deep) points below the same networks trained
  alone, against 2.5 for ``"anytime"``, and its searched front is above ``"anytime"``'s at every
  budget but one (deep, 75 %: 83.3 vs 83.6 %); configurations far from the menu are left
  untrained (the search finds the menu's).
* ``"anytime"``: for the whole configuration space: the sandwich rule (the largest and the
  smallest sub-network in every step, as in slimmable networks, BigNAS and the authors' loop) plus
  ``paths_per_step - 2`` paths drawn by the sampler (TIPS: by importance); every exit a path's
  trunk reaches learns at weight 1 (MSDNet, Shallow-Deep Networks); teacher, schedule and masked
  updates as ``"menu"``. Any configuration is usable, each a few points below the same network
  trained alone (benchmarks/RESULTS.md, runs ``tips`` and ``uniform``).
* ``"single_path"``: tips-keras 0.1's rule and the baseline of the sampler comparisons: one
  drawn path per step, only its own exit trained, no teacher, the optimizer's own learning rate,
  every parameter stepped. ``sampler="sandwich"`` with it is the plain sandwich rule, and
  ``distillation=a`` adds in-place distillation from the step's first, largest path.
"""

import math

from tips_keras.training import sampling
from tips_keras.training.schedule import check_aux_weight, check_schedule
from tips_keras.training.step import EXIT_MODES

SCORES = ("log", "sum")
TEACHERS = ("ema", "inplace")

RECIPES = {
    "anytime": dict(
        sandwich=True,        # largest + smallest in every step
        paths_per_step=4,     # ... plus 2 drawn paths (the authors' 4)
        exits="reached",      # every exit the trunk reaches learns
        aux_weight=1.0,       # ... the exits before the path's own with weight 1 all along
        teacher="ema",        # soft targets from the EMA teacher's largest configuration
        distillation=0.5,     # (1 - a) * labels + a * KL(teacher || path)
        ema_decay=0.997,
        lr_schedule="cosine",
        warmup=0.05,          # linear warm-up over 5 % of the steps
        masked_updates=True,  # parameters no path used are not stepped
        final_weights="trained",
    ),
    "menu": dict(
        sandwich=False,       # no smallest path: its share of the step goes to the menu's paths
        paths_per_step=4,     # the largest + 3 drawn among the budgets' important paths
        exits="reached_except_largest",  # the largest learns at its own exit only
        aux_weight=0.3,       # the other paths' earlier exits at 0.3
        teacher="ema",
        distillation=0.5,
        ema_decay=0.997,
        lr_schedule="cosine",
        warmup=0.05,
        masked_updates=True,
        final_weights="trained",
    ),
    "single_path": dict(
        sandwich=False,
        paths_per_step=1,
        exits="active",
        aux_weight=1.0,
        teacher="inplace",
        distillation=0.0,
        ema_decay=0.997,
        lr_schedule="constant",
        warmup=0.0,
        masked_updates=False,
        final_weights="trained",
    ),
}
FINAL_WEIGHTS = ("trained", "ema")
# Sampler options a recipe sets (unless the user gives them), per sampler name.
RECIPE_SAMPLER_OPTIONS = {
    "menu": {
        "tips": {"include_largest": True, "include_smallest": False, "focus": 1.0},
        "uniform": {"include_largest": True, "include_smallest": False},
    },
}


def resolve_recipe(recipe, overrides, sampler):
    """The recipe's values with the callback's explicit arguments applied, checked.

    Args:
        recipe: a name of ``RECIPES``.
        overrides: ``{argument: value}`` of the callback arguments that are not ``None``.
        sampler: the callback's ``sampler`` (a name of `sampling.SAMPLERS` or a callable).

    Returns:
        A dict with every key of a recipe.

    Raises:
        ValueError: an unknown recipe or any invalid value, with what was received.

    Example:
        >>> resolve_recipe("anytime", {"distillation": 0.0}, "tips")["teacher"]
        'ema'
    """
    if recipe not in RECIPES:
        raise ValueError(
            f"Invalid value for argument `recipe`. Expected one of {tuple(RECIPES)}. "
            f"Received: recipe={recipe!r}"
        )
    values = dict(RECIPES[recipe])
    values.update({k: v for k, v in overrides.items() if v is not None})
    if sampler == "sandwich":
        values["sandwich"] = True
        if "paths_per_step" not in overrides or overrides["paths_per_step"] is None:
            values["paths_per_step"] = max(values["paths_per_step"], 4)
    k = values["paths_per_step"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(
            "Invalid value for argument `paths_per_step`. Expected a positive integer. "
            f"Received: paths_per_step={k!r}"
        )
    if not isinstance(values["sandwich"], bool):
        raise ValueError(
            f"Invalid value for argument `sandwich`. Expected a bool. Received: sandwich={values['sandwich']!r}"
        )
    if values["sandwich"] and k < 2:
        raise ValueError(
            "Invalid value for argument `paths_per_step`: the sandwich rule trains at least the "
            f"largest and the smallest path (>= 2). Received: paths_per_step={k!r}"
        )
    if values["exits"] not in EXIT_MODES:
        raise ValueError(
            f"Invalid value for argument `exits`. Expected one of {EXIT_MODES}. "
            f"Received: exits={values['exits']!r}"
        )
    values["aux_weight"] = check_aux_weight(values["aux_weight"])
    if values["teacher"] not in TEACHERS:
        raise ValueError(
            f"Invalid value for argument `teacher`. Expected one of {TEACHERS}. "
            f"Received: teacher={values['teacher']!r}"
        )
    a = values["distillation"]
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a <= 1.0:
        raise ValueError(
            "Invalid value for argument `distillation`. Expected a float in [0, 1]. "
            f"Received: distillation={a!r}"
        )
    values["distillation"] = float(a)
    decay = values["ema_decay"]
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
        raise ValueError(
            f"Invalid value for argument `ema_decay`. Expected a float in [0, 1). Received: ema_decay={decay!r}"
        )
    schedule = {"constant": None}.get(values["lr_schedule"], values["lr_schedule"])
    values["lr_schedule"], values["warmup"] = check_schedule(schedule, values["warmup"])
    if values["lr_schedule"] is None:
        values["lr_schedule"] = "constant"
    if not isinstance(values["masked_updates"], bool):
        raise ValueError(
            "Invalid value for argument `masked_updates`. Expected a bool. "
            f"Received: masked_updates={values['masked_updates']!r}"
        )
    if values["final_weights"] not in FINAL_WEIGHTS:
        raise ValueError(
            f"Invalid value for argument `final_weights`. Expected one of {FINAL_WEIGHTS}. "
            f"Received: final_weights={values['final_weights']!r}"
        )
    if values["final_weights"] == "ema" and values["teacher"] != "ema":
        raise ValueError(
            "Invalid value for argument `final_weights`: 'ema' needs the EMA teacher "
            f"(teacher='ema'). Received: teacher={values['teacher']!r}"
        )
    if values["distillation"] > 0 and values["teacher"] == "inplace" and not values["sandwich"]:
        if sampler not in ("tips", "uniform") or k < 2:
            raise ValueError(
                "Invalid value for argument `distillation`: in-place distillation learns from the "
                "step's first path, the largest sub-network, so it needs the sandwich rule or a "
                "'tips' / 'uniform' sampler with paths_per_step >= 2. "
                f"Received: sampler={sampler!r}, paths_per_step={k!r}, distillation={a!r}"
            )
    return values


def check_dtmc_arguments(sampler, coupling, score):
    """Validates the sampler name and the DTMC arguments of `TIPSCallback`.

    Args:
        sampler: a name of ``sampling.SAMPLERS`` or a callable.
        coupling: total coupling weight λ >= 0 of each node's copies.
        score: one of ``SCORES``.

    Raises:
        ValueError: any invalid value, with what was received.

    Example:
        >>> check_dtmc_arguments("tips", 1.0, "sum")
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
    if isinstance(coupling, bool) or not isinstance(coupling, (int, float)) or not math.isfinite(coupling) \
            or coupling < 0:
        raise ValueError(
            "Invalid value for argument `coupling`. Expected a finite float >= 0. "
            f"Received: coupling={coupling!r}"
        )


def check_budgets(budgets):
    """Validates the FLOPs budgets of the important paths (fractions of the full FLOPs).

    Args:
        budgets: a non-empty sequence of floats in (0, 1].

    Returns:
        A tuple of floats.

    Raises:
        ValueError: anything else.

    Example:
        >>> check_budgets([0.25, 0.5])
        (0.25, 0.5)
    """
    try:
        values = tuple(budgets)
    except TypeError:
        values = ()
    if not values or any(isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 < b <= 1
                         for b in values):
        raise ValueError(
            "Invalid value for argument `budgets`. Expected a non-empty sequence of fractions of "
            f"the full FLOPs in (0, 1]. Received: budgets={budgets!r}"
        )
    return tuple(float(b) for b in values)


def sampler_options(values, sampler, options, recipe="anytime"):
    """The sampler options a resolved recipe implies (the sandwich's fixed paths, the menu
    recipe's largest-first draws), plus ``options``.

    Args:
        values: a resolved recipe (`resolve_recipe`).
        sampler: the callback's ``sampler``.
        options: the user's sampler options (they win).
        recipe: the recipe's name (``RECIPE_SAMPLER_OPTIONS``).

    Returns:
        A new dict of sampler options.

    Example:
        >>> sampler_options(RECIPES["anytime"], "tips", {})
        {'include_largest': True, 'include_smallest': True}
    """
    options = dict(options)
    if not callable(sampler) and not values["sandwich"]:
        for key, value in RECIPE_SAMPLER_OPTIONS.get(recipe, {}).get(sampler, {}).items():
            options.setdefault(key, value)
    if values["sandwich"] and sampler != "sandwich" and not callable(sampler):
        options.setdefault("include_largest", True)
        options.setdefault("include_smallest", True)
    elif values["distillation"] > 0 and values["teacher"] == "inplace" and sampler in ("tips", "uniform"):
        options.setdefault("include_largest", True)
    return options
