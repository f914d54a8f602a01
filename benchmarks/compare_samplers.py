"""Sampler comparison (issue 5): TIPS vs uniform, sandwich, stochastic depth, separate networks.

Commands (from the repository root):

    .venv/bin/python benchmarks/compare_samplers.py --quick --out /tmp/compare_quick  # smoke, ~1 min
    .venv/bin/python benchmarks/compare_samplers.py                                   # baselines
    .venv/bin/python benchmarks/compare_samplers.py --tips-variants --baseline-variants  # + variants
    .venv/bin/python benchmarks/compare_samplers.py --setting deep                    # -> benchmarks/deep

The baseline comparison (4 samplers + 3 separate networks, 3 seeds) takes about 60 minutes on an
idle 2-core CPU; every 1-path TIPS variant adds about 7 minutes, every 4-path one about 19 (the
per-run train and eval times are in results.json). `--resume` continues an interrupted run or adds
variants / seeds to a finished one.

What is measured. The same anytime ResNet supernet (`tips_keras.supernet.zoo.anytime_resnet`) is trained on
Fashion-MNIST (fixed train/val/test split) with each sampler (`TIPSCallback(sampler=...)`) with
identical epochs, batches, Adam + cosine learning-rate schedule and seeds (`--seeds`, >= 3 for
results). Sandwich trains 4 paths per step (largest + smallest + 2 random), the others 1. Then:

* fixed set: the configurations closest to 10/25/50/75/100 % of the full FLOPs (ties: more gates
  on, deeper exit) are evaluated on the held-out TEST split, each after BatchNorm recalibration on
  training images (`tips_keras.recalibrated`);
* searched front: per FLOPs budget (the same fractions) the best configuration on the VALIDATION
  split (`tips_keras.search.ExitSearch` when importable, random oracle by default so every
  supernet is searched the same way; else exhaustive / FLOPs-stratified subset, `--front`), then
  its recalibrated test accuracy; front mean accuracy and area under accuracy-vs-budget;
* separately trained networks: the 25/50/100 % configurations trained from scratch alone
  (`FixedSampler`), same epochs and schedule;
* convergence: after every epoch, the mean validation accuracy of the 25/50/100 % configurations
  (recalibrated on a few images); epochs to a target accuracy; training wall time per epoch and
  in total (evaluation excluded). Equal wall time: each sampler's metric interpolated at the
  training time uniform needs for all epochs (no extra runs; k-path samplers are read off an
  earlier point of their curve);
* `--tips-variants`: extra TIPS rules (p_min/p_max, smoothing, score, coupling, training signal in
  the DTMC, 2 paths + distillation, TIPS inside the sandwich rule); per-gate importance and gate
  probabilities per epoch of every TIPS run. `--baseline-variants`: baselines with options
  (sandwich + distillation, the matched reference of TIPS inside the sandwich rule).

Outputs in `--out`: RESULTS.md, results.json, pareto.png, convergence.png, importance.png.
`--resume` skips (run, seed) pairs already in `--out`/results.json.
"""

import argparse
import os
import shlex
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import _compare_lib as lib  # noqa: E402
import _compare_report as report  # noqa: E402
import tips_keras as tips  # noqa: E402
from tips_keras import data  # noqa: E402



def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", choices=("standard", "deep"), default="standard")
    p.add_argument("--quick", action="store_true", help="tiny smoke-test sizes (about a minute), not results")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="run seeds (default 0 1 2; quick: 0)")
    p.add_argument("--runs", nargs="+", choices=tuple(lib.RUNS), default=list(lib.RUNS))
    p.add_argument("--variants", nargs="?", const="all", default=None,
                   help=f"comma-separated ablations (all: {','.join(lib.VARIANTS)})")
    p.add_argument("--no-alone", action="store_true", help="skip the networks trained alone")
    p.add_argument("--epochs", type=int, default=None, help="override the setting's epochs")
    p.add_argument("--front", choices=tuple(lib.FRONT_METHODS), default="auto")
    p.add_argument("--search-oracle", choices=("random", "tips"), default="tips",
                   help="oracle of the front search (default tips: it starts from the important "
                        "paths a TIPS supernet stored, and is guided by the importance otherwise)")
    p.add_argument("--target", type=float, default=None,
                   help="convergence target accuracy (default: 0.9 x best final mean metric, floored)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/, deep: benchmarks/deep)")
    p.add_argument("--resume", action="store_true", help="reuse finished runs from OUT/results.json")
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    if args.out is None:
        args.out = HERE if args.setting == "standard" else os.path.join(HERE, "deep")
    return args


def run_specs(args):
    specs = [lib.RunSpec(name, *lib.RUNS[name]) for name in args.runs]
    names = args.variants.split(",") if args.variants else []
    for name in list(lib.VARIANTS) if names == ["all"] else names:
        if name not in lib.VARIANTS:
            raise SystemExit(f"Unknown variant {name!r}. Known: {', '.join(lib.VARIANTS)}")
        sampler, options = lib.VARIANTS[name]
        specs.append(lib.RunSpec(name, sampler, dict(options)))
    return specs


