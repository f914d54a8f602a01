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
                                  ["demo", "--sampler", "greedy"], ["export", "--model", "m.keras"],
                                  ["export", "--model", "m.keras", "--out", "o", "--quantization", "int4"]])
def test_bad_usage_exits_two(argv):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2


def test_missing_model_file_is_a_usage_error(tmp_path, capsys):
    code = cli.main(["search", "--model", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "s")])
    assert code == 2
    assert "missing.keras" in capsys.readouterr().err
