"""Writes the two notebooks from the cell sources below (outputs empty, as committed).

    .venv/bin/python notebooks/_build_notebooks.py

Edit the cells here, not the .ipynb JSON, so the notebooks stay reviewable in diffs.
"""

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))

PARAMETERS = '''\
# Parameters. The test suite runs this notebook with TIPS_NOTEBOOK_QUICK=1 (tiny sizes, ~1 minute);
# the defaults take a few minutes on 2 CPU cores. Everything is offline: Fashion-MNIST comes from
# the Debian package `dataset-fashion-mnist`.
import os

QUICK = os.environ.get("TIPS_NOTEBOOK_QUICK") == "1"
ARTIFACTS = os.environ.get("TIPS_NOTEBOOK_DIR", "artifacts")  # shared with 02_deploy_tflite
TRAIN_SIZE = 512 if QUICK else 10000
VAL_SIZE = 300 if QUICK else 1000
TEST_SIZE = 500 if QUICK else 2000
EPOCHS = 2 if QUICK else 12
BATCH = 32 if QUICK else 128  # quick: more, smaller steps so the tiny run still learns
WIDTHS = (4, 8, 16) if QUICK else (8, 16, 32)
TRIALS = 8 if QUICK else 60
BUDGETS = [0.25, 0.5, 0.75, 1.0]
os.makedirs(ARTIFACTS, exist_ok=True)'''

