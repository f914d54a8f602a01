"""Every public name of `tips_keras` and `tflite_export` carries a Google-style docstring.

Rules (all offenders are listed in one failure message per rule):

* every public class and function *defined* in a public module (``obj.__module__`` is that
  module; module and name not starting with ``_``), and every public method / property defined
  in such a class, has its own docstring (inherited ones and the ``Name(field, ...)`` text that
  dataclasses / NamedTuples generate do not count). Keras protocol methods are exempt;
* every public module-level function, and every public-API name (the classes and functions
  imported in ``tips_keras/__init__.py`` and those listed in the ``__all__`` of a package), has
  an ``Args:`` section when it takes parameters (for a class: those of an ``__init__`` defined
  in these packages; a dataclass may document its fields under ``Attributes:``);
* such a function has a ``Returns:`` (or ``Yields:``) section when its body returns or yields a
  value; a function whose only returns are bare ``return`` / ``return None`` returns None and
  needs none;
* a public-API name has an ``Example`` section.

Nothing here runs a model: the modules are imported (the conftest imports `tips_keras`
anyway) and their docstrings and sources inspected.
"""

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import textwrap

import pytest

import tflite_export
import tips_keras

PACKAGES = (tips_keras, tflite_export)

# Keras protocol methods: documented by Keras itself, exempt from every rule here.
PROTOCOL_METHODS = frozenset({
    "get_config", "from_config", "build", "call", "compute_output_shape",
    "compute_output_spec", "train_step", "test_step", "predict_step",
})

# Names exempt from every rule (none today; add one only with a reason).
PENDING = frozenset()


def _is_private_module(name):
    return any(part.startswith("_") for part in name.split(".")[1:])


def _public_modules():
    modules = []
    for package in PACKAGES:
        modules.append(package)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not _is_private_module(info.name):
                modules.append(importlib.import_module(info.name))
    return modules


MODULES = _public_modules()


def _own_doc(obj):
    """The object's own docstring ('' when absent, inherited or generated)."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    doc = inspect.cleandoc(doc or "")
    if inspect.isclass(obj) and (dataclasses.is_dataclass(obj) or hasattr(obj, "_fields")):
        # dataclasses and NamedTuples write "Name(field, ...)" when the class has no docstring
        if doc.startswith(f"{obj.__name__}(") and "\n" not in doc:
            return ""
    return doc


def _definitions():
    """(qualified name, object, kind) of every public class / function / method / property."""
    found = {}
    for module in MODULES:
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            qualname = f"{module.__name__}.{name}"
            if inspect.isclass(obj):
                found[qualname] = (obj, "class")
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or attr in PROTOCOL_METHODS:
                        continue
                    if isinstance(member, (staticmethod, classmethod)):
                        member = member.__func__
                    elif isinstance(member, property):
                        member = member.fget
                    if inspect.isfunction(member):
                        found[f"{qualname}.{attr}"] = (member, "method")
            elif inspect.isfunction(obj):
                found[qualname] = (obj, "function")
    return {k: v for k, v in found.items() if k not in PENDING}


DEFINITIONS = _definitions()


def _public_api():
    """Qualified names of the public API: classes / functions imported into tips_keras and
    those in the ``__all__`` of every public package."""
    api = set()
    for module in MODULES:
        names = getattr(module, "__all__", None)
        if names is None and module is tips_keras:
            names = [n for n in dir(module) if not n.startswith("_")]
        for name in names or ():
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                api.add(f"{obj.__module__}.{obj.__name__}")
    return api - PENDING


PUBLIC_API = _public_api()


def _takes_parameters(obj):
    if inspect.isclass(obj):
        init = next((c.__dict__["__init__"] for c in obj.__mro__
                     if "__init__" in c.__dict__
                     and c.__module__.split(".")[0] in {p.__name__ for p in PACKAGES}), None)
        if init is None:
            return False
        obj = init
    params = inspect.signature(inspect.unwrap(obj)).parameters.values()
    return any(p.name not in ("self", "cls")
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def _returns_value(func):
    """Whether the function's own body (nested defs excluded) returns a value or yields."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(func))))
    root = tree.body[0]
    stack = list(root.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        if isinstance(node, ast.Return) and node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None
        ):
            return True
        stack.extend(ast.iter_child_nodes(node))
    return False


