"""One tensor of 1e6 elements against 1000 tensors of 1e3 (the same 1e6 in total), Adam fp32.

- ``fastopt.optim.Adam``: over a ``FlatParams`` (one name of 1e6 elements, or 1000 names
  of 1e3): one flat buffer, so one kernel call whatever the number of tensors;
- ``torch-fused`` / ``torch-foreach`` / ``torch-for-loop``: ``torch.optim.Adam`` over the
  same number of tensors, which loops over them (fused and foreach in C++, for-loop in
  Python); ``torch-fused-1thread``: fused with one thread (``_rivals.py``: under
  OMP_WAIT_POLICY=PASSIVE the 2-thread fused step wakes a thread for every tensor).

- ``probe``: the Adam read-modify-write probe (``_probe.py``) over one flat 1e6 buffer, the
  same row in both groups: the ceiling of any implementation, so ``probe vs torch`` is the
  largest speed-up over PyTorch this machine allows.

Target: with 1000 tensors, fastopt >= 20x torch fused in its default configuration
(``torch-fused``, 2 threads here); against torch fused at its best (the faster fused row)
as supplementary information.
The ratio fastopt(1000) / fastopt(1) shows what the number of tensors costs fastopt (ideally nothing).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import best_of, ratio  # noqa: E402
from _rivals import FUSED_BEST, FUSED_DEFAULT, FUSED_ROWS, TORCH_IMPLS, threads_for, torch_step, torch_threads  # noqa: E402

import _probe  # noqa: E402
import fastopt  # noqa: E402

F32 = np.float32
TOTAL = 10**6
LR = 1e-3
COUNTS = [1, 1000]
IMPLS = ["probe", "fastopt.optim.Adam"] + TORCH_IMPLS


def group(k):
    return f"adam fp32 {k} tensor{'s' if k > 1 else ''} x {TOTAL // k}"


for _k in COUNTS:
    best_of(group(_k), FUSED_BEST, FUSED_ROWS)
    ratio(f"{_k} tensor(s): fastopt vs torch fused, default config (2 threads)", (group(_k), "fastopt.optim.Adam"),
          (group(_k), FUSED_DEFAULT), at_least=20.0 if _k == 1000 else None)
    ratio(f"{_k} tensor(s): fastopt vs torch fused, best of 2 threads / 1 thread (supplementary)",
          (group(_k), "fastopt.optim.Adam"), (group(_k), FUSED_BEST), info_at_least=20.0 if _k == 1000 else None)
    ratio(f"{_k} tensor(s): fastopt vs torch fused, 1 thread", (group(_k), "fastopt.optim.Adam"),
          (group(_k), "torch-fused-1thread"))
    ratio(f"{_k} tensor(s): fastopt vs torch foreach", (group(_k), "fastopt.optim.Adam"),
          (group(_k), "torch-foreach"))
    ratio(f"{_k} tensor(s): fastopt vs torch for-loop", (group(_k), "fastopt.optim.Adam"),
          (group(_k), "torch-for-loop"))
    ratio(f"{_k} tensor(s): fastopt / probe (fraction of ceiling)", (group(_k), "fastopt.optim.Adam"),
          (group(_k), "probe"))
    ratio(f"{_k} tensor(s): ceiling: probe vs torch fused, default config (largest possible speed-up)",
          (group(_k), "probe"), (group(_k), FUSED_DEFAULT))
    ratio(f"{_k} tensor(s): ceiling: probe vs torch fused at its best (largest possible speed-up)",
          (group(_k), "probe"), (group(_k), FUSED_BEST))
for _impl in IMPLS[1:]:
    ratio(f"{_impl}: time(1000 tensors) / time(1 tensor)", (group(1), _impl), (group(1000), _impl),
          note="1 = the number of tensors costs nothing")


def _tensors(k):
    rng = np.random.default_rng(k)
    size = TOTAL // k
    return ({f"layer{i}.w": rng.standard_normal(size, dtype=F32) for i in range(k)},
            {f"layer{i}.w": rng.standard_normal(size, dtype=F32) * F32(1e-2) for i in range(k)})


@pytest.mark.parametrize("k", COUNTS)
@pytest.mark.parametrize("impl", IMPLS)
def test_many_tensors(benchmark, timed, request, impl, k):
    params, grads = _tensors(k)
    torch = None
    if impl == "probe":
        p = np.concatenate(list(params.values()))
        g = np.concatenate(list(grads.values()))
        m, v = np.zeros_like(p), np.zeros_like(p)
        fn = lambda: _probe.adam_probe(p, g, m, v)  # noqa: E731
    elif impl == "fastopt.optim.Adam":
        fp = fastopt.FlatParams(params)
        fg = fp.zeros_like()
        for name, gval in grads.items():
            fg[name] = gval
        opt = fastopt.optim.Adam(fp, lr=LR)
        fn = lambda: opt.step(fg)  # noqa: E731
    else:
        torch = request.getfixturevalue("torch")
        fn = torch_step(torch, impl, "adam", list(params.values()), [grads[name] for name in params], LR)
    with torch_threads(torch, threads_for(impl)):
        timed(benchmark, fn, group=group(k), label=impl, budget_s=2.0, warmup=3, tensors=k, total=TOTAL)
