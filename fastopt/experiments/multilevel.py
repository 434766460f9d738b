r"""Multilevel training with Fourier features against one network on the same budget.

The lecture's multilevel example: ``-u'' = f`` on (0, 1), ``u(0) = u(1) = 0``, with the exact
solution ``u = exp(sin 2 pi x) - 1 + x^3 - x`` (:meth:`fastopt.multilevel.Poisson1D.exp_sine`). Its
harmonics of ``2 pi`` decay geometrically (Bessel weights ``I_n(1)``), so after each level the
remaining error has finer detail.

**Levels** (:func:`fastopt.multilevel.train_levels`): four 1-[features]-20-20-1 tanh networks
times ``x (1 - x)``; level ``l`` has the Fourier-feature first layer
``(x, cos k x, sin k x)`` for ``k in pi {1, ..., 2^(l + 1)}`` (2, 4, 8, 16 wavenumbers: the
lecture's "higher frequencies in the later refinements"), more collocation points as the
frequencies rise (256, 512, 1024, 2048: composite Gauss-Legendre; fewer let the high-frequency
levels overfit between the points: with 1024 on the last level its L2 and H1 errors still fell
but the residual on the fine evaluation rule rose from 6.9e-11 to 1.6e-10; with 2048 it falls to
1.8e-12), and Adam (1000 steps; lr 1e-2 on level 0, 1e-3 on the corrections) then L-BFGS (1000
iterations, 30 correction pairs). Each correction is scaled by the "solve" rule (the RMS of a
finite-difference solution of its residual equation) and starts at zero (its output layer zeroed).

**The comparison**: one network with the finest level's features (``k in pi {1..16}``), hidden
widths (40, 40) (3041 parameters against the levels' 3124 together), on the finest point set,
with the same total budget (4000 Adam steps then 4000 L-BFGS iterations).

Quick size: three levels (``k in pi {1, 2}, pi {1..4}, pi {1..8}``; 256, 512, 768 points), 300
Adam steps + 1000 L-BFGS iterations each; the single network (widths (32, 32), features
``pi {1..8}``, 768 points) gets 900 + 3000. Its claims ask for less (>= 0.5 orders overall and
>= 3x below the single network, against 1 order and 10x at full size).

Measured (seed 0, float64): full size, relative L2 7.2e-6 -> 7.3e-7 -> 1.1e-8 -> 3.4e-9 over the
four levels (H1 5.3e-6 -> 3.8e-9; residual 4.7e-6 -> 1.8e-12), against 7.5e-6 for the single network
(2200x; levels 10 s, single network 24 s); quick size,
6.6e-7 -> 2.3e-6 -> 1.3e-7 against 1.3e-5 (100x). The L2 error of a level can stall, or rise, while
its H1 error falls: the residual loss weighs an error mode of wavenumber k by k^4, so smooth error
is removed last. The outcome of a level's L-BFGS is sensitive to rounding (a change of the kernels'
summation order moved the quick run's final L2 between 8e-8 and 2e-6 with 10 correction pairs;
over seeds 0-2 with 30 pairs it is 2.0e-8 to 1.3e-7).

Reported: relative L2 and H1 errors of the sum after each level, the residual loss of the sum on
a fine rule, the scales, times (total, per level, per loss-and-gradient evaluation).

**Against PyTorch** (issue 5: "at a small fraction of the time that a PyTorch implementation needs
on the same machine"; ``run(torch=True)``, and ``fastopt demo`` whenever PyTorch is importable):
after the training, every level is trained again from its start for a fixed number of Adam steps
(quick: 24, full: 200) by fastopt and by a PyTorch twin (:mod:`fastopt.experiments._multilevel_torch`:
the same network and weights, the same residual loss on the same data with ``u''`` by double
backward, ``torch.optim.Adam`` with the level's lr), both warmed up first and timed in alternating
short blocks (best block: noise only adds time). PyTorch runs with its default thread count and
with one, each on its own copy, and counts at the faster (on two cores shared with another process
its two OpenMP threads measured up to 75x slower; fastopt's level training is single-threaded).
The losses must agree (float64: 1e-12 at the start, 1e-11 over the first 20 steps; measured
<= 1.5e-15). Reported per level: time per Adam step and per loss-and-gradient evaluation (the work
of an L-BFGS iteration; the optimisers' own overhead, SciPy's L-BFGS-B for fastopt and
``torch.optim.LBFGS`` for PyTorch, is left out on both sides) and their ratios over the levels.
Measured (2 shared cores, PyTorch 2.13 CPU): quick size, per Adam step 250 / 530 / 770 us against
2600 / 3300 / 4300 us (7x over the levels; 5.5-6.2x with another process on one core), per
evaluation 3.4-6x; full size 6.2x per Adam step (5.2-5.7x on its 1024-point levels). The claim
asks for >= 4x per Adam step over the levels (with the losses in agreement). The comparison adds
about 4 s at quick size, 2.8 s of it PyTorch's fixed costs: its import (1.4 s) and its first
optimiser (1.4 s: ``torch.optim`` imports ``torch._dynamo`` then), neither of them timed.

Example:
  >>> from fastopt.experiments import multilevel
  >>> [len(spec.wavenumbers) for spec in multilevel.level_specs(quick=False)]
  [2, 4, 8, 16]

References:
  Z. Aldirany, R. Cottereau, M. Laforest, S. Prudhomme, Multi-level neural networks for accurate
  solutions of boundary-value problems, CMAME 418 (2024) 116666.  J. M. Taylor, Optimisation
  strategies (lecture), "Multilevel NNs", "Comparison".
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..multilevel import LevelSpec, Poisson1D, Stage, gauss_legendre, train_levels
from ._common import Claim, figure, fmt, save

__all__ = ["level_specs", "single_spec", "run", "claims", "plot"]


#: L-BFGS correction pairs. SciPy's default (10) left the quick run's finest level stalled at a
#: loss of ~1e-8 for some seeds and not others (final L2 from 2.7e-8 to 1.8e-6 over seeds 0-2, and
#: moved by ulp-level changes of the kernels); with 30 pairs, 2.0e-8 to 1.3e-7 (the residual loss
#: of a PINN is ill-conditioned: its Hessian weighs a mode of wavenumber k by k^4).
LBFGS_HISTORY = 30


def _stages(adam_steps, lbfgs_steps, lr):
    return (Stage("adam", adam_steps, {"lr": lr}), Stage("lbfgs", lbfgs_steps, {"history": LBFGS_HISTORY}))


def level_specs(quick=False):
    """The levels: wavenumbers ``pi {1..2^(l+1)}``, widths (20, 20), Adam then L-BFGS (module docstring)."""
    n_levels, adam, bfgs = (3, 300, 1000) if quick else (4, 1000, 1000)
    points = (256, 512, 768) if quick else (256, 512, 1024, 2048)
    return [LevelSpec(hidden=(20, 20), wavenumbers=tuple(math.pi * np.arange(1, 2 ** (l + 1) + 1)),
                      stages=_stages(adam, bfgs, 1e-2 if l == 0 else 1e-3), n_points=points[l])
            for l in range(n_levels)]


def single_spec(quick=False):
    """One network on the levels' total budget, with the finest features and points (module docstring)."""
    levels = level_specs(quick)
    finest = levels[-1]
    adam = sum(Stage(*s).steps for spec in levels for s in spec.stages if Stage(*s).name == "adam")
    bfgs = sum(Stage(*s).steps for spec in levels for s in spec.stages if Stage(*s).name == "lbfgs")
    return LevelSpec(hidden=(32, 32) if quick else (40, 40), wavenumbers=finest.wavenumbers,
                     stages=_stages(adam, bfgs, 1e-2), n_points=finest.n_points)