def alone_todo(records, alone, configs, seeds, done_seeds):
    """(seed, vector, why) of the networks still to train alone: the fixed configurations of
    ALONE_LEVELS, and the searched menu configuration of every supernet at MENU_BUDGETS."""
    have = {(a["seed"], tuple(a["vector"])) for a in alone}
    todo = []
    for seed in seeds:
        if seed not in done_seeds:
            continue
        wanted = [(configs[level][0], f"fixed {level:.0%}") for level in lib.ALONE_LEVELS]
        for r in records:
            if r["seed"] == seed:
                for row in r["front"]:
                    if row["budget"] in lib.MENU_BUDGETS and row["vector"] is not None:
                        wanted.append((row["vector"], f"{r['name']} menu {row['budget']:.0%}"))
        for vector, why in wanted:
            key = (seed, tuple(float(v) for v in vector))
            if key not in have:
                have.add(key)
                todo.append((seed, [float(v) for v in vector], why))
    return todo


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    setting = lib.SETTINGS[args.setting + ("-quick" if args.quick else "")]
    if args.epochs:
        setting = lib.dataclasses.replace(setting, epochs=args.epochs)
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    load_start = os.getloadavg()[0]
    splits = data.load("fashion_mnist", train_size=setting.train, val_size=setting.val,
                       test_size=setting.test, seed=0)
    probe = lib.build_model(setting)
    space = probe.config_space
    configs = lib.select_configs(probe)
    full_flops = tips.flops(probe, "largest")
    specs = run_specs(args)
    json_path = os.path.join(args.out, "results.json")
    records, alone = [], []
    if args.resume and os.path.exists(json_path):
        with open(json_path) as f:
            old = json.load(f)
        if old.get("setting") == setting.name:
            records, alone = old["records"], old.get("alone", [])
    done = {(r["name"], r["seed"]) for r in records}
    todo = [(seed, spec) for seed in args.seeds for spec in specs if (spec.name, seed) not in done]
    print(f"[compare] setting {setting.name}: {len(space.gate_names)} gates, {space.num_exits} exits, "
          f"{len(space.all_vectors(limit=1 << 20))} configurations, full FLOPs {full_flops:,}; "
          f"{len(todo)} supernet runs x {setting.epochs} epochs ({len(records)} resumed)", flush=True)
    del probe

    def save(partial=True):
        report.write_json(json_path, {"setting": setting.name, "records": records, "alone": alone,
                                      "partial": partial})

    for i, (seed, spec) in enumerate(todo):
        label = f"[{i + 1}/{len(todo)}] {spec.name} seed {seed}"
        print(f"{label}: training (paths/step {spec.paths_per_step()}, options {spec.options})", flush=True)
        keras.backend.clear_session()
        model, accuracy, rec = lib.train_run(spec, setting, splits, seed, configs, label)
        t0 = time.perf_counter()
        fixed = lib.evaluate_fixed(model, accuracy, setting, splits, configs, list(lib.LEVELS))
        rec["fixed_test"] = {str(l): a for l, a in fixed.items()}
        cache = {tuple(float(v) for v in configs[l][0]): a for l, a in fixed.items()}
        rec["front"], rec["front_candidates"] = lib.searched_front(
            args.front, model, accuracy, setting, splits, seed, args.search_oracle, cache,
            anchors=[configs[l][0] for l in lib.LEVELS])
        rec["eval_time"] = time.perf_counter() - t0
        print(f"{label}: test " + " ".join(f"{float(l):.0%}:{a:.4f}" for l, a in fixed.items())
              + f"  front mean {np.mean([b['test_acc'] for b in rec['front']]):.4f}"
              + f"  (eval {rec['eval_time']:.1f}s)", flush=True)
        records.append(rec)
        save()
    if not args.no_alone:
        seeds_done = {r["seed"] for r in records}
        pending = alone_todo(records, alone, configs, args.seeds, seeds_done)
        for i, (seed, vector, why) in enumerate(pending):
            label = f"[alone {i + 1}/{len(pending)}] {why} seed {seed}"
            keras.backend.clear_session()
            alone.append(dict(lib.train_alone(vector, setting, splits, seed, label), why=why))
            save()

    summary = report.summarize(records, alone, lib.LEVELS, configs, len(splits.class_names), args.target,
                               matched=lib.MATCHED_BASELINE)
    meta = build_meta(args, argv, setting, space, full_flops, configs, records, alone, start, load_start)
    report.write_markdown(os.path.join(args.out, "RESULTS.md"), summary, meta, configs)
    report.plot_all(args.out, summary, records, configs, list(lib.LEVELS))
    report.write_json(json_path, {"setting": setting.name, "meta": meta, "summary": summary,
                                  "configs": {str(l): {"vector": v, "flops": f, "fraction": fr}
                                              for l, (v, f, fr) in configs.items()},
                                  "records": records, "alone": alone, "partial": False})
    with open(os.path.join(args.out, "RESULTS.md")) as f:
        print("\n" + f.read())
    print(report.goal_lines(summary), flush=True)
    print(f"[compare] done in {time.perf_counter() - start:.0f} s; outputs in {args.out}")


