"""Export benchmark: anytime supernet -> sub-networks at ~25/50/75/100 % FLOPs -> TFLite.

Trains (or loads from ``benchmarks/.cache/``) ``tips.zoo.anytime_resnet((28, 28, 1), 10,
widths=(16, 32, 64), blocks_per_stage=2)`` on Fashion-MNIST with `tips.TIPSCallback`, picks one
configuration per FLOPs budget (a small random search: candidates under the budget ranked by
analytic FLOPs, the few largest evaluated on validation images after BatchNorm recalibration),
extracts each (`tips_keras.extraction.extract`, recalibrated), exports float32 and full-int8 TFLite
(`tflite_export.export_tflite`) and prints per budget:

* Keras float test accuracy and TFLite int8 test accuracy (goal: drop <= 1 point);
* .tflite size int8 / float32 (goal: <= 0.3x);
* LiteRT latency (``Interpreter(model_path, num_threads=1)``, batch 1, median of many runs) of
  the sub-network divided by the full network's, beside its FLOPs ratio (goal: latency ratio
  within 1.3x of the FLOPs ratio).

With ``--qat-epochs N`` each sub-network is also fine-tuned with tfmot quantization-aware training
(`tflite_export.qat`, optional ``qat`` extra) and its int8 accuracy printed beside PTQ's.

Usage:
    python benchmarks/export_benchmark.py                 # ~4 min training (cached) + ~5 min
    python benchmarks/export_benchmark.py --qat-epochs 1  # + ~1-3 min of QAT per budget
    python benchmarks/export_benchmark.py --quick         # smoke test (~2 min)
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
from tips_keras import extraction as export  # noqa: E402
from tips_keras.supernet.analytic_flops import cost_vectors  # noqa: E402
from tips_keras.training.batchnorm import recalibrated  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
BUDGETS = (0.25, 0.5, 0.75, 1.0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run (no cache, few images)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-size", type=int, default=9600)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--test-size", type=int, default=None, help="default: all 10,000")
    p.add_argument("--candidates", type=int, default=2,
                   help="configurations evaluated per exit and budget")
    p.add_argument("--latency-runs", type=int, default=1000)
    p.add_argument("--qat-epochs", type=int, default=0,
                   help="also fine-tune each sub-network with tfmot QAT (tflite_export.qat) for this "
                        "many epochs and report its int8 accuracy (0: off)")
    p.add_argument("--qat-size", type=int, default=4000, help="training images for QAT")
    p.add_argument("--retrain", action="store_true", help="ignore the cached supernet")
    p.add_argument("--out", default=None,
                   help="export directory (default benchmarks/.cache/export_benchmark[_quick])")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.train_size, args.candidates, args.latency_runs = 1, 1280, 1, 50
        args.test_size = args.test_size or 1000
    if args.out is None:
        args.out = str(CACHE / ("export_benchmark_quick" if args.quick else "export_benchmark"))
    return args


def supernet(args, data):
    path = CACHE / (f"anytime_resnet_fmnist_n{args.train_size}_e{args.epochs}_b{args.batch_size}"
                    f"_s{args.seed}.keras")
    if path.exists() and not (args.retrain or args.quick):
        print(f"loading cached supernet {path}")
        return keras.models.load_model(path, compile=False)
    keras.utils.set_random_seed(args.seed)
    model = tips.zoo.anytime_resnet((28, 28, 1), 10, widths=(16, 32, 64), blocks_per_stage=2)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    # TIPS: the largest path plus one sampled path per step.
    callback = tips.TIPSCallback(sampler="tips", recipe="anytime", paths_per_step=2, include_largest=True,
                                 seed=args.seed)
    t0 = time.time()
    model.fit(data.x_train, data.y_train, batch_size=args.batch_size, epochs=args.epochs,
              callbacks=[callback], verbose=2)
    print(f"trained in {time.time() - t0:.0f} s")
    if not args.quick:
        CACHE.mkdir(parents=True, exist_ok=True)
        model.save(path)
    return model


def accuracy(model, x, y):
    return float(np.mean(model.predict(x, batch_size=500, verbose=0).argmax(1) == y))


def pick_configs(model, data, args):
    """Per budget and exit: the ``--candidates`` configurations with most FLOPs under the budget;
    the one with the best validation accuracy (after BN recalibration) wins."""
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
        order = []
        for e in range(space.num_exits):
            fits = np.where((macs <= budget * full) & (np.rint(vectors[:, -1]) == e), macs, -1)
            order += [i for i in np.argsort(-fits)[: args.candidates] if fits[i] >= 0]
        best = None
        for i in order:
            config = tips.Configuration.from_vector(vectors[i])
            with recalibrated(model, config, recal):
                acc = accuracy(model, data.x_val, data.y_val)
            if best is None or acc > best[1]:
                best = (config, acc)
        chosen[budget] = best
    return chosen


def latencies_ms(paths, runs, rounds=10):
    """Median batch-1 latency (ms) of each model: LiteRT, 1 thread, XNNPACK.

    The models are timed interleaved (``rounds`` rounds of ``runs / rounds`` invokes each), so
    a slow phase of the machine affects all of them alike and their ratios stay meaningful.
    """
    from ai_edge_litert.interpreter import Interpreter

    interps = []
    for path in paths:
        interp = Interpreter(model_path=str(path), num_threads=1)
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        interp.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
        for _ in range(20):
            interp.invoke()
        interps.append(interp)
    times = [[] for _ in paths]
    for _ in range(rounds):
        for interp, acc in zip(interps, times):
            for _ in range(max(1, runs // rounds)):
                t0 = time.perf_counter()
                interp.invoke()
                acc.append(time.perf_counter() - t0)
    return [1e3 * float(np.median(t)) for t in times]


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
            row[f"{q}_path"] = str(Path(report.out_dir) / "model.tflite")
        if args.qat_epochs:
            from tflite_export import qat

            result = qat.quantization_aware_finetune(
                sub, data.x_train[: args.qat_size], data.y_train[: args.qat_size],
                epochs=args.qat_epochs, validation_data=(data.x_test, data.y_test),
                representative_data=data.x_train[:500], learning_rate=2e-4, compare_ptq=False)
            row["qat_int8_acc"] = result.report["qat_int8_accuracy"]
            row["qat_int8_bytes"] = result.report["size_bytes"]
        rows.append(row)
    paths = [r[f"{q}_path"] for q in ("float32", "int8") for r in rows]
    timed = latencies_ms(paths, args.latency_runs)
    for i, q in enumerate(("float32", "int8")):
        for r, ms in zip(rows, timed[i * len(rows):(i + 1) * len(rows)]):
            r[f"{q}_ms"] = ms
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
    if args.qat_epochs:
        print(f"\nQAT ({args.qat_epochs} epochs on {args.qat_size} images, lr 2e-4): " + ", ".join(
            f"{r['budget']:.2f}: int8 {r['int8_acc']:.3f} -> {r['qat_int8_acc']:.3f}" for r in rows))
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
