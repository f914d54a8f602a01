"""Files users edit or bring from elsewhere (issue 16, kind 2): stale or hand-edited fronts,
duplicate budgets, other encodings and line endings.

* A front point that claims fewer FLOPs than its gates cost: points are chosen by the model's own
  count (`recount_front`, `ParetoFront.recount`, the export CLI), with a warning naming it.
* ``ExitSearch(budgets=[0.5, 1.0, 0.5])`` is refused; an older front that stores a budget twice is
  read with it once, so the export CLI handles the tool's own output.
* Front JSON, metadata JSON, labels and manifests in UTF-8 with a byte-order mark, UTF-16 and
  CRLF line endings are read; junk values (NaN accuracy, negative FLOPs, bit 2, a point of another
  supernet) are refused with a clear error.
"""

import json
import os

import numpy as np
import pytest

import tips_keras as tips
from tflite_export import load_manifest
from tflite_export.__main__ import main as cli_main
from tips_keras import extraction
from tips_keras.search import ExitSearch, ParetoFront
from tests.conftest import make_blobs, tiny_supernet

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py

LIE = (1, (1, 1, 1, 1))  # the largest configuration, claimed to cost 40 % of it
HONEST = [((0, (0, 0, 0, 0)), 0.50), ((0, (1, 1, 0, 0)), 0.70), ((1, (1, 0, 0, 0)), 0.75)]


def _front_dict(model, lie=True, **extra):
    names = model.config_space.gate_names
    points = [{"exit": e, "gates": dict(zip(names, bits)), "flops": tips.flops(model, (e, bits)),
               "params": tips.cost(model, (e, bits))[1], "accuracy": acc} for (e, bits), acc in HONEST]
    if lie:
        points.append({"exit": LIE[0], "gates": dict(zip(names, LIE[1])),
                       "flops": int(0.4 * tips.flops(model)), "params": 1, "accuracy": 0.95})
    return dict({"format": "tips_keras.search.ParetoFront", "version": 1,
                 "full_flops": tips.flops(model), "budgets": [0.5], "points": points}, **extra)


@pytest.fixture(scope="module")
def supernet_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_files")
    model = tiny_supernet()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = make_blobs(96, seed=0)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    model.save(root / "super.keras")
    np.savez(root / "rep.npz", x=x)
    np.savez(root / "val.npz", x=x[:48], y=y[:48])
    return root, model


def _export(root, out, front, *extra, budgets=("0.5",)):
    return cli_main(["--model", str(root / "super.keras"), "--front", str(front), "--quantization",
                     "float32", "--no-micro", "--out", str(out), "--representative",
                     str(root / "rep.npz"), "--validation", str(root / "val.npz"),
                     *(["--budgets", *budgets] if budgets else []), *extra])


def test_a_point_claiming_too_few_flops_is_chosen_by_the_models_count(supernet_files, tmp_path, capsys):
    root, model = supernet_files
    path = tmp_path / "front.json"
    path.write_text(json.dumps(_front_dict(model)))
    limit = 0.5 * tips.flops(model)
    right = max((p for p in HONEST if tips.flops(model, p[0]) <= limit), key=lambda p: p[1])[0]
    # The export CLI: the right model, within its budget.
    assert _export(root, tmp_path / "out", path) == 0
    manifest = load_manifest(tmp_path / "out" / "b050")
    assert manifest["flops"] <= limit
    assert manifest["config"] == {"exit": right[0], "gates": dict(zip(model.config_space.gate_names, right[1]))}
    assert "claimed" in capsys.readouterr().err
    # extract_front and ParetoFront.best: the model's count, with a warning naming the point.
    with pytest.warns(UserWarning, match="claimed"):
        (item,) = extraction.extract_front(model, path, recalibrate_data=None)
    assert item["point"]["flops"] <= limit and item["point"]["front_flops"] == item["point"]["flops"]
    assert ParetoFront.from_json(path).best(0.5).accuracy == 0.95  # the file alone: its claim
    with pytest.warns(UserWarning, match="stated"):
        front = ParetoFront.from_json(path, model=model)
    assert front.best(0.5).config == tips.Configuration(*right) and front.best(0.5).flops <= limit