def run_seconds(records):
    """Training + evaluation seconds of the stored runs (resumed ones included)."""
    return sum(sum(e["train_time"] + e.get("eval_time", 0.0) for e in r["epochs"]) + r.get("eval_time", 0.0)
               for r in records)


def _importance(records):
    out = {}
    for n in dict.fromkeys(r["name"] for r in records if r["sampler"] == "tips"):
        hist = report.mean_history([r for r in records if r["name"] == n])
        if hist:
            out[n] = {"importance": hist[-1]["importance"], "gate_probs": hist[-1]["gate_probs"]}
    return out


def build_meta(args, argv, setting, space, full_flops, configs, records, alone, start, load_start):
    s = setting
    setup = {
        "model": f"anytime_resnet(widths={s.widths}, blocks_per_stage={s.blocks}), convolutional early "
                 f"exit heads: {space.num_gates} gates, {space.num_exits} exits, full FLOPs {full_flops:,} MACs",
        "data": f"Fashion-MNIST, train {s.train}, validation {s.val}, test {s.test} (split seed 0)",
        "augmentation": ("RandomTranslation(0.1) + RandomFlip(horizontal) + RandomZoom(0.1) in tf.data"
                         if s.augment else "none"),
        "training": f"{s.epochs} epochs, batch {s.batch}, Adam {s.lr}, per-step linear warm-up over 5 % "
                    f"of the steps then cosine decay to 0 (the recipe's schedule) for every run, the "
                    f"networks trained alone included",
        "seeds": " ".join(map(str, args.seeds)) + " (init, shuffling, augmentation, path draws)",
        "BN recalibration": f"supernets: test {s.recal} training images in passes of {s.recal_batch}; "
                            f"metric {s.metric_recal}; search {s.search_recal}. Networks trained alone: "
                            f"their own statistics",
        "convergence metric": f"mean validation accuracy ({s.metric_val} images) of the "
                              f"{'/'.join(f'{l:.0%}' for l in lib.METRIC_LEVELS)} configurations",
        "front": f"method {args.front}, oracle {args.search_oracle}, {s.trials} trials, validation "
                 f"{s.search_val} images, budgets {', '.join(f'{b:.0%}' for b in lib.BUDGETS)}",
        "machine": f"{os.cpu_count()} CPU cores, load average at start {load_start:.1f}; this "
                   f"invocation {time.perf_counter() - start:.0f} s; all {len(records)} supernet runs "
                   f"and {len(alone)} networks trained alone (with --resume, over several invocations) "
                   f"{(run_seconds(records) + run_seconds(alone)) / 60:.0f} min of training + evaluation",
    }
    notes = [
        "Std is over seeds (ddof 0); differences are paired by seed.",
        "Networks trained alone: the configuration extracted as a plain Keras model (tips.extract) "
        "from a supernet with the seed's initial weights, trained with the same data, epochs, batches "
        "and learning-rate schedule, one forward/backward pass per step. Equal epochs means equal "
        "data, not equal compute: the recipe trains 4 paths per step.",
        "Menu: per budget, the configuration with the best validation accuracy among the searched "
        "candidates (recalibrated); it is trained alone with the same seed and compared on test.",
        "Front AUC: trapezoid of test accuracy over the budget fractions divided by their span "
        "(an average accuracy over the FLOPs range) over the budgets at or above the smallest "
        "configuration.",
        "Exhaustive front fallback: all configurations if <= 4 x trials, else a FLOPs-stratified "
        "subset of that size (recalibrating every one of thousands is not affordable).",
        "Convergence target: --target, else 90 % of the best final mean metric of the main runs, "
        "floored to 0.01.",
        "TIPS starts from P(on) = 0.5 for every gate, and path draws depend only on (seed, epoch, "
        "batch): in epoch 1 TIPS and uniform train exactly the same paths (a paired start).",
        "Wall times depend on the load of the machine (load average above); per-epoch CPU times "
        "(process time, all threads) are given next to them and in results.json.",
    ]
    shown = [a for a in argv if a != "--resume"]
    command = "cd <repo> && .venv/bin/python benchmarks/compare_samplers.py " + shlex.join(shown)
    return {"setting": setting.name, "quick": args.quick, "command": command.rstrip(), "setup": setup,
            "notes": notes, "levels": list(lib.LEVELS), "front_method": args.front,
            "importance": _importance(records), "gate_min_exit": [int(e) for e in space.gate_min_exit],
            "sizes": lib.dataclasses.asdict(setting)}


if __name__ == "__main__":
    main()
