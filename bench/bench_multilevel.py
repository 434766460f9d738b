"""One Adam step of a multilevel level network (issue 5), fastopt beside its PyTorch twin.

Run:  OMP_WAIT_POLICY=PASSIVE python -m pytest bench/bench_multilevel.py --benchmark-only -q -p no:cacheprovider

Issue 5: multilevel training "at a small fraction of the time that a PyTorch implementation needs
on the same machine". The levels of the full-size experiment (``fastopt.experiments.multilevel``):
level 0 (k in pi {1, 2}, 256 points) and level 3 (k in pi {1..16}, 2048 points; 1024 when first
measured), 1-[features]-20-20-1 tanh networks times ``x (1 - x)``, the residual loss of ``-u'' = f`` on the level's Gauss-Legendre
rule. Rows, per level, in one run:

- ``fastopt``: one Adam step of ``train_levels``: its ``_Objective`` (u, u', u'' forward + backward
  in chunks of 256 points) and ``fastopt.optim.Adam`` on the flat buffer;
- ``fastopt-eval``: the loss and gradient alone (what an L-BFGS iteration evaluates);
- ``torch`` / ``torch-1thread``: the PyTorch twin (``fastopt.experiments._multilevel_torch``: the same
  weights, ``u''`` by double backward, ``torch.optim.Adam``'s default implementation), with
  PyTorch's default thread count (2 here) and one;
- ``torch-eval`` / ``torch-eval-1thread``: the twin's closure (``zero_grad``, loss, ``backward``),
  with PyTorch's default thread count and one.

Before timing, the twin's loss and gradient at the start are checked against fastopt's (float64:
relative 1e-12; measured ~1e-15). The rows train their own copies from the same start. Ratios
are ``time(row) / time(fastopt)``; the experiment's claim is over the levels' Adam steps together
(``multilevel.TORCH_FACTOR``), so the per-level ratios here carry no verdict.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import best_of, ratio, relative_table, summary_section  # noqa: E402
from _rivals import torch_threads  # noqa: E402

from fastopt.experiments import multilevel as exp  # noqa: E402
from fastopt.multilevel import Poisson1D, _Objective, gauss_legendre  # noqa: E402
from fastopt.optim import Adam  # noqa: E402

LEVELS = (0, 3)
IMPLS = ["fastopt", "fastopt-eval", "torch", "torch-1thread", "torch-eval", "torch-eval-1thread"]
SPECS = exp.level_specs(quick=False)


def group(level):
    spec = SPECS[level]
    return (f"multilevel level {level}: 1-{1 + 2 * len(spec.wavenumbers)}-20-20-1 tanh, J={spec.n_points}, "
            "Adam step float64")


for _l in LEVELS:
    _g = group(_l)
    best_of(_g, "torch-best", ("torch", "torch-1thread"))
    best_of(_g, "torch-eval-best", ("torch-eval", "torch-eval-1thread"))
    ratio(f"multilevel level {_l}: fastopt vs torch at its best (1 or 2 threads), Adam step", (_g, "fastopt"),
          (_g, "torch-best"), info_at_least=exp.TORCH_FACTOR,
          note=f"as the experiment times it; it claims >= {exp.TORCH_FACTOR}x over the levels together")
    ratio(f"multilevel level {_l}: fastopt vs torch (default threads), Adam step", (_g, "fastopt"), (_g, "torch"),
          note="PyTorch's default configuration")
    ratio(f"multilevel level {_l}: fastopt-eval vs torch-eval at its best (loss and gradient)", (_g, "fastopt-eval"),
          (_g, "torch-eval-best"), note="an L-BFGS iteration's work, the optimisers' own overhead excluded")


@summary_section
def _table(results):
    return relative_table(results, "### Multilevel level networks (full size), microseconds per call and "
                                   "time(row) / time(fastopt)", ("level", group), LEVELS, IMPLS, digits=0)


def _level(level):
    """The level's network (seeded, output layer not zeroed: every gradient entry is checked) and its data."""
    spec = SPECS[level]
    net = spec.make_net(seed=level)
    x, w = gauss_legendre(spec.n_points // spec.gauss_order, spec.gauss_order)
    target = Poisson1D.exp_sine().f(x[:, 0])        # level 0's right-hand side; the values do not change the time
    return spec, net, x, target, w


class _FastoptStep:
    def __init__(self, level, adam=True):
        spec, self.net, x, target, w = _level(level)
        self.objective = _Objective(self.net, x, target, w, -1.0, 256)
        self.grad = self.net.params.zeros_like()
        self.opt = Adam(self.net.params, lr=spec.stages[0].options["lr"]) if adam else None

    def __call__(self):
        self.objective(self.grad)
        if self.opt is not None:
            self.opt.step(self.grad)


class _TorchStep:
    def __init__(self, mt, level, adam=True):
        spec, net, x, target, w = _level(level)
        self.twin = mt.TorchLevel(net, x, target, w, sign=-1.0)
        self.opt = self.twin.adam(spec.stages[0].options["lr"]) if adam else None

    def __call__(self):
        if self.opt is not None:
            self.twin.step(self.opt)
        else:
            self.twin.closure()


CASES = [(level, impl) for level in LEVELS for impl in IMPLS]


@pytest.mark.parametrize("level,impl", CASES, ids=[f"level{l}-{i}" for l, i in CASES])
def test_level_step(benchmark, timed, request, level, impl):
    torch_mod = request.getfixturevalue("torch")
    from fastopt.experiments import _multilevel_torch as mt

    # a wrong twin must not be timed: the loss and gradient at the start, both ways
    fast = _FastoptStep(level, adam=False)
    value = fast.objective(fast.grad)
    tvalue, tgrad = _TorchStep(mt, level, adam=False).twin.loss_and_grad()
    g = fast.grad.data
    assert abs(tvalue - value) <= 1e-12 * abs(value), "the twin's loss differs from fastopt's"
    assert np.max(np.abs(tgrad - g)) <= 1e-12 * np.max(np.abs(g)), "the twin's gradient differs from fastopt's"
    if impl.startswith("fastopt"):
        step = _FastoptStep(level, adam=impl == "fastopt")
    else:
        step = _TorchStep(mt, level, adam=not impl.startswith("torch-eval"))
    with torch_threads(torch_mod, 1 if impl.endswith("-1thread") else None):
        timed(benchmark, step, group=group(level), label=impl, budget_s=1.5, min_rounds=5, level=level,
              J=SPECS[level].n_points)
