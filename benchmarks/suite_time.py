"""Where the test suite's time goes: wall and CPU time of a pytest run, per test file.

Run:  .venv/bin/python benchmarks/suite_time.py [pytest arguments, e.g. -m "not slow"]

Runs ``python -m pytest -q`` (the README's test command, xdist workers and all) with
`_suite_time_plugin`, then prints:

* the run: wall time, and the CPU time (user + system) of pytest and every process it waited
  for (its xdist workers and their child processes), in seconds and in cores kept busy;
* per worker: files, tests, when its first test began and its last ended (seconds from the first);
* per test file, by CPU time: the tests' CPU in the worker, in the child processes they started
  (notebook kernels, multi-worker training, the QAT child, ...), and their wall time.

Wall time on a shared machine moves with the machine: the same suite took 6:51 and 9:38 in one
day here, for the same tests. The CPU column is steadier, but it moves too (on a busy host the
same tests needed about 20 % more CPU time here, a third more for some files); compare commits in
one session, interleaved.
"""

import collections
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _suite_time_plugin import children_cpu  # noqa: E402


def read_records(directory):
    """The plugin's lines, by process: ``{pid: [record, ...]}`` (records in the order written)."""
    out = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".jsonl"):
            with open(os.path.join(directory, name)) as handle:
                out[name[:-6]] = [json.loads(line) for line in handle if line.strip()]
    return out


def file_table(records):
    """Rows ``(file, tests, worker CPU s, child CPU s, wall s)``, by total CPU, most first."""
    rows = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    for per_process in records.values():
        for r in per_process:
            row = rows[r["id"].split("::")[0]]
            row[0] += 1
            row[1] += r["cpu"]
            row[2] += r["child"]
            row[3] += r["wall"]
    return sorted(((name, *values) for name, values in rows.items()), key=lambda r: -(r[2] + r[3]))


def worker_table(records):
    """Rows ``(files, tests, first start s, last end s)`` per process, times from the first test."""
    spans = {pid: (min(r["end"] - r["wall"] for r in rs), max(r["end"] for r in rs))
             for pid, rs in records.items() if rs}
    origin = min((s for s, _ in spans.values()), default=0.0)
    return [(len({r["id"].split("::")[0] for r in records[pid]}), len(records[pid]),
             start - origin, end - origin) for pid, (start, end) in sorted(spans.items())]


def format_report(wall, cpu, records, top=25):
    """The printed report (see the module docstring)."""
    lines = [f"suite: {wall:.0f} s wall, {cpu:.0f} s CPU (user + system, all processes), "
             f"{cpu / wall:.2f} cores busy" if wall else "suite: no time measured", "",
             "| worker | files | tests | first test began (s) | last test ended (s) |",
             "|---|---|---|---|---|"]
    lines += [f"| {i} | {f} | {n} | {s:.0f} | {e:.0f} |" for i, (f, n, s, e) in enumerate(worker_table(records))]
    rows = file_table(records)
    lines += ["", "| test file | tests | CPU in the worker (s) | CPU in child processes (s) | wall (s) |",
              "|---|---|---|---|---|"]
    lines += [f"| {name} | {n} | {c:.1f} | {ch:.1f} | {w:.1f} |" for name, n, c, ch, w in rows[:top]]
    for label, part in ((f"{len(rows) - top} other files", rows[top:]), ("all", rows)):
        if part or label == "all":
            n, c, ch, w = (sum(r[i] for r in part) for i in (1, 2, 3, 4))
            lines.append(f"| {label} | {n} | {c:.1f} | {ch:.1f} | {w:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    """Runs the suite with the plugin and prints the report; returns pytest's exit status."""
    args = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory(prefix="suite_time_") as directory:
        env = dict(os.environ, TIPS_SUITE_TIME_DIR=directory,
                   PYTHONPATH=os.pathsep.join(filter(None, [os.path.join(ROOT, "benchmarks"),
                                                            os.environ.get("PYTHONPATH")])))
        cpu, start = children_cpu(), time.perf_counter()
        status = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "_suite_time_plugin", *args],
                                cwd=ROOT, env=env).returncode
        wall, cpu = time.perf_counter() - start, children_cpu() - cpu
        print()
        print(format_report(wall, cpu, read_records(directory)))
    return status


if __name__ == "__main__":
    sys.exit(main())
