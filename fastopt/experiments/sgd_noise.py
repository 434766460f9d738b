r"""Noisy SGD on a quadratic: the noise floor of a constant rate, and decaying rates that beat it.

The lecture's toy model of stochastic gradients: on ``L(theta) = A theta . theta / 2`` (eigenvalues
log-uniform in [0.1, 10], minimiser theta* = 0) each step sees the gradient plus noise::

    theta_{k+1} = theta_k - gamma_k (A theta_k + eps_k),     eps_k ~ N(0, sigma^2 I),  sigma^2 = 1e-2.

**Constant rate: a plateau.** In the eigenbasis each component is an AR(1) process
``t_{k+1} = (1 - gamma lambda) t_k - gamma e_k``; its stationary variance solves the discrete
Lyapunov equation ``V = (I - gamma A) V (I - gamma A) + gamma^2 sigma^2 I``, i.e. per eigenvalue::

    v(lambda) = gamma^2 sigma^2 / (1 - (1 - gamma lambda)^2) = gamma sigma^2 / (2 lambda - gamma lambda^2),

so ``E|theta_k|^2 -> sum_i v(lambda_i)``: the error stalls at ``O(sqrt(gamma) sigma)`` however long
one trains (the measured plateau is compared with this prediction).

**Decaying rates.** ``gamma_k = gamma_0 (1 + k / k0)^(-1)`` (algebraic, ~1/k; Robbins-Monro) and
``gamma_k = gamma_0 r^(k / T)`` (exponential) remove the floor. For ``gamma_k = c / (k + k0)`` the
variance equation ``v' = -2 gamma_k lambda v + gamma_k^2 sigma^2`` has the asymptotic solution
``v_k = gamma_k c sigma^2 / (2 c lambda - 1)`` when ``2 c lambda > 1``: ``E|theta_k|^2`` falls like
``1/k``, the lecture's ``(theta_k - theta*) / sqrt(gamma_k) -> N(0, V)`` with ``A V + V A = sigma^2 I``
(up to the ``2 c lambda - 1`` correction): a degenerate Hessian (small lambda) or a large variance
makes V big. The exponential decay has a finite ``sum gamma_k``, so it can stop short; here it
decays slowly enough to finish below the constant rate's floor.

Every chain updates through one fused :func:`fastopt.sgd_step` over all ``R`` independent
replicas at once (a flat ``dim x R`` buffer); errors are RMS over the replicas.

Example:
  >>> from fastopt.experiments import sgd_noise
  >>> r = sgd_noise.run(quick=True)
  >>> all(ok for _, _, ok in sgd_noise.claims(r))
  True

References:
  J. M. Taylor, Optimisation strategies (lecture), "SGD with noisy, infinite data", "Decaying learning rates".
  H. Robbins, S. Monro, Ann. Math. Statist. 22 (1951).  B. T. Polyak, A. B. Juditsky, Acceleration of
  stochastic approximation by averaging, SIAM J. Control Optim. 30 (1992) (the Lyapunov equation).
  L. Bottou, F. E. Curtis, J. Nocedal, SIAM Review 60 (2018), Section 4.
"""
from __future__ import annotations

import time

import numpy as np

import fastopt
from fastopt import schedules

from ._common import Claim, figure, fmt, progress_bar, save, xp_of
from .gd_quadratic import quadratic

__all__ = ["plateau", "algebraic_prediction", "run", "claims", "plot", "SIGMA2", "GAMMA0"]

#: Variance of each component of the gradient noise.
SIGMA2 = 1e-2
#: The initial (and constant) learning rate, below 2 / lambda_max = 0.2.
GAMMA0 = 0.1


def plateau(lam, gamma, sigma2=SIGMA2):
    """The stationary ``E|theta|^2 = sum_i gamma sigma^2 / (2 lambda_i - gamma lambda_i^2)`` of constant-rate SGD."""
    lam = np.asarray(lam, dtype=np.float64)
    return float(np.sum(gamma * sigma2 / (2 * lam - gamma * lam ** 2)))


def algebraic_prediction(lam, gamma_k, c, sigma2=SIGMA2):
    """``E|theta_k|^2 ~ sum_i gamma_k c sigma^2 / (2 c lambda_i - 1)`` for ``gamma_k = c / (k + k0)`` (2 c lambda > 1)."""
    lam = np.asarray(lam, dtype=np.float64)
    return np.asarray(gamma_k)[..., None] * c * sigma2 / (2 * c * lam - 1)


def _schedules(steps):
    k0 = 100.0
    return {
        "constant": schedules.constant(GAMMA0),
        "exponential": schedules.exponential(GAMMA0, 1e-3, transition_steps=steps),   # 0.1 -> 1e-4 over the run
        "algebraic (~1/k)": schedules.algebraic(GAMMA0, alpha=1.0, k0=k0),
    }, GAMMA0 * k0


def _chain(a, theta0, lr, steps, seed, backend, record):
    """One schedule, R replicas at once; returns (RMS error per recorded step, seconds, steps)."""
    xp = xp_of(backend)
    dim, R = theta0.shape
    theta = xp.asarray(theta0.copy())
    grad = xp.empty_like(theta)
    a_dev = xp.asarray(a)
    rng = np.random.default_rng(seed + 1)           # the same noise for every schedule
    sigma = np.sqrt(SIGMA2)
    block = 256
    out = [float(np.sqrt(np.sum(theta0 ** 2) / R))]
    elapsed = 0.0
    flat_t, flat_g = theta.reshape(-1), grad.reshape(-1)
    for start in range(0, steps, block):
        n = min(block, steps - start)
        noise = xp.asarray(sigma * rng.standard_normal((n, dim, R)))
        t0 = time.perf_counter()
        for i in range(n):
            xp.dot(a_dev, theta, out=grad)
            grad += noise[i]
            fastopt.sgd_step(flat_t, flat_g, lr=lr(start + i), backend=backend)
            if record[start + i]:
                out.append(float(xp.sqrt(xp.sum(theta * theta) / R)))
        elapsed += time.perf_counter() - t0
    return np.asarray(out), elapsed


