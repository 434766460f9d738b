"""First step after ``import fastopt`` in a new process, with Numba's cache warm.

The child measures itself with ``time.perf_counter``: from before ``import fastopt`` to
after the first ``fastopt.adam_step`` on a 1e3 float32 array (so: the imports fastopt
makes, numpy's included, the kernel module, loading the compiled kernel from Numba's
on-disk cache, one step). The interpreter's own start is not in it; ``python -c pass``
is timed beside it (process wall time) for scale, as is the fastopt child's wall time.

A warm-up child runs first (fills Numba's cache if needed, warms the OS file cache);
the timed rounds follow. Target: <= 0.3 s in the child.

For scale, the same in-child timing of a *bare Numba* child: ``import numpy, numba`` and
the first call of a trivial ``@njit(cache=True)`` function loaded from a warm cache.
That is the floor any Numba-backed first call pays (Numba's import, its lowering
registries, which import ``scipy.linalg`` for BLAS when SciPy is installed, LLVM
initialisation, loading the cached object code); fastopt's own share is the rest.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import _snapshot, difference, others_load, ratio, record_samples, value, wait_quiet  # noqa: E402

GROUP = "startup (new process, warm cache)"
ROUNDS = 7

CHILD = r"""
import time
t0 = time.perf_counter()
import fastopt
t1 = time.perf_counter()
import numpy as np
p = np.ones(1000, np.float32); g = np.full(1000, 0.5, np.float32)
m = np.zeros_like(p); v = np.zeros_like(p)
fastopt.adam_step(p, g, m, v, step=1, lr=1e-3)
t2 = time.perf_counter()
import sys, json
from fastopt.kernels.cpu import optim
stats = optim.adam.serial.stats
mods = sorted(k for k in ("scipy", "scipy.optimize", "numba", "torch", "cupy") if k in sys.modules)
print(json.dumps({"total": t2 - t0, "import": t1 - t0, "first_step": t2 - t1,
                  "cache_hits": sum(stats.cache_hits.values()), "cache_misses": sum(stats.cache_misses.values()),
                  "heavy_modules_loaded": mods}))
"""

value("first adam_step after import fastopt, new process (in-child perf_counter)",
      (GROUP, "import fastopt + first adam_step (in child)"), at_most=0.3, unit="s")
value("  of which: import fastopt", (GROUP, "import fastopt (in child)"), unit="s")
value("  of which: first adam_step (kernel module, cache load, step)", (GROUP, "first adam_step (in child)"),
      unit="s")
ratio("python -c pass / whole fastopt child (process wall time)", (GROUP, "fastopt child (wall)"),
      (GROUP, "python -c pass (wall)"), note="share of the child's wall time that is the bare interpreter")
difference("fastopt child wall - python -c pass wall", (GROUP, "fastopt child (wall)"),
           (GROUP, "python -c pass (wall)"), unit="s")


NUMBA_FLOOR_MODULE = r"""
import numba

@numba.njit(cache=True, error_model="numpy", nogil=True)
def bump(x):
    for i in range(x.size):
        x[i] += 1.0
"""

NUMBA_FLOOR_CHILD = r"""
import time
t0 = time.perf_counter()
import numpy as np
import _numba_floor
x = np.ones(1000, np.float32)
_numba_floor.bump(x)
t1 = time.perf_counter()
import json
print(json.dumps({"total": t1 - t0, "cache_misses": sum(_numba_floor.bump.stats.cache_misses.values())}))
"""

value("bare Numba floor: import numba + first call of a cached @njit (in child)",
      (GROUP, "bare Numba: import + first cached call (in child)"), unit="s")
ratio("bare Numba floor / fastopt first step (share of the first step that is Numba's own)",
      (GROUP, "import fastopt + first adam_step (in child)"),
      (GROUP, "bare Numba: import + first cached call (in child)"))


def _run(args, cwd=None):
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, check=True,
                         cwd=cwd or os.path.dirname(os.path.abspath(__file__)))
    return time.perf_counter() - t0, out.stdout


def test_python_pass(benchmark):
    benchmark.group = GROUP
    walls = []

    def once():
        walls.append(_run(["-c", "pass"])[0])

    wait_quiet()
    a = _snapshot()
    benchmark.pedantic(once, rounds=ROUNDS, warmup_rounds=1)
    others, _ = others_load(a, _snapshot())
    record_samples(GROUP, "python -c pass (wall)", walls[1:], benchmark, others_cores=others)


def test_numba_floor(benchmark, tmp_path):
    benchmark.group = GROUP
    (tmp_path / "_numba_floor.py").write_text(NUMBA_FLOOR_MODULE)
    child = []

    def once():
        child.append(json.loads(_run(["-c", NUMBA_FLOOR_CHILD], cwd=str(tmp_path))[1].strip().splitlines()[-1]))

    wait_quiet()
    a = _snapshot()
    benchmark.pedantic(once, rounds=ROUNDS, warmup_rounds=1)
    others, _ = others_load(a, _snapshot())
    child = child[1:]
    if any(c["cache_misses"] for c in child):
        pytest.fail(f"the bare-Numba child compiled in a timed round: {child}")
    record_samples(GROUP, "bare Numba: import + first cached call (in child)", [c["total"] for c in child],
                   benchmark, others_cores=others)


def test_first_step(benchmark):
    benchmark.group = GROUP
    walls, child = [], []

    def once():
        wall, out = _run(["-c", CHILD])
        walls.append(wall)
        child.append(json.loads(out.strip().splitlines()[-1]))

    wait_quiet()
    a = _snapshot()
    benchmark.pedantic(once, rounds=ROUNDS, warmup_rounds=1)
    others, _ = others_load(a, _snapshot())
    walls, child = walls[1:], child[1:]  # the warm-up child is not timed
    benchmark.extra_info["child"] = child
    if any(c["cache_misses"] for c in child):
        pytest.fail(f"Numba compiled in a timed child (cache misses): the cache is not warm: {child}")
    record_samples(GROUP, "fastopt child (wall)", walls, benchmark, others_cores=others)
    record_samples(GROUP, "import fastopt (in child)", [c["import"] for c in child], benchmark, others_cores=others)
    record_samples(GROUP, "first adam_step (in child)", [c["first_step"] for c in child], benchmark,
                   others_cores=others)
    record_samples(GROUP, "import fastopt + first adam_step (in child)", [c["total"] for c in child], benchmark,
                   heavy_modules_loaded=child[-1]["heavy_modules_loaded"], others_cores=others)
