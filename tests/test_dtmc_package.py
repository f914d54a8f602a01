"""Tests for the tips_keras.dtmc package itself: public names and purity (no Keras)."""

import ast
import json
import pathlib
import subprocess
import sys

import tips_keras
from tips_keras import dtmc

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO / "tips_keras" / "dtmc"

# The public API of `tips_keras.dtmc` (the names of the former single module `dtmc.py`).
PUBLIC_NAMES = [
    "topological_order",
    "prune_to_paths",
    "adjacency",
    "hyper_adjacency",
    "HyperAdjacencyOperator",
    "transition_matrix",
    "stationary_distribution",
    "tas",
    "tas_from_configs",
    "path_score",
    "enumerate_paths",
    "best_path_score_per_edge",
    "best_configurations",
    "budget_importance",
    "gate_importance",
    "importance_from_configs",
]


def test_public_names_are_reexported():
    assert tips_keras.dtmc is dtmc
    assert sorted(dtmc.__all__) == sorted(PUBLIC_NAMES)
    for name in PUBLIC_NAMES:
        obj = getattr(dtmc, name)
        assert obj.__module__.startswith("tips_keras.dtmc."), (name, obj.__module__)
        assert getattr(sys.modules[obj.__module__], name) is obj


def test_module_imports_only_numpy_and_scipy():
    sources = sorted(PACKAGE_DIR.glob("*.py"))
    assert {p.name for p in sources} >= {"__init__.py", "_checks.py", "graph.py", "chain.py",
                                         "scores.py"}
    for source in sources:
        tree = ast.parse(source.read_text())
        roots = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else ["."]
            else:
                continue
            for name in names:
                # Absolute imports of the package's own modules are allowed, nothing else of
                # tips_keras (its other modules import Keras).
                if name == "tips_keras.dtmc" or name.startswith("tips_keras.dtmc."):
                    continue
                roots.add(name.split(".")[0])
        assert roots <= {"__future__", "heapq", "numbers", "numpy", "scipy"}, (source.name, roots)


# Runs in a fresh interpreter: Keras and TensorFlow imports raise, and `tips_keras` is a bare
# stand-in package with the real `__path__`, so `tips_keras/__init__.py` (which imports Keras) is
# not executed while every file of `tips_keras.dtmc` is. An import of any other tips_keras module
# would load that module's real file (and fail on its Keras import).
_ISOLATED_IMPORT = r"""
import importlib
import importlib.abc
import json
import pkgutil
import sys
import types

root = sys.argv[1]
BLOCKED = ("keras", "tensorflow")


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked import of {name!r}")
        return None


sys.meta_path.insert(0, Block())
sys.path.insert(0, root)
parent = types.ModuleType("tips_keras")
parent.__path__ = [root + "/tips_keras"]
sys.modules["tips_keras"] = parent

package = importlib.import_module("tips_keras.dtmc")
submodules = sorted(info.name for info in pkgutil.iter_modules(package.__path__))
for name in submodules:
    importlib.import_module("tips_keras.dtmc." + name)
importance, tas_values = package.importance_from_configs(
    3, [[0, 1], [1, 2], [0, 2]], [0, 0, -1], 1, [[1, 1, 1], [0, 0, 1]], 0, 2
)
print(json.dumps({
    "submodules": submodules,
    "blocked_loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
    "tips_keras_loaded": sorted(m for m in sys.modules if m.split(".")[0] == "tips_keras"),
    "all": package.__all__,
    "importance": importance.tolist(),
}))
"""


def test_package_imports_without_keras():
    result = subprocess.run(
        [sys.executable, "-I", "-c", _ISOLATED_IMPORT, str(REPO)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["submodules"]) >= {"_checks", "graph", "chain", "scores", "budget"}
    assert report["blocked_loaded"] == []
    expected = {"tips_keras", "tips_keras.dtmc"}
    expected |= {f"tips_keras.dtmc.{name}" for name in report["submodules"]}
    assert set(report["tips_keras_loaded"]) == expected
    assert sorted(report["all"]) == sorted(PUBLIC_NAMES)
    assert report["importance"] == [1.0]
