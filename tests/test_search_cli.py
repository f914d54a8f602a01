"""cli_search: saved supernet + embedded dataset -> front.json and pareto.png."""

import argparse
import json

import pytest

import tips_keras as tips
from tips_keras.search import ParetoFront, add_arguments, cli_search, run_from_args
from tests.conftest import tiny_supernet


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "supernet.keras"
    tips.zoo.anytime_resnet((28, 28, 1), 10, widths=(4, 8), blocks_per_stage=1).save(path)
    return path


def test_cli_search_writes_front_and_plot(model_path, tmp_path, capsys):
    out = tmp_path / "search"
    front = cli_search(str(model_path), str(out), budgets=[0.5, 1.0], max_trials=4, data_name="mnist_5k",
                       val_size=64, progress=False)
    assert len(front.points) == 4
    saved = ParetoFront.from_json(out / "front.json")
    assert saved.to_dict() == front.to_dict()
    data = json.loads((out / "front.json").read_text())
    assert data["metadata"]["dataset"] == "mnist_5k" and data["metadata"]["validation_examples"] == 64
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "keras_tuner" / "oracle.json").exists()
    printed = capsys.readouterr().out
    assert "Pareto front" in printed and "budget 0.5:" in printed and "front.json" in printed


def test_argparse_hook_resumes(model_path, tmp_path):
    parser = add_arguments(argparse.ArgumentParser())
    common = ["--model", str(model_path), "--out", str(tmp_path), "--dataset", "mnist_5k", "--val-size", "32",
              "--budgets", "0.6", "1", "--no-progress", "--oracle", "random", "--compute-dtype", "bfloat16"]
    run_from_args(parser.parse_args(common + ["--max-trials", "2"]))
    front = run_from_args(parser.parse_args(common + ["--max-trials", "3", "--resume"]))
    assert sorted(p.trial_id for p in front.points) == ["0", "1", "2"]
    assert front.metadata["compute_dtype"] == "bfloat16"
    with pytest.raises(SystemExit):  # argparse: exit code 2, the choices named
        parser.parse_args(common[:-1] + ["float16"])


def test_cli_errors(model_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        cli_search(str(tmp_path / "missing.keras"), str(tmp_path))
    small = tmp_path / "small.keras"
    tiny_supernet().save(small)
    with pytest.raises(ValueError, match=r"expects inputs of shape \(12, 12, 1\)"):
        cli_search(str(small), str(tmp_path), data_name="mnist_5k")
    with pytest.raises(ValueError, match="`data_name`"):
        cli_search(str(model_path), str(tmp_path), data_name="cifar10")
    with pytest.raises(ValueError, match="`val_size`"):
        cli_search(str(model_path), str(tmp_path), data_name="mnist_5k", val_size=10**6)
