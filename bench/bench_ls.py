"""The LS system (issue 4): Gram assembly from a given Phi, and the robust solve.

Run:  OMP_WAIT_POLICY=PASSIVE python -m pytest bench/bench_ls.py --benchmark-only -q -p no:cacheprovider

Gram ``A = Phi^T W Phi``, ``b = Phi^T W y`` for J in {1e4, 1e5, 1e6} points (1e6 only for N <= 128:
Phi alone is 1 GB at N = 128) and N in {32, 128, 256} basis functions, float64 and float32 rows.
Per group, in one run, rows:

- ``fastopt``: ``fastopt.ls.gram(Phi, w, y)`` with one weight per row (the general case: each tile
  is scaled by sqrt(w), upcast to float64 for float32 rows, then ``dsyrk`` + ``dgemv``), validation
  (finite checks included) and all;
- ``fastopt-1w``: ``fastopt.ls.gram(Phi, None, y)`` (weights 1/J: for float64 rows ``dsyrk`` reads Phi
  in place, nothing is copied);
- ``numpy``: ``Phi.T @ (w[:, None] * Phi)`` and ``Phi.T @ (w * y)`` in the rows' dtype (NumPy's GEMM:
  twice the flops of syrk, and a J x N temporary; for float32 rows float32-accurate only);
- ``numpy-f64`` (float32 rows): the same after ``Phi.astype(float64)``: NumPy at fastopt's accuracy;
- ``dsyrk``: SciPy's ``dsyrk`` on the whole float64 Phi (unweighted, no b; for float32 rows on a
  float64 copy made outside the timing): the ceiling of float64 accumulation, what a tiled
  weighted assembly can at best approach;
- ``ssyrk`` (float32 rows): ``ssyrk`` on the whole float32 Phi: the float32 BLAS ceiling, and
  ``fastopt-f32acc``: ``fastopt.ls.gram(..., dtype=float32)`` (tiles in float32, ``ssyrk``).

Ratios are ``time(baseline) / time(fastopt)``: against ``numpy`` a speed-up, against ``dsyrk`` the
fraction of the ceiling reached. Before timing, each group checks ``fastopt``'s A against NumPy's.

Solve (``fastopt.ls.solve``, SPD with condition ~1e3, N = 32 ... 512): ``fastopt`` (validation,
symmetric part, Cholesky, LAPACK condition estimate, triangular solves), ``fastopt-eigh``
(``method="eigh"``, the fallback's cost), ``numpy`` (``numpy.linalg.solve``: LU, no checks), and
``cho_solve`` (SciPy ``cho_factor`` + ``cho_solve``, ``check_finite=False``: the bare LAPACK ceiling).
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest
from scipy.linalg import blas, cho_factor, cho_solve

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import fmt_n, ratio, summary_section  # noqa: E402

from fastopt import ls  # noqa: E402

DTYPES = {"float64": np.float64, "float32": np.float32}
GRAM_SIZES = [(J, N) for J in (10**4, 10**5, 10**6) for N in (32, 128, 256) if J < 10**6 or N <= 128]
GRAM_IMPLS = {"float64": ["fastopt", "fastopt-1w", "numpy", "dsyrk"],
              "float32": ["fastopt", "fastopt-1w", "numpy", "numpy-f64", "dsyrk", "ssyrk", "fastopt-f32acc"]}
SOLVE_N = [32, 64, 128, 256, 512]
SOLVE_IMPLS = ["fastopt", "fastopt-eigh", "numpy", "cho_solve"]


def gram_group(J, N, dtype):
    return f"gram J={fmt_n(J)} N={N} {dtype}"


def solve_group(N):
    return f"solve N={N} float64"


for _d in DTYPES:
    for _J, _N in GRAM_SIZES:
        _g = gram_group(_J, _N, _d)
        ratio(f"gram {_d} J={fmt_n(_J)} N={_N}: fastopt vs numpy", (_g, "fastopt"), (_g, "numpy"),
              note="speed-up, weighted, with b", listed=False)
        ratio(f"gram {_d} J={fmt_n(_J)} N={_N}: dsyrk / fastopt", (_g, "fastopt"), (_g, "dsyrk"),
              note="fraction of the float64 syrk ceiling", listed=False)
        if _d == "float32":
            ratio(f"gram float32 J={fmt_n(_J)} N={_N}: fastopt vs numpy-f64", (_g, "fastopt"), (_g, "numpy-f64"),
                  note="speed-up at the same (float64) accuracy", listed=False)
for _N in SOLVE_N:
    _g = solve_group(_N)
    ratio(f"solve N={_N}: fastopt vs numpy.linalg.solve", (_g, "fastopt"), (_g, "numpy"), listed=False)


def _table_row(results, g, impls, fmt):
    """Cells ``ms (time(row) / time(fastopt))`` of one group, or None before its fastopt row ran."""
    base = results.get((g, "fastopt"))
    if base is None:
        return None
    cells = []
    for impl in impls:
        st = results.get((g, impl))
        cells.append("-" if st is None else f"{st['min'] * 1e3:{fmt}} ({st['min'] / base['min']:.2f}x)")
    return " | ".join(cells)


@summary_section
def _tables(results):
    cols = ["fastopt", "fastopt-1w", "numpy", "numpy-f64", "dsyrk", "ssyrk", "fastopt-f32acc"]
    lines = ["### Gram assembly: ms per call and time(row) / time(fastopt) (best of rounds, this run)", "",
             "| J | N | dtype | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for d in DTYPES:
        for J, N in GRAM_SIZES:
            cells = _table_row(results, gram_group(J, N, d), cols, ".2f")
            if cells is not None:
                lines.append(f"| {fmt_n(J)} | {N} | {d} | {cells} |")
    lines += ["", "### Solve (SPD, cond ~1e3): ms per call and time(row) / time(fastopt)", "",
              "| N | " + " | ".join(SOLVE_IMPLS) + " |", "|---|" + "---|" * len(SOLVE_IMPLS)]
    for N in SOLVE_N:
        cells = _table_row(results, solve_group(N), SOLVE_IMPLS, ".3f")
        if cells is not None:
            lines.append(f"| {N} | {cells} |")
    return lines


# -- data: one group's arrays at a time (J = 1e6 rows are up to 1 GB) -------------------------------
_DATA: dict = {}


def gram_data(J, N, dtype):
    key = (J, N, dtype)
    if key not in _DATA:
        _DATA.clear()
        rng = np.random.default_rng(0)
        Phi = rng.standard_normal((J, N), dtype=np.float32).astype(dtype)
        _DATA[key] = dict(Phi=Phi, w=rng.uniform(0.0, 2.0 / J, J), y=rng.standard_normal(J).astype(dtype))
    return _DATA[key]


GRAM_CASES = [(J, N, d, i) for d in DTYPES for J, N in GRAM_SIZES for i in GRAM_IMPLS[d]]


@pytest.mark.parametrize("J,N,dtype,impl", GRAM_CASES,
                         ids=[f"{fmt_n(J)}-{N}-{d}-{i}" for J, N, d, i in GRAM_CASES])
def test_gram(benchmark, timed, J, N, dtype, impl):
    data = gram_data(J, N, DTYPES[dtype])
    Phi, w, y = data["Phi"], data["w"], data["y"]
    if impl == "fastopt":
        fn = lambda: ls.gram(Phi, w, y)  # noqa: E731
    elif impl == "fastopt-1w":
        fn = lambda: ls.gram(Phi, None, y)  # noqa: E731
    elif impl == "fastopt-f32acc":
        fn = lambda: ls.gram(Phi, w, y, dtype=np.float32)  # noqa: E731
    elif impl == "numpy":
        wt = w.astype(Phi.dtype)
        fn = lambda: (Phi.T @ (wt[:, None] * Phi), Phi.T @ (wt * y))  # noqa: E731
    elif impl == "numpy-f64":
        def fn():
            P64 = Phi.astype(np.float64)
            return P64.T @ (w[:, None] * P64), P64.T @ (w * y)
    elif impl == "dsyrk":
        P64 = Phi if Phi.dtype == np.float64 else Phi.astype(np.float64)
        fn = lambda: blas.dsyrk(1.0, P64.T, trans=0)  # noqa: E731
    else:  # ssyrk
        fn = lambda: blas.ssyrk(1.0, Phi.T, trans=0)  # noqa: E731
    big = J * N >= 10**7
    timed(benchmark, fn, group=gram_group(J, N, dtype), label=impl, budget_s=0.6 if big else 0.8,
          min_rounds=3, warmup=1 if big else 2, J=J, N=N)
    if impl == "fastopt":  # the rows compute the same system
        A = fn().A
        sub = slice(0, min(J, 20000))
        P64, w64 = Phi[sub].astype(np.float64), w[sub]
        A_sub = ls.gram(Phi[sub], w64).A
        assert np.allclose(A_sub, P64.T @ (w64[:, None] * P64), rtol=1e-12, atol=1e-12 * np.abs(A_sub).max())
        assert np.array_equal(A, A.T)


def solve_data(N):
    rng = np.random.default_rng(N)
    Qm, _ = np.linalg.qr(rng.standard_normal((N, N)))
    A = (Qm * np.logspace(0, -3, N)) @ Qm.T
    return 0.5 * (A + A.T), rng.standard_normal(N)


SOLVE_CASES = [(N, i) for N in SOLVE_N for i in SOLVE_IMPLS]


@pytest.mark.parametrize("N,impl", SOLVE_CASES, ids=[f"{N}-{i}" for N, i in SOLVE_CASES])
def test_solve(benchmark, timed, N, impl):
    A, b = solve_data(N)
    if impl == "fastopt":
        fn = lambda: ls.solve(A, b)  # noqa: E731
    elif impl == "fastopt-eigh":
        fn = lambda: ls.solve(A, b, method="eigh")  # noqa: E731
    elif impl == "numpy":
        fn = lambda: np.linalg.solve(A, b)  # noqa: E731
    else:
        fn = lambda: cho_solve(cho_factor(A, check_finite=False), b, check_finite=False)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error", ls.IllConditionedWarning)  # a cond-1e3 system must not warn
        timed(benchmark, fn, group=solve_group(N), label=impl, budget_s=0.5, min_rounds=5, N=N)
    if impl.startswith("fastopt"):
        assert np.allclose(fn().c, np.linalg.solve(A, b), rtol=1e-9)
