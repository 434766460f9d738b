"""sin+cos and tanh over 1e7 arguments, float32 and float64: fastopt's vectorised kernels beside their rivals.

Run:  OMP_WAIT_POLICY=PASSIVE python -m pytest bench/bench_vecmath.py --benchmark-only -q -p no:cacheprovider

Context (issue 3): the Fourier layer must stay within 1.5x of the time to evaluate its sines
and cosines once with the fastest vectorised routine available. This suite measures that
routine: per (function, dtype), in one run, rows

- ``fastopt-serial`` / ``fastopt-threaded``: ``kernels/cpu/_vecmath.py``'s ``sincos_array`` /
  ``tanh_array`` (serial kernel and its ``prange`` twin);
- ``numba-libm-serial`` / ``numba-libm-threaded``: the same loops calling ``np.sin`` and ``np.cos``
  (``np.tanh``) inside Numba, i.e. libm's scalar ``sincos``/``tanh`` (what a kernel gets today);
- ``numpy``: ``np.sin(x, out=s); np.cos(x, out=c)`` (``np.tanh(x, out=t)``), one thread, NumPy's
  SIMD loops where it has them;
- ``torch`` / ``torch-1thread``: ``torch.sin(x, out=s); torch.cos(x, out=c)`` (``torch.tanh``) on
  tensors sharing the arrays' memory, with PyTorch's default thread count (2 here) and one.

Arguments: sincos ``2 pi b x`` with x uniform in [-1, 1] and b = 100 (|arg| <= 628, the
Fourier layer's range); tanh ``3 N(0, 1)`` (both of its branches). Every row writes into
preallocated outputs. Ratios are ``time(rival) / time(fastopt)``; "pairs/s" counts one sin and
one cos (or one tanh) per argument.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from numba import prange

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import best_of, fmt_n, ratio, summary_section  # noqa: E402
from _rivals import torch_threads  # noqa: E402

from fastopt.kernels.cpu import _vecmath as V  # noqa: E402
from fastopt.kernels.cpu._jit import jit, parallel_twin  # noqa: E402

N = 10**7
FUNCS = ["sincos", "tanh"]
DTYPES = {"float32": np.float32, "float64": np.float64}
IMPLS = ["fastopt-serial", "fastopt-threaded", "numba-libm-serial", "numba-libm-threaded", "numpy", "torch",
         "torch-1thread"]
RIVALS_VECTORISED = ("numpy", "torch", "torch-1thread")
FASTEST = "fastest vectorised rival"


def group(func, dtype):
    return f"{func} {dtype} n={fmt_n(N)}"


# -- what to report -------------------------------------------------------------------------
for _f in FUNCS:
    for _d in DTYPES:
        _g = group(_f, _d)
        best_of(_g, FASTEST, RIVALS_VECTORISED)
        best_of(_g, "fastopt", ("fastopt-serial", "fastopt-threaded"))
        ratio(f"{_f} {_d}: fastopt (best) vs fastest of NumPy / torch", (_g, "fastopt"), (_g, FASTEST),
              note="speed-up; issue 3 asks the Fourier layer for >= 1/1.5 of this routine's speed", listed=False)
        for _r in ("numpy", "torch", "torch-1thread", "numba-libm-threaded", "numba-libm-serial"):
            ratio(f"{_f} {_d}: fastopt-threaded vs {_r}", (_g, "fastopt-threaded"), (_g, _r), listed=False)
        ratio(f"{_f} {_d}: fastopt-serial vs numpy (1 thread each)", (_g, "fastopt-serial"), (_g, "numpy"),
              listed=False)
        ratio(f"{_f} {_d}: fastopt-serial vs numba-libm-serial", (_g, "fastopt-serial"), (_g, "numba-libm-serial"),
              listed=False)


@summary_section
def _table(results):
    lines = [f"### sin+cos / tanh over {fmt_n(N)} arguments: billions of pairs (values) per second, and "
             "time(row) / time(fastopt-threaded) (best of rounds, this run)", "",
             "| function | dtype | " + " | ".join(IMPLS) + " | fastest rival | others' cores (max) |",
             "|---|---|" + "---|" * (len(IMPLS) + 2)]
    for f in FUNCS:
        for d in DTYPES:
            g = group(f, d)
            ref = results.get((g, "fastopt-threaded"))
            if ref is None:
                continue
            cells = []
            for impl in IMPLS:
                st = results.get((g, impl))
                cells.append("-" if st is None else f"{N / st['min'] / 1e9:.3g} G/s ({st['min'] / ref['min']:.2f}x)")
            best = results.get((g, FASTEST))
            loads = [st.get("others_cores") for (gg, _), st in results.items()
                     if gg == g and st.get("others_cores") is not None]
            load = f"{max(loads):.2f}" if loads else "-"
            lines.append(f"| {f} | {d} | " + " | ".join(cells) + f" | {best['from'] if best else '-'} | {load} |")
    lines += ["", "(x) = time(row) / time(fastopt-threaded): above 1 the row is slower than fastopt-threaded."]
    return lines


# -- the libm loops (what a Numba kernel gets from np.sin / np.cos / np.tanh) ----------------------
@jit
def _libm_sincos(x, out_sin, out_cos):
    for i in prange(x.size):
        out_sin[i] = np.sin(x[i])
        out_cos[i] = np.cos(x[i])


@jit
def _libm_tanh(x, out):
    for i in prange(x.size):
        out[i] = np.tanh(x[i])


_libm_sincos_parallel = parallel_twin(_libm_sincos)
_libm_tanh_parallel = parallel_twin(_libm_tanh)


def _data(func, dtype):
    rng = np.random.default_rng(0)
    if func == "sincos":
        x = 2 * np.pi * 100 * rng.uniform(-1, 1, N)
    else:
        x = 3 * rng.standard_normal(N)
    return x.astype(dtype)


def _call(func, impl, x, outs, torch_mod):
    if impl.startswith("fastopt"):
        k = V.sincos_array if func == "sincos" else V.tanh_array
        kernel = k.serial if impl == "fastopt-serial" else k.threaded
        return lambda: kernel(x, *outs)
    if impl.startswith("numba-libm"):
        threaded = impl.endswith("threaded")
        if func == "sincos":
            kernel = _libm_sincos_parallel if threaded else _libm_sincos
        else:
            kernel = _libm_tanh_parallel if threaded else _libm_tanh
        return lambda: kernel(x, *outs)
    if impl == "numpy":
        if func == "sincos":
            return lambda: (np.sin(x, out=outs[0]), np.cos(x, out=outs[1]))
        return lambda: np.tanh(x, out=outs[0])
    xt = torch_mod.from_numpy(x)
    ot = [torch_mod.from_numpy(o) for o in outs]
    if func == "sincos":
        return lambda: (torch_mod.sin(xt, out=ot[0]), torch_mod.cos(xt, out=ot[1]))
    return lambda: torch_mod.tanh(xt, out=ot[0])


CASES = [(f, d, i) for f in FUNCS for d in DTYPES for i in IMPLS]


@pytest.mark.parametrize("func,dtype,impl", CASES, ids=[f"{f}-{d}-{i}" for f, d, i in CASES])
def test_vecmath(benchmark, timed, request, func, dtype, impl):
    torch_mod = request.getfixturevalue("torch") if impl.startswith("torch") else None
    x = _data(func, DTYPES[dtype])
    outs = [np.empty_like(x) for _ in range(2 if func == "sincos" else 1)]
    fn = _call(func, impl, x, outs, torch_mod)
    slow = impl.startswith("numba-libm")
    with torch_threads(torch_mod, 1 if impl == "torch-1thread" else None):
        timed(benchmark, fn, group=group(func, dtype), label=impl, budget_s=2.0 if slow else 1.5,
              min_rounds=3 if slow else 5, n=N, func=func, dtype=dtype)
    # the rows compute the same function: a wrong kernel must not win a benchmark
    ref = (np.sin(x.astype(np.float64)),) if func == "sincos" else (np.tanh(x.astype(np.float64)),)
    tol = 1e-6 if dtype == "float32" else 1e-14
    assert np.max(np.abs(outs[0] - ref[0])) <= tol
