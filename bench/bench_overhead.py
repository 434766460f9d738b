"""The dispatch cost of a small call, and Optimizer.step() against PyTorch at 1e3 parameters.

Groups (one run, side by side):

- ``dispatch adam n=1`` and ``dispatch adam n=1000``:
  ``numba-kernel`` is ``fastopt.kernels.cpu.optim.adam.serial`` called with the very
  arguments the functional step builds (captured from one ``adam_step`` call, so the
  comparison follows the library if its kernel signature changes): Numba's own
  dispatch plus the update. ``size-dispatcher`` is ``optim.adam`` (picks serial/threaded).
  ``fastopt.adam_step`` is the public call. The difference ``adam_step - numba-kernel``
  is the functional overhead (validation, host scalars, kernel lookup): target <= 2 us.
- ``Optimizer.step n=1e3``: ``fastopt.optim.Adam`` over a 1000-element flat float32
  array against ``torch.optim.Adam`` (fused / foreach / for-loop, and fused with one
  thread: see ``_rivals.py``) over one 1000-element tensor: target >= 15x faster than
  torch fused in its default configuration (``torch-fused``, 2 threads here); the ratio
  against fused at its best (the faster of the 2-thread and 1-thread rows) is reported
  beside it as supplementary information.
"""
from __future__ import annotations

import itertools
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _capture import captured_launch  # noqa: E402
from _report import best_of, difference, ratio  # noqa: E402
from _rivals import FUSED_BEST, FUSED_DEFAULT, FUSED_ROWS, TORCH_IMPLS, threads_for, torch_step, torch_threads  # noqa: E402

import fastopt  # noqa: E402

F32 = np.float32
LR = 1e-3


def _dgroup(n):
    return f"dispatch adam n={n}"


STEP_GROUP = "Optimizer.step n=1e3"

for _n in (1, 1000):
    difference(f"adam_step overhead over the raw Numba call, n={_n}", (_dgroup(_n), "fastopt.adam_step"),
               (_dgroup(_n), "numba-kernel"), at_most=2.0, unit="us")
    ratio(f"raw Numba call / adam_step, n={_n} (share of the call that is the kernel)",
          (_dgroup(_n), "fastopt.adam_step"), (_dgroup(_n), "numba-kernel"))
    difference(f"size dispatcher (optim.adam) over .serial, n={_n}", (_dgroup(_n), "size-dispatcher"),
               (_dgroup(_n), "numba-kernel"), unit="us")
best_of(STEP_GROUP, FUSED_BEST, FUSED_ROWS)
ratio("Optimizer.step 1e3: fastopt.optim.Adam vs torch Adam(fused=True), default config (2 threads)",
      (STEP_GROUP, "fastopt.optim.Adam"), (STEP_GROUP, FUSED_DEFAULT), at_least=15.0)
ratio("Optimizer.step 1e3: fastopt.optim.Adam vs torch Adam(fused=True), best of 2 threads / 1 thread (supplementary)",
      (STEP_GROUP, "fastopt.optim.Adam"), (STEP_GROUP, FUSED_BEST), info_at_least=15.0)
ratio("Optimizer.step 1e3: fastopt.optim.Adam vs torch Adam(fused=True), 1 thread", (STEP_GROUP, "fastopt.optim.Adam"),
      (STEP_GROUP, "torch-fused-1thread"))
ratio("Optimizer.step 1e3: fastopt.optim.Adam vs torch Adam(foreach=True)", (STEP_GROUP, "fastopt.optim.Adam"),
      (STEP_GROUP, "torch-foreach"))
ratio("Optimizer.step 1e3: fastopt.optim.Adam vs torch Adam(foreach=False)", (STEP_GROUP, "fastopt.optim.Adam"),
      (STEP_GROUP, "torch-for-loop"))
difference("Optimizer.step over adam_step, n=1000", (STEP_GROUP, "fastopt.optim.Adam"),
           (_dgroup(1000), "fastopt.adam_step"), unit="us",
           note="the class's own cost (groups, schedule, state) on top of the functional call")


def _arrays(n):
    rng = np.random.default_rng(n)
    return (rng.standard_normal(n, dtype=F32), rng.standard_normal(n, dtype=F32) * F32(1e-2),
            np.zeros(n, F32), np.zeros(n, F32))


@pytest.mark.parametrize("n", [1, 1000])
@pytest.mark.parametrize("impl", ["numba-kernel", "size-dispatcher", "fastopt.adam_step"])
def test_dispatch(benchmark, timed, n, impl):
    p, g, m, v = _arrays(n)
    counter = itertools.count(1)
    kernel, args = captured_launch(lambda: fastopt.adam_step(p, g, m, v, step=next(counter), lr=LR))
    if impl == "numba-kernel":
        raw = kernel.serial
        fn = lambda: raw(*args)  # noqa: E731
    elif impl == "size-dispatcher":
        fn = lambda: kernel(*args)  # noqa: E731
    else:
        fn = lambda: fastopt.adam_step(p, g, m, v, step=next(counter), lr=LR)  # noqa: E731
    timed(benchmark, fn, group=_dgroup(n), label=impl, budget_s=1.0, round_s=5e-3, warmup=100, n=n)


@pytest.mark.parametrize("impl", ["fastopt.optim.Adam"] + TORCH_IMPLS)
def test_optimizer_step(benchmark, timed, request, impl):
    n = 1000
    p, g, _, _ = _arrays(n)
    torch = None
    if impl == "fastopt.optim.Adam":
        opt = fastopt.optim.Adam(p, lr=LR)
        fn = lambda: opt.step(g)  # noqa: E731
    else:
        torch = request.getfixturevalue("torch")
        fn = torch_step(torch, impl, "adam", [p], [g], LR)
    with torch_threads(torch, threads_for(impl)):
        timed(benchmark, fn, group=STEP_GROUP, label=impl, budget_s=1.0, round_s=5e-3, warmup=100, n=n)
