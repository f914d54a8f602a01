"""Untrusted files: `tips_keras.io.load_supernet` and the JSON readers of other modules.

Every bad file is built in ``tmp_path`` from a good one; each must be refused with one clear error
(``ValueError`` naming the file, ``FileNotFoundError`` for a missing one), never loaded, never
a deep Keras / h5py / zipfile traceback.
"""

import io
import json
import os
import zipfile

import h5py
import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tips_keras as tips
from tests.conftest import tiny_supernet
from tips_keras.io import load_supernet

# The good file is saved compiled but untrained: Keras warns that it skips the optimizer's (unbuilt)
# variables, which `load_supernet` lets through.
pytestmark = pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    model = tiny_supernet()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.set_config((0, [1, 0, 0, 0]))
    model.controller.gate_probs.assign(np.float32([0.2, 0.8, 0.5, 0.5]))
    path = tmp_path_factory.mktemp("good") / "supernet.keras"
    model.save(path)
    return path


def _members(path):
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _config(good):
    return json.loads(_members(good)["config.json"])


def _layer(config, name):
    return next(layer for layer in config["config"]["layers"] if layer["name"] == name)


def _with_config(good, dst, edit):
    config = _config(good)
    edit(config)
    members = _members(good)
    members["config.json"] = json.dumps(config).encode()
    return _write(dst, members)


def _with_weights(good, dst, edit):
    """Rewrites model.weights.h5 after ``edit(h5py.File)``."""
    members = _members(good)
    buffer = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buffer, "r+") as h5:
        edit(h5)
    members["model.weights.h5"] = buffer.getvalue()
    return _write(dst, members)


def _controller_vars(h5):
    group = h5["layers/subnet_controller/vars"]
    return [group[str(i)] for i in range(len(group))]  # active, gate_probs, exit_probs, importance, updates


def test_good_file_loads_with_its_state(good_file):
    model = load_supernet(good_file)
    assert isinstance(model, tips.AnytimeModel)
    assert model.get_active_config() == tips.Configuration(0, (1, 0, 0, 0))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.controller.gate_probs), [0.2, 0.8, 0.5, 0.5])
    assert model.topology.num_gates == 4
    assert model.optimizer is not None  # compiled from the file


def _set_class(name, class_name, registered, module="tips_keras.supernet.layers"):
    def edit(config):
        layer = _layer(config, name)
        layer.update(class_name=class_name, registered_name=registered, module=module)

    return edit


def _set(name, key, value):
    def edit(config):
        _layer(config, name)["config"][key] = value

    return edit