QUICKSTART = [
    new_markdown_cell(
        "# tips-keras quickstart\n\n"
        "An **anytime** network is one trained supernet whose sub-networks (residual blocks "
        "skipped, an earlier exit taken) fit different compute budgets. **TIPS** "
        "(Topologically Important Path Sampling, ICML 2023) models training as a Markov chain "
        "over the network graph, scores how much each block contributes to training, and "
        "samples important paths more often.\n\n"
        "This notebook: build (or wrap) a supernet → `model.fit` with `TIPSCallback` → plot "
        "importance per block over epochs → search configurations under FLOPs budgets → plot "
        "the Pareto front. `02_deploy_tflite.ipynb` then exports the chosen sub-networks."),
    new_code_cell(PARAMETERS),
    new_code_cell('''\
import keras
import numpy as np
from IPython.display import Image, display

import tips_keras as tips

keras.utils.set_random_seed(0)
splits = tips.data.load("fashion_mnist", train_size=TRAIN_SIZE, val_size=VAL_SIZE, test_size=TEST_SIZE, seed=0)
print("train", splits.x_train.shape, "val", splits.x_val.shape, "test", splits.x_test.shape)
print("classes:", ", ".join(splits.class_names))'''),
    new_markdown_cell(
        "## 1. A supernet\n\n`tips.zoo.anytime_resnet` builds a ResNet whose residual blocks "
        "each carry a `PathGate` (off: only the shortcut runs, the branch is not computed) and "
        "whose stages end in `ExitHead`s. A configuration is (exit, one bit per gate)."),
    new_code_cell('''\
model = tips.zoo.anytime_resnet(input_shape=(28, 28, 1), num_classes=10, widths=WIDTHS, blocks_per_stage=2)
space = model.config_space
print(f"{space.num_gates} gates {space.gate_names}, {space.num_exits} exits, "
      f"{len(space.all_vectors())} distinct configurations")
for name in ("largest", "smallest"):
    print(f"{name:>8}: {tips.flops(model, name):>10,} MACs")'''),
    new_markdown_cell(
        "Your own functional model works too: `tips.anytime(model)` puts a gate on every "
        "residual block (an `Add` of a shortcut and a branch), like tfmot's "
        "`prune_low_magnitude(model)`. With every gate on it computes exactly the original "
        "outputs."),
    new_code_cell('''\
def residual_block(x, filters):
    y = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    y = keras.layers.Conv2D(filters, 3, padding="same")(y)
    return keras.layers.Activation("relu")(keras.layers.Add()([x, y]))

inputs = keras.Input((28, 28, 1))
x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
x = residual_block(residual_block(x, 8), 8)
outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
user_model = keras.Model(inputs, outputs)

wrapped = tips.anytime(user_model)
sample = splits.x_val[:8]
print("gates:", wrapped.config_space.gate_names)
print("same outputs with all gates on:",
      np.allclose(wrapped.predict(sample, verbose=0), user_model.predict(sample, verbose=0), atol=1e-5))'''),
    new_markdown_cell(
        "## 2. Train a menu of sub-networks in one `model.fit`\n\n`TIPSCallback()` runs the menu "
        "recipe for the FLOPs budgets 10 / 25 / 50 / 75 %: each step trains the largest "
        "sub-network plus three paths drawn by TIPS among the budgets' **important paths** "
        "(switching paths is one variable assignment: no re-tracing), every exit a drawn path "
        "reaches learns (the earlier ones at weight 0.3), the smaller paths also learn from an EMA "
        "teacher, parameters no path used are not stepped, and the learning rate warms up then "
        "decays. At each epoch end it rebuilds the DTMC from the paths it sampled and picks the "
        "important path of each budget (highest TPS), the menu that the next epoch trains and the "
        "search starts from. `TIPSCallback(recipe=\"anytime\")` spreads training over the whole "
        "space instead (the sandwich rule).\n\n"
        "Validation reports what would be deployed: BatchNorm statistics are recalibrated per "
        "configuration on a sample of `fit`'s own training images, `val_accuracy` is the largest "
        "sub-network, `val_budget25_accuracy` the 25 % budget's important path and "
        "`val_smallest_accuracy` the smallest (off the menu: barely trained)."),
    new_code_cell('''\
model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
tips_cb = tips.TIPSCallback(seed=0)
history = model.fit(splits.x_train, splits.y_train, batch_size=BATCH, epochs=EPOCHS,
                    validation_data=(splits.x_val, splits.y_val), callbacks=[tips_cb], verbose=2)
print("val accuracy, largest / 25 % path / smallest:", round(history.history["val_largest_accuracy"][-1], 3),
      round(history.history["val_budget25_accuracy"][-1], 3), round(history.history["val_smallest_accuracy"][-1], 3))
print({gate: round(value, 3) for gate, value in tips_cb.importance.items()})
for budget, config in tips_cb.important_paths.items():
    print(f"important path at {budget:.0%} of the FLOPs: exit {config.exit}, gates {config.gates}")'''),
    new_code_cell('''\
path = tips.plots.plot_importance(tips_cb.history, os.path.join(ARTIFACTS, "importance.png"))
display(Image(path))'''),
    new_markdown_cell(
        "Every sub-network shares the supernet's BatchNorm statistics, which were accumulated "
        "over a mix of paths. `tips.recalibrated` re-estimates them for one configuration on a "
        "few training images (and restores them afterwards); the callback kept its calibration "
        "sample on the model, and the search and `tips.extract` use it by default. It matters a "
        "lot for small configurations."),
    new_code_cell('''\
calib = tips.training.calibration.calibration_data(model)
for name, config in (("largest", space.largest()), ("25 % path", tips_cb.important_paths[0.25])):
    model.set_config(config)
    plain = model.evaluate(splits.x_test, splits.y_test, verbose=0)[1]
    with tips.recalibrated(model, config, calib):
        recal = model.evaluate(splits.x_test, splits.y_test, verbose=0)[1]
    print(f"{name:>8}: {tips.flops(model, config):>10,} MACs  test acc {plain:.3f}  "
          f"after BN recalibration {recal:.3f}")'''),
    new_markdown_cell(
        "## 3. Search configurations under FLOPs budgets\n\n`ExitSearch` runs a keras-tuner "
        "search whose Oracle proposes only configurations inside the budgets: first the "
        "important paths TIPS trained, then candidates guided by the importance; each trial is "
        "evaluated on the validation split with the one compiled supernet, after BatchNorm "
        "recalibration. The result is the accuracy-vs-FLOPs Pareto front."),
    new_code_cell('''\
search = tips.search.ExitSearch(model, validation_data=(splits.x_val, splits.y_val), budgets=BUDGETS,
                                max_trials=TRIALS, directory=os.path.join(ARTIFACTS, "search"),
                                overwrite=True, seed=0)  # recalibration: the calibration sample of fit
front = search.run()
print(front.table())
for budget in BUDGETS:
    best = front.best(budget)
    print(f"budget {budget:.0%}: exit {best.config.exit}, gates {best.config.gates}, "
          f"{best.flops:,} MACs, val acc {best.accuracy:.3f}")'''),
    new_code_cell('''\
display(Image(front.plot(os.path.join(ARTIFACTS, "pareto.png"))))
front.to_json(os.path.join(ARTIFACTS, "front.json"))
model.save(os.path.join(ARTIFACTS, "supernet.keras"))
print("saved", sorted(os.listdir(ARTIFACTS)))'''),
    new_markdown_cell(
        "Next: `02_deploy_tflite.ipynb` extracts the best configurations as plain Keras models "
        "and ships them as int8 TFLite. The same steps from a shell: `tips-keras train`, "
        "`tips-keras search`, `tips-keras export` (each has `--help`)."),
]