def run(quick=False, seed=0, backend="cpu", progress=False, torch=False) -> dict:
    """Train the levels and the single network; errors, losses, scales and times.

    Args:
      quick, seed, backend, progress: as every experiment's (module docstring of ``_common``).
      torch: also time each level's Adam steps against the PyTorch twin (module docstring):
        True (needs PyTorch and the "cpu" backend), False, or "auto" (when PyTorch is importable
        and the backend is "cpu": what ``fastopt demo`` passes).
    Returns:
      dict: ``levels`` (per level: wavenumbers, n_params, n_points, scale, l2, h1, residual, loss,
      time_s, evaluations, eval_us), ``histories`` (per level, the loss of the sum per step),
      ``stage_steps``, ``single`` (l2, h1, residual, n_params, time_s, evaluations, eval_us,
      history), ``time_s`` (levels in total), ``profile`` (x, u, u_h and per-level errors on a
      grid, for the plot), ``speed``, and with the comparison ``torch`` (per level, the dict of
      :func:`fastopt.experiments._multilevel_torch.compare_level`; None without it), ``torch_time_s``
      (the comparison's wall time, PyTorch's import included) and ``speed``
      entries ``adam_us`` (per level, fastopt and PyTorch), ``torch_eval_us`` (per level) and
      ``torch_ratio`` (PyTorch's time / fastopt's over the levels).
    Raises:
      ValueError: ``torch=True`` with a backend other than "cpu" (the comparison is on the CPU).
      ImportError: ``torch=True`` without PyTorch.
    """
    with_torch = _want_torch(torch, backend)
    problem = Poisson1D.exp_sine()
    specs = level_specs(quick)
    t0 = time.perf_counter()
    res = train_levels(problem, specs, seed=seed, backend=backend, progress=progress)
    t_levels = time.perf_counter() - t0
    levels = []
    for l, (spec, row) in enumerate(zip(specs, res.summary())):
        levels.append(dict(row, wavenumbers=[float(k / math.pi) for k in spec.wavenumbers],
                           n_params=int(res.nets[l].params.size), n_points=spec.n_points,
                           eval_us=1e6 * row["time_s"] / row["evaluations"]))
    sspec = single_spec(quick)
    t0 = time.perf_counter()
    single = train_levels(problem, [sspec], seed=seed + 100, backend=backend, progress=progress)
    t_single = time.perf_counter() - t0
    srow = single.summary()[0]
    x = np.linspace(0.0, 1.0, 801)
    profile = {"x": x, "u": problem.u(x), "levels": [res.solution.truncated(l + 1)(x) for l in range(len(specs))],
               "single": single.solution(x)}
    speed = {"eval_us": {**{f"level {l['level']}": l["eval_us"] for l in levels},
                         "single": 1e6 * t_single / srow["evaluations"]},
             "what": "one loss-and-gradient evaluation (u, u', u'' forward + backward on all the "
                     "level's points), wall time"}
    comparison, t_torch = None, None
    if with_torch:
        t0 = time.perf_counter()
        comparison = _compare_torch(problem, specs, res, seed, quick)
        t_torch = time.perf_counter() - t0
        speed = _torch_speed(speed, comparison)
    return {"problem": problem.name, "levels": levels, "histories": res.histories, "stage_steps": res.stage_steps,
            "single": dict(srow, n_params=int(single.nets[0].params.size), hidden=list(sspec.hidden),
                           wavenumbers=[float(k / math.pi) for k in sspec.wavenumbers],
                           eval_us=1e6 * srow["time_s"] / srow["evaluations"], history=single.histories[0],
                           time_s=t_single),
            "time_s": t_levels, "profile": profile, "backend": backend, "quick": bool(quick),
            "torch": comparison, "torch_time_s": t_torch, "speed": speed}


