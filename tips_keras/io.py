"""Loading supernets from files that may not be trustworthy.

`load_supernet` wraps ``keras.saving.load_model`` with checks before and after it, so that a file
that is not what it claims to be fails with one ``ValueError`` naming the file and saying what is
wrong, instead of executing code or failing deep inside Keras:

* before: the path is a regular ``.keras`` file, a readable zip archive whose members pass their
  CRC check, with a ``config.json`` (valid JSON, bounded size) and a ``model.weights.h5``; with
  ``safe_mode`` the configuration may not contain layers or objects that run arbitrary code or
  load other files (``Lambda``, serialized Python lambdas, ``TFSMLayer``);
* during: Keras' own ``safe_mode`` stays on, and any error or weight-loading warning (unknown
  class, bad argument, weight shape mismatch, corrupt HDF5) becomes a ``ValueError``;
* after: the model is an `AnytimeModel` whose gate DAG reads (`read_topology`: gate and exit
  indices consistent with the controller), its controller holds a valid configuration and a valid
  sampler state, and (``check_finite``) every weight is finite.

`read_json` and `load_front` read JSON a user may have edited or written elsewhere (a byte-order
mark, UTF-16, any line endings; junk values refused with one ``ValueError``).
"""

import json
import math
import os
import stat
import warnings
import zipfile

import keras
import numpy as np

from tips_keras.supernet import topology as topology_lib

_PREFIX = "Invalid supernet file"
_REQUIRED_MEMBERS = ("config.json", "model.weights.h5")
_MAX_CONFIG_BYTES = 64 << 20  # a configuration is a few hundred kB even for large supernets
# Objects that execute arbitrary Python or load other files when deserialized.
_UNSAFE_CLASSES = {
    "Lambda": "a Lambda layer (arbitrary Python code)",
    "__lambda__": "a serialized Python lambda (arbitrary Python code)",
    "TFSMLayer": "a TFSMLayer (loads and runs another SavedModel)",
}
# Keras 3.15 warns (instead of raising) for some model weights it cannot restore. (It also warns
# "Skipping variable loading for optimizer" for a model saved before its optimizer was built:
# that only loses optimizer state, and is let through.)
_WEIGHT_WARNINGS = ("could not be loaded", "skipping nested container")


def _fail(path, what, error=None):
    detail = ""
    if error is not None:
        text = " ".join(str(error).split())
        if len(text) > 400:
            text = text[:400] + "..."
        detail = f" ({type(error).__name__}: {text})" if text else f" ({type(error).__name__})"
    return ValueError(f"{_PREFIX} {path!r}: {what}{detail}")


def _unsafe_objects(node, where="config"):
    """Yields (location, description) for every unsafe object in a configuration tree."""
    stack = [(node, where)]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, dict):
            name = item.get("class_name")
            if isinstance(name, str) and name in _UNSAFE_CLASSES:
                label = item.get("config", {}).get("name") if isinstance(item.get("config"), dict) else None
                yield (f"{loc} ({label!r})" if label else loc), _UNSAFE_CLASSES[name]
            registered = item.get("registered_name")
            if isinstance(registered, str) and registered.split(">")[-1] in _UNSAFE_CLASSES:
                yield loc, _UNSAFE_CLASSES[registered.split(">")[-1]]
            stack.extend((value, f"{loc}.{key}") for key, value in item.items())
        elif isinstance(item, list):
            stack.extend((value, f"{loc}[{i}]") for i, value in enumerate(item))


def _read_archive(path, safe_mode):
    """Checks the archive and returns its parsed config.json."""
    try:
        with zipfile.ZipFile(path, "r") as archive:
            names = archive.namelist()
            for name in names:
                if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
                    raise _fail(path, f"archive member {name!r} has an unsafe path")
            missing = [m for m in _REQUIRED_MEMBERS if m not in names]
            if missing:
                raise _fail(path, f"not a Keras model archive: missing {missing} (members: {names})")
            info = archive.getinfo("config.json")
            if info.file_size > _MAX_CONFIG_BYTES:
                raise _fail(path, f"config.json declares {info.file_size} bytes (limit {_MAX_CONFIG_BYTES})")
            bad = archive.testzip()
            if bad is not None:
                raise _fail(path, f"archive member {bad!r} is corrupt (CRC check failed)")
            raw = archive.read("config.json")
    except ValueError as error:
        if str(error).startswith(_PREFIX):
            raise
        raise _fail(path, "corrupt .keras archive", error) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as error:
        raise _fail(path, "corrupt or truncated .keras archive", error) from None
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise _fail(path, "config.json is not valid JSON", error) from None
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise _fail(path, "config.json is not a serialized Keras object (no 'class_name')")
    if safe_mode:
        found = list(_unsafe_objects(config))
        if found:
            location, description = found[0]
            raise _fail(
                path,
                f"it contains {description} at {location}; refused with safe_mode=True. Load "
                "with safe_mode=False only a file you created or trust",
            )
    return config


