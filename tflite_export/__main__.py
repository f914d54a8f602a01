"""Command line: ``python -m tflite_export --model plain.keras --quantization int8
--out out/b050 --representative rep.npz --validation val.npz --labels labels.txt``.

Supernets: ``python -m tflite_export --model supernet.keras --front front.json
--budgets 0.25 0.5 --quantization int8 --out out/`` exports the best sub-network
of the Pareto front for each FLOPs budget into ``out/b025/``, ``out/b050/``
(see `tflite_export.front`; all budgets are written together or not at all).

Exit codes: 0 success, 2 bad usage or invalid input (argparse errors, missing
files, bad arrays, existing output without --overwrite), 1 anything else.

Extending with model sources (e.g. ``--front front.json --budgets ...`` for
supernets): add the option to the `source` mutually exclusive group in
`build_parser` and a branch in `resolve_jobs` that returns one `ExportJob`
per sub-network (each with its own `out_dir` below ``--out`` and its own
`metadata`, e.g. config and FLOPs). Everything else is shared.
"""

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tflite_export.checks import QUANTIZATIONS  # noqa: E402


class UsageError(Exception):
    """Bad command-line usage or input file: exit code 2."""


@dataclass
class ExportJob:
    name: str
    load_model: Callable  # () -> keras.Model
    out_dir: Path
    metadata: dict = field(default_factory=dict)


DESCRIPTION = ("Convert a plain Keras sub-network to TFLite (+ TFLM C array), or, with --front, the best "
               "configuration of a tips_keras supernet per FLOPs budget; each is verified in LiteRT.")


def build_parser():
    """The ``python -m tflite_export`` argument parser (see `add_arguments`)."""
    p = argparse.ArgumentParser(prog="python -m tflite_export", description=DESCRIPTION)
    add_arguments(p)
    return p


def add_arguments(p):
    """Adds the export options to ``p`` (shared with ``tips-keras export``)."""
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="plain Keras model file (.keras); with --front: "
                        "a tips_keras supernet")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quantization", default="float32", choices=QUANTIZATIONS)
    p.add_argument("--representative", help=".npz/.npy with calibration inputs")
    p.add_argument("--representative-key", help="array name inside the .npz")
    p.add_argument("--num-representative", type=int, default=500,
                   help="use at most this many calibration samples (default 500)")
    p.add_argument("--validation", help=".npz with validation arrays")
    p.add_argument("--x-key", default="x", help="input array name (default x)")
    p.add_argument("--y-key", default="y", help="label array name (default y)")
    p.add_argument("--labels", help="text file with one class name per line")
    p.add_argument("--metadata", help="JSON file (config, flops, ...)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-micro", action="store_true",
                   help="int8: skip the TFLM C array, op check and TFLite Micro run")
    p.add_argument("--strict-int8", action="store_true",
                   help="int8: refuse a model that still holds float ops or tensors "
                        "(default: list them in the report and manifest)")
    p.add_argument("--micro-samples", type=int, default=1000,
                   help="int8: validation images run in the TFLite Micro interpreter "
                        "(default 1000)")
    p.add_argument("--micro-variable", default="g_model_data")
    p.add_argument("--route", default="signature", choices=("signature", "keras"))
    p.add_argument("--report-json", help="also write the report as JSON here")
    from tflite_export import front

    front.add_arguments(p)


def _load_array(path, key, fallbacks):
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:
        raise UsageError(f"cannot read {path}: {e}") from e
    if not hasattr(data, "files"):  # .npy
        return data
    names = list(data.files)
    for k in ([key] if key else []) + ([] if key else fallbacks):
        if k in names:
            return data[k]
    if not key and len(names) == 1:
        return data[names[0]]
    raise UsageError(f"{path}: no array named {key or fallbacks}; found {names}")


def _load_json(path):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())  # bytes: UTF-8 with or without a BOM, UTF-16/32 with one
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read JSON {path}: {e}") from e


def _read_text(path):
    """Text of a file a user may have written anywhere: UTF-8 (a BOM dropped) or UTF-16/32 with
    a BOM; line endings are normalised by ``splitlines``."""
    raw = Path(path).read_bytes()
    for bom, codec in ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
                       (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if raw.startswith(bom):
            return raw.decode(codec)
    return raw.decode("utf-8-sig")


def resolve_jobs(args, rep=None, val=None, labels=None):
    """Turn the model-source options into export jobs.

    Returns ``(jobs, rep, val, labels)``: the ``--front`` source fills in default data."""
    if args.front:
        from tflite_export import front

        return front.resolve_front_jobs(
            args, rep, val, labels, load_array=_load_array, load_json=_load_json,
            job_cls=ExportJob, usage_error=UsageError)
    if args.model:
        path = Path(args.model)
        if not path.exists():
            raise UsageError(f"model file not found: {path}")

        def load():
            import keras

            try:
                return keras.models.load_model(path, compile=False)
            except Exception as e:
                raise UsageError(f"cannot load model {path}: {e}") from e

        meta = _load_json(args.metadata) if args.metadata else {}
        return [ExportJob(path.stem, load, Path(args.out), meta)], rep, val, labels
    raise UsageError("no model source given")  # pragma: no cover


def load_inputs(args):
    rep = val = labels = None
    if args.representative:
        rep = _load_array(args.representative, args.representative_key,
                          ["x", "x_train", "representative"])
        if args.num_representative < 1:
            raise UsageError("--num-representative must be >= 1")
        rep = rep[: args.num_representative]
    if args.validation:
        val = (_load_array(args.validation, args.x_key, []),
               _load_array(args.validation, args.y_key, []))
    if args.labels:
        try:
            text = _read_text(args.labels)
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read labels {args.labels}: {e}") from e
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    return rep, val, labels


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: 2 on bad usage, 0 for --help
        return int(e.code or 0)
    return run(args, parser.prog)


def run(args, prog):
    """Runs the export for parsed ``args``; returns the exit code (0 ok, 1 failed, 2 bad usage)."""
    from tflite_export import front
    from tflite_export.export import export_tflite

    try:
        front.check_usage(args, UsageError)
        rep, val, labels = load_inputs(args)
        jobs, rep, val, labels = resolve_jobs(args, rep, val, labels)

        def export_one(job, out_dir):
            return export_tflite(
                job.load_model(), out_dir, quantization=args.quantization,
                representative_data=rep, validation_data=val, labels=labels,
                metadata=job.metadata, overwrite=args.overwrite,
                micro=False if args.no_micro else None,
                micro_variable=args.micro_variable, route=args.route,
                strict_int8=args.strict_int8, micro_samples=args.micro_samples,
            )

        if args.front:
            done = front.run_staged(jobs, args.out, args.overwrite, export_one)
        else:
            done = [export_one(job, job.out_dir) for job in jobs]
        reports = []
        for report in done:
            print(report.table())
            reports.append(report.to_dict())
    except (UsageError, ValueError, FileExistsError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        print(f"{prog}: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if args.report_json:
        from tflite_export._io import atomic_write_text

        atomic_write_text(args.report_json, json.dumps(reports, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
