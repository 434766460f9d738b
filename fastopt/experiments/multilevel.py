r"""Multilevel training with Fourier features against one network on the same budget.

The lecture's multilevel example: ``-u'' = f`` on (0, 1), ``u(0) = u(1) = 0``, with the exact
solution ``u = exp(sin 2 pi x) - 1 + x^3 - x`` (:meth:`fastopt.multilevel.Poisson1D.exp_sine`). Its
harmonics of ``2 pi`` decay geometrically (Bessel weights ``I_n(1)``), so after each level the
remaining error has finer detail.

**Levels** (:func:`fastopt.multilevel.train_levels`): four 1-[features]-20-20-1 tanh networks
times ``x (1 - x)``; level ``l`` has the Fourier-feature first layer
``(x, cos k x, sin k x)`` for ``k in pi {1, ..., 2^(l + 1)}`` (2, 4, 8, 16 wavenumbers: the
lecture's "higher frequencies in the later refinements"), more collocation points as the
frequencies rise (256, 512, 1024, 1024: composite Gauss-Legendre; fewer let the high-frequency
levels overfit between the points), and Adam (1000 steps; lr 1e-2 on level 0, 1e-3 on the
corrections) then L-BFGS (1000 iterations). Each correction is scaled by the "solve" rule (the
RMS of a finite-difference solution of its residual equation) and starts at zero (its output
layer zeroed).

**The comparison**: one network with the finest level's features (``k in pi {1..16}``), hidden
widths (40, 40) (3041 parameters against the levels' 3124 together), on the finest point set,
with the same total budget (4000 Adam steps then 4000 L-BFGS iterations).

Quick size: three levels (``k in pi {1, 2}, pi {1..4}, pi {1..8}``; 256, 512, 768 points), 300
Adam steps + 1000 L-BFGS iterations each; the single network (widths (32, 32), features
``pi {1..8}``, 768 points) gets 900 + 3000. Its claims ask for less (>= 0.5 orders overall and
>= 3x below the single network, against 1 order and 10x at full size).

Measured (seed 0, float64): full size, relative L2 3.5e-5 -> 8.9e-6 -> 2.0e-8 -> 1.7e-8 over the
four levels (H1 2.3e-5 -> 1.2e-8), against 7.7e-6 for the single network; quick size, 5.1e-5 ->
1.1e-6 -> 5.7e-8 against 4.7e-5. The L2 error of a level can stall while its H1 error falls: the
residual loss weighs an error mode of wavenumber k by k^4, so smooth error is removed last.

Reported: relative L2 and H1 errors of the sum after each level, the residual loss of the sum on
a fine rule, the scales, times (total, per level, per loss-and-gradient evaluation).

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


def _stages(adam_steps, lbfgs_steps, lr):
    return (Stage("adam", adam_steps, {"lr": lr}), Stage("lbfgs", lbfgs_steps))


def level_specs(quick=False):
    """The levels: wavenumbers ``pi {1..2^(l+1)}``, widths (20, 20), Adam then L-BFGS (module docstring)."""
    n_levels, adam, bfgs = (3, 300, 1000) if quick else (4, 1000, 1000)
    points = (256, 512, 768) if quick else (256, 512, 1024, 1024)
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


def run(quick=False, seed=0, backend="cpu", progress=False) -> dict:
    """Train the levels and the single network; errors, losses, scales and times.

    Returns:
      dict: ``levels`` (per level: wavenumbers, n_params, n_points, scale, l2, h1, residual, loss,
      time_s, evaluations, eval_us), ``histories`` (per level, the loss of the sum per step),
      ``stage_steps``, ``single`` (l2, h1, residual, n_params, time_s, evaluations, eval_us,
      history), ``time_s`` (levels in total), ``profile`` (x, u, u_h and per-level errors on a
      grid, for the plot), ``speed``.
    """
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
    return {"problem": problem.name, "levels": levels, "histories": res.histories, "stage_steps": res.stage_steps,
            "single": dict(srow, n_params=int(single.nets[0].params.size), hidden=list(sspec.hidden),
                           wavenumbers=[float(k / math.pi) for k in sspec.wavenumbers],
                           eval_us=1e6 * srow["time_s"] / srow["evaluations"], history=single.histories[0],
                           time_s=t_single),
            "time_s": t_levels, "profile": profile, "backend": backend, "quick": bool(quick),
            "speed": {"eval_us": {**{f"level {l['level']}": l["eval_us"] for l in levels},
                                  "single": 1e6 * t_single / srow["evaluations"]},
                      "what": "one loss-and-gradient evaluation (u, u', u'' forward + backward on all the "
                              "level's points), wall time"}}


def claims(result) -> list:
    """The error falls level by level, by orders of magnitude overall, far below the single network."""
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
    ]


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
