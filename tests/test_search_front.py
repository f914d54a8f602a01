"""ParetoFront: non-dominated front, best per budget, table, JSON round trip, plot."""

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tips_keras.search import ParetoFront, ParetoPoint

GATES = ("g0", "g1", "g2")
FULL = 1000


def point(flops, accuracy, exit_index=1, bits=(1, 0, 1), **kwargs):
    return ParetoPoint(exit_index, dict(zip(GATES, bits)), int(flops), int(flops // 10), float(accuracy), **kwargs)


@pytest.fixture
def front():
    points = [point(100, 0.50, 0, (0, 0, 0)), point(300, 0.70), point(350, 0.65), point(600, 0.80),
              point(600, 0.75), point(900, 0.82, 1, (1, 1, 1)), point(950, 0.82), point(250, 0.40)]
    return ParetoFront(points, FULL, budgets=[0.25, 0.5, 1.0], metadata={"oracle": "tips"})


def test_front_is_the_non_dominated_set(front):
    assert [(p.flops, p.accuracy) for p in front.front] == [(100, 0.5), (300, 0.7), (600, 0.8), (900, 0.82)]
    assert len(front) == 4 and len(front.points) == 8


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, FULL), st.integers(0, 20)), min_size=1, max_size=30))
def test_front_property(raw):
    points = [point(f, a / 20) for f, a in raw]
    front = ParetoFront(points, FULL)
    for p in front.front:  # nobody dominates a front point
        assert not any(q.dominates(p) for q in points)
    for p in points:  # every other point is dominated by, or equal to, a front point
        assert any(q is p or q.dominates(p) or (q.flops, q.accuracy) == (p.flops, p.accuracy) for q in front.front)
    for budget in (0.1, 0.5, 1.0, 700):
        limit = budget * FULL if budget <= 1 else budget
        fitting = [p.accuracy for p in points if p.flops <= limit]
        if fitting:
            best = front.best(budget)
            assert best.flops <= limit and best.accuracy == max(fitting)
        else:
            with pytest.raises(ValueError, match="no evaluated configuration fits"):
                front.best(budget)


def test_best_respects_budgets_fraction_or_absolute(front):
    assert front.best(0.25).flops == 100
    assert front.best(0.5).accuracy == 0.70
    assert front.best(600).accuracy == 0.80 and front.best(1.0).flops == 900
    assert front.best(1.0).config.gates == (1, 1, 1)
    with pytest.raises(ValueError, match="smallest evaluated one has 100 FLOPs"):
        front.best(0.05)
    with pytest.raises(ValueError, match="`budget`"):
        front.best(-1)


def test_hypervolume_and_mean_best_accuracy(front):
    expected = 0.2 * 0.5 + 0.3 * 0.7 + 0.3 * 0.8 + 0.1 * 0.82
    assert front.hypervolume() == pytest.approx(expected)
    assert front.mean_best_accuracy() == pytest.approx((0.5 + 0.7 + 0.82) / 3)


def test_table_has_one_row_per_front_point(front):
    text = front.table()
    lines = text.splitlines()
    assert "gates: g0 g1 g2" in lines[0] and "accuracy" in lines[1]
    assert len(lines) == 3 + len(front.front)
    assert lines[-1].split()[-1] == "1" and "0.25" in lines[3]  # "best for" column
    assert len(front.table(all_points=True).splitlines()) == 3 + len(front.points)


def test_json_round_trip(front, tmp_path):
    path = tmp_path / "out" / "front.json"
    assert front.to_json(path) == path
    data = json.loads(path.read_text())
    assert data["full_flops"] == FULL and data["budgets"] == [0.25, 0.5, 1.0]
    assert data["budget_flops"] == [250, 500, 1000]
    assert data["points"][0] == {"exit": 0, "gates": {"g0": 0, "g1": 0, "g2": 0}, "flops": 100,
                                 "params": 10, "accuracy": 0.5, "on_front": True}
    again = ParetoFront.from_json(path)
    assert again.to_dict() == front.to_dict()
    assert json.loads(front.to_json()) == data
    assert os.listdir(path.parent) == ["front.json"]  # no temp file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_recalibration_accuracy_is_kept(tmp_path):
    front = ParetoFront([point(100, 0.6, accuracy_no_recal=0.4, trial_id="07")], FULL, [1.0])
    again = ParetoFront.from_json(front.to_json(tmp_path / "f.json"))
    assert again.points[0].accuracy_no_recal == 0.4 and again.points[0].trial_id == "07"
    assert "acc (no recal)" in again.table()


def test_corrupt_or_truncated_file_is_a_clear_error(front, tmp_path):
    path = tmp_path / "front.json"
    front.to_json(path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=f"Corrupt or truncated Pareto front file '{path}'"):
        ParetoFront.from_json(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="front.json"):
        ParetoFront.from_json(path)
    path.write_text(json.dumps({"points": [{"exit": 0}]}))
    with pytest.raises(ValueError, match="Invalid Pareto front in file .*front.json"):
        ParetoFront.from_json(path)
    with pytest.raises(FileNotFoundError):
        ParetoFront.from_json(tmp_path / "missing.json")


def test_plot_writes_a_png(front, tmp_path):
    path = tmp_path / "plots" / "pareto.png"
    assert front.plot(path) == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert os.listdir(path.parent) == ["pareto.png"]


def test_export_reads_the_front(front, tmp_path):
    export = pytest.importorskip("tips_keras.extraction")
    points, info = export.load_front(front)
    assert info == {"full_flops": FULL, "budgets": [0.25, 0.5, 1.0]}
    chosen = export.select_front(points, [0.5], info["full_flops"])
    assert chosen[0][2]["accuracy"] == front.best(0.5).accuracy
    points, _ = export.load_front(front.to_json(tmp_path / "f.json"))
    assert len(points) == len(front.points)


def test_config_of_a_point_is_a_configuration():
    p = point(100, 0.5, 1, (1, 0, 1))
    assert p.config.exit == 1 and p.config.gates == (1, 0, 1)
    np.testing.assert_array_equal(p.config.to_vector(), [1, 0, 1, 1])
