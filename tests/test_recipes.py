"""Training recipes: defaults, overrides and the sampler options they imply (pure Python)."""

import pytest

from tips_keras.training import recipes


def test_explicit_arguments_override_the_recipe_and_none_keeps_it():
    values = recipes.resolve_recipe("anytime", {"distillation": 0.0, "exits": None}, "tips")
    assert values["distillation"] == 0.0
    assert values["exits"] == recipes.RECIPES["anytime"]["exits"]
    assert values["paths_per_step"] == 4 and values["sandwich"] is True


def test_sandwich_sampler_options_and_the_users_win():
    values = recipes.resolve_recipe("anytime", {}, "tips")
    assert recipes.sampler_options(values, "tips", {}) == {"include_largest": True, "include_smallest": True}
    # The menu recipe without the smallest path: the user's option is kept, the largest stays.
    options = recipes.sampler_options(values, "tips", {"include_smallest": False, "focus": 1.0})
    assert options == {"include_largest": True, "include_smallest": False, "focus": 1.0}
    # No sandwich: nothing is added (the EMA teacher needs no largest-first path) ...
    no_sandwich = recipes.resolve_recipe("anytime", {"sandwich": False}, "tips")
    assert recipes.sampler_options(no_sandwich, "tips", {}) == {}
    # ... except in-place distillation, which learns from the step's first, largest path.
    inplace = recipes.resolve_recipe("anytime", {"sandwich": False, "teacher": "inplace"}, "uniform")
    assert recipes.sampler_options(inplace, "uniform", {}) == {"include_largest": True}


@pytest.mark.parametrize(
    "overrides, argument",
    [({"paths_per_step": 0}, "paths_per_step"), ({"paths_per_step": 1}, "paths_per_step"),
     ({"sandwich": "yes"}, "sandwich"), ({"exits": "all"}, "exits"), ({"teacher": "self"}, "teacher"),
     ({"distillation": 1.5}, "distillation"), ({"ema_decay": 1.0}, "ema_decay"),
     ({"final_weights": "best"}, "final_weights")],
)
def test_bad_recipe_values_name_the_argument(overrides, argument):
    with pytest.raises(ValueError, match=f"`{argument}`.*Received"):
        recipes.resolve_recipe("anytime", overrides, "tips")


def test_menu_recipe_trains_the_largest_and_the_budgets_important_paths():
    values = recipes.resolve_recipe("menu", {}, "tips")
    assert values["sandwich"] is False and values["exits"] == "reached_except_largest"
    assert values["aux_weight"] == (0.3, 0.3) and values["teacher"] == "ema"
    assert recipes.sampler_options(values, "tips", {}, "menu") == {
        "include_largest": True, "include_smallest": False, "focus": 1.0}
    # Uniform draws in the same recipe (the baseline): no focus, which only TIPS has.
    assert recipes.sampler_options(values, "uniform", {}, "menu") == {
        "include_largest": True, "include_smallest": False}
    # The user's options win; the sandwich rule, when asked for, replaces the menu's draws.
    assert recipes.sampler_options(values, "tips", {"focus": 0.5}, "menu")["focus"] == 0.5
    sandwich = recipes.resolve_recipe("menu", {"sandwich": True}, "tips")
    assert recipes.sampler_options(sandwich, "tips", {}, "menu") == {
        "include_largest": True, "include_smallest": True}
