r"""Gradient descent on a quadratic: exponential convergence below gamma = 2 / lambda_max, explosion above.

The lecture's first experiment. ``L(theta) = A theta . theta / 2`` with A symmetric positive
definite, eigenvalues log-uniform in [0.1, 10]. Gradient descent with a constant rate gamma is
linear::

    theta_{k+1} = theta_k - gamma A theta_k = (I - gamma A) theta_k,   theta_k = (I - gamma A)^k theta_0,

so in the eigenbasis every component is multiplied by ``1 - gamma lambda_i`` per step and the
error contracts (eventually) at the rate ``rho(gamma) = max_i |1 - gamma lambda_i|``: below 1 iff
``gamma < 2 / lambda_max = 0.2``. Too large a rate explodes, too small a rate (``1 - gamma
lambda_min`` close to 1) takes forever. Every update is one fused fastopt kernel call
(:func:`fastopt.sgd_step`) on the flat parameter vector.

Measured: the geometric-mean contraction of ``|theta_k|`` over the second half of each run
against ``rho(gamma)``.

Example:
  >>> from fastopt.experiments import gd_quadratic
  >>> r = gd_quadratic.run(quick=True)
  >>> all(ok for _, _, ok in gd_quadratic.claims(r))
  True

References:
  J. M. Taylor, Optimisation strategies (lecture, BCAM In-Deep workshop), "Discrete gradient descent".
  Y. Nesterov, Introductory Lectures on Convex Optimization (2004), Section 1.2.3.
"""
from __future__ import annotations

import time

import numpy as np

import fastopt

from ._common import Claim, figure, fmt, progress_bar, save, xp_of

__all__ = ["quadratic", "gd_sweep", "run", "claims", "plot", "RATES", "THRESHOLD"]

#: The swept learning rates (below and above the threshold 2 / lambda_max = 0.2).
RATES = (0.02, 0.05, 0.1, 0.15, 0.19, 0.21, 0.25)
#: 2 / lambda_max.
THRESHOLD = 0.2


def quadratic(dim: int, seed: int, lam_min: float = 0.1, lam_max: float = 10.0):
    """``(A, lam)``: symmetric positive definite A with eigenvalues log-uniform in [lam_min, lam_max] (ends included)."""
    rng = np.random.default_rng(seed)
    lam = np.exp(rng.uniform(np.log(lam_min), np.log(lam_max), dim))
    lam[0], lam[-1] = lam_min, lam_max
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (q * lam) @ q.T, lam


def gd_sweep(a, lam, rates, steps: int, seed: int, backend="cpu", progress=None, blowup=1e150):
    """Gradient descent at each rate from the same start: measured and predicted contraction per step.

    Args:
      a, lam: the matrix and its eigenvalues (:func:`quadratic`).
      rates: learning rates.  steps: steps per rate (a run stops early past ``blowup``).
      seed: of the start theta_0 ~ N(0, I).  backend: "cpu" (NumPy arrays) or "gpu" (CuPy).
      progress: a tqdm bar updated once per rate, or None.
    Returns:
      (rows, seconds per step): rows of dicts ``rate, predicted = max|1 - gamma lambda|,
      measured`` (the geometric mean contraction of |theta| over the second half), ``final``
      |theta|, ``norms`` (|theta_k|, k = 0..).
    """
    xp = xp_of(backend)
    theta0 = np.random.default_rng(seed).standard_normal(a.shape[0])
    a_dev = xp.asarray(a)
    fastopt.sgd_step(xp.zeros(1), xp.zeros(1), lr=0.1, backend=backend)   # load the kernel before timing
    rows, elapsed, n_steps = [], 0.0, 0
    for rate in rates:
        theta = xp.asarray(theta0.copy())
        grad = xp.empty_like(theta)
        norms = [float(np.linalg.norm(theta0))]
        t0 = time.perf_counter()
        for _ in range(steps):
            xp.dot(a_dev, theta, out=grad)
            fastopt.sgd_step(theta, grad, lr=float(rate), backend=backend)
            norms.append(float(xp.linalg.norm(theta)))
            if not np.isfinite(norms[-1]) or norms[-1] > blowup:
                break
        elapsed += time.perf_counter() - t0
        n_steps += len(norms) - 1
        half = (len(norms) - 1) // 2
        measured = (norms[-1] / norms[half]) ** (1.0 / max(1, len(norms) - 1 - half))
        rows.append(dict(rate=float(rate), predicted=float(np.max(np.abs(1 - rate * lam))),
                         measured=float(measured), final=float(norms[-1]), norms=np.asarray(norms)))
        if progress is not None:
            progress.update(1)
    return rows, elapsed / max(1, n_steps)


