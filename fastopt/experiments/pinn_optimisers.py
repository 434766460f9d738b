r"""SGD, heavy-ball momentum and Adam on a 1D PINN: the lecture's "Examples SGD(+M)" and "Adam vs SGD".

The problem: ``u''(x) = f(x)`` on (0, 1), ``u(0) = u(1) = 0``, with ``f = -4 pi^2 sin(2 pi x)``
(exact ``u = sin(2 pi x)``). The network is a 1-20-20-1 tanh MLP times ``x (1 - x)``
(:meth:`fastopt.nn.Ansatz.box`: the boundary conditions hold exactly, the loss is the residual
alone). The loss is the relative mean squared residual on ``J`` points::

    L = mean_j (u''(x_j) - f(x_j))^2 / int_0^1 f^2 dx,

normalised so that the zero function has ``L ~ 1`` (otherwise ``|f|^2 ~ 800`` makes every
fixed-rate SGD diverge at the lecture's lr 1e-3).

**Noise.** Fresh uniform collocation points every step (``J = 100``): a Monte Carlo quadrature
whose error is the lecture's SGD noise ("in PDEs we cannot integrate the loss exactly"). Every
optimiser sees the same initial network and the same stream of points. The losses are therefore
noisy, and as in the lecture the plot shows moving averages; the claims compare a fixed,
accurate validation loss (composite Gauss-Legendre, 512 points), averaged over the last 10% of
training.

**Optimisers.** SGD at lr 1e-3 with the lecture's heavy-ball momentum
``m <- beta m - lr g; theta <- theta + m`` for ``beta in {0, 0.5, 0.9, 0.99}`` (beta = 0 is plain
SGD; :class:`fastopt.optim.Momentum`), and Adam with its defaults (lr 1e-3, betas (0.9, 0.999)). A
run whose loss turns non-finite stops and counts as diverged.

Example (``run(quick=True)`` trains the five contenders for 2500 steps each, a few seconds):
  >>> import numpy as np
  >>> from fastopt.experiments import pinn_optimisers
  >>> x = np.linspace(0, 1, 5)
  >>> bool(np.allclose(pinn_optimisers.source(x), -(2 * np.pi) ** 2 * pinn_optimisers.exact(x)))
  True

References:
  J. M. Taylor, Optimisation strategies (lecture), "Momentum", "Adam", "Comparison Adam vs SGD".
  B. T. Polyak, Some methods of speeding up the convergence of iteration methods, USSR Comput.
  Math. Math. Phys. 4 (1964).  D. P. Kingma, J. Ba, Adam, ICLR 2015.  M. Raissi, P. Perdikaris,
  G. E. Karniadakis, J. Comput. Phys. 378 (2019).
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..multilevel import gauss_legendre
from ..nn import MLP, Ansatz
from ..optim import Adam, Momentum
from ._common import Claim, figure, fmt, moving_average, progress_bar, save, to_host, xp_of

__all__ = ["exact", "source", "run", "claims", "plot", "MOMENTA", "LR"]

#: Heavy-ball momentum parameters swept at lr :data:`LR` (0: plain SGD).
MOMENTA = (0.0, 0.5, 0.9, 0.99)
#: The lecture's fixed learning rate.
LR = 1e-3
_W = 2 * math.pi
_F2 = 0.5 * _W ** 4          # int_0^1 f^2 dx for f = -W^2 sin(W x)


def exact(x):
    """``u(x) = sin(2 pi x)``."""
    return np.sin(_W * x)


def source(x):
    """``f = u'' = -4 pi^2 sin(2 pi x)``."""
    return -_W * _W * np.sin(_W * x)


class _Residual:
    """``L = mean (u'' - f)^2 / int f^2``; writes ``dL/dU`` (channel 2 only; 0 and 1 zeroed once)."""

    def __init__(self, xp, J, dtype):
        self.xp, self.f = xp, xp.empty(J, dtype)

    def __call__(self, U, adj):
        xp = self.xp
        r = xp.subtract(U[2], self.f, out=adj[2])
        value = float(xp.dot(r, r)) / (r.size * _F2)
        r *= 2.0 / (r.size * _F2)
        adj[0] = 0
        adj[1] = 0
        return value


def _validation(net, xv, wv, xp):
    """Relative residual ``int (u'' - f)^2 / int f^2`` and relative L2 error on the fixed rule."""
    U = to_host(net.forward(xv, 2).u)
    x = to_host(xv)[:, 0]
    r = U[2] - source(x)
    e = U[0] - exact(x)
    return float(wv @ (r * r)) / _F2, math.sqrt(float(wv @ (e * e)) / float(wv @ exact(x) ** 2))


def _train(name, make_opt, net0, steps, J, seed, backend, every, bar):
    xp = xp_of(backend)
    net = MLP(1, net0.hidden, ansatz=Ansatz.box(0.0, 1.0), seed=net0.seed, backend=backend)
    net.params.data[...] = net0.params.data
    opt = make_opt(net.params)
    grad = net.params.zeros_like()
    loss = _Residual(xp, J, net.dtype)
    xv, wv = gauss_legendre(64, 8)
    xv_dev = xp.asarray(xv)
    rng = np.random.default_rng(seed + 7)               # the same points for every optimiser
    losses = np.full(steps, np.nan)
    val_steps, val_loss, val_err = [], [], []
    elapsed, diverged = 0.0, False
    for k in range(steps):
        x = xp.asarray(rng.uniform(0.0, 1.0, (J, 1)))
        loss.f[...] = xp.asarray(source(to_host(x)[:, 0]))
        t0 = time.perf_counter()
        value, _ = net.loss_and_grad(x, loss, 2, grad)
        if not math.isfinite(value) or value > 1e12:
            diverged = True
            break
        opt.step(grad)
        elapsed += time.perf_counter() - t0
        losses[k] = value
        if k % every == 0 or k == steps - 1:
            v, e = _validation(net, xv_dev, wv, xp)
            val_steps.append(k + 1)
            val_loss.append(v)
            val_err.append(e)
        if bar is not None:
            bar.update(1)
    if bar is not None and diverged:
        bar.update(steps - k)
    n = int(np.sum(np.isfinite(losses)))
    vs = np.asarray(val_steps)
    tail = vs >= int(0.9 * steps)
    final = float(np.mean(np.asarray(val_loss)[tail])) if (not diverged and tail.any()) else math.inf
    final_err = float(np.mean(np.asarray(val_err)[tail])) if (not diverged and tail.any()) else math.inf
    return {"name": name, "loss": losses, "val_steps": vs, "val_loss": np.asarray(val_loss),
            "val_error": np.asarray(val_err), "final_val_loss": final, "final_error": final_err,
            "diverged": diverged, "step_us": 1e6 * elapsed / max(1, n)}


def run(quick=False, seed=0, backend="cpu", progress=False) -> dict:
    """Train the same initial PINN with SGD(+momentum) at lr 1e-3 and with Adam (defaults).

    Sizes: 6000 steps (quick: 2500), J = 100 fresh points per step, validation every 20 steps.
    Returns:
      dict: ``runs`` {name: {loss (per step), val_steps, val_loss, val_error, final_val_loss
      (mean over the last 10%), final_error, diverged, step_us}}, ``steps``, ``J``, ``lr``,
      ``speed`` (time per training step, forward + backward + fused update, per optimiser).
    """
    steps, J, every = (2500, 100, 20) if quick else (6000, 100, 20)
    net0 = MLP(1, (20, 20), ansatz=Ansatz.box(0.0, 1.0), seed=seed, backend="cpu")
    contenders = {("SGD" if b == 0 else f"SGD + momentum {b:g}"): (lambda p, b=b: Momentum(p, lr=LR, beta=b))
                  for b in MOMENTA}
    contenders["Adam"] = lambda p: Adam(p, lr=LR)
    bar = progress_bar(progress, steps * len(contenders), "pinn_optimisers")
    runs = {name: _train(name, make, net0, steps, J, seed, backend, every, bar) for name, make in contenders.items()}
    if bar is not None:
        bar.close()
    return {"runs": runs, "steps": steps, "J": J, "lr": LR, "momenta": MOMENTA, "backend": backend,
            "problem": "u'' = -4 pi^2 sin(2 pi x) on (0, 1), u(0) = u(1) = 0; u = sin(2 pi x)",
            "speed": {"step_us": {n: r["step_us"] for n, r in runs.items()},
                      "what": f"one PINN step: forward (u, u', u'') + backward on {J} points + fused update"}}


def claims(result) -> list:
    """Adam reaches a lower loss than SGD and every SGD + momentum; some momentum beats plain SGD."""
    runs = result["runs"]
    sgd = runs["SGD"]["final_val_loss"]
    adam = runs["Adam"]["final_val_loss"]
    sgdm = {n: r["final_val_loss"] for n, r in runs.items() if n.startswith("SGD + momentum")}
    best_m = min(sgdm, key=sgdm.get)
    best_sgd_family = min([sgd, *sgdm.values()])
    return [
        Claim(f"Adam (defaults) reaches a lower loss than SGD/SGDM at lr {result['lr']:g} in the same steps",
              f"validation loss Adam {fmt(adam)} vs best SGD(M) {fmt(best_sgd_family)}", adam < best_sgd_family),
        Claim("some momentum beats plain SGD",
              f"{best_m}: {fmt(sgdm[best_m])} vs SGD {fmt(sgd)}", sgdm[best_m] < sgd),
    ]


def plot(result, path):
    """Moving averages of the training loss (the lecture's plot) and the validation error per optimiser."""
    fig, (ax0, ax1) = figure(2)
    window = max(10, result["steps"] // 50)
    for name, r in result["runs"].items():
        ok = np.isfinite(r["loss"])
        label = name + (" (diverged)" if r["diverged"] else "")
        ax0.semilogy(np.arange(1, ok.sum() + 1), moving_average(r["loss"][ok], window), label=label)
        ax1.semilogy(r["val_steps"], r["val_error"], label=label)
    ax0.set_xlabel("step")
    ax0.set_ylabel(f"training loss (moving average, {window} steps)")
    ax0.set_title(f"1D PINN u'' = f, lr {result['lr']:g}, {result['J']} fresh points/step")
    ax0.legend(fontsize=7)
    ax1.set_xlabel("step")
    ax1.set_ylabel("relative L2 error of u")
    ax1.legend(fontsize=7)
    return save(fig, path)