#: Adam steps, timed blocks and loss-and-gradient evaluations per level in the PyTorch comparison
#: (quick, full). Many short blocks: the best block is the one least disturbed by other processes.
TORCH_STEPS = {True: (24, 8, 6), False: (200, 10, 30)}
#: The claimed speed-up per Adam step over the levels: measured 7x (quick) and 6.2x (full) on a quiet
#: machine, 5.5x (quick) with another process on one of the two cores (module docstring).
TORCH_FACTOR = 4


def _want_torch(torch, backend):
    """Whether to run the PyTorch comparison (``run``'s ``torch`` argument)."""
    if torch == "auto":
        import importlib.util  # noqa: PLC0415

        return backend == "cpu" and importlib.util.find_spec("torch") is not None
    if torch not in (True, False):
        raise ValueError(f"multilevel.run: torch must be True, False or 'auto', got {torch!r}")
    if torch and backend != "cpu":
        raise ValueError(f"multilevel.run: the PyTorch comparison runs on the CPU; backend is {backend!r}")
    if torch:
        import torch as _  # noqa: F401, PLC0415 - an ImportError here names what is missing
    return bool(torch)


def _compare_torch(problem, specs, res, seed, quick):
    """Each level's Adam steps and evaluations, fastopt against the PyTorch twin, from the level's start."""
    from . import _multilevel_torch  # noqa: PLC0415 - imports torch

    steps, blocks, evaluations = TORCH_STEPS[bool(quick)]
    return [_multilevel_torch.compare_level(problem, spec, l, res.nets, res.scales, seed=seed, steps=steps,
                                            blocks=blocks, evaluations=evaluations) for l, spec in enumerate(specs)]


