"""Models users bring (issue 16, kinds 1 and 3): what wrapping, extraction and export keep, or
refuse up front with a clear error that keeps its cause.

Cases (each from a public bug-report pattern against Keras, keras-tuner, TF Lite or tfmot):

1. uint8 pixels + ``Rescaling`` (on-device pattern): wrap, train, extract, export float32 /
   dynamic / int8 (TFLite Micro too); scaled floats refused where raw pixels are expected.
2. ``mixed_float16``: gates compute in float16, the output stays float32.
3. ``keras.Input((None, None, 3))``: refused up front (anytime, zoo, FLOPs) unless
   ``input_shape`` fixes the size; then predict, fit, FLOPs, extraction and the search work.
4. Frozen BatchNorm (``trainable=False``): ``extract`` and the search recalibrate it ("auto"
   sample), and it stays frozen.
5. A backbone nested as a layer (``backbone(inputs, training=False)``, or in a Sequential):
   inlined, same outputs, frozen layers stay frozen; a BatchNorm that a custom layer pins to
   ``training=False`` is named in a warning instead of silently keeping shared statistics.
6. A ``Lambda`` in a branch: extracted without Keras' safe-mode advice; a layer that cannot be
   copied is named, its cause kept.
"""

import keras
import numpy as np
import pytest

import tips_keras as tips
from tflite_export import export_tflite
from tips_keras.search import ExitSearch
from tips_keras.supernet.analytic_flops import module_macs
from tips_keras.training.batchnorm import batchnorm_layers, recalibrate_batchnorm, recalibrated
from tips_keras.training.calibration import set_calibration_data
from tests.conftest import make_blobs, tiny_supernet

pytestmark = pytest.mark.slow  # scheduled first: see tests/conftest.py

L = keras.layers


def _block(x, name):
    y = L.Conv2D(4, 3, padding="same", name=f"{name}_c1")(x)
    y = L.BatchNormalization(name=f"{name}_bn")(y)
    y = L.ReLU(name=f"{name}_relu")(y)
    y = L.Conv2D(4, 3, padding="same", name=f"{name}_c2")(y)
    return L.Add(name=f"{name}_add")([x, y])


def _features(shape=(12, 12, 1), dtype="float32", name="features"):
    inputs = keras.Input(shape, dtype=dtype, name=f"{name}_in")
    x = L.Rescaling(1 / 255, name=f"{name}_scale")(inputs) if dtype == "uint8" else inputs
    x = L.Conv2D(4, 3, padding="same", name=f"{name}_stem")(x)
    x = _block(_block(x, f"{name}_b0"), f"{name}_b1")
    return keras.Model(inputs, x, name=name)


def _classifier(shape=(12, 12, 1), dtype="float32", name="user"):
    body = _features(shape, dtype, name)
    x = L.GlobalAveragePooling2D(name=f"{name}_pool")(body.output)
    out = L.Dense(4, activation="softmax", dtype="float32", name=f"{name}_head")(x)
    return keras.Model(body.input, out, name=name)


def _raw(x):
    """make_blobs images as raw uint8 pixels spanning 0..255."""
    raw = np.clip(np.round((x + 0.5) * 120), 0, 255).astype("uint8")
    raw[0].flat[0], raw[0].flat[1] = 0, 255
    return raw


# -- 1. uint8 pixels ---------------------------------------------------------------------------
def test_uint8_pixels_are_kept_from_wrapping_to_every_export(tmp_path):
    x, y = make_blobs(128, seed=0)
    raw = _raw(x)
    keras.utils.set_random_seed(0)
    model = tips.anytime(_classifier(dtype="uint8", name="u8"))
    assert model.inputs[0].dtype == "uint8"
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(raw, y, batch_size=32, epochs=1, verbose=0, callbacks=[tips.TIPSCallback(seed=0)])
    sub = tips.extract(model, (0, [1, 0]))  # "auto": recalibrated on fit's own raw pixels
    assert sub.inputs[0].dtype == "uint8"
    expected = {"float32": ("uint8", 0.0, 0), "dynamic": ("uint8", 0.0, 0), "int8": ("int8", 1.0, -128)}
    for mode, (dtype, scale, zero_point) in expected.items():
        report = export_tflite(sub, tmp_path / mode, mode, representative_data=raw[:64],
                               validation_data=(raw[:64], y[:64]), micro_samples=8)
        assert (report.input["dtype"], report.input["scale"], report.input["zero_point"]) == \
            (dtype, scale, zero_point), mode
        agreement = 0.85 if mode == "int8" else 0.98  # a barely trained net: near ties flip in int8
        assert report.accuracy["top1_agreement"] >= agreement, (mode, report.accuracy)
        assert report.accuracy["max_abs_diff"] < (0.05 if mode == "int8" else 1e-3), mode
        if mode == "int8" and report.micro["tflm"]["version"]:  # runs under TFLite Micro too
            assert report.micro["tflm"]["top1_agreement"] == 1.0
    # Scaled floats where raw pixels are expected: refused before any work.
    for call in (lambda: export_tflite(sub, tmp_path / "bad", "int8", representative_data=x[:32]),
                 lambda: tips.extract(model, "smallest", recalibrate_data=x[:32]),
                 lambda: ExitSearch(model, (x[:32], y[:32]), budgets=[1.0], directory=tmp_path,
                                    recalibration_data=None, progress=False)):
        with pytest.raises(ValueError, match="raw uint8 values"):
            call()
    assert not (tmp_path / "bad").exists()
    # A float model still refuses raw pixels (not preprocessed).
    with pytest.raises(ValueError, match="preprocessed"):
        export_tflite(_classifier(name="f32"), tmp_path / "bad2", "float32", validation_data=(raw, y))