def _lambda_model_file(tmp_path):
    """A genuine AnytimeModel with a Lambda layer, saved by Keras itself."""
    inputs = keras.Input((12, 12, 1))
    control = tips.SubnetController(1, 1)(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="evil")(inputs)
    x = tips.PathGate(keras.layers.Conv2D(1, 3, padding="same"), gate_index=0)([x, control])
    head = keras.Sequential([keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    out = tips.ExitHead(head, exit_index=0)([x, control])
    out = tips.ExitSelector()([out, control])
    model = tips.AnytimeModel(inputs, out)
    path = tmp_path / "lambda.keras"
    model.save(path)
    return path


def _nested_lambda(config):
    # A serialized Python lambda as an activation, deep inside a nested layer.
    _layer(config, "stem_conv")["config"]["activation"] = {
        "module": "builtins", "class_name": "__lambda__", "config": {"code": "YWJj", "defaults": None,
                                                                   "closure": None}, "registered_name": None}


def _truncate(fraction):
    def make(good, dst):
        data = good.read_bytes()
        dst.write_bytes(data[: int(len(data) * fraction)])
        return dst

    return make


def _flip_byte(good, dst):
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:
        info = archive.getinfo("model.weights.h5")
    # Local header is 30 bytes + name + extra; flip a byte in the middle of the stored member.
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def _garbage_weights(good, dst):
    members = _members(good)
    members["model.weights.h5"] = os.urandom(4096)
    return _write(dst, members)


def _drop(member):
    def make(good, dst):
        members = _members(good)
        del members[member]
        return _write(dst, members)

    return make


def _raw_config(text):
    def make(good, dst):
        members = _members(good)
        members["config.json"] = text if isinstance(text, bytes) else text.encode()
        return _write(dst, members)

    return make


def _zip_slip(good, dst):
    members = _members(good)
    members["../../evil.txt"] = b"x"
    return _write(dst, members)


def _weights_value(var_index, value):
    def edit(h5):
        _controller_vars(h5)[var_index][...] = np.asarray(value, np.float32)

    return lambda good, dst: _with_weights(good, dst, edit)


def _nan_kernel(good, dst):
    def edit(h5):
        kernels = []
        h5.visit(lambda n: kernels.append(n) if isinstance(h5[n], h5py.Dataset) and h5[n].ndim == 4 else None)
        data = h5[kernels[0]][...]
        data.flat[0] = np.nan
        h5[kernels[0]][...] = data

    return _with_weights(good, dst, edit)


def _wrong_weight_shape(good, dst):
    def edit(h5):
        group = h5["layers/subnet_controller/vars"]
        del group["1"]
        group.create_dataset("1", data=np.zeros(7, np.float32))

    return _with_weights(good, dst, edit)


def _plain_functional(good, dst):
    def edit(config):
        config.update(module="keras.src.models.functional", class_name="Functional", registered_name=None)

    return _with_config(good, dst, edit)


def _config_edit(edit):
    return lambda good, dst: _with_config(good, dst, edit)


# (case id, how to build it from the good file, fragment of the expected message)
BAD_FILES = [
    ("lambda_layer", None, "Lambda layer"),
    ("nested_serialized_lambda", _config_edit(_nested_lambda), "serialized Python lambda"),
    ("tfsm_layer", _config_edit(_set_class("stage0_block0", "TFSMLayer", None, "keras.layers")), "TFSMLayer"),
    ("unknown_class", _config_edit(_set_class("stage0_block0", "EvilLayer", "evil>EvilLayer", "evil")),
     "could not rebuild"),
    ("non_modeling_api", _config_edit(_set_class("stem_conv", "load_model", None, "keras.models")),
     "could not rebuild"),
    ("module_injection", _config_edit(_set_class("stem_conv", "system", None, "os")), "could not rebuild"),
    ("gate_index_out_of_range", _config_edit(_set("stage0_block0", "gate_index", 7)), "gate indices"),
    ("gate_index_negative", _config_edit(_set("stage0_block0", "gate_index", -1)), "gate_index"),
    ("gate_index_duplicated", _config_edit(_set("stage0_block1", "gate_index", 0)), "gate indices"),
    ("gate_index_string", _config_edit(_set("stage0_block1", "gate_index", "1")), "gate_index"),
    ("exit_index_duplicated", _config_edit(_set("exit1", "exit_index", 0)), "exit indices"),
    ("controller_num_gates", _config_edit(_set("subnet_controller", "num_gates", 5)), "could not rebuild"),
    ("controller_num_exits_zero", _config_edit(_set("subnet_controller", "num_exits", 0)), "num_exits"),
    ("conv_filters_shape_mismatch", _config_edit(_set("stem_conv", "filters", 6)), "could not rebuild"),
    ("kernel_size_weight_mismatch", _config_edit(_set("stem_conv", "kernel_size", [5, 5])), "could not rebuild"),
    ("plain_functional_model", _plain_functional, "expected an AnytimeModel"),
    ("top_level_not_object", _raw_config("[1, 2, 3]"), "no 'class_name'"),
    ("config_not_json", _raw_config('{"module": "tips_keras.supernet.model", "class_na'), "not valid JSON"),
    ("config_not_utf8", _raw_config(b"\xff\xfe\x00garbage"), "not valid JSON"),
    ("config_deeply_nested", _raw_config("[" * 100000 + "]" * 100000), "not valid JSON"),
    ("missing_config", _drop("config.json"), "missing ['config.json']"),
    ("missing_weights", _drop("model.weights.h5"), "missing ['model.weights.h5']"),
    ("garbage_weights", _garbage_weights, "could not rebuild"),
    ("weight_shape_tampered", _wrong_weight_shape, "could not rebuild"),
    ("truncated_half", _truncate(0.5), "not a zip archive"),
    ("truncated_tail", _truncate(0.98), "not a zip archive"),
    ("flipped_byte", _flip_byte, "CRC"),
    ("zip_slip_member", _zip_slip, "unsafe path"),
    ("random_bytes", lambda good, dst: dst.write_bytes(os.urandom(2048)) and dst, "not a zip archive"),
    ("empty_file", lambda good, dst: dst.write_bytes(b"") or dst, "not a zip archive"),
    ("nan_weight", _nan_kernel, "NaN or infinite"),
    ("active_not_a_configuration", _weights_value(0, [0.5, 1, 1, 1, 1]), "not a valid configuration"),
    ("active_exit_out_of_range", _weights_value(0, [1, 1, 1, 1, 9]), "not a valid configuration"),
    ("gate_probs_out_of_range", _weights_value(1, [1.5, 0.5, 0.5, 0.5]), "outside [0, 1]"),
    ("importance_nan", _weights_value(3, [np.nan, 0, 0, 0]), "not finite"),
    ("exit_probs_negative", _weights_value(2, [-1.0, 0.0]), "not a distribution"),
]


@pytest.mark.parametrize("case, make, fragment", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_supernet_file_is_refused_with_a_clear_error(tmp_path, good_file, case, make, fragment):
    if make is None:
        path = _lambda_model_file(tmp_path)
    else:
        path = make(good_file, tmp_path / f"{case}.keras")
    with pytest.raises(ValueError) as info:
        load_supernet(path)
    message = str(info.value)
    assert str(path) in message, message
    assert fragment in message, message
    assert info.value.__cause__ is None  # one error, not a chained Keras / h5py traceback
    assert len(message) < 1200, message


@pytest.mark.parametrize(
    "make, error, fragment",
    [
        (lambda tmp: tmp / "missing.keras", FileNotFoundError, "not found"),
        (lambda tmp: tmp, ValueError, "not a regular file"),
        (lambda tmp: (tmp / "model.h5").write_bytes(b"\x89HDF\r\n") and tmp / "model.h5", ValueError, "'.keras'"),
    ],
    ids=["missing", "directory", "wrong_extension"],
)
def test_bad_paths_are_refused(tmp_path, make, error, fragment):
    path = make(tmp_path)
    with pytest.raises(error, match=fragment) as info:
        load_supernet(path)
    assert str(path) in str(info.value)


def test_lambda_loads_only_when_explicitly_trusted(tmp_path):
    path = _lambda_model_file(tmp_path)
    model = load_supernet(path, safe_mode=False)
    assert model.get_layer("evil") is not None


def test_nan_weights_load_when_the_finiteness_check_is_off(tmp_path, good_file):
    model = load_supernet(_nan_kernel(good_file, tmp_path / "nan.keras"), check_finite=False)
    assert isinstance(model, tips.AnytimeModel)


def test_number_of_refused_bad_inputs():
    """Counted for the report: bad .keras files + bad paths."""
    assert len(BAD_FILES) + 3 == 39


# -- JSON written by other modules ------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**12) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["points", "full_flops", "budgets", "exit", "gates", "flops", "accuracy", "params",
                         "front", "config", "format", "format_version", "input", "output", "x"]),
        children, max_size=6),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_values)
