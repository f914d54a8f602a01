"""Command-line entry point of the search: ``tips-keras search`` calls `run_from_args`.

`add_arguments` declares the options on an argparse (sub)parser, `run_from_args` turns them into a
`cli_search` call. `cli_search` loads a saved supernet and an embedded dataset's validation split,
runs `ExitSearch` and writes ``front.json`` and ``pareto.png`` into the output directory (the
keras-tuner project goes to ``<output_dir>/keras_tuner``).
"""

import os

import numpy as np

from tips_keras.data import DATASETS

DEFAULT_BUDGETS = (0.25, 0.5, 0.75, 1.0)


def _load_supernet(model_path):
    from tips_keras.io import load_supernet

    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"Supernet file not found: {str(model_path)!r} (expected a .keras "
                                "file written by `tips-keras train` or model.save).")
    # The checked loader: safe_mode, no Lambda layers, consistent gates, finite weights; it
    # raises ValueError for a file that is not an anytime supernet.
    return load_supernet(model_path, compile=False)


def _validation_split(data_name, val_size, data_seed, recalibration_images, data_dir):
    """The dataset's validation split (as in training with ``seed=data_seed``), subsampled to
    ``val_size``, plus ``recalibration_images`` training images (never validation ones)."""
    from tips_keras import data

    splits = data.load(data_name, seed=data_seed, train_size=recalibration_images, data_dir=data_dir)
    x_val, y_val = splits.x_val, splits.y_val
    if val_size is not None:
        if isinstance(val_size, bool) or not isinstance(val_size, int) or not 0 < val_size <= len(x_val):
            raise ValueError(f"Invalid value for argument `val_size`. Expected an integer in "
                             f"[1, {len(x_val)}]. Received: val_size={val_size!r}")
        keep = np.sort(np.random.default_rng(data_seed).permutation(len(x_val))[:val_size])
        x_val, y_val = x_val[keep], y_val[keep]
    return x_val, y_val, splits.x_train


def cli_search(model_path, output_dir="runs/search", budgets=DEFAULT_BUDGETS, max_trials=100,
               oracle="tips", recalibrate=False, data_name="fashion_mnist", val_size=1000,
               data_seed=0, seed=0, batch_size=None, recalibration_images=512, resume=False,
               data_dir=None, progress=True, verbose=True, evaluation="auto", compute_dtype="float32"):
    """Searches a saved supernet on an embedded dataset and writes the Pareto front.

    Args:
        model_path: a ``.keras`` supernet (e.g. ``runs/train/supernet.keras``).
        output_dir: receives ``front.json``, ``pareto.png`` and the keras-tuner project.
        budgets: FLOPs budgets: fractions of the full FLOPs (<= 1) or absolute FLOPs (> 1).
        max_trials: configurations to evaluate.
        oracle: ``"tips"`` or ``"random"``.
        recalibrate: recalibrate BatchNorm per configuration on ``recalibration_images``
            training images (slower; ``accuracy_no_recal`` is recorded as well).
        data_name: ``"fashion_mnist"`` or ``"mnist_5k"`` (`tips_keras.data.load`).
        val_size: validation images used (a seeded subset of the validation split; None: all).
        data_seed: the train/validation split seed; use the one the supernet was trained with
            so that no validation image was trained on.
        seed: seed of the oracle.
        batch_size: validation images per forward pass (None: the evaluation's default, see
            `ExitSearch`).
        recalibration_images: training images for recalibration.
        resume: continue the keras-tuner project in ``output_dir`` instead of starting afresh.
        data_dir: dataset directory (see `tips_keras.data.load`).
        progress: show a progress bar.
        verbose: print the front's table and the written paths.
        evaluation: ``"auto"``, ``"shared_prefix"`` or ``"compiled"`` (see `ExitSearch`).
        compute_dtype: ``"float32"`` or ``"bfloat16"`` (the shared-prefix evaluation's
            convolutions; see `ExitSearch`).

    Returns:
        The `tips_keras.search.ParetoFront`.

    Raises:
        FileNotFoundError: no model file or dataset files.
        ValueError: not a supernet, a supernet whose input shape is not the dataset's, bad
            budgets or options.

    Example:
        >>> front = cli_search("runs/train/supernet.keras", "runs/search", budgets=[0.25, 0.5],
        ...                    max_trials=50)  # doctest: +SKIP
    """
    from tips_keras.search.exit_search import ExitSearch

    if data_name not in DATASETS:
        raise ValueError(f"Invalid value for argument `data_name`. Expected one of {DATASETS}. "
                         f"Received: data_name={data_name!r}")
    model = _load_supernet(model_path)
    shape = tuple(model.inputs[0].shape[1:])
    if shape != (28, 28, 1):
        raise ValueError(f"The supernet in {str(model_path)!r} expects inputs of shape {shape}; "
                         f"{data_name} images are (28, 28, 1).")
    x_val, y_val, x_train = _validation_split(
        data_name, val_size, data_seed, recalibration_images if recalibrate else 0, data_dir)
    search = ExitSearch(
        model, (x_val, y_val), budgets=list(budgets), max_trials=max_trials, oracle=oracle,
        directory=output_dir, project_name="keras_tuner", overwrite=not resume,
        recalibration_data=x_train if recalibrate else None, report_shared_statistics=recalibrate,
        batch_size=batch_size, seed=seed, progress=progress, evaluation=evaluation,
        compute_dtype=compute_dtype)
    front = search.run()
    front.metadata.update(model_path=str(model_path), dataset=data_name, data_seed=data_seed)
    json_path = front.to_json(os.path.join(output_dir, "front.json"))
    plot_path = front.plot(os.path.join(output_dir, "pareto.png"))
    if verbose:
        print(front.table())
        for b in front.budgets:
            p = front.best(b)
            print(f"budget {b:g}: exit {p.exit}, {p.flops:,} FLOPs, accuracy {p.accuracy:.4f}")
        print(f"wrote {json_path} and {plot_path}")
    return front


