"""Adam and heavy-ball momentum, fp32, 1e3 to 1e8 elements: fastopt beside its ceiling and its rivals.

Per size, in one run, grouped so that pytest-benchmark prints them side by side:

- ``probe``: the read-modify-write probe with the update's exact byte traffic
  (``_probe.py``; Adam 28 B/element, momentum 20 B/element), serial or threaded as
  fastopt is at that size: the ceiling;
- ``numpy-reference``: ``kernels/reference.py`` through ``backend="reference"``, float64
  inside. Skipped above 1e7 elements (float64 temporaries: seconds per step, GBs);
- ``fastopt``: the public functional step (``fastopt.adam_step`` / ``fastopt.momentum_step``),
  validation included;
- ``torch-fused`` / ``torch-foreach`` / ``torch-for-loop``: ``torch.optim.Adam`` and
  ``torch.optim.SGD(momentum=0.9)`` with ``fused=True`` / ``foreach=True`` / ``foreach=False``
  on one tensor of the same size; ``torch-fused-1thread`` is fused with one thread (see
  ``_rivals.py``: under OMP_WAIT_POLICY=PASSIVE PyTorch's 2-thread fused step pays a thread
  wake-up per call). Targets "vs torch fused" are judged against ``torch-fused``, PyTorch's
  default configuration (its default thread count, 2 here), as the issue states; the
  ratio against the faster of the two fused rows (``torch-fused-best``) is reported beside
  it as supplementary information, never as the verdict.
  PyTorch's SGD momentum is ``buf <- 0.9 buf + g;
  p <- p - lr buf``, fastopt's heavy ball ``m <- 0.9 m - lr g; p <- p + m``: the same
  traffic (read p, g, m; write p, m), the forms differ only by where lr is applied.

Every implementation gets its own copies of the same initial data. Large sizes get few
rounds (``_budget``) so the suite stays within minutes.
"""
from __future__ import annotations

import functools
import itertools
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _probe  # noqa: E402
from _report import best_of, fmt_n, ratio, summary_section  # noqa: E402
from _rivals import FUSED_BEST, FUSED_DEFAULT, FUSED_ROWS, TORCH_IMPLS, threads_for, torch_step, torch_threads  # noqa: E402

import fastopt  # noqa: E402

F32 = np.float32
SIZES = [10**3, 10**4, 10**5, 10**6, 10**7, 3 * 10**7, 10**8]
IMPLS = ["probe", "numpy-reference", "fastopt"] + TORCH_IMPLS
ALGOS = ["adam", "momentum"]
REFERENCE_MAX = 10**7
LR = 1e-3


def group(algo, n):
    return f"{algo} fp32 n={fmt_n(n)}"


# -- what to report ------------------------------------------------------------------------
for _algo in ALGOS:
    for _n in SIZES:
        _g = group(_algo, _n)
        big = _n >= 3 * 10**7
        ratio(f"{_algo} n={fmt_n(_n)}: fastopt / probe (fraction of ceiling)", (_g, "fastopt"), (_g, "probe"),
              at_least=0.92 if big else None, note="time(probe) / time(fastopt)", listed=False)
        fused_target = 1.15 if big else None
        if _algo == "adam" and _n == 10**5:
            fused_target = 3.0
        elif _algo == "adam" and _n == 10**6:
            fused_target = 1.6
        best_of(_g, FUSED_BEST, FUSED_ROWS)
        ratio(f"{_algo} n={fmt_n(_n)}: fastopt vs torch fused (default config, 2 threads)", (_g, "fastopt"),
              (_g, FUSED_DEFAULT), at_least=fused_target, note="speed-up; the verdict row", listed=False)
        ratio(f"{_algo} n={fmt_n(_n)}: fastopt vs torch fused, best of 2 threads / 1 thread (supplementary)",
              (_g, "fastopt"), (_g, FUSED_BEST), listed=False, info_at_least=fused_target,
              note="speed-up over PyTorch at its best under PASSIVE"
                   + (f"; the target (>= {fused_target:g}) is judged on the default-config row" if fused_target else ""))
        ratio(f"{_algo} n={fmt_n(_n)}: fastopt vs torch foreach", (_g, "fastopt"), (_g, "torch-foreach"),
              note="speed-up", listed=False)
        ratio(f"{_algo} n={fmt_n(_n)}: fastopt vs torch for-loop", (_g, "fastopt"), (_g, "torch-for-loop"),
              note="speed-up", listed=False)
        if _n <= REFERENCE_MAX:
            ratio(f"{_algo} n={fmt_n(_n)}: fastopt vs NumPy reference", (_g, "fastopt"), (_g, "numpy-reference"),
                  note="speed-up (reference is float64 inside)", listed=False)
        ratio(f"{_algo} n={fmt_n(_n)}: torch fused (default) / probe", (_g, FUSED_DEFAULT), (_g, "probe"),
              note="PyTorch's fraction of the ceiling", listed=False)
        ratio(f"{_algo} n={fmt_n(_n)}: torch fused (best) / probe", (_g, FUSED_BEST), (_g, "probe"),
              note="PyTorch's fraction of the ceiling", listed=False)


