"""Diagnosis (not a benchmark suite): are the fused CPU kernels vectorised?

Run:  OMP_WAIT_POLICY=PASSIVE NUMBA_CACHE_DIR=$(mktemp -d) python bench/diag_vectorisation.py

``NUMBA_CACHE_DIR`` must point to an empty folder: Numba does not keep the assembly
of kernels loaded from its on-disk cache, so they are compiled afresh here.

What it shows: the inner loops of ``kernels/cpu/optim.py`` are written
``for i in range(lo, end)``. Numba indexes arrays with wraparound for negative
indices (``a[i]`` with ``i < 0`` means ``a[i + n]``); LLVM cannot prove ``lo >= 0``
so each access keeps a select on the index and the loop stays scalar (``vsqrtss``,
``vdivss``: one float per instruction). The same loop with an index LLVM knows is
non-negative (``range(np.uint64(lo), np.uint64(end))``, or a loop over the views
``p[lo:end]`` from 0) is vectorised (``vsqrtps``/``vdivps`` on ymm registers).

For each kernel it prints the packed/scalar instruction counts of the library's
serial kernel and of a copy whose only change is that index, then times both
(serial and threaded twins) against the read-modify-write probe of bench/_probe.py,
all in this one run. The copies live here only to measure what the change buys; the
library is not modified.
"""
from __future__ import annotations

import os
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _probe  # noqa: E402
from fastopt.kernels.cpu import optim as K  # noqa: E402
from fastopt.kernels.cpu._jit import jit, parallel_twin  # noqa: E402
from fastopt.kernels.cpu.optim import _first_run, _lerp, _n_blocks  # noqa: E402
from numba import prange  # noqa: E402

F32 = np.float32


@jit
def _adam_u(p, g, m, v, vmax, bounds, lr, l2, shrink, grad_mul, beta1, beta2, eps, bc2_sqrt, amsgrad):
    """kernels/cpu/optim.py::_adam with one change: the inner index is unsigned."""
    n = p.size
    one = p.dtype.type(1)
    w1 = one - beta1
    w2 = one - beta2
    for b in prange(_n_blocks(n)):
        lo, hi, s = _first_run(bounds, b, n)
        while lo < hi:
            end = min(hi, bounds[s + 1])
            lr_s, l2_s, sh_s = lr[s], l2[s], shrink[s]
            for i in range(np.uint64(lo), np.uint64(end)):
                ge = grad_mul * g[i] + l2_s * p[i]
                mi = _lerp(m[i], ge, w1, one)
                vi = beta2 * v[i] + w2 * ge * ge
                m[i] = mi
                v[i] = vi
                if amsgrad:
                    vi = max(vmax[i], vi)
                    vmax[i] = vi
                denom = np.sqrt(vi) / bc2_sqrt + eps
                p[i] = sh_s * p[i] - lr_s * (mi / denom)
            lo = end
            s += 1


@jit
def _heavy_ball_u(p, g, m, bounds, lr, l2, shrink, grad_mul, beta):
    """kernels/cpu/optim.py::_heavy_ball with one change: the inner index is unsigned."""
    n = p.size
    for b in prange(_n_blocks(n)):
        lo, hi, s = _first_run(bounds, b, n)
        while lo < hi:
            end = min(hi, bounds[s + 1])
            lr_s, l2_s, sh_s = lr[s], l2[s], shrink[s]
            for i in range(np.uint64(lo), np.uint64(end)):
                ge = grad_mul * g[i] + l2_s * p[i]
                mi = beta * m[i] - lr_s * ge
                m[i] = mi
                p[i] = sh_s * p[i] + mi
            lo = end
            s += 1


_adam_u_par = parallel_twin(_adam_u)
_heavy_ball_u_par = parallel_twin(_heavy_ball_u)


def _arrays(n, k):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n, dtype=F32)
    g = rng.standard_normal(n, dtype=F32) * F32(1e-2)
    return [p, g] + [np.zeros(n, F32) for _ in range(k)]


def _scalars(n):
    b = np.array([0, n], np.int64)
    b.flags.writeable = False
    return b, np.array([1e-3], F32), np.zeros(1, F32), np.ones(1, F32)


def adam_args(n):
    p, g, m, v = _arrays(n, 2)
    return (p, g, m, v, p[:0], *_scalars(n), F32(1), F32(.9), F32(.999), F32(1e-8), F32(.5), False)


def hb_args(n):
    p, g, m = _arrays(n, 1)
    return (p, g, m, *_scalars(n), F32(1), F32(.9))


def best_time(f, args, reps):
    f(*args)
    best = float("inf")
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(reps):
            f(*args)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def count(asm, pat):
    return len(re.findall(pat, asm))


def asm_report(name, disp):
    asm = "\n".join(disp.inspect_asm().values())
    if not asm.strip():
        return f"{name}: no assembly (loaded from cache: set NUMBA_CACHE_DIR to an empty folder)"
    return (f"{name:28s} vsqrtps={count(asm, r'vsqrtps'):3d} vsqrtss={count(asm, r'vsqrtss'):3d} "
            f"vdivps={count(asm, r'vdivps'):3d} vdivss={count(asm, r'vdivss'):3d} "
            f"packed-fma={count(asm, r'vfmadd\w*ps'):3d} ymm-refs={count(asm, r'ymm'):4d}")


def main():
    import numba
    print(f"numba {numba.__version__}, threads {numba.get_num_threads()}, "
          f"NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR', '(unset)')}")
    rows = [("adam", adam_args, K.adam.serial, K.adam.threaded, _adam_u, _adam_u_par,
             _probe.adam_probe.serial, _probe.adam_probe.threaded, 4),
            ("heavy_ball", hb_args, K.heavy_ball.serial, K.heavy_ball.threaded, _heavy_ball_u,
             _heavy_ball_u_par, _probe.momentum_probe.serial, _probe.momentum_probe.threaded, 3)]
    for name, make, lib_s, lib_t, fix_s, fix_t, pr_s, pr_t, n_probe in rows:
        a = make(1000)
        lib_s(*a), fix_s(*a), lib_t(*a), fix_t(*a)
        print(asm_report(f"library {name}.serial", lib_s))
        print(asm_report(f"unsigned-index {name}", fix_s))
    print("\ntimes as ratios to the probe with the same threading, same run (best of 7; lower is better)")
    print(f"{'kernel':10s} {'n':>8s} {'thr':>4s} {'library/probe':>14s} {'unsigned/probe':>15s} {'library/unsigned':>17s}")
    for name, make, lib_s, lib_t, fix_s, fix_t, pr_s, pr_t, n_probe in rows:
        for n in (10**4, 10**5, 10**6, 10**7, 3 * 10**7):
            reps = max(3, int(2e7 // n))
            for threaded in (False, True):
                lib, fix, pr = (lib_t, fix_t, pr_t) if threaded else (lib_s, fix_s, pr_s)
                a_lib, a_fix = make(n), make(n)
                a_pr = make(n)[:n_probe]
                t_lib, t_fix, t_pr = best_time(lib, a_lib, reps), best_time(fix, a_fix, reps), best_time(pr, a_pr, reps)
                print(f"{name:10s} {n:8.0e} {2 if threaded else 1:4d} {t_lib / t_pr:14.2f} {t_fix / t_pr:15.2f} "
                      f"{t_lib / t_fix:17.2f}")


if __name__ == "__main__":
    main()
