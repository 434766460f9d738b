r"""Numba kernel of the "train" family: a whole run of Adam steps on a small network, in one call.

For a network of the "mlp" family and the squared residuals of linear operators on its channels,

    r_ij = sum_c A_ic u_c(x_j) - t_ji,    L = (1 / J) sum_j sum_i r_ij^2,    dL/du_c(x_j) = sum_i A_ic (2 r_ij / J),

(``A = [[1]]``: the mean squared error of a regression; ``A = [[0, 0, -1]]`` with ``t = f``: the PINN
residual of ``-u'' = f`` in 1D; several rows: several terms, e.g. values and derivatives), :func:`residual_adam_run` runs, batch after batch, what a Python
training loop runs per step -- :func:`.mlp._forward`, the loss and its adjoint, :func:`.mlp._backward`,
:func:`.optim._adam` -- without returning to Python between steps. The arithmetic of every step is
that of the loop ``MLP.loss_and_grad`` + ``Adam.step`` (same kernels, same scalars: the step sizes
``lr_k / (1 - beta1^k)`` and ``sqrt(1 - beta2^k)`` come precomputed per step from the host, as the
optimiser computes them), so both give the same parameters bit for bit; only the reported batch
losses are summed in another order than NumPy's ``dot``.

What a step costs then is the kernels' arithmetic alone: a Python loop also pays ~1 us per kernel
dispatch and the front ends' checks, ~10 us per step at these sizes (``bench/bench_batch_size.py``).

Serial kernels only: a batch big enough for the threaded mlp kernels (``.mlp._use_threads``: ~300 us
of work per step) loses nothing to the Python loop, which the front end then runs instead; and a
cached Numba function that calls a ``parallel=True`` one crashed when loaded from the cache in a new
process (segmentation fault; Numba 0.68: the threading layer is not started on that path).
"""
from __future__ import annotations

import numpy as np

from ._jit import jit
from .mlp import _backward, _forward
from .optim import _adam

__all__ = ["residual_adam_run"]


@jit(inline="always")
def _residual_adjoint(op, out, t, lo, adj):
    """Write ``adj = dL/du`` for the batch whose targets start at row ``lo`` of ``t``; return ``L``.

    Residual ``i``'s adjoint is added into ``adj`` after residual ``i - 1``'s, each term rounded
    before the sum: the order of :class:`fastopt.train.ResidualLoss`."""
    R, C = op.shape
    J = out.shape[1]
    T = adj.dtype.type
    scale = T(2.0 / J)           # rounded to the dtype first, as NumPy does with a Python float
    total = 0.0
    for j in range(J):
        for i in range(R):
            acc = op[i, 0] * out[0, j]
            for c in range(1, C):
                acc += op[i, c] * out[c, j]
            r = acc - t[lo + j, i]
            total += np.float64(r) * np.float64(r)
            w = r * scale
            if i == 0:
                for c in range(C):
                    adj[c, j] = op[0, c] * w
            else:
                for c in range(C):
                    adj[c, j] += op[i, c] * w
    return total / J


@jit(inline="always")
def _batch_rows(src, lo, dst):
    """``dst[c, :] = src[c, lo:lo + J]`` (the ansatz channels of one batch)."""
    C, J = dst.shape
    for c in range(C):
        for j in range(J):
            dst[c, j] = src[c, lo + j]


@jit
def _step(xs, ts, lo, hi, op, B, s, keep_x, train_B, theta, widths, act, has_c0, phi_all, g_all, phi, g,
          out, basis, tape, adj, grad, pB):
    """Forward, loss, backward of the batch ``lo:hi``; return its loss."""
    xb = xs[lo:hi]
    _batch_rows(phi_all, lo, phi)       # (C, J) or (0, J) without ansatz / without g
    _batch_rows(g_all, lo, g)
    phi = phi.reshape(-1)               # the mlp kernels read phi and g flat (size 0: none)
    g = g.reshape(-1)
    _forward(xb, B, s, keep_x, theta, widths, act, has_c0, phi, g, out, basis, tape, pB)
    value = _residual_adjoint(op, out, ts, lo, adj)
    _backward(B, s, keep_x, train_B, theta, widths, act, has_c0, phi, basis, tape, adj, grad)
    return value


@jit
def _residual_adam_run(xs, ts, batch, op, B, s, keep_x, train_B, theta, widths, act, has_c0, phi_all,
                       g_all, ws_full, ws_tail, grad, m, v, vmax, bounds, step_lr, l2, shrink, bc2_sqrt, beta1,
                       beta2, eps, amsgrad, losses, k0, epochs):
    n = xs.shape[0]
    pB = B.size if train_B else 0
    k = k0
    for _ in range(epochs):
        for lo in range(0, n, batch):
            hi = min(n, lo + batch)
            if hi - lo == batch:
                phi, g, out, basis, tape, adj = ws_full
            else:
                phi, g, out, basis, tape, adj = ws_tail
            losses[k] = _step(xs, ts, lo, hi, op, B, s, keep_x, train_B, theta, widths, act, has_c0, phi_all,
                              g_all, phi, g, out, basis, tape, adj, grad, pB)
            _adam(theta, grad, m, v, vmax, bounds, step_lr[k:k + 1], l2[k:k + 1], shrink[k:k + 1], 1.0, beta1,
                  beta2, eps, bc2_sqrt[k], amsgrad)
            k += 1
    return k


def residual_adam_run(xs, ts, batch, op, B, theta, widths, act, s, keep_x, train_B, has_c0, phi_all,
                      g_all, ws_full, ws_tail, grad, m, v, vmax, bounds, step_lr, l2, shrink, bc2_sqrt, beta1, beta2,
                      eps, amsgrad, losses, k0, epochs=1):
    """``epochs`` epochs on the same points in the same order: Adam steps on the batches
    ``xs[lo:lo + batch]``; returns the next step index.

    Args:
      xs (n, d), ts (n, R): the epoch's points and targets, in batch order (C-contiguous).
      batch: points per step (the last batch may be shorter).  op (R, C): the operators' coefficients.
      B, theta, widths, act, s, keep_x, train_B, has_c0: the network, as for :func:`.mlp.mlp_forward`.
      phi_all, g_all (C, n): the ansatz channels at ``xs`` (shape (0, n) without ansatz; ``g_all``
        (0, n) without ``g``).
      ws_full, ws_tail: ``(phi, g, out, basis, tape, adj)`` workspaces for a full and a last batch
        (``phi``, ``g``: (C, J) or (0, J) like ``phi_all``, ``g_all``).
      grad: the flat gradient buffer.  m, v, vmax, bounds: Adam's state and segment bounds.
      step_lr, l2, shrink, bc2_sqrt: per step (indexed by the run's step ``k``), the kernel scalars
        ``lr_k / (1 - beta1^k)``, L2 decay, decoupled shrink ``1 - lr_k wd`` and ``sqrt(1 - beta2^k)``.
      losses: per step, the batch loss before the update is written at ``losses[k]``.  k0: first index.
      epochs: passes over ``xs`` (full-batch training takes one step per epoch: one call for all).
    """
    return _residual_adam_run(xs, ts, batch, op, B, float(s), bool(keep_x), bool(train_B), theta, widths,
                              act, bool(has_c0), phi_all, g_all, ws_full, ws_tail, grad, m, v, vmax, bounds, step_lr,
                              l2, shrink, bc2_sqrt, beta1, beta2, eps, bool(amsgrad), losses, int(k0), int(epochs))
