"""Goal figures of the TFLite Micro check (issue 15) on a README-sized supernet.

    .venv/bin/python -m tflite_export._micro_figures [--budgets 0.25 0.5] [--epochs 1]

Builds ``tips_keras.zoo.anytime_resnet((28, 28, 1), 10, widths=(16, 32, 64))``, trains it for
``--epochs`` epochs (default 3, ``fit`` with ``tips_keras.TIPSCallback``; 0 = untrained) on 1,000
Fashion-MNIST images, takes per budget the configuration with the most FLOPs that fits, extracts
it (``tips_keras.extract``, BatchNorm recalibrated on 500 training images unless
``--no-recalibrate``), exports it to int8 with 500 calibration images and 1,000 test images, and
prints per budget: measured TFLM arena vs the old estimate, TFLM vs LiteRT agreement and the
TFLM host latency per image (reference kernels). The arena and the agreement do not need a good
model, but a sub-network at chance level predicts one class, which makes agreement trivial.
"""

import argparse
import itertools
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _pick(model, budgets):
    import tips_keras as tips

    space = model.config_space
    full = tips.flops(model)
    configs = [(e, bits) for e in range(space.num_exits)
               for bits in itertools.product((0, 1), repeat=space.num_gates)]
    costs = {c: tips.flops(model, c) for c in configs}
    out = []
    for b in budgets:
        fits = [c for c in configs if costs[c] <= b * full]
        best = max(fits, key=lambda c: (costs[c], c[0]))
        out.append((b, best, costs[best], full))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tflite_export._micro_figures")
    p.add_argument("--budgets", nargs="+", type=float, default=[0.25, 0.5])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--no-recalibrate", action="store_true",
                   help="keep the supernet's shared BatchNorm statistics (sub-networks then "
                        "predict close to chance, which makes top-1 agreement uninformative)")
    p.add_argument("--out", help="keep the exports here (default: a temporary directory)")
    args = p.parse_args(argv)

    import keras

    import tips_keras as tips
    from tflite_export import export_tflite

    keras.utils.set_random_seed(0)
    splits = tips.data.load("fashion_mnist", train_size=1000, val_size=0, test_size=1000, seed=0)
    model = tips.zoo.anytime_resnet((28, 28, 1), 10, widths=(16, 32, 64))
    if args.epochs:
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(splits.x_train, splits.y_train, epochs=args.epochs, batch_size=64, verbose=0,
                  callbacks=[tips.TIPSCallback(sampler="tips", seed=0)])
    root = Path(args.out or tempfile.mkdtemp(prefix="micro_figures_"))
    rows = []
    for budget, config, macs, full in _pick(model, args.budgets):
        recal = None if args.no_recalibrate else splits.x_train[:500]
        sub = tips.extract(model, config, recalibrate_data=recal)
        r = export_tflite(sub, root / f"b{round(budget * 100):03d}", "int8",
                          representative_data=splits.x_train[:500],
                          validation_data=(splits.x_test, splits.y_test), overwrite=True,
                          metadata={"config": {"exit": config[0], "gates": list(config[1])},
                                    "flops": macs})
        arena, tflm = r.micro["arena"], r.micro["tflm"]
        rows.append((budget, config, macs / full, r, arena, tflm))
        print(r.table(), "\n", file=sys.stderr)

    print(f"tips_keras anytime_resnet widths=(16, 32, 64), trained {args.epochs} epoch(s) on 1,000 "
          f"images (TIPSCallback), BatchNorm "
          f"{'not ' if args.no_recalibrate else ''}recalibrated; int8; 1,000 Fashion-MNIST test "
          "images")
    print("| budget | config (exit, gates) | FLOPs | measured min arena | written (+4 %) | "
          "old estimate | estimate / measured | TFLM vs LiteRT top-1 | max abs diff | "
          "identical | identical to LiteRT ref. kernels | TFLM ms/image | LiteRT ms (XNNPACK) | "
          "int8 acc |")
    print("|---" * 14 + "|")
    for budget, config, frac, r, arena, tflm in rows:
        m = arena["measured"] or {}
        est = arena["estimate"]["recommended_bytes"]
        if not m:
            print(f"| {budget:g} | {config} | {frac:.1%} | {tflm['note']} |")
            continue
        print(f"| {budget:g} | {config[0]}, {''.join(map(str, config[1]))} | {frac:.1%} | "
              f"{m['min_bytes']:,} B | {arena['recommended_bytes']:,} B | {est:,} B | "
              f"{est / m['min_bytes']:.2f}x | {100 * tflm['top1_agreement']:.1f} % | "
              f"{tflm['max_abs_diff']:.4f} | {100 * tflm['exact_match']:.1f} % | "
              f"{100 * tflm['reference']['exact_match']:.1f} % | "
              f"{tflm['latency_ms_per_image']:.2f} | {r.latency_ms:.3f} | "
              f"{r.accuracy['tflite_accuracy']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