# -- 2. precision policies -------------------------------------------------------------------
def test_a_mixed_precision_model_keeps_its_dtypes(blobs):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        base = _classifier(name="mixed")
        wrapped = tips.anytime(base)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert base.outputs[0].dtype == wrapped.outputs[0].dtype == "float32"
    assert wrapped.get_layer("mixed_b0_add_gate").compute_dtype == "float16"
    x = blobs[0][:16]
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), base.predict(x, verbose=0), atol=2e-3)
    assert tips.flops(wrapped) == tips.flops(tips.anytime(_classifier(name="mixed32")))
    sub = tips.extract(wrapped, (0, [0, 1]), recalibrate_data=None)
    assert sub.outputs[0].dtype == "float32"
    assert sub.get_layer("mixed_stem").dtype_policy.name == "mixed_float16"


# -- 3. dynamic spatial dimensions ---------------------------------------------------------------
def test_dynamic_spatial_dimensions_are_refused_up_front_or_fixed(blobs, tmp_path):
    base = _classifier(shape=(None, None, 1), name="fcn")
    with pytest.raises(ValueError, match=r"input shape \(None, None, None, 1\).*input_shape="):
        tips.anytime(base)
    with pytest.raises(ValueError, match="input_shape"):
        tips.anytime(base, input_shape=(12, 12, 3))  # channels are fixed by the model
    with pytest.raises(ValueError, match="fixed shape"):
        tips.zoo.anytime_resnet(input_shape=(None, None, 1))
    with pytest.raises(ValueError, match="unknown dimensions"):
        module_macs(base)
    wrapped = tips.anytime(base, input_shape=(12, 12, 1))
    x, y, xv, yv = blobs
    np.testing.assert_allclose(wrapped.predict(x[:8], verbose=0), base.predict(x[:8], verbose=0), atol=1e-6)
    wrapped.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    wrapped.fit(x[:32], y[:32], batch_size=16, epochs=1, verbose=0)
    sub = tips.extract(wrapped, "largest", recalibrate_data=None)
    assert tips.flops(wrapped) == module_macs(sub) > tips.flops(wrapped, "smallest") > 0
    front = ExitSearch(wrapped, (xv, yv), budgets=[0.7, 1.0], max_trials=3, directory=tmp_path,
                       overwrite=True, progress=False, recalibration_data=None).run()
    assert front.best(1.0).flops <= tips.flops(wrapped)
    assert base.predict(np.zeros((1, 20, 20, 1)), verbose=0).shape == (1, 4)  # the user's model: any size


# -- 4. frozen BatchNorm -----------------------------------------------------------------------
def _frozen_supernet():
    model = tiny_supernet()
    for bn in batchnorm_layers(model):
        bn.trainable = False
    return model


