"""pytest plugin of `suite_time.py`: one JSON line per test with its CPU and wall time.

Loaded with ``-p _suite_time_plugin`` (``benchmarks/`` on ``PYTHONPATH``) in every pytest
process, xdist workers included; writes to ``$TIPS_SUITE_TIME_DIR/<pid>.jsonl``. Per test (setup,
call and teardown together): ``cpu``, the test process' own CPU time (``time.process_time``,
seconds); ``child``, the CPU time of the child processes it waited for meanwhile
(``resource.getrusage(RUSAGE_CHILDREN)``: user + system, seconds); ``wall`` (seconds); ``end``
(``time.time()`` at the end).
"""

import json
import os
import resource
import time

import pytest

_OUT = None


def children_cpu():
    """CPU time (user + system, s) of this process' children it has waited for, and theirs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Times one test's protocol (setup, call, teardown) and appends its line."""
    global _OUT
    cpu, child, wall = time.process_time(), children_cpu(), time.perf_counter()
    yield
    record = dict(id=item.nodeid, cpu=time.process_time() - cpu, child=children_cpu() - child,
                  wall=time.perf_counter() - wall, end=time.time())
    if _OUT is None:
        _OUT = open(os.path.join(os.environ["TIPS_SUITE_TIME_DIR"], f"{os.getpid()}.jsonl"), "a")
    _OUT.write(json.dumps(record) + "\n")
    _OUT.flush()
