"""Where threads start to pay: ``.serial`` against ``.threaded`` for n = 2^12 .. 2^22, fp32.

``kernels/cpu/optim.py`` runs the serial kernel below ``PARALLEL_MIN_SIZE`` and the
``prange`` twin above it. This times both twins of ``adam`` (the target of the
measurement) and of ``heavy_ball`` (the lightest update, whose crossover is the latest)
at each power of two, called with the exact arguments the functional step builds, and
reports the smallest size from which the threaded twin is faster at every larger size
measured. The library's threshold is not changed here.
"""
from __future__ import annotations

import itertools
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _capture import captured_launch  # noqa: E402
from _report import fmt_n, ratio, summary_section  # noqa: E402

import fastopt  # noqa: E402
from fastopt.kernels.cpu import optim as K  # noqa: E402

F32 = np.float32
SIZES = [2**k for k in range(12, 23)]
KERNELS = ["adam", "heavy_ball"]


def group(kernel, n):
    return f"crossover {kernel} n={fmt_n(n)}"


for _k in KERNELS:
    for _n in SIZES:
        ratio(f"{_k} n={fmt_n(_n)}: threaded vs serial", (group(_k, _n), "threaded"), (group(_k, _n), "serial"),
              listed=False)


def _launch(kernel, n):
    rng = np.random.default_rng(n)
    p = rng.standard_normal(n, dtype=F32)
    g = rng.standard_normal(n, dtype=F32) * F32(1e-2)
    m, v = np.zeros(n, F32), np.zeros(n, F32)
    if kernel == "adam":
        counter = itertools.count(1)
        return captured_launch(lambda: fastopt.adam_step(p, g, m, v, step=next(counter), lr=1e-3))
    return captured_launch(lambda: fastopt.momentum_step(p, g, m, lr=1e-3, beta=0.9))


CASES = [(k, n, t) for k in KERNELS for n in SIZES for t in ("serial", "threaded")]


@pytest.mark.parametrize("kernel,n,twin", CASES, ids=[f"{k}-{n}-{t}" for k, n, t in CASES])
def test_crossover(benchmark, timed, kernel, n, twin):
    dispatcher, args = _launch(kernel, n)
    fn = getattr(dispatcher, twin)
    timed(benchmark, lambda: fn(*args), group=group(kernel, n), label=twin, budget_s=0.6, warmup=5, n=n)


def crossover(results, kernel):
    """Smallest measured n from which threaded beats serial at every larger measured n (None if never)."""
    rows = []
    for n in SIZES:
        s, t = results.get((group(kernel, n), "serial")), results.get((group(kernel, n), "threaded"))
        if s and t:
            load = max((x for x in (s.get("others_cores"), t.get("others_cores")) if x is not None), default=None)
            rows.append((n, s["min"] / t["min"], s["median"] / t["median"], load))
    best = None
    for i in range(len(rows)):
        if all(r[1] > 1.0 for r in rows[i:]):
            best = rows[i][0]
            break
    return rows, best


@summary_section
def _crossover_table(results):
    lines = []
    for kernel in KERNELS:
        rows, best = crossover(results, kernel)
        if not rows:
            continue
        lines += [f"### serial/threaded crossover, {kernel} fp32 (speed-up of .threaded over .serial)", "",
                  "| n | threaded vs serial (best) | (median) | others' cores |", "|---|---|---|---|"]
        lines += [f"| {fmt_n(n)} ({n}) | {b:.2f} | {m:.2f} | {'-' if ld is None else f'{ld:.2f}'} |"
                  for n, b, m, ld in rows]
        where = f"{fmt_n(best)} ({best})" if best else f"not within {fmt_n(SIZES[0])}..{fmt_n(SIZES[-1])}"
        lines += ["", f"threaded wins from n = {where}; PARALLEL_MIN_SIZE is {fmt_n(K.PARALLEL_MIN_SIZE)} "
                      f"({K.PARALLEL_MIN_SIZE})", ""]
    return lines
