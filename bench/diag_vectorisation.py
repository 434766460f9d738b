"""Diagnosis, not a suite: are the fused CPU kernels vectorised, and what does it buy?

Run:  OMP_WAIT_POLICY=PASSIVE NUMBA_CACHE_DIR=$(mktemp -d) python bench/diag_vectorisation.py

``NUMBA_CACHE_DIR`` must name an empty folder: Numba keeps no assembly for kernels it
loads from its on-disk cache, so they must be compiled afresh here to be inspected.

Background: the inner loops of ``kernels/cpu/optim.py`` read ``for i in range(lo, hi)``
with ``lo``/``hi`` loaded from the work list of ``_runs``. Numba indexes arrays with
wraparound for negative indices (``a[i]`` with ``i < 0`` means ``a[i + n]``); while the work
list was int64 (up to commit 058198e) LLVM could not prove ``lo >= 0``, every access kept a
select on the index and the loops stayed scalar (``vsqrtss``/``vdivss``). Since ca922a5 the
work list is uint64, so the index is unsigned and the loops are vectorised.

Printed:

1. per kernel of the file (sgd, heavy_ball, sgd_momentum, adam, nadam, rmsprop, adagrad,
   lion), the packed (``...ps`` on ymm/zmm registers) and scalar (``...ss``) float32
   instruction counts of the library's serial build, compiled by one call of its public
   functional step;
2. the same counts for a *signed-index control* of adam and heavy_ball: the library's own
   source with the inner loop rewritten to ``for i in range(np.int64(lo), np.int64(hi))``
   (the pre-ca922a5 behaviour; taken with ``inspect`` and compiled here with the project's
   options minus ``cache``; the library file is not touched), serial and parallel;
3. per size, the time of the library kernel and of the control as ratios to the
   read-modify-write probe of ``_probe.py`` with the same threading (1.0 = at the ceiling),
   and control / library (what the unsigned index buys). Best of 7 repetitions in this
   one run; ``others`` is how many cores other processes used meanwhile (shared machine).

The serial/threaded crossover of the library kernels is measured by ``bench_crossover.py``.
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
SIGNED = "for i in range(np.int64(lo), np.int64(hi)):"


def _data(n, k):
    rng = np.random.default_rng(n)
    p = rng.standard_normal(n, dtype=F32)
    g = rng.standard_normal(n, dtype=F32) * F32(1e-2)
    return [p, g] + [np.zeros(n, F32) for _ in range(k)]


#: kernel name -> (state arrays, public step that launches it)
STEPS = {
    "sgd": (0, lambda p, g, c: fastopt.sgd_step(p, g, lr=1e-3)),
    "heavy_ball": (1, lambda p, g, m, c: fastopt.momentum_step(p, g, m, lr=1e-3, beta=0.9)),
    "sgd_momentum": (1, lambda p, g, b, c: fastopt.sgd_momentum_step(p, g, b, step=next(c), lr=1e-3)),
    "adam": (2, lambda p, g, m, v, c: fastopt.adam_step(p, g, m, v, step=next(c), lr=1e-3)),
    "nadam": (2, lambda p, g, m, v, c: fastopt.nadam_step(p, g, m, v, step=next(c), lr=1e-3, mu_product=0.9)),
    "rmsprop": (1, lambda p, g, sq, c: fastopt.rmsprop_step(p, g, sq, lr=1e-3)),
    "adagrad": (1, lambda p, g, s, c: fastopt.adagrad_step(p, g, s, step=next(c), lr=1e-3)),
    "lion": (1, lambda p, g, m, c: fastopt.lion_step(p, g, m, lr=1e-3)),
}


def launch_args(name, n):
    """The exact arguments the public step passes to the kernel ``name`` for size ``n``."""
    k, step = STEPS[name]
    arrays, c = _data(n, k), itertools.count(1)
    kernel, args = captured_launch(lambda: step(*arrays, c))
    if kernel is not getattr(K, name):
        raise SystemExit(f"the step for {name!r} launched {kernel!r}: update STEPS")
    return args


def signed_control(name):
    """(serial, parallel) builds of K._<name> with the inner index made signed (int64) again."""
    src = textwrap.dedent(inspect.getsource(getattr(K, "_" + name).py_func))
    src = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith("@"))
    if LOOP not in src:
        raise SystemExit(f"kernels/cpu/optim.py::_{name} no longer has {LOOP!r}: update this script")
    src = src.replace(LOOP, SIGNED)
    namespace = dict(vars(K))
    exec(compile(src, f"<signed _{name}>", "exec"), namespace)
    options = {k: v for k, v in _jit._OPTIONS.items() if k != "cache"}
    py = namespace["_" + name]
    return numba.njit(**options)(py), numba.njit(parallel=True, **options)(py)


def best_time(f, args, reps, repeat=7):
    f(*args)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(reps):
            f(*args)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


_PACKED = re.compile(r"^\s*v\w+ps\s.*[yz]mm", re.M)
_SCALAR = re.compile(r"^\s*v\w+ss\s", re.M)


def asm_counts(disp):
    asm = "\n".join(disp.inspect_asm().values())
    if not asm.strip():
        return "no assembly (loaded from the cache: set NUMBA_CACHE_DIR to an empty folder)"
    c = {k: len(re.findall(r"\b" + k + r"\b", asm)) for k in ("vsqrtps", "vsqrtss", "vdivps", "vdivss")}
    c["packed ps (ymm/zmm)"] = len(_PACKED.findall(asm))
    c["scalar ss"] = len(_SCALAR.findall(asm))
    return " ".join(f"{k}={v}" for k, v in c.items())


def main():
    print(f"numba {numba.__version__}, threads {numba.get_num_threads()}, "
          f"NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR', '(unset)')}, "
          f"PARALLEL_MIN_SIZE={K.PARALLEL_MIN_SIZE}")
    print("\n1. library kernels, serial build (compiled by one call of the public step, n=4096)")
    for name in STEPS:
        launch_args(name, 4096)
        print(f"{name:13s} {asm_counts(getattr(K, name).serial)}")

    print("\n2. signed-index control (int64 loop bounds, as before ca922a5), serial build")
    kernels = {"adam": ("adam", 4), "heavy_ball": ("momentum", 3)}
    controls = {}
    for name in kernels:
        cs, cp = signed_control(name)
        a = launch_args(name, 4096)
        cs(*a), cp(*a)
        controls[name] = (cs, cp)
        print(f"{name:13s} {asm_counts(cs)}")

    print("\n3. ratios to the probe with the same threading (time(kernel) / time(probe); 1.0 = at the ceiling)")
    print(f"{'kernel':10s} {'n':>9s} {'thr':>4s} {'library':>8s} {'signed':>7s} {'signed/library':>15s} "
          f"{'others':>7s}")
    for name, (probe_name, n_arrays) in kernels.items():
        lib = getattr(K, name)
        cs, cp = controls[name]
        probe = _probe.PROBES[probe_name][0]
        for n in (2**12, 2**14, 2**16, 2**18, 2**20, 10**7, 3 * 10**7):
            reps = max(3, int(3e7 // n))
            for threaded in (False, True):
                f_lib, f_ctl, f_pr = (lib.threaded, cp, probe.threaded) if threaded else (lib.serial, cs, probe.serial)
                args_lib, args_ctl = launch_args(name, n), launch_args(name, n)
                args_pr = list(launch_args(name, n)[:n_arrays])
                wait_quiet(10)
                a = _snapshot()
                t_lib = best_time(f_lib, args_lib, reps)
                t_ctl = best_time(f_ctl, args_ctl, reps)
                t_pr = best_time(f_pr, args_pr, reps)
                others, _ = others_load(a, _snapshot())
                print(f"{name:10s} {n:9d} {2 if threaded else 1:4d} {t_lib / t_pr:8.2f} {t_ctl / t_pr:7.2f} "
                      f"{t_ctl / t_lib:15.2f} {others:7.2f}")


if __name__ == "__main__":
    main()