def test_duplicate_budgets_are_refused_by_the_search_and_read_once_from_a_front(supernet_files, tmp_path):
    root, model = supernet_files
    x, y = make_blobs(32, seed=1)
    with pytest.raises(ValueError, match="distinct budgets.*0.5, 1.0, 0.5"):
        ExitSearch(model, (x, y), budgets=[0.5, 1.0, 0.5], directory=tmp_path, progress=False)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(_front_dict(model, lie=False, budgets=[0.5, 1.0, 0.5])))
    assert extraction.load_front(path)[1]["budgets"] == [0.5, 1.0]
    assert ParetoFront.from_json(path).budgets == [0.5, 1.0]
    assert _export(root, tmp_path / "out", path, budgets=None) == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["b050", "b100", "index.json"]
    labels = [extraction.budget_label(b) for b in (0.125, 0.1251, 0.5, 1 / 3)]
    assert labels == ["b012.5", "b012.51", "b050", "b033.333333"]  # distinct budgets, distinct labels


@pytest.mark.parametrize("encoding, newline", [("utf-8-sig", "\r\n"), ("utf-16", "\n"),
                                               ("utf-16-be", "\r\n"), ("utf-8", "\r")])
def test_text_and_json_in_other_encodings_and_line_endings(supernet_files, tmp_path, encoding, newline):
    root, model = supernet_files
    bom = "\ufeff" if encoding == "utf-16-be" else ""  # "utf-16" and "utf-8-sig" write their own

    def write(name, text):
        (tmp_path / name).write_bytes((bom + text.replace("\n", newline)).encode(encoding))
        return tmp_path / name

    front = write("front.json", json.dumps(_front_dict(model, lie=False), indent=2))
    labels = write("labels.txt", "horizontal\nvertical\nchecker board\npatch\n")
    metadata = write("meta.json", json.dumps({"owner": "Zoë", "run": 3}, indent=2))
    assert len(extraction.load_front(front)[0]) == 3
    assert len(ParetoFront.from_json(front).points) == 3
    assert _export(root, tmp_path / "out", front, "--labels", str(labels), "--metadata", str(metadata)) == 0
    written = (tmp_path / "out" / "b050" / "labels.txt").read_text(encoding="utf-8")
    assert written.splitlines() == ["horizontal", "vertical", "checker board", "patch"]
    manifest_path = tmp_path / "out" / "b050" / "manifest.json"
    assert load_manifest(manifest_path)["metadata"]["owner"] == "Zoë"
    manifest_path.write_bytes(manifest_path.read_text(encoding="utf-8").encode("utf-8-sig"))
    assert load_manifest(manifest_path)["metadata"]["run"] == 3  # a BOM a text editor added


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.update(accuracy=float("nan")), "accuracy"),
    (lambda p: p.update(flops=-5), "flops"),
    (lambda p: p["gates"].update({next(iter(p["gates"])): 2}), r"0 or 1|\{0, 1\}"),
    (lambda p: p.update(exit=-1), "exit"),
    (lambda p: p.update(gates={"block_of_another_supernet": 1}), "block_of_another_supernet"),
])
def test_hand_edited_values_are_refused_clearly(supernet_files, tmp_path, capsys, edit, message):
    root, model = supernet_files
    data = _front_dict(model, lie=False)
    edit(data["points"][1])
    path = tmp_path / "front.json"
    path.write_text(json.dumps(data))  # NaN is written as NaN: Python's json reads it back
    for read in (lambda: extraction.recount_front(model, extraction.load_front(path)[0]),
                 lambda: ParetoFront.from_json(path, model=model)):
        with pytest.raises(ValueError, match=message):
            read()
    assert _export(root, tmp_path / "out", path) == 2
    assert not (tmp_path / "out").exists()
    err = capsys.readouterr().err
    assert "error" in err and len(err.strip().splitlines()) <= 3
