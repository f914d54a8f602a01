"""Summaries, RESULTS.md, results.json and figures of `compare_samplers.py` (atomic writes)."""

import json
import os
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tips_keras import plots  # noqa: E402
from tips_keras.atomic import atomic_write  # noqa: E402

TABLE_HEADER = "| sampler | paths/step |"
SUMMARY_HEADER = ("| sampler | mean acc (fixed set) | front mean acc | front AUC | epochs to target "
                  "| s/epoch | total train s | metric at uniform's wall time |")
FRONT_HEADER = "| sampler (searched front) |"


def save_fig(fig, path):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def ms(values, scale=1.0, digits=2):
    """'mean ± std' of the finite values (std over seeds, ddof=0), or '—'."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float) * scale
    return "—" if v.size == 0 else f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def _steady_times(rows):
    """Per-epoch training times with epoch 1 (graph tracing) replaced by the later median."""
    times = [r["train_time"] for r in rows]
    if len(times) > 1:
        times[0] = float(np.median(times[1:]))
    return np.asarray(times)


def _alone_lookup(alone):
    return {(a["seed"], tuple(float(v) for v in a["vector"])): a["test_acc"] for a in alone}


def summarize(records, alone, levels, configs, num_classes, target=None, matched=None,
              alone_levels=(0.25, 0.5, 1.0), menu_budgets=(0.25, 0.5, 1.0)):
    """Per supernet run name: fixed-set / front / convergence / time statistics over seeds; the
    gap to the same networks trained alone (fixed configurations and searched menu, paired by
    seed); paired differences against uniform (``comparisons``) and each ``matched`` baseline."""
    names = list(dict.fromkeys(r["name"] for r in records))
    by = {n: [r for r in records if r["name"] == n] for n in names}
    lookup = _alone_lookup(alone)
    final = {n: np.mean([r["epochs"][-1]["metric"] for r in by[n]]) for n in names}
    if target is None and names:  # documented rule: 90 % of the best final mean metric, floored
        target = float(np.floor(0.9 * max(final.values()) * 100) / 100)
    uniform_time = None
    if "uniform" in by:
        uniform_time = float(np.mean([_steady_times(r["epochs"]).sum() for r in by["uniform"]]))
    out = {"target": target, "uniform_wall_time": uniform_time, "runs": {}, "alone": {}}
    for level in alone_levels:
        key = tuple(float(v) for v in configs[level][0])
        out["alone"][str(level)] = {str(seed): acc for (seed, vec), acc in lookup.items() if vec == key}
    for n in names:
        runs = by[n]
        s = {"group": runs[0]["group"], "seeds": [r["seed"] for r in runs],
             "paths_per_step": runs[0]["paths_per_step"]}
        s["fixed"] = {str(l): [r["fixed_test"].get(str(l)) for r in runs] for l in levels}
        s["fixed_mean_per_seed"] = [np.mean(list(r["fixed_test"].values())) for r in runs]
        s["epoch_time"] = [float(np.median(_steady_times(r["epochs"]))) for r in runs]
        s["epoch_cpu"] = [float(np.median([e.get("cpu_time", np.nan) for e in r["epochs"][1:]]
                                          or [np.nan])) for r in runs]
        s["total_time"] = [float(sum(e["train_time"] for e in r["epochs"])) for r in runs]
        s["metric"] = [[e["metric"] for e in r["epochs"]] for r in runs]
        s["cum_time"] = [np.cumsum(_steady_times(r["epochs"])).tolist() for r in runs]
        s["front"] = {str(b["budget"]): [] for b in runs[0]["front"]}
        for r in runs:
            for row in r["front"]:
                s["front"].setdefault(str(row["budget"]), []).append(row["test_acc"])
        s["front_mean"] = [float(np.mean([b["test_acc"] for b in r["front"]])) for r in runs]
        s["front_auc"] = [front_auc(r["front"]) for r in runs]
        s["epochs_to_target"] = [next((e["epoch"] for e in r["epochs"] if e["metric"] >= target), None)
                                 for r in runs]
        if uniform_time is not None:
            s["metric_at_uniform_time"] = [
                float(np.interp(uniform_time, [0.0] + c, [1.0 / num_classes] + m))
                for c, m in zip(s["cum_time"], s["metric"])]
        s["gap_fixed"] = {str(l): [r["fixed_test"][str(l)] - lookup[(r["seed"], tuple(float(v) for v in configs[l][0]))]
                                   for r in runs if (r["seed"], tuple(float(v) for v in configs[l][0])) in lookup]
                          for l in alone_levels}
        s["gap_menu"] = {}
        for budget in menu_budgets:
            diffs = []
            for r in runs:
                row = next((b for b in r["front"] if b["budget"] == budget), None)
                if row and row["vector"] is not None and (r["seed"], tuple(row["vector"])) in lookup:
                    diffs.append(row["test_acc"] - lookup[(r["seed"], tuple(row["vector"]))])
            s["gap_menu"][str(budget)] = diffs
        out["runs"][n] = s
    out["comparisons"] = {n: paired_diff(out["runs"], n, "uniform") for n in names
                          if n != "uniform" and "uniform" in out["runs"]}
    out["matched"] = {n: dict(paired_diff(out["runs"], n, ref), ref=ref)
                      for n, ref in (matched or {}).items() if n in out["runs"] and ref in out["runs"]}
    return out


def goal_lines(summary):
    """The issue's goal figures as plain sentences: gap to the networks trained alone (mean over
    the levels, worst level) and TIPS vs uniform inside the same recipe."""
    lines = []
    for n, s in summary["runs"].items():
        for kind in ("fixed", "menu"):
            gaps = {k: np.mean(v) * 100 for k, v in s[f"gap_{kind}"].items() if v}
            if gaps:
                worst = min(gaps, key=gaps.get)
                lines.append(f"{n}: {kind} configurations vs trained alone: mean gap "
                             f"{np.mean(list(gaps.values())):+.2f} pp, worst level {float(worst):.0%} "
                             f"{gaps[worst]:+.2f} pp (goal: mean >= -1, none below -2)")
    for n in summary["comparisons"]:
        lines.append(verdict(summary, n))
    for n, c in summary["matched"].items():
        lines.append(verdict(summary, n, c["ref"], key="matched"))
    return "\n".join(lines)


def front_auc(front):
    """Trapezoid of test accuracy over the budget fractions, divided by the budgets' span (an
    average accuracy over the FLOPs range; budgets without a fitting configuration count 0)."""
    x = np.array([b["budget"] for b in front], float)
    y = np.array([b["test_acc"] for b in front], float)
    if len(x) < 2:
        return float(y.mean()) if len(y) else float("nan")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0]))


def paired_diff(runs, name, ref):
    """Per-seed differences (name - ref) of the mean accuracy over the fixed configurations and
    of the front mean accuracy, over the seeds both have."""
    a, b = runs[name], runs[ref]
    common = [s for s in a["seeds"] if s in b["seeds"]]
    out = {"seeds": common}
    for key in ("fixed_mean_per_seed", "front_mean"):
        d = [a[key][a["seeds"].index(s)] - b[key][b["seeds"].index(s)] for s in common]
        out[key] = {"diffs": d, "mean": float(np.mean(d)) if d else None,
                    "std": float(np.std(d)) if d else None}
    return out


def verdict(summary, name="tips", ref="uniform", key="comparisons"):
    """The plain sentence on whether ``name`` beats ``ref`` (printed and written, never hidden);
    ``key`` is "comparisons" (``ref`` uniform) or "matched" (the matched baseline)."""
    c = summary.get(key, {}).get(name)
    if c is None or c["fixed_mean_per_seed"]["mean"] is None:
        return f"{name} vs {ref}: not compared (one of them was not run)."
    m, s = c["fixed_mean_per_seed"]["mean"] * 100, c["fixed_mean_per_seed"]["std"] * 100
    fm, fs = c["front_mean"]["mean"] * 100, c["front_mean"]["std"] * 100
    word = "BEATS" if m > 0 else "does NOT beat"
    if len(c["seeds"]) < 2:
        noise = " (one seed: no spread estimate)"
    else:
        noise = " (within seed noise: |mean| <= std)" if abs(m) <= s else ""
    return (f"{name} {word} {ref}: difference of mean test accuracy over the fixed configurations "
            f"{m:+.2f} ± {s:.2f} pp{noise}; searched front mean {fm:+.2f} ± {fs:.2f} pp "
            f"(paired by seed, {len(c['seeds'])} seeds).")


def write_markdown(path, summary, meta, configs):
    runs, levels = summary["runs"], meta["levels"]
    L = [f"# Sampler comparison: {meta['setting']}", ""]
    if meta["quick"]:
        L += ["**QUICK / SMOKE RUN: tiny sizes, numbers are not results.**", ""]
    L += ["Regenerate:", "", "```", meta["command"], "```", ""]
    L += ["## Setup (identical for every sampler)", ""]
    L += [f"- {k}: {v}" for k, v in meta["setup"].items()] + [""]
    L += ["Fixed evaluation set (closest FLOPs fraction per level; ties: more gates on, deeper exit):", "",
          "| level | exit | gates | FLOPs | % of full |", "|---|---|---|---|---|"]
    for l in levels:
        v, f, frac = configs[l]
        L.append(f"| {l:.0%} | {int(v[-1])} | {''.join(str(int(b)) for b in v[:-1])} | {f:,} | {100 * frac:.1f} |")
    L += ["", "## Test accuracy (%) of the fixed configurations, mean ± std over seeds", ""]
    L += [TABLE_HEADER + "".join(f" {l:.0%} |" for l in levels) + " mean |",
          "|---|---|" + "---|" * (len(levels) + 1)]
    for n, s in runs.items():
        cells = [ms(s["fixed"][str(l)], 100) for l in levels]
        L.append(f"| {n} | {s['paths_per_step']} | " + " | ".join(cells) + f" | {ms(s['fixed_mean_per_seed'], 100)} |")
    alone = summary["alone"]
    L.append("| trained alone | 1 | " + " | ".join(ms(list(alone[str(l)].values()), 100) if str(l) in alone else "—"
                                                 for l in levels) + " | — |")
    L += ["", "## Supernet vs the same networks trained alone (pp, supernet − alone, paired by seed)", "",
          "Goal: mean over the levels >= -1 pp, no level below -2 pp.", ""]
    for kind, title in (("fixed", "fixed configurations"), ("menu", "searched menu (best validation "
                                                                   "configuration per budget)")):
        keys = list(next(iter(runs.values()))[f"gap_{kind}"]) if runs else []
        L += [f"{title}:", "", "| supernet |" + "".join(f" {float(k):.0%} |" for k in keys) + " mean |",
              "|---|" + "---|" * (len(keys) + 1)]
        for n, s in runs.items():
            gaps = s[f"gap_{kind}"]
            means = [np.mean(v) for v in gaps.values() if v]
            L.append(f"| {n} | " + " | ".join(ms(gaps[k], 100) for k in keys)
                     + f" | {np.mean(means) * 100:+.2f} |" if means else f"| {n} |" + " — |" * (len(keys) + 1))
        L.append("")
    L += ["## Summary", "", SUMMARY_HEADER, "|---|---|---|---|---|---|---|---|"]
    for n, s in runs.items():
        reached = [e for e in s["epochs_to_target"] if e is not None]
        ett = (f"{np.mean(reached):.1f} ({len(reached)}/{len(s['seeds'])} reached)" if reached
               else f"not reached (0/{len(s['seeds'])})")
        L.append(f"| {n} | {ms(s['fixed_mean_per_seed'], 100)} | {ms(s['front_mean'], 100)} | "
                 f"{ms(s['front_auc'], 100)} | {ett} | {ms(s['epoch_time'], 1, 1)} "
                 f"(cpu {ms(s['epoch_cpu'], 1, 1)}) | "
                 f"{ms(s['total_time'], 1, 0)} | {ms(s.get('metric_at_uniform_time', []), 100)} |")
    L += ["", f"Convergence target (validation metric): {summary['target']:.2f}; uniform's steady "
          f"training wall time: {summary['uniform_wall_time'] or float('nan'):.1f} s.", ""]
    L += ["## TIPS vs uniform", ""] + [f"- {verdict(summary, n)}" for n in summary["comparisons"]] + [""]
    if summary.get("matched"):
        L += ["## Against the baseline with the same paths per step and distillation", ""]
        L += [f"- {verdict(summary, n, c['ref'], key='matched')}" for n, c in summary["matched"].items()]
        L += [""]
    budgets = list(next((s["front"] for s in runs.values()), {}))
    L += [f"## Searched front: test accuracy (%) of the best validation configuration per budget "
          f"({meta['front_method']})", "",
          FRONT_HEADER + "".join(f" ≤{float(b):.0%} |" for b in budgets) + " mean | AUC |",
          "|---|" + "---|" * (len(budgets) + 2)]
    for n, s in runs.items():
        L.append(f"| {n} | " + " | ".join(ms(s["front"][b], 100) for b in budgets)
                 + f" | {ms(s['front_mean'], 100)} | {ms(s['front_auc'], 100)} |")
    L += ["", "## What TIPS samples (final epoch, mean over seeds; per epoch in results.json)", ""]
    for n, imp in meta["importance"].items():
        L += [f"- {n}: importance " + ", ".join(f"{g} {v:.2f}" for g, v in imp["importance"].items()),
              f"  P(on) " + ", ".join(f"{g} {v:.2f}" for g, v in imp["gate_probs"].items())]
        if "gate_min_exit" in meta:
            probs = list(imp["gate_probs"].values())
            L.append("  draws of each fixed configuration vs uniform (same exit): " + ", ".join(
                f"{l:.0%} {draw_rate_vs_uniform(probs, configs[l][0], meta['gate_min_exit']):.2f}x"
                for l in levels))
    L += ["", "## Method notes", ""] + [f"- {x}" for x in meta["notes"]] + [""]
    atomic_write(path, keep_analysis(path, "\n".join(L)))


def draw_rate_vs_uniform(gate_probs, vector, gate_min_exit):
    """How much more often a gate pattern is drawn with ``gate_probs`` than with P(on) = 0.5.

    Only the gates before the vector's exit count (the others do not change the sub-network).
    """
    exit_index = int(vector[-1])
    rate = 1.0
    for p, bit, first_exit in zip(gate_probs, vector[:-1], gate_min_exit):
        if first_exit <= exit_index:
            rate *= (p if bit > 0.5 else 1.0 - p) / 0.5
    return rate


def keep_analysis(path, text):
    """``text`` plus the hand-written analysis (after `ANALYSIS_MARKER`) of the file at ``path``,
    flagged as written for an earlier run."""
    if not os.path.exists(path):
        return text
    with open(path) as f:
        old = f.read()
    if ANALYSIS_MARKER not in old:
        return text
    tail = old[old.index(ANALYSIS_MARKER) + len(ANALYSIS_MARKER):].replace(STALE_LINE, "")
    print(f"[compare] kept the hand-written analysis in {path}: check it against the new tables")
    return text + "\n" + ANALYSIS_MARKER + STALE_LINE + tail


# Everything after this line in RESULTS.md is written by hand and kept when the file is regenerated.
ANALYSIS_MARKER = "<!-- hand-written analysis: kept when this file is regenerated -->"
STALE_LINE = ("\n\n**The analysis below was written for an earlier run; check it against the tables "
              "above.**\n")


def mean_history(records):
    """`TIPSCallback.history` averaged over seeds (for `plots.plot_importance`)."""
    hs = [r["tips_history"] for r in records]
    out = []
    for e in range(min(len(h) for h in hs)):
        row = {"epoch": hs[0][e]["epoch"]}
        for key in ("importance", "gate_probs"):
            row[key] = {g: float(np.mean([h[e][key][g] for h in hs])) for g in hs[0][e][key]}
        out.append(row)
    return out


def plot_all(out_dir, summary, records, configs, levels):
    runs = summary["runs"]
    colors = dict(zip(runs, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4))
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    x = [configs[l][2] for l in levels]
    for i, (level, accs) in enumerate(summary["alone"].items()):
        v = np.array(list(accs.values()), float) * 100
        if v.size:
            for ax in (a0, a1):
                ax.errorbar([configs[float(level)][2]], [v.mean()], yerr=[v.std()], fmt="ks", ms=6,
                            capsize=3, label="trained alone (fixed set)" if i == 0 else None)
    for n, s in runs.items():
        y = np.array([s["fixed"][str(l)] for l in levels], float) * 100
        a0.errorbar(x, y.mean(1), yerr=y.std(1), marker="o", capsize=3, color=colors[n], label=n)
        fr = [r for r in records if r["name"] == n]
        fx = np.array([[b["flops_frac"] for b in r["front"]] for r in fr]).mean(0)
        fy = np.array([[b["test_acc"] for b in r["front"]] for r in fr]) * 100
        a1.errorbar(fx, fy.mean(0), yerr=fy.std(0), marker="o", capsize=3, color=colors[n], label=n)
    a0.set_title("fixed configurations (test, BN recalibrated)")
    a1.set_title("searched front: best validation config per budget (test)")
    for ax in (a0, a1):
        ax.set_xlabel("FLOPs / full FLOPs")
        ax.grid(alpha=0.3)
    a0.set_ylabel("test accuracy (%), mean ± std over seeds")
    a1.legend(fontsize=7, loc="lower right")
    save_fig(fig, os.path.join(out_dir, "pareto.png"))

    fig, (b0, b1) = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    for n, s in runs.items():
        m = np.array(s["metric"]) * 100
        ep = np.arange(1, m.shape[1] + 1)
        t = np.array(s["cum_time"]).mean(0)
        ls = "-"
        for ax, xs in ((b0, ep), (b1, t)):
            ax.plot(xs, m.mean(0), marker="o", ms=3, ls=ls, color=colors[n], label=n)
            ax.fill_between(xs, m.mean(0) - m.std(0), m.mean(0) + m.std(0), color=colors[n], alpha=0.15)
    if summary["uniform_wall_time"]:
        b1.axvline(summary["uniform_wall_time"], color="0.4", ls="--", lw=1, label="uniform's wall time")
    b0.set_xlabel("epoch")
    b1.set_xlabel("training wall time (s, tracing excluded)")
    b0.set_ylabel("val. accuracy (%), mean of 3 fixed configs")
    for ax in (b0, b1):
        ax.axhline(summary["target"] * 100, color="0.6", ls=":", lw=1)
        ax.grid(alpha=0.3)
    b1.legend(fontsize=7, loc="lower right")
    save_fig(fig, os.path.join(out_dir, "convergence.png"))

    tips_runs = [r for r in records if r["name"] == "tips"]
    if tips_runs:
        plots.plot_importance(mean_history(tips_runs), os.path.join(out_dir, "importance.png"),
                              title=f"TIPS importance per gate (mean over {len(tips_runs)} seeds)")


def write_json(path, payload):
    atomic_write(path, json.dumps(payload, indent=1, default=_json_default))


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o).__name__)
