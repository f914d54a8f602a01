"""The demo's choices: which configurations its table shows, and that it trains its menu."""

import tips_keras as tips
from tips_keras import demo


def test_table_shows_the_menu_between_largest_and_smallest(supernet):
    menu = {0.5: tips.Configuration(1, (1, 0, 1, 0)), 0.25: tips.Configuration(0, (1, 0, 0, 0)), 0.1: None}
    picked = demo.pick_configurations(supernet, menu)
    space = supernet.config_space
    assert list(picked) == ["largest", "menu 25%", "menu 50%", "smallest"]  # budgets in order, None dropped
    assert picked["menu 25%"] == menu[0.25] and picked["largest"] == space.largest()
    assert picked["smallest"] == space.smallest()


def test_without_a_menu_the_middle_is_half_the_flops(supernet):
    picked = demo.pick_configurations(supernet)
    assert list(picked) == ["largest", "middle", "smallest"]
    full = tips.flops(supernet, "largest")
    best = min(abs(tips.flops(supernet, tips.Configuration.from_vector(v)) - full / 2)
               for v in supernet.config_space.all_vectors())
    assert abs(tips.flops(supernet, picked["middle"]) - full / 2) == best


class _Stop(Exception):
    pass


def test_the_demo_trains_the_menu_it_exports(monkeypatch, tmp_path):
    seen = []

    def capture(**kwargs):
        seen.append(kwargs)
        raise _Stop  # before fit: only the callback's arguments are checked here

    monkeypatch.setattr(demo, "TIPSCallback", capture)
    for sampler, recipe, menu in ((None, None, (demo.DEMO_BUDGETS, None)), ("uniform", "menu", (demo.DEMO_BUDGETS, None)),
                                  ("tips", "anytime", (demo.DEMO_BUDGETS, 1.0)), ("uniform", "anytime", (None, None)),
                                  ("tips", "single_path", (None, None))):
        arguments = {k: v for k, v in dict(sampler=sampler, recipe=recipe).items() if v is not None}
        try:
            demo.run_demo(train_size=256, epochs=1, out_dir=str(tmp_path), **arguments)
        except _Stop:
            pass
        options = seen[-1]
        assert options["recipe"] == (recipe or "menu") and options["sampler"] == (sampler or "tips")
        assert (options.get("budgets"), options.get("focus")) == menu
