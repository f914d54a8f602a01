"""The README demo against the same networks trained alone: what its accuracy goals ask for.

Run:  .venv/bin/python benchmarks/demo_reference.py [--run-dir runs/demo] [--seeds 0 1 2]

The demo (`tips-keras demo`: 47,000 Fashion-MNIST images, 3 epochs of `recipe="menu"`, the
widths and stem stride of `tips_keras.demo`) exports the best configuration of the 25 % and 50 %
budgets of its search to int8 TFLite. This script trains each of those configurations, and the
largest one, alone: the configuration extracted as a plain Keras model (`tips.extract`) from a
fresh supernet with the seed's initial weights, on the demo's own training images, for the demo's
epochs, with the same batch size, Adam learning rate and per-step warm-up + cosine schedule (one
forward/backward pass per step). It prints the demo's figures next to the networks trained alone
(float32, the 10,000 test images, mean ± std over ``--seeds``), so that the goals (largest ≥ 0.90,
25 % int8 ≥ 0.87) can be read against what a network of that size reaches alone in the same time.

``--run-dir`` is read when it holds a finished demo (``summary.json`` and ``front.json``);
otherwise the demo is run there first (about 5 minutes on 2 cores). About 15 minutes in all.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import _compare_lib as lib  # noqa: E402
import tips_keras as tips  # noqa: E402
from tips_keras import data  # noqa: E402
from tips_keras import demo  # noqa: E402
from tips_keras.search import ParetoFront  # noqa: E402


def demo_figures(run_dir):
    """The demo's summary and its front (runs the demo first when ``run_dir`` has none)."""
    summary_path, front_path = os.path.join(run_dir, "summary.json"), os.path.join(run_dir, "front.json")
    if not (os.path.exists(summary_path) and os.path.exists(front_path)):
        print(f"[reference] no finished demo in {run_dir}: running it", flush=True)
        demo.run_demo(out_dir=run_dir, verbose=0)
    with open(summary_path) as f:
        summary = json.load(f)
    return summary, ParetoFront.from_json(front_path)


def reference_rows(summary, front, space):
    """``(name, configuration, demo accuracy, what the demo measured)`` of the largest
    configuration and of each exported budget's (the front's best, as the demo picks it)."""
    largest = next(r for r in summary["rows"] if r["name"] == "largest")
    rows = [("largest", space.largest(), largest["accuracy_recalibrated"], "float32")]
    for export in summary["exports"]:
        point = front.best(export["budget"])
        rows.append((f"{export['budget']:.0%} budget", point.config, export["accuracy"], "int8 (2,000 images)"))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/demo", help="a finished demo's output (default runs/demo)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-largest", action="store_true",
                        help="train only the exported budgets' configurations alone (the largest is the same "
                             "network in every demo run)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    summary, front = demo_figures(args.run_dir)
    if summary.get("dataset", "fashion_mnist") != "fashion_mnist" or summary.get("epochs") != demo.DEMO_EPOCHS:
        raise SystemExit(f"{args.run_dir} holds a demo run with other settings (dataset "
                         f"{summary.get('dataset')}, {summary.get('epochs')} epochs); use a default demo run")
    splits = data.load("fashion_mnist", train_size=demo.DEMO_TRAIN_SIZE, seed=0)  # the demo's split
    setting = lib.Setting("demo", tuple(demo.DEMO_WIDTHS), 2, train=len(splits.x_train),
                          val=len(splits.x_val), test=len(splits.x_test), epochs=demo.DEMO_EPOCHS,
                          stem_stride=demo.DEMO_STEM_STRIDE)
    supernet = lib.build_model(setting)
    rows = reference_rows(summary, front, supernet.config_space)[int(args.no_largest):]
    print(f"# {' '.join(['.venv/bin/python', 'benchmarks/demo_reference.py'] + (argv or sys.argv[1:]))}")
    print(f"# 2 CPU cores, load average {os.getloadavg()[0]:.1f}; networks trained alone: {len(splits.x_train)} "
          f"images, {setting.epochs} epochs, batch {setting.batch}, Adam {setting.lr} with warm-up + cosine, "
          f"seeds {args.seeds}")
    results = []
    for name, config, demo_acc, kind in rows:
        accs = []
        for seed in args.seeds:
            keras.backend.clear_session()
            record = lib.train_alone(config.to_vector(), setting, splits, seed, f"[alone] {name} seed {seed}")
            accs.append(record["test_acc"])
        results.append((name, config, demo_acc, kind, accs))
    full = tips.flops(supernet, "largest")
    print("\n| configuration | exit, gates | FLOPs | demo (supernet) | trained alone, float32 (10,000 test images) |")
    print("|---|---|---|---|---|")
    for name, config, demo_acc, kind, accs in results:
        std = statistics.pstdev(accs) if len(accs) > 1 else 0.0
        flops = tips.flops(supernet, config)
        print(f"| {name} | {config.exit}, {''.join(map(str, config.gates))} | {flops / full:.0%} | "
              f"{demo_acc:.4f} {kind} | {statistics.mean(accs):.4f} ± {std:.4f} "
              f"({', '.join(f'{a:.4f}' for a in accs)}) |")
    print(f"\n[reference] done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
