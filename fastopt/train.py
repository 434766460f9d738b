r"""Training loops for a network and squared residuals of linear operators: mini-batch or full batch.

The loss is the mean squared residual of linear operators on the network's channels,

    r_ij = sum_c A_ic u_c(x_j) - t_ji,       L = (1 / J) sum_{j in batch} sum_i r_ij^2,

with ``A = operator`` (R, C), one row per residual: ``(1,)`` (a row) is the mean squared error of
a regression on targets ``t = y`` (the lecture's batch-size experiment); in 1D ``(0, 0, -1)`` with
``t = f`` is the PINN residual of ``-u'' = f`` (channels u, u', u''), ``(k^2, 0, 1)`` a Helmholtz
residual, and ``[[1, 0, 0], [0, 1, 0], [0, 0, 1]]`` with ``t = (u_data, u'_data, u''_data)`` fits values
and derivatives (Sobolev training); boundary conditions come from the network's
:class:`fastopt.nn.Ansatz`. The number of channels ``C`` (1, 1 + d or 2 + d) sets the derivative order.

:func:`fit` runs epochs of optimiser steps over batches of the points (a new order per epoch when
``permutations`` or ``seed`` ask for it). With an Adam-family optimiser (:class:`fastopt.optim.Adam`,
``AdamW``, ``AMSGrad``) on the CPU and plain options (one parameter group; no clipping, skipping,
maximising or loss scale) and batches below the mlp kernels' threading threshold, a whole epoch
runs in one compiled call (:func:`fastopt.kernels.cpu.train.residual_adam_run`): no Python between
steps. Otherwise (other
optimisers, options or backends, "reference" included) it runs the same steps as a Python loop of
:meth:`fastopt.nn.MLP.loss_and_grad` and ``optimizer.step``. Both give the same parameters: the
compiled epoch is the loop's arithmetic, bit for bit on the CPU (``tests/test_train.py``).

Example: the batch-size experiment's fit, 3 epochs of batches of 100.
  >>> import numpy as np
  >>> from fastopt.nn import MLP
  >>> from fastopt.optim import Adam
  >>> from fastopt.train import fit
  >>> rng = np.random.default_rng(0)
  >>> x = rng.uniform(0, 1, (500, 1)); y = np.sin(2 * np.pi * x[:, 0])
  >>> net = MLP(1, (20, 20), seed=0)
  >>> opt = Adam(net.params, lr=1e-2)
  >>> r = fit(net, opt, x, y, batch_size=100, epochs=3, seed=0)
  >>> r.steps, opt.step_count, r.compiled
  (15, 15, True)
  >>> bool(r.losses[-1] < r.losses[0])
  True
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _dispatch
from . import _validate as V
from ._step import adam_corrections
from .nn import MLP
from .optim import Adam
from .optim.optimizer import Optimizer

__all__ = ["fit", "FitResult", "ResidualLoss"]


class FitResult(NamedTuple):
    """What :func:`fit` did.

    Attributes:
      losses: (steps,) float64, the loss of each step's batch before its update.
      epoch_losses: (epochs,) the mean of each epoch's batch losses.
      steps: the number of optimiser steps taken.
      compiled: whether the epochs ran as compiled calls (else as a Python loop).
    """

    losses: np.ndarray
    epoch_losses: np.ndarray
    steps: int
    compiled: bool


class ResidualLoss:
    """``L = sum_i mean_j (sum_c A_ic u_c - t_ji)^2`` on a batch, for :meth:`fastopt.nn.MLP.loss_and_grad`.

    ``A`` is ``operator`` (R, C); :attr:`target` holds the batch's ``t`` (J, R) (or (J,) when R = 1),
    set before each call. Residual ``i``'s adjoint ``A_ic (r_i (2 / J))`` is added after residual
    ``i - 1``'s: the operations of the compiled kernel, so that both give the same bits.
    """

    __slots__ = ("operator", "target")

    def __init__(self, operator):
        A = np.array(operator, dtype=np.float64, ndmin=2)
        self.operator = [[float(a) for a in row] for row in A]
        self.target = None

    def __call__(self, u, adj):
        xp = _dispatch.array_module(u)
        t = self.target.reshape(self.target.shape[0], -1)
        value = 0.0
        for i, a in enumerate(self.operator):
            r = a[0] * u[0]
            for c in range(1, len(a)):
                r += a[c] * u[c]
            r -= t[:, i]
            value += float(xp.dot(r, r)) / r.size
            r *= 2.0 / r.size
            for c in range(len(a)):
                if i == 0:
                    xp.multiply(r, a[c], out=adj[c])
                else:
                    adj[c] += a[c] * r
        return value


def _check(f, net, optimizer, x, target, operator, batch_size, epochs, permutations, seed):
    if not isinstance(net, MLP):
        raise TypeError(f"{f}: net must be a fastopt.nn.MLP, got {type(net).__name__}")
    if not isinstance(optimizer, Optimizer) or optimizer.params is not net.params:
        raise ValueError(f"{f}: optimizer must be a fastopt.optim optimiser built on net.params")
    backend = "cpu" if net.backend == "reference" else net.backend
    _, (x, target) = _dispatch.resolve(f, [("x", x), ("target", target)], backend)
    # x and target are only read: a strided view (a column of a table) is copied, not refused
    xp = _dispatch.array_module(x)
    x, target = (a if getattr(a, "ndim", 0) == 0 else xp.ascontiguousarray(a) for a in (x, target))
    V.points(f, "x", x, net.d, net.dtype)
    V.all_finite(f, "x", x)
    n = x.shape[0]
    try:
        op = np.array(operator, dtype=np.float64, ndmin=2)
    except (TypeError, ValueError):
        raise TypeError(f"{f}: operator must be numbers: one per channel, or one row per residual, "
                        f"got {operator!r}") from None
    if op.ndim != 2 or op.shape[0] < 1 or op.shape[1] not in (1, 1 + net.d, 2 + net.d) or not np.isfinite(op).all():
        raise ValueError(f"{f}: operator must hold 1, {1 + net.d} or {2 + net.d} finite coefficients per residual "
                         f"(channels u, grad u, Laplacian), got {operator!r}")
    R, C = op.shape
    V.array_of(f, "target", target, (n,) if R == 1 and target.ndim == 1 else (n, R), net.dtype, writable=False,
               finite=True)
    order = {1: 0, 1 + net.d: 1, 2 + net.d: 2}[C]
    batch = n if batch_size is None else V.integer(f, "batch_size", batch_size, 1)
    if batch > n:
        raise ValueError(f"{f}: batch_size {batch} exceeds the number of points {n}")
    epochs = V.integer(f, "epochs", epochs, 1)
    if permutations is not None:
        permutations = [np.asarray(p) for p in permutations]
        if len(permutations) != epochs or not all(_is_permutation(p, n) for p in permutations):
            raise ValueError(f"{f}: permutations must be {epochs} permutations of range({n}), one per epoch")
        if seed is not None:
            raise ValueError(f"{f}: give permutations or seed, not both")
    elif seed is not None:
        rng = np.random.default_rng(seed)
        permutations = [rng.permutation(n) for _ in range(epochs)]
    return x, target, op, order, batch, epochs, permutations


def _is_permutation(p, n):
    """Whether ``p`` holds every index of ``range(n)`` once (O(n), no sort)."""
    if p.shape != (n,) or p.dtype.kind not in "iu":
        return False
    return n == 0 or (p.min() >= 0 and p.max() < n and np.bincount(p, minlength=n).max() == 1)


def _compilable(net, optimizer, n_channels, batch, n):
    """Whether :func:`fit` can run the epochs as compiled calls (module docstring): also, every batch
    small enough for the serial mlp kernels (the compiled epoch has no threaded build: see
    :mod:`fastopt.kernels.cpu.train`)."""
    if net.backend == "cpu":
        use_threads = _dispatch.get_kernel("mlp", "_use_threads", "cpu")
        if any(use_threads(J, n_channels, net.widths, net.dtype) for J in {batch, n % batch or batch}):
            return False
    return (net.backend == "cpu" and type(net.params.data) is np.ndarray and isinstance(optimizer, Adam)
            and optimizer.backend == "cpu" and len(optimizer._parts) == 1 and len(optimizer._parts[0].groups) == 1
            and optimizer.maximize is False and optimizer.grad_scale == 1.0 and optimizer.max_grad_norm is None
            and optimizer.skip_nonfinite is False)


def fit(net, optimizer, x, target, *, operator=(1.0,), batch_size=None, epochs=1, permutations=None, seed=None,
        progress=None, compiled=None) -> FitResult:
    """Train ``net`` in place: ``epochs`` passes of optimiser steps over batches of ``(x, target)``.

    Args:
      net: a :class:`fastopt.nn.MLP`.
      optimizer: an optimiser of :mod:`fastopt.optim` built on ``net.params`` (its state and step
        count advance as with ``optimizer.step``).
      x: (n, d) points; target: (n,) values ``t``, or (n, R) for R residuals (same dtype and backend
        as the network).
      operator: the coefficients ``A_ic`` of the residuals (module docstring): (C,) for one residual
        (``(1,)``, the default: regression), (R, C) for several.
      batch_size: points per step (None: all, full batch); the last batch of an epoch may be shorter.
      epochs: passes over the points.
      permutations: one permutation of ``range(n)`` per epoch (the order of the points in it), or
        ``seed``: draw them with ``numpy.random.default_rng(seed)``. Neither: the points in order.
      progress: a callable ``progress(epoch)`` after each epoch (e.g. a tqdm bar's ``update``).
      compiled: None (default): the compiled epochs when they apply (module docstring), else the
        Python loop; False: the Python loop; True: the compiled epochs, or a ValueError saying why not.
    Returns:
      :class:`FitResult`.
    Raises:
      TypeError/ValueError, naming the argument, before any step: a network or optimiser of the
      wrong kind, points or targets of the wrong shape, dtype, backend or not finite, a bad
      operator, batch size, epoch count or permutation.
    """
    f = "fit"
    x, target, op, order, batch, epochs, perms = _check(f, net, optimizer, x, target, operator, batch_size, epochs,
                                                        permutations, seed)
    n = x.shape[0]
    xp = _dispatch.array_module(x)
    per_epoch = -(-n // batch)
    losses = np.empty(epochs * per_epoch)
    if compiled is not None and compiled is not True and compiled is not False:
        raise TypeError(f"{f}: compiled must be None, True or False, got {compiled!r}")
    can = _compilable(net, optimizer, op.shape[1], batch, n)
    if compiled and not can:
        raise ValueError(f"{f}: compiled=True needs a CPU network, an Adam/AdamW/AMSGrad optimiser with one "
                         f"parameter group and no clipping, skipping, maximising or loss scale, and batches "
                         f"small enough for the serial kernels")
    compiled = can if compiled is None else compiled
    run_epochs = _compiled_epochs(net, optimizer, op, order, batch, n, losses) if compiled else \
        _python_epochs(net, optimizer, op, order, batch, losses)
    if perms is None and progress is None:
        k = run_epochs(x, target, 0, epochs)       # the same points in the same order: one call for all
    else:
        k = 0
        for e in range(epochs):
            if perms is None:
                xs, ts = x, target
            else:
                idx = xp.asarray(perms[e])          # a device copy of the epoch's order for CuPy arrays
                xs, ts = x[idx], target[idx]
            k = run_epochs(xs, ts, k, 1)
            if progress is not None:
                progress(e)
    net._last = None      # the tape holds the last batch's forward, not one the caller made: no backward
    return FitResult(losses, losses.reshape(epochs, per_epoch).mean(axis=1), k, compiled)


def _python_epochs(net, optimizer, op, order, batch, losses):
    """An epoch as the Python loop of loss_and_grad and optimizer.step (any optimiser, any backend)."""
    loss = ResidualLoss(op)
    grad = net.params.zeros_like()

    def run(xs, ts, k, epochs):
        for _ in range(epochs):
            for lo in range(0, xs.shape[0], batch):
                loss.target = ts[lo:lo + batch]
                losses[k], _ = net.loss_and_grad(xs[lo:lo + batch], loss, order, grad)
                optimizer.step(grad)
                k += 1
        return k

    return run


def _compiled_epochs(net, optimizer, op, order, batch, n, losses):
    """An epoch as one call of the "train" kernel; the per-step Adam scalars computed here, as
    ``Adam.step`` computes them (:meth:`fastopt.optim.Adam._fast_apply`)."""
    kernel = _dispatch.get_kernel("train", "residual_adam_run", "cpu")
    optimizer._ensure_state()
    part = optimizer._parts[0]
    state = part.state
    amsgrad = bool(optimizer.amsgrad)
    vmax = state["vmax"] if amsgrad else part.p[:0]
    grad = net.params.zeros_like().data
    C = op.shape[1]
    has_phi = net.ansatz is not None
    has_g = has_phi and net.ansatz.g is not None
    workspaces = []
    for J in (batch, n % batch or batch):
        ws = net._workspace(J, order)
        phi = np.empty((C if has_phi else 0, J), net.dtype)
        g = np.empty((C if has_g else 0, J), net.dtype)
        workspaces.append((phi, g, ws["out"], ws["basis"], ws["tape"], ws["adj"]))
    op_arr = op.astype(net.dtype)
    steps = losses.size
    step_lr, l2, shrink, bc2_sqrt = (np.empty(steps) for _ in range(4))

    def run(xs, ts, k, epochs):
        ts = ts.reshape(ts.shape[0], -1)       # contiguous already: _check copied x and target, a permutation copies
        # this epoch's step scalars, with the options as they are now (read as Adam.step reads them)
        b1, b2 = optimizer.betas
        wd = optimizer._groups[0]["weight_decay"]
        k_end = k + epochs * -(-xs.shape[0] // batch)
        updates = range(optimizer.step_count + 1, optimizer.step_count + 1 + k_end - k)   # 1-based
        sched = optimizer._groups[0]["lr"]
        lr = np.array([sched(t - 1) for t in updates], dtype=np.float64)
        if not (lr.size and np.all(lr >= 0.0) and np.all(np.isfinite(lr))):
            raise ValueError(f"fit: the learning rate schedule gave a negative or non-finite value: {lr}")
        # the corrections of Adam.step (Python's pow: NumPy's power may round the last bit otherwise)
        corrections = np.array([adam_corrections(b1, b2, t) for t in updates]).reshape(-1, 2)
        step_lr[k:k_end] = lr * corrections[:, 0]
        bc2_sqrt[k:k_end] = corrections[:, 1]
        if optimizer.decoupled_weight_decay:
            l2[k:k_end], shrink[k:k_end] = 0.0, 1.0 - lr * wd
        else:
            l2[k:k_end], shrink[k:k_end] = wd, 1.0
        phi_all = g_all = np.empty((0, xs.shape[0]), net.dtype)
        if has_phi:
            phi_all, g = net.ansatz.channels("fit", xs, C)
            phi_all = np.ascontiguousarray(phi_all)
            if has_g:
                g_all = np.ascontiguousarray(g)
        cfg = net._cfg      # (widths, act, s, keep_x, train_B, has_c0)
        k_next = kernel(xs, ts, batch, op_arr, net.B, net._theta, cfg[0], cfg[1], cfg[2], cfg[3],
                        cfg[4], cfg[5], phi_all, g_all, workspaces[0], workspaces[1], grad, state["m"], state["v"],
                        vmax, part.segments.bounds, step_lr, l2, shrink, bc2_sqrt, b1, b2, optimizer.eps, amsgrad,
                        losses, k, epochs)
        optimizer.step_count += k_next - k
        return k_next

    return run