@summary_section
def _tables(results):
    """One table per update: rows are sizes, columns the ratios (best of rounds)."""
    def r(g, subject, baseline):
        s, b = results.get((g, subject)), results.get((g, baseline))
        return f"{b['min'] / s['min']:.2f}" if s and b else "-"

    lines = []
    for algo in ALGOS:
        if not any((group(algo, n), "fastopt") in results for n in SIZES):
            continue
        lines += [f"### {algo} fp32: ratios within this run (time(other) / time(row subject); best of rounds)", "",
                  "| n | fastopt / probe | torch fused (default, 2 thr) / probe | **fastopt vs fused (default)** "
                  "| ceiling: probe vs fused (default) | fastopt vs fused (best of 2 thr / 1 thr; suppl.) "
                  "| ceiling: probe vs fused (best) | vs fused 1 thr | vs foreach | vs for-loop "
                  "| vs NumPy ref | fastopt GB/s-equiv. vs probe | others' cores (max) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for n in SIZES:
            g = group(algo, n)
            if (g, "fastopt") not in results:
                continue
            lines.append(f"| {fmt_n(n)} | {r(g, 'fastopt', 'probe')} | {r(g, FUSED_DEFAULT, 'probe')} | "
                         f"{r(g, 'fastopt', FUSED_DEFAULT)} | {r(g, 'probe', FUSED_DEFAULT)} | "
                         f"{r(g, 'fastopt', FUSED_BEST)} | {r(g, 'probe', FUSED_BEST)} | "
                         f"{r(g, 'fastopt', 'torch-fused-1thread')} | {r(g, 'fastopt', 'torch-foreach')} | "
                         f"{r(g, 'fastopt', 'torch-for-loop')} | {r(g, 'fastopt', 'numpy-reference')} | "
                         f"{_gbs(results, g, n, algo)} | {_load(results, g)} |")
        lines.append("")
    return lines


def _load(results, g):
    xs = [st.get("others_cores") for (gg, _), st in results.items() if gg == g and st.get("others_cores") is not None]
    return f"{max(xs):.2f}" if xs else "-"


def _gbs(results, g, n, algo):
    """Effective bandwidth of fastopt and of the probe (bytes of the update / time), for scale only."""
    reads, writes = _probe.BYTES_PER_ELEMENT[algo]
    nbytes = (reads + writes) * 4 * n
    f, p = results.get((g, "fastopt")), results.get((g, "probe"))
    if not f or not p:
        return "-"
    return f"{nbytes / f['min'] / 1e9:.0f} vs {nbytes / p['min'] / 1e9:.0f}"


# -- data -------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _base(n):
    """Initial p and g of size n (one cached pair: the sizes run in order)."""
    rng = np.random.default_rng(n)
    p = rng.standard_normal(n, dtype=F32)
    g = rng.standard_normal(n, dtype=F32) * F32(1e-2)
    p.flags.writeable = g.flags.writeable = False
    return p, g


def _arrays(n, n_state):
    p0, g0 = _base(n)
    return [p0.copy(), g0.copy()] + [np.zeros(n, F32) for _ in range(n_state)]


def _budget(n):
    """Seconds of timing per row: generous for small sizes, a few rounds for big ones."""
    return 1.5 if n <= 10**6 else 2.5


# -- the step functions ---------------------------------------------------------------------
def _make_step(impl, algo, n, torch_mod):
    n_state = 2 if algo == "adam" else 1
    if impl == "probe":
        probe, k = _probe.PROBES[algo]
        arrs = _arrays(n, n_state)[:k]
        return lambda: probe(*arrs)
    if impl in ("fastopt", "numpy-reference"):
        backend = "reference" if impl == "numpy-reference" else None
        arrs = _arrays(n, n_state)
        if algo == "adam":
            p, g, m, v = arrs
            counter = itertools.count(1)
            return lambda: fastopt.adam_step(p, g, m, v, step=next(counter), lr=LR, backend=backend)
        p, g, m = arrs
        return lambda: fastopt.momentum_step(p, g, m, lr=LR, beta=0.9, backend=backend)
    p0, g0 = _base(n)
    return torch_step(torch_mod, impl, algo, [p0.copy()], [g0.copy()], LR)


CASES = [(a, n, i) for a in ALGOS for n in SIZES for i in IMPLS]


@pytest.mark.parametrize("algo,n,impl", CASES, ids=[f"{a}-{fmt_n(n)}-{i}" for a, n, i in CASES])
def test_step(benchmark, timed, request, algo, n, impl):
    if impl == "numpy-reference" and n > REFERENCE_MAX:
        pytest.skip(f"NumPy reference skipped above {fmt_n(REFERENCE_MAX)}: float64 temporaries, seconds per step")
    torch_mod = request.getfixturevalue("torch") if impl.startswith("torch") else None
    step = _make_step(impl, algo, n, torch_mod)
    reads, writes = _probe.BYTES_PER_ELEMENT[algo]
    with torch_threads(torch_mod, threads_for(impl)):
        timed(benchmark, step, group=group(algo, n), label=impl, budget_s=_budget(n),
              min_rounds=3 if n >= 10**7 else 5, n=n, algo=algo, bytes_per_step=(reads + writes) * 4 * n)