def test_pareto_front_readers_refuse_junk_with_value_error(data):
    from tips_keras.extraction import load_front
    from tips_keras.search import ParetoFront

    for reader in (lambda d: ParetoFront.from_dict(d), load_front):
        try:
            reader(data)
        except ValueError:
            pass


@settings(max_examples=150, deadline=None)
@given(data=json_values)
def test_tflite_manifest_validation_refuses_junk_with_value_error(data):
    from tflite_export.android import validate_manifest

    try:
        validate_manifest(data, "manifest.json")
    except ValueError as error:
        assert "manifest.json" in str(error)


@pytest.mark.parametrize(
    "text",
    ['{"points": [', "", "\xff", "[]", '{"full_flops": 1, "points": [{"exit": 0}]}',
     '{"full_flops": "x", "points": []}', "null"],
    ids=["truncated", "empty", "latin1", "list", "point_without_fields", "full_flops_string", "null"],
)
def test_bad_front_and_manifest_files_name_the_file(tmp_path, text):
    from tflite_export.android import load_manifest
    from tips_keras.search import ParetoFront

    path = tmp_path / "front.json"
    path.write_bytes(text.encode("latin-1"))
    for reader in (ParetoFront.from_json, load_manifest):
        with pytest.raises(ValueError) as info:
            reader(path)
        assert str(path) in str(info.value)
