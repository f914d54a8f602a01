"""The main job: train an anytime supernet with TIPS on embedded data and ship its menu.

Trains `zoo.anytime_resnet` on Fashion-MNIST (offline, Debian package) with the menu recipe,
told the menu it will ship (`TIPSCallback(recipe="menu", budgets=DEMO_BUDGETS)`: the largest
configuration and the important paths of the budgets are trained in every step), prints the test accuracy and FLOPs of the largest, the
menu's and the smallest configuration (with and without per-configuration BatchNorm
recalibration), searches the Pareto front under FLOPs budgets and exports the best 25 % and 50 %
configurations to int8 TFLite, verified in LiteRT on test images.
"""

import json
import os
import time

import keras
import numpy as np

from tips_keras.supernet import analytic_flops
from tips_keras import data as data_lib
from tips_keras import plots
from tips_keras.supernet import zoo
from tips_keras.training.calibration import calibration_data
from tips_keras.training.batchnorm import recalibrated
from tips_keras.training.callback import TIPSCallback
from tips_keras.supernet.configs import Configuration


# Sized to finish (train, search 40 configurations, export two int8 models) in under 6 minutes on
# 2 CPU cores: about 330 s on an idle machine (README "The demo"); more images or epochs buy accuracy with time.
DEMO_TRAIN_SIZE = 47000
DEMO_EPOCHS = 3
DEMO_WIDTHS = (16, 32, 64)
DEMO_STEM_STRIDE = 2  # 14x14, 7x7, 4x4 stages: the widths cost what (8, 16, 32) at 28x28 did
DEMO_RECIPE = "menu"
# The menu the demo ships: the FLOPs budgets it exports. The menu recipe trains the largest and
# the important path of each budget in every step: measured in benchmarks/compare_samplers.py
# (variant ``tips[menu-mixed-aux0.3-no-smallest]``, standard and deep settings), it closes the gap
# of the searched menu to the same networks trained alone, at the cost of configurations outside it.
DEMO_BUDGETS = (0.25, 0.5)


def pick_configurations(model, menu=None):
    """The largest, the smallest and the middle configurations of a supernet, for the demo's table.

    The middle ones are the menu's (``{budget: Configuration}``, e.g. `TIPSCallback`'s
    ``important_paths``: ``"menu 25%"``, ...) or, without a menu, the configuration whose FLOPs
    are closest to half the largest's (``"middle"``, found by enumerating the space: small
    supernets only).

    Args:
        model: a gated supernet.
        menu: optional ``{budget fraction: Configuration or None}``.

    Returns:
        ``{"largest": ..., <middle ones>, "smallest": ...}`` of `Configuration` s.

    Raises:
        ValueError: the space is too large to enumerate (over 65,536 configurations).

    Example:
        >>> pick_configurations(model)["middle"]  # doctest: +SKIP
    """
    space = model.config_space
    chosen = {f"menu {budget:.0%}": config for budget, config in sorted((menu or {}).items())
              if config is not None}
    if chosen:
        return {"largest": space.largest(), **chosen, "smallest": space.smallest()}
    vectors = space.all_vectors()
    macs = np.array([m for m, _ in analytic_flops.cost_vectors(model, vectors)])
    full = macs.max()
    middle = Configuration.from_vector(vectors[int(np.argmin(np.abs(macs - full / 2)))])
    return {"largest": space.largest(), "middle": middle, "smallest": space.smallest()}


def evaluate_configurations(model, configs, x_calib, x_test, y_test):
    """Test accuracy and cost of configurations, without and with BatchNorm recalibration.

    Args:
        model: a gated supernet compiled with accuracy as its first metric.
        configs: ``{name: Configuration}`` (e.g. from `pick_configurations`).
        x_calib: training images for the recalibration.
        x_test: test images.
        y_test: test labels.

    Returns:
        A list of dicts, one per configuration: ``name``, ``exit``, ``gates`` (bit string),
        ``flops``, ``flops_fraction`` (of the largest), ``params``, ``accuracy`` and
        ``accuracy_recalibrated``.

    Example:
        >>> rows = evaluate_configurations(model, pick_configurations(model), x_train[:2048],
        ...                                x_test, y_test)  # doctest: +SKIP
    """
    full = analytic_flops.flops(model, "largest")
    rows = []
    for name, config in configs.items():
        macs, params = analytic_flops.cost(model, config)
        model.set_config(config)
        plain = model.evaluate(x_test, y_test, verbose=0, batch_size=256)[1]
        with recalibrated(model, config, x_calib):
            recal = model.evaluate(x_test, y_test, verbose=0, batch_size=256)[1]
        rows.append(
            dict(name=name, exit=config.exit, gates="".join(map(str, config.gates)), flops=macs,
                 flops_fraction=macs / full, params=params, accuracy=plain, accuracy_recalibrated=recal)
        )
    return rows