def test_extract_recalibrates_frozen_batchnorm_and_keeps_it_frozen(blobs):
    model, x, config = _frozen_supernet(), blobs[0][:128], (0, [1, 1, 0, 0])
    shared = model.get_layer("stem_bn").moving_mean.numpy().copy()
    set_calibration_data(model, x)  # what TIPSCallback keeps on the model after fit
    sub = tips.extract(model, config)  # recalibrate_data="auto"
    with recalibrated(model, config, x):
        expected = model.get_layer("stem_bn").moving_mean.numpy().copy()
    stem = sub.get_layer("stem_bn")
    assert not np.allclose(expected, shared)
    np.testing.assert_allclose(stem.moving_mean.numpy(), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(model.get_layer("stem_bn").moving_mean.numpy(), shared)  # restored
    assert not stem.trainable and not any(bn.trainable for bn in batchnorm_layers(model))


def test_search_recalibrates_frozen_batchnorm(blobs, tmp_path):
    model = _frozen_supernet()
    x, y, xv, yv = blobs
    set_calibration_data(model, x[:128])
    search = ExitSearch(model, (xv, yv), budgets=[0.5, 1.0], max_trials=3, directory=tmp_path,
                        overwrite=True, progress=False, report_shared_statistics=True)  # recalibration "auto"
    assert search.evaluator.recalibrator is not None
    stem = model.get_layer("stem_bn")
    shared = stem.moving_mean.numpy().copy()
    with search.evaluator.recalibrator.applied("smallest"):
        assert not np.allclose(stem.moving_mean.numpy(), shared)
        assert not stem.trainable
    front = search.run()
    assert all(p.accuracy_no_recal is not None for p in front.points)  # recalibration measured
    np.testing.assert_array_equal(stem.moving_mean.numpy(), shared)
    assert not any(bn.trainable for bn in batchnorm_layers(model))


# -- 5. nested backbones -----------------------------------------------------------------------
def test_nested_backbone_is_inlined_and_keeps_what_it_computes(blobs):
    backbone = _features(name="bb")
    backbone.trainable = False  # the Keras transfer-learning guide's pattern
    inputs = keras.Input((12, 12, 1))
    h = backbone(inputs, training=False)
    h = L.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, L.Dense(4, activation="softmax")(h), name="transfer")
    wrapped = tips.anytime(model)
    assert wrapped.config_space.gate_names == ("bb_b0_add_gate", "bb_b1_add_gate")
    x = blobs[0][:16]
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    np.testing.assert_allclose(wrapped(x, training=True), model(x, training=True), atol=1e-6)
    assert len(wrapped.trainable_weights) == len(model.trainable_weights) == 2  # the Dense only
    sub = tips.extract(wrapped, (0, [1, 0]), recalibrate_data=blobs[0][:128])
    assert not np.allclose(sub.get_layer("bb_b0_bn").moving_mean.numpy(),
                           backbone.get_layer("bb_b0_bn").moving_mean.numpy())
    assert not sub.get_layer("bb_b0_bn").trainable
    seq = keras.Sequential([keras.Input((12, 12, 1)), _features(name="sq"), L.GlobalAveragePooling2D(),
                            L.Dense(4)], name="seq")
    assert tips.anytime(seq).config_space.num_gates == 2


@keras.saving.register_keras_serializable(package="tests")
class PinnedNorm(L.Layer):
    """A custom layer that always runs its BatchNorm in inference mode."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = L.BatchNormalization(name="pinned_bn")

    def build(self, input_shape):
        self.norm.build(input_shape)

    def call(self, x):
        return self.norm(x, training=False)


def test_batchnorm_pinned_to_inference_is_named_not_silently_kept(blobs):
    inputs = keras.Input((12, 12, 1))
    x = PinnedNorm(name="pinned")(L.Conv2D(4, 3, padding="same", name="pin_stem")(inputs))
    x = _block(x, "pin_b0")
    out = L.Dense(4, activation="softmax")(L.GlobalAveragePooling2D()(x))
    wrapped = tips.anytime(keras.Model(inputs, out))
    with pytest.warns(RuntimeWarning, match=r"unchanged: \['pinned/pinned_bn'\].*training=False"):
        changed = recalibrate_batchnorm(wrapped, "largest", blobs[0][:64])
    assert changed == 1  # pin_b0_bn; the pinned layer kept its statistics
    np.testing.assert_array_equal(wrapped.get_layer("pinned").norm.moving_mean.numpy(), 0.0)


# -- 6. layers extraction copies -----------------------------------------------------------------
def test_extract_copies_an_in_memory_lambda(blobs):
    inputs = keras.Input((12, 12, 1))
    x = L.Conv2D(4, 3, padding="same", name="lam_stem")(inputs)
    y = L.Conv2D(4, 3, padding="same", name="lam_c")(x)
    y = L.Lambda(lambda t: 0.5 * t, name="halve")(y)
    x = L.Add(name="lam_add")([x, y])
    out = L.Dense(4, activation="softmax", name="lam_head")(L.GlobalAveragePooling2D()(x))
    wrapped = tips.anytime(keras.Model(inputs, out))
    sub = tips.extract(wrapped, "largest", recalibrate_data=None)
    assert isinstance(sub.get_layer("halve"), L.Lambda)
    assert not any(isinstance(layer, L.Identity) for layer in sub.layers)  # anytime's exit
    assert sub.layers[-1].name == "probabilities"
    x = blobs[0][:8]
    np.testing.assert_allclose(sub.predict(x, verbose=0), wrapped.predict(x, verbose=0), atol=1e-6)


class Scale(L.Layer):
    def __init__(self, factor, **kwargs):  # an array argument and no get_config: not re-creatable
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return self.factor * x


def test_a_layer_extraction_cannot_copy_is_named_with_its_cause():
    inputs = keras.Input((12, 12, 1))
    x = L.Conv2D(4, 3, padding="same", name="sc_stem")(inputs)
    x = L.Add(name="sc_add")([x, Scale(np.array([0.5], "float32"), name="scale")(L.Conv2D(4, 3, padding="same")(x))])
    out = L.Dense(4, activation="softmax")(L.GlobalAveragePooling2D()(x))
    wrapped = tips.anytime(keras.Model(inputs, out))
    with pytest.raises(ValueError, match="Cannot extract layer 'scale' \\(Scale\\)") as info:
        tips.extract(wrapped, "largest", recalibrate_data=None)
    assert isinstance(info.value.__cause__, NotImplementedError) and "safe_mode" not in str(info.value)
