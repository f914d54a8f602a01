"""`tips-keras` command line: help texts and exit codes."""

import pytest

from tips_keras import cli


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["train", "--help"], ["search", "--help"],
                                  ["export", "--help"]])
def test_help_exits_zero_and_describes_the_command(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: tips-keras" in out and len(out) > 200


@pytest.mark.parametrize("argv", [[], ["bogus"], ["demo", "--epochs", "0"], ["demo", "--widths", "a,b"],
                                  ["demo", "--sampler", "greedy"], ["demo", "--stem-stride", "3"], ["export", "--model", "m.keras"],
                                  ["export", "--model", "m.keras", "--out", "o", "--quantization", "int4"]])
def test_bad_usage_exits_two(argv):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2


def test_missing_model_file_is_a_usage_error(tmp_path, capsys):
    code = cli.main(["search", "--model", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "s")])
    assert code == 2
    assert "missing.keras" in capsys.readouterr().err


def test_demo_defaults_are_the_demo_modules_and_train_keeps_the_plain_network(monkeypatch):
    from tips_keras import demo

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda **kwargs: seen.append(kwargs))
    assert cli.main(["demo"]) in (0, None) and cli.main(["train"]) in (0, None)
    assert (seen[0]["recipe"], seen[0]["stem_stride"], seen[0]["widths"]) == (
        demo.DEMO_RECIPE, demo.DEMO_STEM_STRIDE, demo.DEMO_WIDTHS)
    assert (seen[1]["recipe"], seen[1]["stem_stride"]) == ("anytime", 1)