def format_rows(rows):
    """Text table of `evaluate_configurations` rows (FLOPs in millions).

    Args:
        rows: the list of dicts of `evaluate_configurations`.

    Returns:
        The table as a string, with a header line.

    Example:
        >>> print(format_rows(rows))  # doctest: +SKIP
    """
    lines = [f"{'config':<9} {'exit':>4} {'gates':>10} {'MFLOPs':>8} {'of full':>7} {'params':>8} "
             f"{'acc':>6} {'acc+BNrecal':>11}"]
    for r in rows:
        lines.append(
            f"{r['name']:<9} {r['exit']:>4} {r['gates']:>10} {r['flops'] / 1e6:>8.2f} "
            f"{r['flops_fraction']:>7.1%} {r['params']:>8d} {r['accuracy']:>6.3f} {r['accuracy_recalibrated']:>11.3f}"
        )
    return "\n".join(lines)


def search_and_export(model, splits, out_dir, budgets=(0.25, 0.5, 0.75, 1.0), export_budgets=(0.25, 0.5),
                      max_trials=40, seed=0):
    """Searches the front under FLOPs budgets, then exports the best configuration of each of
    ``export_budgets`` to int8 TFLite (verified in LiteRT).

    Writes ``search/`` (the keras-tuner project, overwritten), ``front.json``, ``pareto.png`` and
    one ``tflite_bXXX/`` per exported budget into ``out_dir`` and prints the front and each
    export report. The largest configuration is active afterwards.

    Args:
        model: a trained gated supernet.
        splits: a `tips_keras.data.Splits`: the search uses the first 1,000 validation images,
            the exports check on the first 2,000 test images; training images recalibrate and
            calibrate.
        out_dir: the output directory.
        budgets: FLOPs budgets of the search, fractions of the full FLOPs (default 25 to 100 %).
        export_budgets: budgets whose best configuration is exported (default 25 % and 50 %).
        max_trials: configurations the search evaluates (default 40).
        seed: seed of the search.

    Returns:
        ``(front, reports)``: the `tips_keras.search.ParetoFront` and the list of
        `tflite_export.ExportReport` s.

    Raises:
        ValueError: a budget below the smallest configuration, or an export budget that no
            evaluated configuration fits.

    Example:
        >>> front, reports = search_and_export(model, splits, "runs/demo")  # doctest: +SKIP
    """
    from tflite_export import export_tflite
    from tips_keras import extraction as export_lib
    from tips_keras import search as search_lib

    calib = calibration_data(model)
    if calib is None:  # a supernet that was not trained in this process
        calib = splits.x_train[:1024]
    search = search_lib.ExitSearch(model, validation_data=(splits.x_val[:1000], splits.y_val[:1000]),
                                   budgets=list(budgets), max_trials=max_trials, oracle="tips",
                                   directory=os.path.join(out_dir, "search"), overwrite=True,
                                   recalibration_data=calib, seed=seed)
    front = search.run()
    print("\n[demo] Pareto front (validation accuracy with BN recalibration):")
    print(front.table())
    front.to_json(os.path.join(out_dir, "front.json"))
    front.plot(os.path.join(out_dir, "pareto.png"))
    reports = []
    for budget in export_budgets:
        point = front.best(budget)
        sub = export_lib.extract(model, point.config, recalibrate_data=calib)
        report = export_tflite(
            sub, os.path.join(out_dir, f"tflite_b{int(round(budget * 100)):03d}"), quantization="int8",
            representative_data=splits.x_train[:500], validation_data=(splits.x_test[:2000], splits.y_test[:2000]),
            labels=list(splits.class_names), metadata={"config": point.config.to_dict(), "flops": point.flops,
                                                       "params": point.params, "budget": budget},
            overwrite=True)
        print(f"\n[demo] budget {budget:.0%}: exit {point.exit}, {point.flops / 1e6:.2f} MFLOPs -> int8 TFLite")
        print(report.table())
        reports.append(report)
    model.set_config("largest")
    return front, reports