def _check_controller(path, model, space):
    controller = model.controller
    values = {
        name: np.asarray(keras.ops.convert_to_numpy(getattr(controller, name)), dtype=np.float64)
        for name in ("active", "gate_probs", "exit_probs", "importance", "updates")
    }
    for name, value in values.items():
        if not np.all(np.isfinite(value)):
            raise _fail(path, f"the controller variable {name!r} is not finite: {value.tolist()}")
    active = values["active"]
    bits, exit_value = active[:-1], active[-1]
    if not (np.all((bits == 0) | (bits == 1)) and exit_value == round(exit_value)
            and 0 <= exit_value < space.num_exits):
        raise _fail(path, f"the stored active configuration {active.tolist()} is not a valid "
                          f"configuration (gate bits 0/1, exit in [0, {space.num_exits - 1}])")
    for name in ("gate_probs", "importance"):
        if np.any(values[name] < 0) or np.any(values[name] > 1):
            raise _fail(path, f"the controller variable {name!r} is outside [0, 1]: {values[name].tolist()}")
    if np.any(values["exit_probs"] < 0) or values["exit_probs"].sum() <= 0:
        raise _fail(path, f"the stored exit probabilities are not a distribution: "
                          f"{values['exit_probs'].tolist()}")
    if values["updates"] < 0:
        raise _fail(path, f"the stored update count is negative: {float(values['updates'])}")


def load_supernet(path, safe_mode=True, compile=True, custom_objects=None, check_finite=True):
    """Loads an anytime supernet saved with ``model.save("....keras")``, refusing unsafe or
    inconsistent files.

    Args:
        path: path of a ``.keras`` file.
        safe_mode: refuse objects that run arbitrary code or load other files (``Lambda``
            layers, serialized lambdas, ``TFSMLayer``); also Keras' own ``safe_mode``. Turn it off
            only for files you created or trust.
        compile: restore the training configuration (optimizer, loss) saved with the model.
        custom_objects: passed to ``keras.saving.load_model`` (registered classes need none).
        check_finite: refuse a model with NaN or infinite weights.

    Returns:
        The `AnytimeModel`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: anything else wrong with the file, naming the file and the problem.

    Example:
        >>> model = load_supernet("supernet.keras")  # doctest: +SKIP
        >>> model.set_config("smallest")  # doctest: +SKIP
    """
    from tips_keras.supernet.model import AnytimeModel  # model imports layers; keep import order simple

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Supernet file not found: {path!r}")
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise _fail(path, "not a regular file")
    if not path.endswith(".keras"):
        raise _fail(path, "expected a '.keras' file (the Keras 3 zip format)")
    if not zipfile.is_zipfile(path):
        raise _fail(path, "not a zip archive: corrupt, truncated, or not a .keras file")
    _read_archive(path, safe_mode)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)  # Keras' weight-loading warnings
        try:
            model = keras.saving.load_model(
                path, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode
            )
        except Exception as error:  # noqa: BLE001 - every failure mode becomes one clear error
            raise _fail(path, "Keras could not rebuild the model from it (tampered or incompatible "
                              "configuration or weights)", error) from None
    for warning in caught:
        text = str(warning.message)
        if any(fragment in text.lower() for fragment in _WEIGHT_WARNINGS):
            raise _fail(path, "its weights do not match its configuration", text)
    shown = set()
    for warning in caught:  # Re-emit the others, once each.
        key = (str(warning.message), warning.category)
        if key not in shown:
            shown.add(key)
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)

    if not isinstance(model, AnytimeModel):
        raise _fail(path, f"expected an AnytimeModel (a gated TIPS supernet), found a "
                          f"{type(model).__name__}")
    try:
        topology = topology_lib.read_topology(model)
    except ValueError as error:
        raise _fail(path, "its gates and exits are inconsistent", error) from None
    _check_controller(path, model, topology.space)
    if check_finite:
        for variable in model.weights:
            if not np.all(np.isfinite(keras.ops.convert_to_numpy(variable))):
                raise _fail(path, f"the weight {variable.path!r} holds NaN or infinite values")
    return model


