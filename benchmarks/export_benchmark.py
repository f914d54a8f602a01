"""Export benchmark: anytime supernet -> sub-networks at ~25/50/75/100 % FLOPs -> TFLite.

Trains (or loads from ``benchmarks/.cache/``) ``tips.zoo.anytime_resnet((28, 28, 1), 10,
widths=(16, 32, 64), blocks_per_stage=2)`` on Fashion-MNIST with `tips.TIPSCallback`, picks one
configuration per FLOPs budget (a small random search: candidates under the budget ranked by
analytic FLOPs, the few largest evaluated on validation images after BatchNorm recalibration),
extracts each (`tips_keras.export.extract`, recalibrated), exports float32 and full-int8 TFLite
(`tflite_export.export_tflite`) and prints per budget:

* Keras float test accuracy and TFLite int8 test accuracy (goal: drop <= 1 point);
* .tflite size int8 / float32 (goal: <= 0.3x);
* LiteRT latency (``Interpreter(model_path, num_threads=1)``, batch 1, median of many runs) of
  the sub-network divided by the full network's, beside its FLOPs ratio (goal: latency ratio
  within 1.3x of the FLOPs ratio).

Usage:
    python benchmarks/export_benchmark.py            # full run (~5-8 min on 2 cores, cached)
    python benchmarks/export_benchmark.py --quick    # smoke test (~1 min)
"""

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tips_keras as tips  # noqa: E402
from tips_keras import data as tips_data  # noqa: E402
from tips_keras import export  # noqa: E402
from tips_keras.analytic_flops import cost_vectors  # noqa: E402
from tips_keras.batchnorm import recalibrated  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
BUDGETS = (0.25, 0.5, 0.75, 1.0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run (no cache, few images)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--test-size", type=int, default=None, help="default: all 10,000")
    p.add_argument("--candidates", type=int, default=3, help="configurations evaluated per budget")
    p.add_argument("--latency-runs", type=int, default=300)
    p.add_argument("--retrain", action="store_true", help="ignore the cached supernet")
    p.add_argument("--out", default=str(CACHE / "export_benchmark"), help="export directory")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.train_size, args.candidates, args.latency_runs = 1, 2000, 1, 50
        args.test_size = args.test_size or 1000
    return args


def supernet(args, data):
    path = CACHE / f"anytime_resnet_fmnist_n{args.train_size}_e{args.epochs}_s{args.seed}.keras"
    if path.exists() and not (args.retrain or args.quick):
        print(f"loading cached supernet {path}")
        return keras.models.load_model(path, compile=False)
    keras.utils.set_random_seed(args.seed)
    model = tips.zoo.anytime_resnet((28, 28, 1), 10, widths=(16, 32, 64), blocks_per_stage=2)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    callback = tips.TIPSCallback(sampler="sandwich", paths_per_step=3, seed=args.seed)
    t0 = time.time()
    model.fit(data.x_train, data.y_train, batch_size=128, epochs=args.epochs,
              callbacks=[callback], verbose=2)
    print(f"trained in {time.time() - t0:.0f} s")
    if not args.quick:
        CACHE.mkdir(parents=True, exist_ok=True)
        model.save(path)
    return model


def accuracy(model, x, y):
    return float(np.mean(model.predict(x, batch_size=500, verbose=0).argmax(1) == y))


def pick_configs(model, data, args):
    """Per budget: the ``--candidates`` configurations with most FLOPs under it, best on val."""
    space = model.config_space
    rng = np.random.default_rng(args.seed)
    exits = rng.integers(0, space.num_exits, 4000)
    bits = (rng.random((4000, space.num_gates)) < rng.random((4000, 1))).astype(np.float32)
    vectors = np.unique(space.canonical_vectors(np.column_stack([bits, exits])), axis=0)
    macs = np.array([m for m, _ in cost_vectors(model, vectors)])
    full = tips.flops(model)
    recal = data.x_train[:1024]
    chosen = {}
    for budget in BUDGETS:
        if budget == 1.0:
            chosen[budget] = (space.largest(), None)
            continue
        order = np.argsort(-np.where(macs <= budget * full, macs, -1))[: args.candidates]
        best = None
        for i in order:
            config = tips.Configuration.from_vector(vectors[i])
            with recalibrated(model, config, recal):
                acc = accuracy(model, data.x_val, data.y_val)
            if best is None or acc > best[1]:
                best = (config, acc)
        chosen[budget] = best
    return chosen


def latency_ms(path, runs):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    for _ in range(20):
        interp.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main(argv=None):
    args = parse_args(argv)
    print("reproduce: python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + sys.argv[1:]))
    from tflite_export import export_tflite

    data = tips_data.load("fashion_mnist", train_size=args.train_size, val_size=2000,
                          test_size=args.test_size, seed=args.seed)
    model = supernet(args, data)
    chosen = pick_configs(model, data, args)
    full = tips.flops(model)
    rows = []
    for budget, (config, val_acc) in chosen.items():
        label = export.budget_label(budget)
        sub = export.extract(model, config, recalibrate_data=data.x_train[:1024])
        row = {"budget": budget, "config": config.to_dict(), "flops": tips.flops(model, config),
               "params": sub.count_params(), "val_acc": val_acc}
        for q in ("float32", "int8"):
            report = export_tflite(
                sub, Path(args.out) / f"{label}_{q}", quantization=q,
                representative_data=data.x_train[:500], validation_data=(data.x_test, data.y_test),
                labels=list(data.class_names), overwrite=True, measure_latency=False,
                metadata={"config": row["config"], "flops": row["flops"]})
            row[f"{q}_bytes"] = report.size_bytes
            row[f"{q}_acc"] = report.accuracy["tflite_accuracy"]
            row["keras_acc"] = report.accuracy["keras_accuracy"]
            row[f"{q}_ms"] = latency_ms(Path(report.out_dir) / "model.tflite", args.latency_runs)
        rows.append(row)
    ref = rows[-1]
    print(f"\nsupernet: {full:,} MACs; test images: {len(data.x_test)}; latency: LiteRT, "
          f"1 thread, batch 1, median of {args.latency_runs} runs")
    head = ("budget", "exit", "gates", "FLOPs", "F-ratio", "params", "keras", "int8", "drop",
            "f32 KB", "int8 KB", "size", "int8 ms", "L-ratio", "L/F", "f32 ms", "L32/F")
    print(("{:>7}{:>5}{:>8}{:>11}{:>8}{:>8}{:>7}{:>7}{:>7}{:>8}{:>8}{:>6}{:>8}{:>8}{:>6}"
           "{:>8}{:>7}").format(*head))
    for r in rows:
        f_ratio = r["flops"] / ref["flops"]
        l_ratio = r["int8_ms"] / ref["int8_ms"]
        l32 = r["float32_ms"] / ref["float32_ms"]
        gates = "".join(str(b) for b in r["config"]["gates"])
        print(("{:>7.2f}{:>5}{:>8}{:>11,}{:>8.3f}{:>8,}{:>7.3f}{:>7.3f}{:>+7.3f}{:>8.1f}{:>8.1f}"
               "{:>6.2f}{:>8.3f}{:>8.3f}{:>6.2f}{:>8.3f}{:>7.2f}").format(
            r["budget"], r["config"]["exit"], gates, r["flops"], f_ratio, r["params"],
            r["keras_acc"], r["int8_acc"], r["keras_acc"] - r["int8_acc"],
            r["float32_bytes"] / 1024, r["int8_bytes"] / 1024,
            r["int8_bytes"] / r["float32_bytes"], r["int8_ms"], l_ratio, l_ratio / f_ratio,
            r["float32_ms"], l32 / f_ratio))
        r.update(flops_ratio=f_ratio, latency_ratio_int8=l_ratio, latency_ratio_float32=l32)
    worst_drop = max(r["keras_acc"] - r["int8_acc"] for r in rows)
    worst_size = max(r["int8_bytes"] / r["float32_bytes"] for r in rows)
    worst_lat = max(max(r["latency_ratio_int8"] / r["flops_ratio"],
                        r["flops_ratio"] / r["latency_ratio_int8"]) for r in rows)
    print(f"\ngoals: int8 drop <= 1 pt: {'OK' if worst_drop <= 0.01 else 'MISSED'} "
          f"(worst {100 * worst_drop:+.2f} pt); int8 size <= 0.3x float32: "
          f"{'OK' if worst_size <= 0.3 else 'MISSED'} (worst {worst_size:.2f}x); int8 latency "
          f"ratio within 1.3x of FLOPs ratio: {'OK' if worst_lat <= 1.3 else 'MISSED'} "
          f"(worst factor {worst_lat:.2f})")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