def run(quick=False, seed=0, backend="cpu", progress=False) -> dict:
    """Sweep the rates :data:`RATES` on a quadratic of dimension 200 (quick: 50), 1000 steps (quick: 300).

    Returns:
      dict: ``rows`` (see :func:`gd_sweep`), ``dim``, ``steps``, ``lam_min``, ``lam_max``,
      ``threshold`` (2 / lambda_max), ``speed`` (``{"step_us": time per GD step (matvec + fused
      update)}``), ``backend``.
    """
    dim, steps = (50, 300) if quick else (200, 1000)
    a, lam = quadratic(dim, seed)
    bar = progress_bar(progress, len(RATES), "gd_quadratic", unit="rate")
    rows, per_step = gd_sweep(a, lam, RATES, steps, seed, backend, bar)
    if bar is not None:
        bar.close()
    return {"rows": rows, "dim": dim, "steps": steps, "lam_min": float(lam.min()), "lam_max": float(lam.max()),
            "threshold": 2.0 / float(lam.max()), "backend": backend,
            "speed": {"step_us": 1e6 * per_step, "what": f"one GD step on dim {dim} (matvec + fused sgd_step)"}}


def claims(result) -> list:
    """GD converges iff gamma < 2 / lambda_max; it contracts at max|1 - gamma lambda| per step."""
    rows, thr = result["rows"], result["threshold"]
    below = [r for r in rows if r["rate"] < thr]
    above = [r for r in rows if r["rate"] > thr]
    start = rows[0]["norms"][0]
    converged = all(r["measured"] < 1 and r["final"] < start for r in below)
    exploded = all(r["measured"] > 1 and r["final"] > 1e3 * start for r in above)
    dev = max(abs(r["measured"] - r["predicted"]) for r in rows)
    return [
        Claim(f"GD converges exponentially for lr < 2/lambda_max = {thr:.2g}",
              f"contraction <= {fmt(max(r['measured'] for r in below), 3)} per step; |theta| {fmt(start)} -> "
              f"{fmt(max(r['final'] for r in below))} (worst)", converged),
        Claim(f"GD explodes for lr > 2/lambda_max = {thr:.2g}",
              f"growth >= {fmt(min(r['measured'] for r in above), 3)} per step; |theta| -> "
              f"{fmt(min(r['final'] for r in above))} (least)", exploded),
        Claim("GD contracts at max|1 - lr lambda| per step",
              f"max |measured - predicted| = {fmt(dev)} over {len(rows)} rates", dev < 0.01),
    ]


def plot(result, path):
    """|theta_k| per rate (log scale), and measured against predicted contraction per rate."""
    fig, (ax0, ax1) = figure(2)
    for r in result["rows"]:
        ax0.semilogy(r["norms"], label=f"lr {r['rate']:g}", ls="-" if r["rate"] < result["threshold"] else "--")
    ax0.set_ylim(1e-12, 1e12)
    ax0.set_xlabel("iteration k")
    ax0.set_ylabel("|theta_k - theta*|")
    ax0.set_title(f"GD on A theta.theta/2, eigenvalues in [0.1, 10] (dim {result['dim']})")
    ax0.legend(fontsize=7)
    rates = [r["rate"] for r in result["rows"]]
    ax1.plot(rates, [r["predicted"] for r in result["rows"]], "k-", label="max|1 - lr lambda|")
    ax1.plot(rates, [r["measured"] for r in result["rows"]], "o", label="measured")
    ax1.axvline(result["threshold"], color="r", ls=":", label="2 / lambda_max")
    ax1.axhline(1.0, color="gray", lw=0.5)
    ax1.set_xlabel("learning rate")
    ax1.set_ylabel("contraction per step")
    ax1.legend(fontsize=8)
    return save(fig, path)

