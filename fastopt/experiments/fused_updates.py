"""Fused updates at work: the lecture's gradient-descent threshold, momentum and Adam, and their speed.

The lecture's first experiment: L(theta) = A theta . theta / 2 with the eigenvalues of A
log-uniform in [0.1, 10]. Gradient descent contracts the error by max_i |1 - gamma lambda_i|
per step, so it converges for gamma < 2 / lambda_max = 0.2 and explodes above.
Every update here is one fused fastopt kernel call on the flat parameter vector.
"""
from __future__ import annotations

import time

import numpy as np

import fastopt
from fastopt import optim

from .gd_quadratic import gd_sweep as _gd_sweep
from .gd_quadratic import quadratic

__all__ = ["quadratic", "gd_sweep", "optimiser_race", "speed", "main"]


def gd_sweep(a, lam, rates, steps: int, seed: int, backend="cpu"):
    """Gradient descent at each rate (:func:`fastopt.experiments.gd_quadratic.gd_sweep`): its rows."""
    return _gd_sweep(a, lam, rates, steps, seed, backend)[0]


def optimiser_race(a, steps: int, seed: int, tol: float = 1e-6):
    """Steps each optimiser needs to bring |theta| below tol on the quadratic (None if never)."""
    rng = np.random.default_rng(seed)
    theta0 = rng.standard_normal(a.shape[0])
    contenders = {
        "GD (lr 0.19)": lambda x: optim.SGD(x, lr=0.19),
        "heavy ball (lr 0.19, beta 0.9)": lambda x: optim.Momentum(x, lr=0.19, beta=0.9),
        "Adam (lr 0.05)": lambda x: optim.Adam(x, lr=0.05),
    }
    result = {}
    for name, make in contenders.items():
        theta = theta0.copy()
        opt = make(theta)
        grad = np.empty_like(theta)
        result[name] = None
        for k in range(1, steps + 1):
            np.dot(a, theta, out=grad)
            opt.step(grad)
            if np.linalg.norm(theta) < tol:
                result[name] = k
                break
    return result


def _best_time(fn, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def speed(n: int, repeat: int = 5):
    """Seconds per Adam step (float32, n elements): fastopt's fused kernel vs the NumPy reference."""
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    fastopt.adam_step(p, g, m, v, step=1, lr=1e-3)  # compile / load from the cache
    fused = _best_time(lambda: fastopt.adam_step(p, g, m, v, step=2, lr=1e-3), repeat)
    ref = _best_time(lambda: fastopt.adam_step(p, g, m, v, step=2, lr=1e-3, backend="reference"), repeat)
    return fused, ref


def main(backend: str = "cpu", quick: bool = False, seed: int = 0) -> bool:
    """Run the demo, print a table of claims, return True when every claim holds."""
    if backend != "cpu":
        fastopt.use_backend(backend).__enter__()  # fail fast with the reason if the GPU is missing
    dim, steps = (50, 300) if quick else (200, 1000)
    a, lam = quadratic(dim, seed)
    rates = [0.05, 0.1, 0.15, 0.19, 0.21, 0.25]
    rows = gd_sweep(a, lam, rates, steps, seed)
    print(f"Gradient descent on A theta . theta / 2, eigenvalues log-uniform in [0.1, 10], dim {dim}")
    print(f"{'rate':>6} {'predicted':>10} {'measured':>10} {'final |theta|':>14}")
    for r in rows:
        print(f"{r['rate']:6.2f} {r['predicted']:10.4f} {r['measured']:10.4f} {r['final']:14.3e}")
    threshold_ok = all((r["measured"] < 1.0) == (r["rate"] < 0.2) for r in rows)
    rate_ok = all(abs(r["measured"] - r["predicted"]) < 0.02 for r in rows if r["rate"] < 0.2)
    race = optimiser_race(a, 20000 if not quick else 5000, seed)
    print("\nSteps to |theta| < 1e-6:")
    for name, k in race.items():
        print(f"  {name:32s} {k if k is not None else 'not reached'}")
    momentum_ok = race["heavy ball (lr 0.19, beta 0.9)"] is not None and (
        race["GD (lr 0.19)"] is None or race["heavy ball (lr 0.19, beta 0.9)"] < race["GD (lr 0.19)"])
    n = 10**5 if quick else 10**6
    fused, ref = speed(n)
    print(f"\nAdam step, float32, {n:.0e} parameters: fastopt {fused * 1e6:.0f} us, "
          f"NumPy reference {ref * 1e6:.0f} us ({ref / fused:.1f}x)")
    claims = [
        ("GD converges iff lr < 2/lambda_max = 0.2", threshold_ok),
        ("GD contracts at max|1 - lr lambda| per step", rate_ok),
        ("heavy-ball momentum beats GD on the ill-conditioned quadratic", momentum_ok),
        ("fused Adam step faster than the NumPy reference", fused < ref),
    ]
    print("\nclaim".ljust(70) + "result")
    for text, ok in claims:
        print(f"{text:69s} {'PASS' if ok else 'FAIL'}")
    return all(ok for _, ok in claims)
