"""`tips-keras` command line: demo | train | search (export: `python -m tflite_export`).

Exit codes: 0 success, 2 bad usage or invalid input (message on stderr), 1 unexpected failure.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tips_keras.data import DATASETS  # noqa: E402
from tips_keras.demo import DEMO_EPOCHS  # noqa: E402
from tips_keras.demo import DEMO_RECIPE  # noqa: E402
from tips_keras.demo import DEMO_STEM_STRIDE  # noqa: E402
from tips_keras.demo import DEMO_TRAIN_SIZE  # noqa: E402
from tips_keras.demo import DEMO_WIDTHS  # noqa: E402
from tips_keras.training.recipes import RECIPES  # noqa: E402
from tips_keras.training.sampling import SAMPLERS  # noqa: E402


def _widths(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_training_args(parser, epochs, train_size, widths=(16, 32, 64), recipe="anytime", stem_stride=1):
    parser.add_argument("--dataset", choices=DATASETS, default="fashion_mnist", help="embedded offline dataset (default: %(default)s)")
    parser.add_argument("--train-size", type=_positive, default=train_size, help="training images (default: %(default)s)")
    parser.add_argument("--epochs", type=_positive, default=epochs, help="training epochs (default: %(default)s)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="tips", help="path sampler (default: %(default)s)")
    parser.add_argument("--recipe", choices=RECIPES, default=recipe,
                        help="training recipe of TIPSCallback (default: %(default)s; menu: the exported "
                        "budgets' paths; single_path: tips-keras 0.1)")
    parser.add_argument("--widths", type=_widths, default=tuple(widths),
                        help=f"channels per stage (default: {','.join(map(str, widths))})")
    parser.add_argument("--blocks", type=_positive, default=2, help="gated blocks per stage (default: %(default)s)")
    parser.add_argument("--stem-stride", type=int, choices=(1, 2), default=stem_stride,
                        help="stride of the stem convolution (default: %(default)s)")
    parser.add_argument("--batch-size", type=_positive, default=128, help="batch size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")


def build_parser():
    """The ``tips-keras`` parser with the ``demo``, ``train``, ``search`` and ``export`` commands.

    Returns:
        An `argparse.ArgumentParser`.
    """
    parser = argparse.ArgumentParser(
        prog="tips-keras",
        description="Anytime neural networks trained with TIPS (Topologically Important Path Sampling).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,train,search,export}")
    demo = sub.add_parser("demo", help="train a supernet on embedded data and print the accuracy/FLOPs menu",
                          description="Train an anytime ResNet with TIPS on the embedded (offline) dataset, print accuracy "
                          "and FLOPs of the largest, a middle and the smallest configuration, search the Pareto "
                          "front under 25/50/75/100%% FLOPs budgets, and export the best 25%% and 50%% "
                          "configurations to int8 TFLite verified in LiteRT.")
    _add_training_args(demo, epochs=DEMO_EPOCHS, train_size=DEMO_TRAIN_SIZE, widths=DEMO_WIDTHS, recipe=DEMO_RECIPE,
                       stem_stride=DEMO_STEM_STRIDE)
    demo.add_argument("--out", default="runs/demo", help="output directory (default: %(default)s)")
    demo.add_argument("--trials", type=_positive, default=40, help="configurations evaluated by the search (default: %(default)s)")
    train = sub.add_parser("train", help="train a supernet and save it as .keras",
                           description="Train an anytime ResNet with a path sampler; writes supernet.keras, "
                           "summary.json and importance.png into --out.")
    _add_training_args(train, epochs=10, train_size=20000)
    train.add_argument("--out", default="runs/train", help="output directory (default: %(default)s)")
    from tips_keras.search import cli as search_cli

    search = sub.add_parser("search", help="search exit configurations of a saved supernet under FLOPs budgets",
                            description="Evaluate configurations of a saved .keras supernet with a keras-tuner "
                            "Oracle under FLOPs budgets; writes front.json and pareto.png.")
    search_cli.add_arguments(search)
    from tflite_export import __main__ as export_cli

    export = sub.add_parser("export", help="export sub-networks to TFLite (int8 C array, Android bundle)",
                            description=export_cli.DESCRIPTION + " Same options as `python -m tflite_export`.")
    export_cli.add_arguments(export)
    return parser


def main(argv=None):
    """Runs ``tips-keras`` (the console script).

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 done, 2 bad usage or invalid input (the message says what was received
        and what is accepted); argparse exits with 2 itself on unknown options.

    Example:
        >>> main(["demo", "--epochs", "1", "--train-size", "2000"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in ("demo", "train"):
            from tips_keras.demo import run_demo

            run_demo(dataset=args.dataset, train_size=args.train_size, epochs=args.epochs, sampler=args.sampler,
                     widths=args.widths, blocks_per_stage=args.blocks, batch_size=args.batch_size,
                     seed=args.seed, out_dir=args.out, verbose=2 if args.command == "demo" else 1,
                     search_and_deploy=args.command == "demo", max_trials=getattr(args, "trials", 40),
                     recipe=args.recipe, stem_stride=args.stem_stride)
        elif args.command == "search":
            from tips_keras.search import cli as search_cli

            search_cli.run_from_args(args)
        elif args.command == "export":
            from tflite_export import __main__ as export_cli

            return export_cli.run(args, "tips-keras export")
    except (ValueError, FileNotFoundError) as error:
        print(f"tips-keras {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
