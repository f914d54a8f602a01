"""The ``--front`` source of the CLI: one TFLite export per FLOPs budget of a supernet.

``python -m tflite_export --model supernet.keras --front front.json --budgets 0.25 0.5
--quantization int8 --out out/`` picks, for each budget, the most accurate point of the Pareto
front that fits it (`tips_keras.extraction.select_front`), extracts it as a plain Keras model
(`tips_keras.extraction.extract`, with BatchNorm recalibration on training images) and exports it
into ``out/<label>/`` (``b025``, ``b050``, ...; absolute budgets > 1 give ``f<FLOPs>``), plus
``out/index.json`` listing the budgets.

All budgets are built in a hidden staging directory next to ``out`` and moved into place only
when every one succeeded: a failure leaves ``out`` as it was. ``out`` must be absent or empty
unless ``--overwrite`` is given (then only the budget directories and index.json are replaced).

This module imports `tips_keras` (and so Keras) only when ``--front`` is used.
"""

import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from tflite_export._io import _commit, atomic_write_text, check_output_dir
from tflite_export.checks import check_inputs_array, model_input_dtype

INDEX_FILE = "index.json"
FASHION_SHAPE = (28, 28, 1)


def add_arguments(parser):
    """Adds the ``--front`` options (budgets, BatchNorm recalibration, default data) to ``parser``.

    Args:
        parser: the `argparse.ArgumentParser` of ``python -m tflite_export`` or ``tips-keras export``.

    Returns:
        The argument group that holds them.
    """
    g = parser.add_argument_group(
        "supernet Pareto front (--front)",
        "With --front, --model must be a tips_keras supernet (.keras). Without "
        "--representative/--validation/--labels, a supernet with input shape 28x28x1 uses "
        "Fashion-MNIST (tips_keras.data.load('fashion_mnist')): the first --num-representative "
        "training images for calibration, the first --num-recalibrate for BatchNorm "
        "recalibration, the test set for validation and its class names as labels "
        "(--no-default-data turns this off; other input shapes must pass the .npz files).",
    )
    g.add_argument("--front", help="Pareto front JSON (tips_keras.search.ParetoFront.to_json)")
    g.add_argument("--budgets", nargs="+", type=float, metavar="B",
                   help="FLOPs budgets: fraction of the full network's FLOPs if <= 1, else "
                        "absolute FLOPs (default: the budgets stored in the front)")
    g.add_argument("--num-recalibrate", type=int, default=1024,
                   help="training images for per-sub-network BatchNorm recalibration "
                        "(default 1024; taken from --representative or Fashion-MNIST)")
    g.add_argument("--no-recalibrate", action="store_true",
                   help="keep the supernet's shared BatchNorm statistics")
    g.add_argument("--no-default-data", action="store_true",
                   help="never fall back to Fashion-MNIST for missing data")
    return g


def check_usage(args, usage_error):
    """Refuses option combinations that only make sense with ``--front``.

    Args:
        args: the parsed arguments.
        usage_error: exception class to raise (the CLI turns it into exit code 2).

    Raises:
        usage_error: e.g. ``--budgets`` without ``--front``.
    """
    if not args.front:
        for opt, bad in (("--budgets", args.budgets), ("--no-recalibrate", args.no_recalibrate),
                         ("--no-default-data", args.no_default_data)):
            if bad:
                raise usage_error(f"{opt} requires --front")
        return
    if args.num_recalibrate < 1:
        raise usage_error("--num-recalibrate must be >= 1")


def _load_supernet(path, usage_error):
    import keras

    import tips_keras  # noqa: F401  (registers the gated layers for loading)
    from tips_keras.supernet import topology

    if not path.is_file():
        raise usage_error(f"model file not found: {path}")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:
        raise usage_error(f"cannot load model {path}: {e}") from e
    try:
        topology.read_topology(model)
    except ValueError as e:
        raise usage_error(f"--front needs --model to be a tips_keras supernet: {e}") from e
    return model


def _default_data(model, args, rep, val, labels, recal):
    shape = tuple(model.inputs[0].shape[1:])
    needs = rep is None or val is None or labels is None or (recal is None and not args.no_recalibrate)
    if not needs or args.no_default_data or shape != FASHION_SHAPE:
        return rep, val, labels, recal
    from tips_keras import data

    try:
        splits = data.load("fashion_mnist")
    except (OSError, ValueError) as e:
        print(f"note: no default data ({e})", file=sys.stderr)
        return rep, val, labels, recal
    print("note: using Fashion-MNIST for the data not given on the command line", file=sys.stderr)
    if model_input_dtype(model) == "uint8":  # the model takes raw pixels: undo the 1/255 scaling
        splits = splits._replace(**{k: np.round(getattr(splits, k) * 255).astype(np.uint8)
                                    for k in ("x_train", "x_test")})
    if rep is None:
        rep = splits.x_train[: args.num_representative]
    if recal is None:
        recal = splits.x_train[: args.num_recalibrate]
    if val is None:
        val = (splits.x_test, splits.y_test)
    if labels is None and len(splits.class_names) == model.outputs[0].shape[-1]:
        labels = list(splits.class_names)
    return rep, val, labels, recal