def _torch_speed(speed, comparison):
    """``speed`` with the comparison's times (inner keys say what: the report prints dicts without their key)."""
    fast, slow = (sum(c[k] for c in comparison) for k in ("adam_us", "torch_adam_us"))
    e_fast, e_slow = (sum(c[k] for c in comparison) for k in ("eval_us", "torch_eval_us"))
    c0 = comparison[0]
    return {**speed,
            "adam_us": {f"Adam level {c['level']} {who}": c[key] for c in comparison
                        for who, key in (("fastopt", "adam_us"), ("PyTorch", "torch_adam_us"))},
            "torch_eval_us": {f"eval level {c['level']} PyTorch": c["torch_eval_us"] for c in comparison},
            "torch_ratio": f"{slow / fast:.1f}x per Adam step, {e_slow / e_fast:.1f}x per evaluation",
            "what": speed["what"] + f"; Adam: one Adam step (loss, gradient, update), best of {c0['blocks']} blocks "
                    f"of {c0['steps']} steps in all, against the PyTorch twin (the faster of "
                    f"{' and '.join(str(n) for n in c0['torch_by_threads'])} threads), whose eval is its closure "
                    "(zero_grad, loss, backward); torch_ratio: PyTorch's time / fastopt's, summed over the levels"}


def claims(result) -> list:
    """The error falls level by level, by orders of magnitude overall, far below the single network; with the
    PyTorch comparison, fastopt's Adam steps take a small fraction of PyTorch's time, with the same losses."""
    lv = result["levels"]
    l2 = [l["l2"] for l in lv]
    h1 = [l["h1"] for l in lv]
    single = result["single"]
    falls_h1 = all(b < a for a, b in zip(h1, h1[1:]))
    res = [l["residual"] for l in lv]
    falls_res = all(b < a for a, b in zip(res, res[1:]))
    orders = math.log10(l2[0] / l2[-1])
    # at quick size (3 levels, a third of the steps) the margins are smaller: say so in the claim
    target, min_orders, factor = 1e-5, (0.5 if result["quick"] else 1.0), (3 if result["quick"] else 10)
    return [
        Claim("the H1 error and the PDE residual of the summed solution fall level by level",
              "H1 " + " > ".join(fmt(v) for v in h1) + "; residual " + " > ".join(fmt(v) for v in res),
              falls_h1 and falls_res),
        Claim(f"the L2 error falls >= {min_orders:g} orders overall, to <= {target:g} (float64)",
              "L2 " + " -> ".join(fmt(v) for v in l2) + f" ({orders:.1f} orders below level 0)",
              l2[-1] <= target and orders >= min_orders),
        Claim(f"far below one network of comparable size on the same budget (>= {factor}x in L2)",
              f"multilevel {fmt(l2[-1])} vs single {fmt(single['l2'])} ({single['l2'] / l2[-1]:.0f}x); "
              f"{sum(l['n_params'] for l in lv)} vs {single['n_params']} parameters; "
              f"{result['time_s']:.1f} s vs {single['time_s']:.1f} s",
              single["l2"] >= factor * l2[-1]),
    ] + _torch_claims(result)