def run_demo(
    dataset="fashion_mnist",
    train_size=DEMO_TRAIN_SIZE,
    epochs=DEMO_EPOCHS,
    sampler="tips",
    widths=DEMO_WIDTHS,
    blocks_per_stage=2,
    batch_size=128,
    seed=0,
    out_dir="runs/demo",
    verbose=1,
    search_and_deploy=True,
    max_trials=40,
    recipe=DEMO_RECIPE,
    stem_stride=DEMO_STEM_STRIDE,
):
    """Trains a supernet with the TIPS recipe and prints/saves its accuracy-vs-FLOPs menu.

    Args:
        dataset: ``"fashion_mnist"`` (default) or ``"mnist_5k"`` (see `tips_keras.data`).
        train_size: training images used (deterministic subset).
        epochs: training epochs.
        sampler: TIPSCallback sampler name.
        widths, blocks_per_stage, stem_stride: supernet shape (`zoo.anytime_resnet`).
        batch_size: training batch size.
        seed: seed of weights, data split and path sampling.
        out_dir: where ``supernet.keras``, ``summary.json``, ``history.csv`` and
            ``importance.png`` go.
        verbose: Keras verbosity of ``fit``.
        search_and_deploy: also search the Pareto front under 25/50/75/100 % FLOPs budgets and
            export the best configurations of the 25 % and 50 % budgets to int8 TFLite.
        max_trials: configurations evaluated by the search.
        recipe: the `TIPSCallback` recipe: ``"menu"`` (default: trains the largest and the
            important paths of ``DEMO_BUDGETS``, the budgets it exports), ``"anytime"`` (with
            ``"tips"``: its two drawn paths on the menu, ``focus=1.0``) or ``"single_path"``.

    Returns:
        A dict with the rows of the table, the importance, the validation history, the int8
        exports' test accuracy and the output paths.

    Example:
        >>> summary = run_demo(epochs=1, train_size=2000)  # doctest: +SKIP
    """
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    splits = data_lib.load(dataset, train_size=train_size, seed=seed)
    model = zoo.anytime_resnet(
        splits.x_train.shape[1:], len(splits.class_names), widths=tuple(widths), blocks_per_stage=blocks_per_stage,
        stem_stride=stem_stride,
    )
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    menu_options = {}
    if recipe == "menu":
        menu_options = dict(budgets=DEMO_BUDGETS)
    elif recipe == "anytime" and sampler == "tips":
        menu_options = dict(budgets=DEMO_BUDGETS, focus=1.0)
    callback = TIPSCallback(sampler=sampler, recipe=recipe, seed=seed, **menu_options)
    print(f"[demo] {dataset}: {len(splits.x_train)} train / {len(splits.x_val)} val / {len(splits.x_test)} test images; "
          f"supernet {model.config_space.num_gates} gates, {model.config_space.num_exits} exits, "
          f"{analytic_flops.flops(model) / 1e6:.2f} MFLOPs (MACs) at full size; sampler={sampler}, recipe={recipe}")
    os.makedirs(out_dir, exist_ok=True)
    log_path = os.path.join(out_dir, "history.csv")
    fit_start = time.perf_counter()
    history = model.fit(splits.x_train, splits.y_train, batch_size=batch_size, epochs=epochs,
                        validation_data=(splits.x_val, splits.y_val), verbose=verbose,
                        callbacks=[callback, keras.callbacks.CSVLogger(log_path)])
    train_seconds = time.perf_counter() - fit_start
    model_path = os.path.join(out_dir, "supernet.keras")
    model.save(model_path)
    calib = calibration_data(model)
    rows = evaluate_configurations(model, pick_configurations(model, callback.important_paths), calib,
                                   splits.x_test, splits.y_test)
    model.set_config("largest")
    print(f"\n[demo] trained in {train_seconds:.0f} s; test accuracy ({len(splits.x_test)} images) per configuration:")
    print(format_rows(rows))
    print("\n[demo] TIPS importance per gate (last epoch): "
          + ", ".join(f"{k}={v:.2f}" for k, v in callback.importance.items()))
    if callback.important_paths:
        print("[demo] important paths (highest TPS per budget): " + "; ".join(
            f"{b:.0%}: exit {c.exit} gates {''.join(map(str, c.gates))}"
            for b, c in callback.important_paths.items() if c is not None))
    plot_path = plots.plot_importance(callback.history, os.path.join(out_dir, "importance.png"))
    exports = []
    if search_and_deploy:
        export_budgets = DEMO_BUDGETS
        _, reports = search_and_export(model, splits, out_dir, export_budgets=export_budgets,
                                       max_trials=max_trials, seed=seed)
        exports = [dict(budget=b, accuracy=(r.accuracy or {}).get("tflite_accuracy"), flops=r.flops)
                   for b, r in zip(export_budgets, reports)]
    seconds = time.perf_counter() - start
    largest = next(r for r in rows if r["name"] == "largest")["accuracy_recalibrated"]
    print(f"\n[demo] largest configuration: test accuracy {largest:.4f}"
          + "".join(f"; {e['budget']:.0%} budget int8 TFLite: test accuracy {e['accuracy']:.4f}"
                    for e in exports if e["accuracy"] is not None)
          + f" ({seconds:.0f} s in all)")
    summary = dict(dataset=dataset, epochs=epochs, sampler=sampler, recipe=recipe, train_seconds=train_seconds,
                   seconds=seconds, rows=rows, importance=callback.importance, history=callback.history,
                   validation={k: v for k, v in history.history.items() if k.startswith("val_")},
                   exports=exports, model=model_path, plot=plot_path)
    with open(os.path.join(out_dir, "summary.json.tmp"), "w") as handle:
        json.dump(summary, handle, indent=2, default=float)
    os.replace(os.path.join(out_dir, "summary.json.tmp"), os.path.join(out_dir, "summary.json"))
    print(f"[demo] wrote {model_path}, {plot_path}, {log_path}, {os.path.join(out_dir, 'summary.json')}")
    return summary
