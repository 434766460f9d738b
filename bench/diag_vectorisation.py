"""Diagnosis, not a suite: are the fused CPU kernels vectorised, and what would it buy?

Run:  OMP_WAIT_POLICY=PASSIVE NUMBA_CACHE_DIR=$(mktemp -d) python bench/diag_vectorisation.py

``NUMBA_CACHE_DIR`` must name an empty folder: Numba keeps no assembly for kernels it
loads from its on-disk cache, so they must be compiled afresh here to be inspected.

What it shows: the inner loops of ``kernels/cpu/optim.py`` read ``for i in range(lo, hi)``
with ``lo``/``hi`` loaded from an int64 array. Numba indexes arrays with wraparound for
negative indices (``a[i]`` with ``i < 0`` means ``a[i + n]``); LLVM cannot prove ``lo >= 0``,
so every access keeps a select on the index and the loop is not vectorised: one float
per ``vsqrtss``/``vdivss`` instead of eight per ``vsqrtps``/``vdivps``.

The "unsigned" variant is the library's own source with that one line rewritten to
``for i in range(np.uint64(lo), np.uint64(hi))`` (taken with ``inspect`` and compiled here,
so it follows the library as it changes; the library file is not touched). It is
compiled with the project's options (minus ``cache``), serial and parallel.

Printed: packed/scalar instruction counts of both serial builds; then per size the
times of library and variant (serial and threaded) as ratios to the read-modify-write
probe of ``_probe.py`` with the same threading, and the variant's own serial/threaded
crossover. All in this one run, best of 7 repetitions; ``others`` is how many cores
other processes used meanwhile (the machine is shared).
"""
from __future__ import annotations

import inspect
import itertools
import os
import re
import sys
import textwrap
import time

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _probe  # noqa: E402
from _capture import captured_launch  # noqa: E402
from _report import _snapshot, others_load, wait_quiet  # noqa: E402

import fastopt  # noqa: E402
from fastopt.kernels.cpu import _jit  # noqa: E402
from fastopt.kernels.cpu import optim as K  # noqa: E402

F32 = np.float32
LOOP = "for i in range(lo, hi):"
UNSIGNED = "for i in range(np.uint64(lo), np.uint64(hi)):"


def unsigned_variant(name):
    """(serial, parallel) builds of K._<name> with the inner index made unsigned."""
    src = textwrap.dedent(inspect.getsource(getattr(K, "_" + name).py_func))
    src = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith("@"))
    if LOOP not in src:
        raise SystemExit(f"kernels/cpu/optim.py::_{name} no longer has {LOOP!r}: update this script")
    src = src.replace(LOOP, UNSIGNED)
    namespace = dict(vars(K))
    exec(compile(src, f"<unsigned _{name}>", "exec"), namespace)
    options = {k: v for k, v in _jit._OPTIONS.items() if k != "cache"}
    py = namespace["_" + name]
    return numba.njit(**options)(py), numba.njit(parallel=True, **options)(py)


def launch_args(name, n):
    rng = np.random.default_rng(n)
    p = rng.standard_normal(n, dtype=F32)
    g = rng.standard_normal(n, dtype=F32) * F32(1e-2)
    m, v = np.zeros(n, F32), np.zeros(n, F32)
    if name == "adam":
        c = itertools.count(1)
        return captured_launch(lambda: fastopt.adam_step(p, g, m, v, step=next(c), lr=1e-3))[1]
    return captured_launch(lambda: fastopt.momentum_step(p, g, m, lr=1e-3, beta=0.9))[1]


def best_time(f, args, reps, repeat=7):
    f(*args)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(reps):
            f(*args)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def asm_counts(disp):
    asm = "\n".join(disp.inspect_asm().values())
    if not asm.strip():
        return "no assembly (loaded from the cache: set NUMBA_CACHE_DIR to an empty folder)"
    c = {k: len(re.findall(k, asm)) for k in ("vsqrtps", "vsqrtss", "vdivps", "vdivss", "ymm")}
    return " ".join(f"{k}={v}" for k, v in c.items())


def main():
    print(f"numba {numba.__version__}, threads {numba.get_num_threads()}, "
          f"NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR', '(unset)')}, "
          f"PARALLEL_MIN_SIZE={K.PARALLEL_MIN_SIZE}")
    kernels = {"adam": ("adam", 4), "heavy_ball": ("momentum", 3)}
    variants = {}
    for name in kernels:
        lib = getattr(K, name)
        us, up = unsigned_variant(name)
        a = launch_args(name, 4096)
        lib.serial(*a), lib.threaded(*a), us(*a), up(*a)
        variants[name] = (us, up)
        print(f"{name:10s} library .serial : {asm_counts(lib.serial)}")
        print(f"{name:10s} unsigned index  : {asm_counts(us)}")

    print("\nratios to the probe with the same threading (time(kernel) / time(probe); 1.0 = at the ceiling)")
    print(f"{'kernel':10s} {'n':>9s} {'thr':>4s} {'library':>8s} {'unsigned':>9s} {'lib/unsigned':>13s} {'others':>7s}")
    for name, (probe_name, n_arrays) in kernels.items():
        lib = getattr(K, name)
        us, up = variants[name]
        probe = _probe.PROBES[probe_name][0]
        for n in (2**12, 2**14, 2**16, 2**17, 2**18, 2**20, 10**7, 3 * 10**7):
            reps = max(3, int(3e7 // n))
            for threaded in (False, True):
                f_lib, f_var, f_pr = (lib.threaded, up, probe.threaded) if threaded else (lib.serial, us, probe.serial)
                args_lib, args_var = launch_args(name, n), launch_args(name, n)
                args_pr = list(launch_args(name, n)[:n_arrays])
                wait_quiet(10)
                a = _snapshot()
                t_lib = best_time(f_lib, args_lib, reps)
                t_var = best_time(f_var, args_var, reps)
                t_pr = best_time(f_pr, args_pr, reps)
                others, _ = others_load(a, _snapshot())
                print(f"{name:10s} {n:9d} {2 if threaded else 1:4d} {t_lib / t_pr:8.2f} {t_var / t_pr:9.2f} "
                      f"{t_lib / t_var:13.2f} {others:7.2f}")

    print("\ncrossover of the unsigned-index variant: speed-up of threaded over serial")
    for name in kernels:
        us, up = variants[name]
        cells = []
        for k in range(14, 22):
            n = 2**k
            reps = max(3, int(3e7 // n))
            wait_quiet(10)
            ts, tt = best_time(us, launch_args(name, n), reps), best_time(up, launch_args(name, n), reps)
            cells.append(f"2^{k}:{ts / tt:.2f}")
        print(f"{name:10s} " + "  ".join(cells))


if __name__ == "__main__":
    main()
