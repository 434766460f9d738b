"""One tensor of 1e6 elements against 1000 tensors of 1e3 (the same 1e6 in total), Adam fp32.

- ``fastopt.optim.Adam``: over a ``FlatParams`` (one name of 1e6 elements, or 1000 names
  of 1e3): one flat buffer, so one kernel call whatever the number of tensors;
- ``torch-fused`` / ``torch-foreach`` / ``torch-for-loop``: ``torch.optim.Adam`` over the
  same number of tensors, which loops over them (fused and foreach in C++, for-loop in
  Python).

Target: with 1000 tensors, fastopt >= 20x torch fused. The ratio fastopt(1000) / fastopt(1)
shows what the number of tensors costs fastopt (ideally nothing).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import ratio  # noqa: E402

import fastopt  # noqa: E402

F32 = np.float32
TOTAL = 10**6
LR = 1e-3
COUNTS = [1, 1000]
IMPLS = ["fastopt.optim.Adam", "torch-fused", "torch-foreach", "torch-for-loop"]


def group(k):
    return f"adam fp32 {k} tensor{'s' if k > 1 else ''} x {TOTAL // k}"


for _k in COUNTS:
    ratio(f"{_k} tensor(s): fastopt vs torch fused", (group(_k), "fastopt.optim.Adam"), (group(_k), "torch-fused"),
          at_least=20.0 if _k == 1000 else None)
    ratio(f"{_k} tensor(s): fastopt vs torch foreach", (group(_k), "fastopt.optim.Adam"),
          (group(_k), "torch-foreach"))
    ratio(f"{_k} tensor(s): fastopt vs torch for-loop", (group(_k), "fastopt.optim.Adam"),
          (group(_k), "torch-for-loop"))
for _impl in IMPLS:
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
    if impl == "fastopt.optim.Adam":
        fp = fastopt.FlatParams(params)
        fg = fp.zeros_like()
        for name, gval in grads.items():
            fg[name] = gval
        opt = fastopt.optim.Adam(fp, lr=LR)
        fn = lambda: opt.step(fg)  # noqa: E731
    else:
        torch = request.getfixturevalue("torch")
        mode = {"torch-fused": dict(fused=True), "torch-foreach": dict(foreach=True),
                "torch-for-loop": dict(foreach=False)}[impl]
        tensors = []
        for name, pval in params.items():
            t = torch.from_numpy(pval).requires_grad_(True)
            t.grad = torch.from_numpy(grads[name])
            tensors.append(t)
        fn = torch.optim.Adam(tensors, lr=LR, **mode).step
    timed(benchmark, fn, group=group(k), label=impl, budget_s=2.0, warmup=3, tensors=k, total=TOTAL)