DEPLOY = [
    new_markdown_cell(
        "# Deploy anytime sub-networks to TFLite\n\n"
        "From the supernet and Pareto front written by `01_quickstart.ipynb` (trained here in a "
        "minute if they are missing): extract the best configuration per FLOPs budget as a "
        "**plain** Keras model (skipped blocks and later exits physically removed, BatchNorm "
        "recalibrated), convert it to full-integer int8 TFLite, check it in the LiteRT "
        "interpreter, and write the TFLite Micro C array and the Android bundle."),
    new_code_cell(PARAMETERS.replace("# shared with 02_deploy_tflite", "# written by 01_quickstart")
                  + "\nEXPORT_BUDGETS = [0.25, 0.5]"),
    new_code_cell('''\
import json

import keras
import numpy as np

import tips_keras as tips
from tflite_export import export_tflite, load_manifest

keras.utils.set_random_seed(0)
splits = tips.data.load("fashion_mnist", train_size=TRAIN_SIZE, val_size=VAL_SIZE, test_size=TEST_SIZE, seed=0)
supernet_path = os.path.join(ARTIFACTS, "supernet.keras")
front_path = os.path.join(ARTIFACTS, "front.json")
if os.path.exists(supernet_path) and os.path.exists(front_path):
    model = tips.load_supernet(supernet_path)
    print("loaded", supernet_path, "and", front_path)
else:  # 01_quickstart has not run: train and search a small supernet here
    model = tips.zoo.anytime_resnet(input_shape=(28, 28, 1), num_classes=10, widths=WIDTHS)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(splits.x_train, splits.y_train, batch_size=BATCH, epochs=EPOCHS,
              callbacks=[tips.TIPSCallback(sampler="tips", seed=0)], verbose=2)
    tips.search.ExitSearch(model, (splits.x_val, splits.y_val), budgets=BUDGETS, max_trials=TRIALS,
                           directory=os.path.join(ARTIFACTS, "search"), overwrite=True,
                           recalibration_data=splits.x_train[:512]).run().to_json(front_path)
    model.save(supernet_path)'''),
    new_markdown_cell(
        "## 1. Extract the best configuration per budget\n\n`tips.extraction.extract_front` picks, "
        "for each budget, the most accurate front point that fits and rebuilds it as a plain "
        "functional model with no tips_keras layers: it is smaller and faster, not just masked."),
    new_code_cell('''\
items = tips.extraction.extract_front(model, front_path, budgets=EXPORT_BUDGETS,
                                  recalibrate_data=splits.x_train[:1024])
for item in items:
    sub, point = item["model"], item["point"]
    sub.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    acc = sub.evaluate(splits.x_test, splits.y_test, verbose=0)[1]
    print(f"{item['label']}: exit {point['config']['exit']}, gates {point['config']['gates']}, "
          f"{point['flops']:,} MACs, {sub.count_params():,} params, {len(sub.layers)} layers, "
          f"Keras test acc {acc:.3f}")'''),
    new_markdown_cell(
        "## 2. Convert to int8 TFLite and verify in LiteRT\n\n`export_tflite` calibrates full "
        "integer quantization on training images (int8 input and output), runs the model in the "
        "LiteRT interpreter on the test split, and writes `model.tflite`, `manifest.json`, "
        "`labels.txt` and, for int8, the TFLite Micro C array `model_data.cc/.h` (after checking "
        "every op against the TFLM allow-list and running the model in the TFLite Micro "
        "interpreter, section 4). The `int8 purity` row lists any float op left in the int8 "
        "model (`strict_int8=True` refuses such a model). Everything is written atomically."),
    new_code_cell('''\
out_root = os.path.join(ARTIFACTS, "tflite")
reports = {}
for item in items:
    point = item["point"]
    reports[item["label"]] = export_tflite(
        item["model"], os.path.join(out_root, item["label"]), quantization="int8",
        representative_data=splits.x_train[:300], validation_data=(splits.x_test, splits.y_test),
        labels=splits.class_names, metadata={"config": point["config"], "flops": point["flops"]},
        overwrite=True)
    print(reports[item["label"]].table(), "\\n")'''),
    new_markdown_cell(
        "The same check by hand with `ai_edge_litert`: quantize the input with the tensor's "
        "scale and zero point, run, and compare the predicted classes with the float Keras "
        "model."),
    new_code_cell('''\
from ai_edge_litert.interpreter import Interpreter

item = items[0]
interpreter = Interpreter(model_path=os.path.join(out_root, item["label"], "model.tflite"))
interpreter.allocate_tensors()
inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
scale, zero = inp["quantization"]
x = splits.x_test[:200]
predicted = []
for image in x:
    interpreter.set_tensor(inp["index"], np.round(image[None] / scale + zero).astype(inp["dtype"]))
    interpreter.invoke()
    predicted.append(int(np.argmax(interpreter.get_tensor(out["index"]))))
keras_predicted = np.argmax(item["model"].predict(x, verbose=0), axis=1)
print(f"input {inp['dtype'].__name__} {tuple(int(d) for d in inp['shape'])}, output {out['dtype'].__name__}")
print(f"int8 LiteRT vs float Keras: same class on {np.mean(np.array(predicted) == keras_predicted):.1%} "
      f"of {len(x)} images; int8 accuracy {np.mean(np.array(predicted) == splits.y_test[:200]):.3f}")'''),
    new_markdown_cell(
        "## 3. Microcontroller C array and Android bundle\n\nFor TFLite Micro, compile "
        "`model_data.cc` into the firmware (the array is 16-byte aligned; `model_data.h` "
        "declares it and its length). For Android, ship `model.tflite` + `labels.txt`; "
        "`manifest.json` describes input/output quantization, the configuration and its FLOPs."),
    new_code_cell('''\
bundle = os.path.join(out_root, items[0]["label"])
for name in sorted(os.listdir(bundle)):
    print(f"{name:<16} {os.path.getsize(os.path.join(bundle, name)):>9,} bytes")
print()
print(open(os.path.join(bundle, "model_data.h")).read())
print(open(os.path.join(bundle, "model_data.cc")).read()[:400], "...")'''),
    new_code_cell('''\
manifest = load_manifest(bundle)  # validated: refuses a bundle with missing or inconsistent fields
print(json.dumps(manifest, indent=2)[:1500])'''),
    new_markdown_cell(
        "## 4. Run it in the TensorFlow Lite Micro interpreter\n\nWith `tflite-micro` installed "
        "(the `micro` extra), `export_tflite` ran every int8 export in the TFLite Micro reference "
        "interpreter, in child processes since a too-small arena can crash the process: it "
        "searched the smallest tensor arena that runs (16-byte steps), wrote it +4 % to "
        "`model_data.h` (`g_model_data_arena_size`) and the manifest, and ran the test images "
        "through TFLM at that minimum, comparing with LiteRT. Without `tflite-micro` the arena "
        "is the old static estimate, labelled as such."),
    new_code_cell('''\
for label, report in reports.items():
    arena, tflm = report.micro["arena"], report.micro["tflm"]
    if arena["source"] != "measured":
        print(f"{label}: {tflm['note']}")
        continue
    m = arena["measured"]
    print(f"{label}: arena {m['min_bytes']:,} B measured (smallest that runs), "
          f"{arena['recommended_bytes']:,} B written (+{m['margin']:.0%}); "
          f"the static estimate said {arena['estimate']['recommended_bytes']:,} B")
    print(f"      TFLM vs LiteRT on {tflm['num_samples']} test images: top-1 agreement "
          f"{tflm['top1_agreement']:.1%}, max |dp| {tflm['max_abs_diff']:.4f} (identical to "
          f"LiteRT's reference kernels on {tflm['reference']['exact_match']:.1%}); "
          f"{tflm['latency_ms_per_image']:.2f} ms per image on this host (reference kernels)")'''),
    new_markdown_cell(
        "The same run by hand with `tflite_micro`, using the measured arena from the manifest "
        "(a smaller one could crash this kernel)."),
    new_code_cell('''\
from tflite_export import tflm_version

if tflm_version() is None:
    print("tflite-micro is not installed: pip install --pre tflite-micro (or the `micro` extra)")
else:
    from tflite_micro.python.tflite_micro import runtime

    arena_size = manifest["micro"]["arena"]["recommended_bytes"]
    with open(os.path.join(bundle, "model.tflite"), "rb") as f:
        micro = runtime.Interpreter.from_bytes(f.read(), arena_size=arena_size)
    q = micro.get_input_details(0)["quantization_parameters"]
    scale, zero = float(q["scales"][0]), int(q["zero_points"][0])
    x, y = splits.x_test[:200], splits.y_test[:200]
    micro_predicted = []
    for image in x:
        micro.set_input(np.clip(np.round(image[None] / scale) + zero, -128, 127).astype(np.int8), 0)
        micro.invoke()
        micro_predicted.append(int(np.argmax(micro.get_output(0))))
    micro_predicted = np.array(micro_predicted)
    print(f"TFLite Micro, arena {arena_size:,} B: accuracy {np.mean(micro_predicted == y):.3f} on "
          f"{len(x)} test images; same class as LiteRT (section 2) on "
          f"{np.mean(micro_predicted == np.array(predicted)):.1%}")'''),
    new_markdown_cell(
        "From a shell, the same export for several budgets at once (all built in a staging "
        "directory, moved into place together):\n\n"
        "```\ntips-keras export --model artifacts/supernet.keras --front artifacts/front.json "
        "\\\n    --budgets 0.25 0.5 --quantization int8 --out artifacts/cli_export\n```"),
]


def write(name, cells):
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    path = os.path.join(HERE, name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        nbformat.write(nb, f)
    os.replace(tmp, path)
    print("wrote", path)


if __name__ == "__main__":
    write("01_quickstart.ipynb", QUICKSTART)
    write("02_deploy_tflite.ipynb", DEPLOY)