def read_json(path, arg="path"):
    """Reads a JSON file a user may have edited or made elsewhere.

    The bytes are decoded as JSON's own rules allow: UTF-8 with or without a byte-order mark
    (Windows editors write one), UTF-16 or UTF-32 with one (PowerShell's ``>`` writes UTF-16);
    any line endings.

    Args:
        path: the file.
        arg: the argument name error messages give.

    Returns:
        The decoded JSON value.

    Raises:
        ValueError: the file cannot be read, is not valid JSON, or not text in those encodings
            (the message names the file and keeps the cause).

    Example:
        >>> read_json("runs/search/front.json", "front")["full_flops"]  # doctest: +SKIP
    """
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"Invalid value for argument `{arg}`: cannot read {os.fspath(path)!r} as "
                         f"JSON: {type(e).__name__}: {e}") from e


# ------------------------------------------------------------------------------- Pareto fronts
_POINT_KEYS = ("points", "front", "pareto_front")
_FULL_KEYS = ("full_flops", "model_flops", "largest_flops", "flops_full", "max_flops")


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _budgets(value):
    """A front's stored budgets, duplicates dropped (order kept), or None when absent / malformed."""
    if not isinstance(value, list) or not all(_number(b) and b > 0 for b in value):
        return None
    return list(dict.fromkeys(value)) or None


def load_front(front):
    """Reads a Pareto front tolerantly (hand-edited files and other encodings too).

    Args:
        front: a `tips_keras.search.ParetoFront` (anything with ``to_json()``), a path to its
            JSON file (UTF-8 with or without a byte-order mark, UTF-16 / UTF-32 with one; any
            line endings), or the decoded JSON: a dict with the points under ``"points"`` (or
            ``"front"`` / ``"pareto_front"``), or a plain list of points. A point has ``exit``,
            ``gates`` (``{name: bit}`` or a bit list), ``flops`` and ``accuracy`` (``params``
            optional); ``{"config": {"exit", "gates"}, ...}`` is accepted too.

    Returns:
        ``(points, info)``: a list of point dicts (each with ``config``, ``flops``, ``accuracy``,
        ``params``) and a dict with the front's ``full_flops`` and ``budgets`` (None if absent;
        duplicate budgets dropped). The FLOPs are the file's claims: `recount_front` replaces
        them with a model's own count.

    Raises:
        ValueError: unreadable JSON, no points, or a point without exit / gates, or whose
            ``flops`` / ``accuracy`` are not finite non-negative numbers.

    Example:
        >>> points, info = load_front("runs/search/front.json")  # doctest: +SKIP
        >>> info["full_flops"], points[0]["config"]  # doctest: +SKIP
    """
    if hasattr(front, "to_json"):
        front = front.to_json()
        front = json.loads(front) if isinstance(front, str) else front
    elif isinstance(front, (str, os.PathLike)):
        front = read_json(front, "front")
    info = {"full_flops": None, "budgets": None}
    raw = front
    if isinstance(front, dict):
        raw = next((front[k] for k in _POINT_KEYS if k in front), None)
        model_info = front.get("model") if isinstance(front.get("model"), dict) else {}
        for source in (front, model_info):
            for key in _FULL_KEYS + (("flops",) if source is model_info else ()):
                if info["full_flops"] is None and _number(source.get(key)) and source[key] > 0:
                    info["full_flops"] = source[key]
        info["budgets"] = _budgets(front.get("budgets"))
    if not isinstance(raw, list) or not raw:
        raise ValueError(
            "Invalid value for argument `front`. Expected a non-empty list of points (under "
            f"{list(_POINT_KEYS)} or at top level). Received: {type(raw).__name__}"
        )
    points = []
    for i, p in enumerate(raw):
        cfg = p.get("config", p) if isinstance(p, dict) else None
        if not isinstance(cfg, dict) or "exit" not in cfg or "gates" not in cfg or not all(
            _number(p.get(k)) and p[k] >= 0 for k in ("flops", "accuracy")
        ):
            raise ValueError(
                f"Invalid point {i} of the front. Expected a dict with 'exit', 'gates', and "
                f"finite non-negative 'flops' and 'accuracy'. Received: {p!r}"
            )
        points.append(dict(p, config={"exit": cfg["exit"], "gates": cfg["gates"]},
                           params=p.get("params")))
    return points, info