def resolve_front_jobs(args, rep, val, labels, *, load_array, load_json, job_cls, usage_error):
    """Reads the supernet and the front and returns one job per budget.

    Args:
        args: the parsed arguments (``--model`` is the supernet, ``--front`` its front).
        rep, val, labels: calibration inputs, ``(x, y)`` validation data and class names given
            on the command line, or None (then filled from the defaults).
        load_array, load_json: the CLI's readers of ``.npz`` and JSON files.
        job_cls: the job class to instantiate (``ExportJob``).
        usage_error: exception class for bad usage.

    Returns:
        ``(jobs, rep, val, labels)``: the jobs (out_dir below ``--out``) and the data to use,
        where missing data was filled in with the defaults described in `add_arguments`.
    """
    from tips_keras import extraction as tips_export
    from tips_keras.supernet.analytic_flops import flops

    model = _load_supernet(Path(args.model), usage_error)
    try:
        points, info = tips_export.load_front(args.front)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            points = tips_export.recount_front(model, points)  # choose by the model's own FLOPs
    except ValueError as e:
        raise usage_error(f"--front: {e}") from e
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    budgets = args.budgets or info["budgets"]
    if not budgets:
        raise usage_error("--budgets is required (the front stores no budgets)")
    full = flops(model, "largest")
    if info["full_flops"] not in (None, full):
        print(f"warning: the front says the full network has {info['full_flops']:,} FLOPs, the "
              f"model counts {full:,}: budget fractions are of the model's count", file=sys.stderr)
    try:
        chosen = tips_export.select_front(points, list(budgets), full)
    except ValueError as e:
        raise usage_error(str(e)) from e
    labels_ = [tips_export.budget_label(b) for b, _, _ in chosen]
    if len(set(labels_)) != len(labels_):
        raise usage_error(f"budgets {list(budgets)} give duplicate directory names {labels_}")

    recal = None
    if args.representative and not args.no_recalibrate:
        recal = load_array(args.representative, args.representative_key,
                           ["x", "x_train", "representative"])[: args.num_recalibrate]
    rep, val, labels, recal = _default_data(model, args, rep, val, labels, recal)
    if args.no_recalibrate:
        recal = None
    elif recal is not None:
        recal = check_inputs_array("representative_data", recal, tuple(model.inputs[0].shape[1:]),
                                   model_input_dtype(model))
    extra = load_json(args.metadata) if args.metadata else {}
    jobs = []
    for (budget, limit, point), label in zip(chosen, labels_):
        config, macs, params = point["config"], point["flops"], point["params"]  # the model's count
        meta = dict(extra, config=config, flops=macs, params=params, budget=budget,
                    budget_flops=limit, full_flops=full, front_flops=point["front_flops"],
                    front_accuracy=point["accuracy"], supernet=str(args.model),
                    recalibrated=recal is not None)

        def load(config=config, name=label):
            return tips_export.extract(model, config, recalibrate_data=recal,
                                       name=f"{model.name}_{name}")

        jobs.append(job_cls(label, load, Path(args.out) / label, meta))
    return jobs, rep, val, labels


def run_staged(jobs, out_root, overwrite, export_one):
    """Exports every job into a staging dir, then moves all into ``out_root`` together.

    Args:
        jobs: jobs whose ``out_dir`` is ``out_root / <label>``.
        out_root: the ``--out`` directory.
        overwrite: replace existing budget directories.
        export_one: ``(job, staged_dir) -> ExportReport``.

    Returns:
        The reports, in job order (their ``out_dir`` is the final directory).
    """
    out_root = Path(out_root)
    if out_root.exists() and not out_root.is_dir():
        raise FileExistsError(f"Output path {str(out_root)!r} exists and is not a directory.")
    if out_root.is_dir() and any(out_root.iterdir()) and not overwrite:
        raise FileExistsError(
            f"Output directory {str(out_root)!r} already exists and is not empty "
            f"(contains {sorted(p.name for p in out_root.iterdir())[:5]}). Pass --overwrite "
            "to replace its budget directories."
        )
    for job in jobs:
        check_output_dir(job.out_dir, overwrite)
    out_root.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_root.name}.front-tmp-", dir=out_root.parent))
    created_root = not out_root.exists()
    committed = []
    try:
        reports = [export_one(job, stage / job.name) for job in jobs]
        out_root.mkdir(exist_ok=True)
        for job, report in zip(jobs, reports):
            existed = job.out_dir.exists()
            _commit(stage / job.name, job.out_dir, overwrite)
            if not existed:
                committed.append(job.out_dir)
            report.out_dir = str(job.out_dir)
        index = [dict(name=job.name, dir=job.name, **{k: job.metadata.get(k) for k in (
            "budget", "budget_flops", "flops", "params", "front_accuracy", "config")},
            accuracy=r.accuracy, size_bytes=r.size_bytes, latency_ms_host_cpu=r.latency_ms,
            quantization=r.quantization) for job, r in zip(jobs, reports)]
        atomic_write_text(out_root / INDEX_FILE, json.dumps(index, indent=2) + "\n")
        return reports
    except BaseException:
        for path in committed:  # roll back what this run created
            shutil.rmtree(path, ignore_errors=True)
        if created_root and out_root.is_dir() and not any(out_root.iterdir()):
            out_root.rmdir()
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