def _report(offenders, what):
    return f"{len(offenders)} public name(s) {what}:\n  " + "\n  ".join(sorted(offenders))


def test_the_walk_finds_the_packages():
    names = {m.__name__ for m in MODULES}
    assert {"tips_keras.training.callback", "tips_keras.search.front", "tips_keras.dtmc.scores",
            "tflite_export.export"} <= names
    assert not any(_is_private_module(n) for n in names)
    assert "tips_keras.TIPSCallback" not in PUBLIC_API  # qualified by defining module
    assert {"tips_keras.training.callback.TIPSCallback", "tflite_export.export.export_tflite",
            "tips_keras.dtmc.scores.tas"} <= PUBLIC_API
    assert len(DEFINITIONS) > 150


def test_pending_names_still_exist():
    # A stale entry would silently exempt a future name of the same spelling.
    missing = []
    for qualname in PENDING:
        module_name, name = qualname.rsplit(".", 1)
        if not hasattr(importlib.import_module(module_name), name):
            missing.append(qualname)
    assert not missing, _report(missing, "listed in PENDING no longer exist; remove them")


def test_every_public_name_has_a_docstring():
    offenders = [name for name, (obj, _) in DEFINITIONS.items() if not _own_doc(obj)]
    assert not offenders, _report(offenders, "have no docstring of their own")


def _checked_for_sections():
    """Module-level functions and public-API names: the ones whose sections are enforced."""
    return {name: (obj, kind) for name, (obj, kind) in DEFINITIONS.items()
            if kind == "function" or name in PUBLIC_API}


def test_args_section():
    offenders = []
    for name, (obj, _) in _checked_for_sections().items():
        doc = _own_doc(obj)
        if not _takes_parameters(obj):
            continue
        if "Args:" in doc or (dataclasses.is_dataclass(obj) and "Attributes:" in doc):
            continue
        offenders.append(name)
    assert not offenders, _report(offenders, "take parameters but have no `Args:` section")


def test_returns_section():
    offenders = [
        name for name, (obj, kind) in _checked_for_sections().items()
        if kind == "function" and _returns_value(obj)
        and not any(s in _own_doc(obj) for s in ("Returns:", "Yields:"))
    ]
    assert not offenders, _report(offenders, "return a value but have no `Returns:` section")


def test_example_section_for_the_public_api():
    missing = sorted(PUBLIC_API - set(DEFINITIONS))
    assert not missing, _report(missing, "of the public API were not found by the module walk")
    offenders = [name for name in PUBLIC_API if "Example" not in _own_doc(DEFINITIONS[name][0])]
    assert not offenders, _report(offenders, "of the public API have no `Example` section")


@pytest.mark.parametrize("source, expected", [
    ("def f():\n    return 1\n", True),
    ("def f():\n    return\n", False),
    ("def f():\n    return None\n", False),
    ("def f():\n    yield 1\n", True),
    ("def f():\n    def g():\n        return 1\n    g()\n", False),
])
def test_returns_value_detection(source, expected, monkeypatch):
    namespace = {}
    exec(compile(source, "<doc-test>", "exec"), namespace)
    monkeypatch.setattr(inspect, "getsource", lambda obj: source)
    assert _returns_value(namespace["f"]) is expected


@pytest.mark.parametrize("module", [m.__name__ for m in MODULES])
def test_docstring_examples_run(module):
    """Examples without ``# doctest: +SKIP`` are run, so they cannot drift from the code."""
    import doctest

    import keras
    import numpy as np

    globs = {"np": np, "keras": keras, "tips_keras": tips_keras, "tips": tips_keras}
    result = doctest.testmod(importlib.import_module(module), extraglobs=globs, report=True,
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module} (output above)"