def _torch_claims(result):
    """The speed-up over the PyTorch twin, when it ran (absent, not failed, without PyTorch)."""
    comparison = result.get("torch")
    if not comparison:
        return []
    n = TORCH_FACTOR
    fast = sum(c["adam_us"] for c in comparison)
    slow = sum(c["torch_adam_us"] for c in comparison)
    e_fast = sum(c["eval_us"] for c in comparison)
    e_slow = sum(c["torch_eval_us"] for c in comparison)
    agree = all(c["agree"] for c in comparison)
    per_level = ", ".join(f"{c['adam_us']:.0f} vs {c['torch_adam_us']:.0f} us" for c in comparison)
    return [Claim(f"fastopt's level training takes a small fraction of PyTorch's time (>= {n}x per Adam step "
                  "over the levels, the same losses)",
                  f"per Adam step {per_level} ({slow / fast:.1f}x); per loss-and-gradient evaluation "
                  f"{e_slow / e_fast:.1f}x; losses agree to {fmt(max(c['start_rel_diff'] for c in comparison))} "
                  f"at the start, {fmt(max(c['track_rel_diff'] for c in comparison))} over "
                  f"{comparison[0]['track_steps']} steps, {fmt(max(c['final_rel_diff'] for c in comparison))} "
                  f"after {comparison[0]['steps']}; the comparison took {result.get('torch_time_s') or 0:.1f} s"
                  + ("" if agree else " (DIFFER: beyond the tolerance)"),
                  agree and slow >= n * fast)]


def plot(result, path):
    """Loss of the sum per step with the levels marked, the errors per level, and the pointwise errors."""
    fig, (ax0, ax1, ax2) = figure(3, width=15.0)
    offset = 0
    for l, h in enumerate(result["histories"]):
        steps = np.arange(offset, offset + len(h))
        ax0.semilogy(steps, h, lw=0.8, color="C0")
        if l:
            ax0.axvline(offset, color="r", lw=0.8)
        offset += len(h)
    sh = result["single"]["history"]
    ax0.semilogy(np.arange(len(sh)), sh, lw=0.8, color="C1", label="single network")
    ax0.set_xlabel("optimiser step (Adam, then L-BFGS iterations)")
    ax0.set_ylabel("int (L u_h - f)^2")
    ax0.set_title("loss; refinements in red")
    ax0.legend(fontsize=8)
    lv = result["levels"]
    ax1.semilogy([l["level"] for l in lv], [l["l2"] for l in lv], "o-", label="relative L2")
    ax1.semilogy([l["level"] for l in lv], [l["h1"] for l in lv], "s-", label="relative H1")
    ax1.axhline(result["single"]["l2"], color="C1", ls="--", label="single network (L2)")
    ax1.set_xlabel("level")
    ax1.set_xticks([l["level"] for l in lv])
    ax1.set_title("error of the summed solution")
    ax1.legend(fontsize=8)
    p = result["profile"]
    for l, uh in enumerate(p["levels"]):
        ax2.semilogy(p["x"], np.abs(uh - p["u"]) + 1e-300, lw=0.8, label=f"after level {l}")
    ax2.semilogy(p["x"], np.abs(p["single"] - p["u"]) + 1e-300, "k:", lw=0.8, label="single network")
    ax2.set_ylim(1e-12, 1)
    ax2.set_xlabel("x")
    ax2.set_title("|u - u_h|")
    ax2.legend(fontsize=7)
    return save(fig, path)