def add_arguments(parser):
    """Declares the ``tips-keras search`` options on an argparse parser.

    Args:
        parser: an ``argparse.ArgumentParser`` (or sub-parser).

    Returns:
        ``parser``, with ``--model`` (required), ``--out``, ``--budgets``, ``--max-trials``,
        ``--oracle``, ``--recalibrate``, ``--dataset``, ``--val-size``, ``--data-seed``,
        ``--seed``, ``--batch-size``, ``--resume`` and ``--no-progress``.

    Example:
        >>> import argparse
        >>> args = add_arguments(argparse.ArgumentParser()).parse_args(["--model", "m.keras"])
        >>> args.budgets, args.oracle
        ([0.25, 0.5, 0.75, 1.0], 'tips')
    """
    parser.add_argument("--model", required=True, help="supernet .keras file (from `tips-keras train`)")
    parser.add_argument("--out", default="runs/search", help="output directory (default: %(default)s)")
    parser.add_argument("--budgets", type=float, nargs="+", default=list(DEFAULT_BUDGETS), metavar="B",
                        help="FLOPs budgets: fraction of the full FLOPs if <= 1, else absolute "
                             "(default: 0.25 0.5 0.75 1.0)")
    parser.add_argument("--max-trials", type=int, default=100, help="configurations to evaluate (default: %(default)s)")
    parser.add_argument("--oracle", choices=("tips", "random"), default="tips",
                        help="proposal strategy: importance-guided or random (default: %(default)s)")
    parser.add_argument("--recalibrate", action="store_true",
                        help="recalibrate BatchNorm statistics per configuration (slower)")
    parser.add_argument("--dataset", choices=DATASETS, default="fashion_mnist", help="(default: %(default)s)")
    parser.add_argument("--val-size", type=int, default=1000, help="validation images (default: %(default)s)")
    parser.add_argument("--data-seed", type=int, default=0,
                        help="train/validation split seed used in training (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="oracle seed (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="evaluation batch size (default: 2048 for the shared-prefix evaluation, 256 compiled)")
    parser.add_argument("--evaluation", choices=("auto", "shared_prefix", "compiled"), default="auto",
                        help="how trials are evaluated, same accuracies (default: %(default)s; see ExitSearch)")
    parser.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default="float32",
                        help="convolutions of the shared-prefix evaluation in bfloat16: faster on CPUs with "
                             "native bfloat16 (AVX512-BF16, AMX), accuracies within rounding (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue the search in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_from_args(args):
    """Runs `cli_search` with the options parsed from `add_arguments`.

    ``recalibration_images`` and ``data_dir`` keep `cli_search`'s defaults (no options).

    Args:
        args: the ``argparse.Namespace`` of a parser set up by `add_arguments`.

    Returns:
        The `tips_keras.search.ParetoFront`.

    Raises:
        FileNotFoundError: no model file or dataset files.
        ValueError: as `cli_search`.

    Example:
        >>> parser = add_arguments(argparse.ArgumentParser())  # doctest: +SKIP
        >>> args = parser.parse_args(["--model", "supernet.keras"])  # doctest: +SKIP
        >>> front = run_from_args(args)  # doctest: +SKIP
    """
    return cli_search(args.model, args.out, budgets=args.budgets, max_trials=args.max_trials,
                      oracle=args.oracle, recalibrate=args.recalibrate, data_name=args.dataset,
                      val_size=args.val_size, data_seed=args.data_seed, seed=args.seed,
                      batch_size=args.batch_size, resume=args.resume, progress=not args.no_progress,
                      evaluation=args.evaluation, compute_dtype=args.compute_dtype)