def run(quick=False, seed=0, backend="cpu", progress=False) -> dict:
    """Constant, exponential and algebraic rates on the noisy quadratic.

    Sizes: dim 50, 32 replicas, 20000 steps (quick: dim 20, 16 replicas, 4000 steps).
    Returns:
      dict: ``curves`` {schedule: RMS error at ``steps_recorded``}, ``steps_recorded``, ``rates``
      {schedule: gamma_k at those steps}, ``plateau_measured`` (RMS over the second half of the
      constant run and its replicas), ``plateau_predicted``, ``final`` {schedule: RMS error over the
      last 10% of steps}, ``algebraic_predicted`` (the 1/k prediction at the recorded steps),
      ``speed``, sizes.
    """
    dim, R, steps = (20, 16, 4000) if quick else (50, 32, 20000)
    a, lam = quadratic(dim, seed)
    theta0 = np.random.default_rng(seed).standard_normal((dim, R))
    rec_steps = np.unique(np.concatenate([np.arange(1, min(steps, 200) + 1),
                                          np.geomspace(1, steps, 400).astype(int), np.arange(10, steps + 1, 10)]))
    record = np.zeros(steps, dtype=bool)
    record[rec_steps - 1] = True
    scheds, c = _schedules(steps)
    bar = progress_bar(progress, len(scheds), "sgd_noise", unit="schedule")
    curves, rates, total_time = {}, {}, 0.0
    for name, lr in scheds.items():
        curves[name], t = _chain(a, theta0, lr, steps, seed, backend, record)
        rates[name] = np.array([lr(int(k) - 1) for k in rec_steps])
        total_time += t
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    ks = np.concatenate([[0], rec_steps])
    half, tail = ks >= steps // 2, ks >= int(0.9 * steps)
    const = curves["constant"]
    measured = float(np.sqrt(np.mean(const[half] ** 2)))
    gamma_alg = np.array([scheds["algebraic (~1/k)"](int(k)) for k in ks])
    alg_pred = np.sqrt(algebraic_prediction(lam, gamma_alg, c).sum(axis=-1))
    return {"curves": curves, "steps_recorded": ks, "rates": rates, "steps": steps, "dim": dim, "replicas": R,
            "sigma2": SIGMA2, "gamma0": GAMMA0, "plateau_measured": measured,
            "plateau_predicted": float(np.sqrt(plateau(lam, GAMMA0))),
            "final": {name: float(np.sqrt(np.mean(v[tail] ** 2))) for name, v in curves.items()},
            "algebraic_predicted": alg_pred, "algebraic_c": c, "backend": backend,
            "speed": {"step_us": 1e6 * total_time / (len(scheds) * steps),
                      "what": f"one noisy SGD step of {R} replicas x dim {dim} (matvec + fused sgd_step)"}}


def claims(result) -> list:
    """The constant rate stalls at the Lyapunov plateau; both decaying rates end below it."""
    meas, pred = result["plateau_measured"], result["plateau_predicted"]
    fin = result["final"]
    ratio = meas / pred
    alg_end = fin["algebraic (~1/k)"]
    alg_pred_end = float(result["algebraic_predicted"][-1])
    return [
        Claim("constant lr stalls at the predicted noise plateau (Lyapunov: sum gamma s^2/(2 l - gamma l^2))",
              f"RMS error {fmt(meas)} measured vs {fmt(pred)} predicted (ratio {ratio:.3f})", abs(ratio - 1) < 0.1),
        Claim("exponentially decaying lr ends below the constant lr's plateau",
              f"{fmt(fin['exponential'])} vs {fmt(fin['constant'])}", fin["exponential"] < 0.5 * fin["constant"]),
        Claim("algebraically (~1/k) decaying lr ends below the plateau, near the 1/k prediction",
              f"{fmt(alg_end)} vs {fmt(fin['constant'])} (1/k prediction {fmt(alg_pred_end)})",
              alg_end < 0.5 * fin["constant"] and 0.5 < alg_end / alg_pred_end < 2.0),
    ]


def plot(result, path):
    """RMS error against the iteration for the three schedules, with the predicted plateau and 1/k law."""
    fig, (ax0, ax1) = figure(2)
    ks = result["steps_recorded"]
    for name, curve in result["curves"].items():
        ax0.loglog(np.maximum(ks, 1), curve, label=name)
    ax0.axhline(result["plateau_predicted"], color="k", ls=":", label="predicted plateau (constant lr)")
    ax0.loglog(np.maximum(ks[1:], 1), result["algebraic_predicted"][1:], "k--", lw=0.8, label="1/k prediction")
    ax0.set_xlabel("iteration k")
    ax0.set_ylabel("RMS |theta_k - theta*|")
    ax0.set_title(f"noisy SGD, sigma^2 = {result['sigma2']:g}, dim {result['dim']}, {result['replicas']} replicas")
    ax0.legend(fontsize=7)
    for name, r in result["rates"].items():
        ax1.loglog(ks[1:], r, label=name)
    ax1.set_xlabel("iteration k")
    ax1.set_ylabel("learning rate gamma_k")
    ax1.legend(fontsize=8)
    return save(fig, path)
