"""The notebooks run top to bottom offline (small parameters) and are committed without outputs.

Executed with nbclient (what nbmake uses) in a fresh kernel of this interpreter, with
``TIPS_NOTEBOOK_QUICK=1``; a failing cell fails the test with the cell's traceback.
"""

import os

import nbformat
import pytest

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
NAMES = ("01_quickstart.ipynb", "02_deploy_tflite.ipynb")


def _read(name):
    with open(os.path.join(NOTEBOOKS, name)) as f:
        return nbformat.read(f, as_version=4)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs(name):
    nb = _read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, name
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"{name}: code cells {dirty} have outputs; strip them before committing"


def test_notebooks_match_their_generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_build", os.path.join(NOTEBOOKS, "_build_notebooks.py"))
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for name, cells in (("01_quickstart.ipynb", build.QUICKSTART), ("02_deploy_tflite.ipynb", build.DEPLOY)):
        assert [c.source for c in _read(name).cells] == [c.source for c in cells], (
            f"{name} differs from notebooks/_build_notebooks.py: run it to regenerate")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Runs 01 then 02 (which reuses 01's supernet and front) in one artifacts folder."""
    from nbclient import NotebookClient

    work = tmp_path_factory.mktemp("notebooks")
    env = {"TIPS_NOTEBOOK_QUICK": "1", "TIPS_NOTEBOOK_DIR": str(work / "artifacts"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process' environment
    results = {}
    try:
        for name in NAMES:
            nb = _read(name)
            NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
            results[name] = nb
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return work / "artifacts", results


def _text(nb):
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_quickstart_trains_searches_and_saves(executed):
    artifacts, results = executed
    for name in ("supernet.keras", "front.json", "importance.png", "pareto.png"):
        assert (artifacts / name).stat().st_size > 0, name
    text = _text(results["01_quickstart.ipynb"])
    assert "same outputs with all gates on: True" in text
    assert "budget 25%:" in text and "after BN recalibration" in text


def test_deploy_writes_verified_int8_bundles(executed):
    artifacts, results = executed
    for label in ("b025", "b050"):
        bundle = artifacts / "tflite" / label
        for name in ("model.tflite", "manifest.json", "labels.txt", "model_data.cc", "model_data.h"):
            assert (bundle / name).stat().st_size > 0, (label, name)
    text = _text(results["02_deploy_tflite.ipynb"])
    assert "loaded" in text  # reused 01's supernet and front
    assert "input int8" in text and "int8 LiteRT vs float Keras" in text
