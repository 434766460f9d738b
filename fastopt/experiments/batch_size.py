r"""The lecture's batch-size experiment: noisy 1D interpolation, a 1-20-20-1 tanh MLP, Adam, 100 epochs.

2000 noisy samples ``y = u(x) + eps`` of ``u(x) = sin(2 pi x)`` on [0, 1] (``eps ~ N(0, 0.1^2)``) train
the network with Adam (lr 1e-3) on mini-batches of 100, 250, 500, 1000 or 2000 samples (a new
shuffle every epoch); 500 separate noisy samples measure the validation loss. The loss is the
mean squared error ``L = mean_j (u(x_j) - y_j)^2``, whose adjoint is ``dL/du_j = 2 (u_j - y_j) / J``.

The lecture's claims: smaller batches reach lower training and validation losses in 100 epochs
(more updates per epoch), and cost more time, because every update pays a fixed overhead
("for a small problem like this, it is significant"; its table: 6.4 s at batch 100 to 4.0 s at
2000). fastopt removes most of that overhead: :func:`fastopt.train.fit` runs an epoch's steps
(forward, loss, backward, fused Adam update) in one compiled call; the plain Python loop of
``net.loss_and_grad`` and ``Adam.step`` (one fused kernel each, ~10 us of Python per step) is
timed beside it and takes the same steps, bit for bit.

With ``torch=True`` the same plain PyTorch loop (``nn.Sequential`` of Linear/Tanh, ``MSELoss``,
``zero_grad``, ``backward``, ``torch.optim.Adam``) runs beside it from the same initial weights,
on the same shuffles, so that both the losses (which must agree) and the times compare.

Example:
  >>> from fastopt.experiments import batch_size
  >>> r = batch_size.run(batch_sizes=(100, 500), epochs=3, n_train=500, n_val=100)
  >>> [row["batch_size"] for row in r["rows"]], r["rows"][0]["steps"]
  ([100, 500], 15)
  >>> r["rows"][0]["train_loss"] < r["rows"][1]["train_loss"]   # more updates, lower loss
  True
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..nn import MLP
from ..optim import Adam
from ..train import fit

__all__ = ["make_data", "target", "train_fastopt", "train_torch", "run", "BATCH_SIZES", "LECTURE_TIMES_S"]

#: The lecture's batch sizes and its measured times for 100 epochs (seconds).
BATCH_SIZES = (100, 250, 500, 1000, 2000)
LECTURE_TIMES_S = {100: 6.4, 250: 4.9, 500: 4.8, 1000: 4.4, 2000: 4.0}


def target(x):
    """The function behind the data: ``sin(2 pi x)``."""
    return np.sin(2 * math.pi * x)


def make_data(n_train=2000, n_val=500, noise=0.1, seed=0, dtype=np.float64):
    """``(x, y, x_val, y_val)``: uniform points on [0, 1] as (J, 1) arrays, noisy values as (J,)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (n_train, 1))
    xv = rng.uniform(0.0, 1.0, (n_val, 1))
    y = target(x[:, 0]) + noise * rng.standard_normal(n_train)
    yv = target(xv[:, 0]) + noise * rng.standard_normal(n_val)
    return tuple(np.ascontiguousarray(a, dtype=dtype) for a in (x, y, xv, yv))


def _shuffles(n, epochs, seed):
    """One permutation per epoch, shared by every implementation (the same batches in the same order)."""
    rng = np.random.default_rng(seed + 1)
    return [rng.permutation(n) for _ in range(epochs)]


def _mse(net, x, y):
    r = net(x) - y
    return float(np.dot(r, r) / r.size)


class _BatchMSE:
    """``L = mean (u - y)^2`` on the current batch; writes ``dL/du`` (the value channel only)."""

    __slots__ = ("y",)

    def __call__(self, u, adj):
        r = np.subtract(u[0], self.y, out=adj[0])
        value = float(np.dot(r, r)) / r.size
        r *= 2.0 / r.size
        return value


def train_fastopt(net, data, batch_size, epochs, lr=1e-3, seed=0, progress=None, loop="fit"):
    """Train ``net`` in place with Adam on mini-batches; time only the updates.

    Args:
      loop: ``"fit"``: :func:`fastopt.train.fit` (on the CPU, each epoch one compiled call); ``"python"``:
        the plain loop of ``net.loss_and_grad`` and ``Adam.step`` per batch. Both take the same steps
        (the same parameters, bit for bit, on the CPU).
    Returns:
      dict: ``time_s`` (the training loop alone), ``steps``, ``history`` (train and validation loss
      after each epoch, evaluated outside the timed region).
    """
    if loop not in ("fit", "python"):
        raise ValueError(f"train_fastopt: loop must be 'fit' or 'python', got {loop!r}")
    x, y, xv, yv = data
    opt = Adam(net.params, lr=lr)
    perms = _shuffles(x.shape[0], epochs, seed)
    history, outside = [], 0.0

    def after_epoch(_):
        nonlocal outside
        t0 = time.perf_counter()
        history.append((_mse(net, x, y), _mse(net, xv, yv)))
        if progress is not None:
            progress.update(1)
        outside += time.perf_counter() - t0

    if loop == "fit":
        t0 = time.perf_counter()
        result = fit(net, opt, x, y, batch_size=batch_size, epochs=epochs, permutations=perms, progress=after_epoch)
        return {"time_s": time.perf_counter() - t0 - outside, "steps": result.steps, "history": history}
    grad = net.params.zeros_like()
    loss = _BatchMSE()
    n = x.shape[0]
    elapsed, steps = 0.0, 0
    for e, perm in enumerate(perms):
        xs, ys = x[perm], y[perm]          # one gather per epoch; batches are contiguous slices
        t0 = time.perf_counter()
        for start in range(0, n, batch_size):
            loss.y = ys[start:start + batch_size]
            net.loss_and_grad(xs[start:start + batch_size], loss, 0, grad)
            opt.step(grad)
        elapsed += time.perf_counter() - t0
        steps += -(-n // batch_size)
        after_epoch(e)
    return {"time_s": elapsed, "steps": steps, "history": history}


def _torch_model(torch, net):
    """A ``torch.nn.Sequential`` with ``net``'s architecture and weights (Linear stores W^T)."""
    layers, w = [], [int(n) for n in net.widths]
    dt = {np.float64: torch.float64, np.float32: torch.float32}[net.dtype.type]
    for l in range(len(w) - 1):
        lin = torch.nn.Linear(w[l], w[l + 1], dtype=dt)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(net.params[f"dense{l}.W"].T)))
            lin.bias.copy_(torch.from_numpy(net.params[f"dense{l}.b"].copy()))
        layers += [lin, torch.nn.Tanh() if net.activation == "tanh" else _Sin(torch)]
    out = torch.nn.Linear(w[-1], 1, bias=net.out_bias, dtype=dt)
    with torch.no_grad():
        out.weight.copy_(torch.from_numpy(net.params["out.c"].copy())[None, :])
        if net.out_bias:
            out.bias.copy_(torch.from_numpy(net.params["out.c0"].copy()))
    return torch.nn.Sequential(*layers, out)


def _Sin(torch):
    class Sin(torch.nn.Module):
        def forward(self, a):
            return torch.sin(a)

    return Sin()


def train_torch(net, data, batch_size, epochs, lr=1e-3, seed=0, threads=None):
    """The same loop in PyTorch (CPU, autograd, ``torch.optim.Adam`` default), from ``net``'s weights.

    ``net`` itself is not changed. Returns the dict of :func:`train_fastopt` (``threads``: the
    PyTorch intra-op thread count used).
    """
    import torch

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        model = _torch_model(torch, net)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        mse = torch.nn.MSELoss()
        x, y, xv, yv = (torch.from_numpy(a) for a in data)
        n = x.shape[0]
        history, elapsed, steps = [], 0.0, 0
        for perm in _shuffles(n, epochs, seed):
            p = torch.from_numpy(perm)
            xs, ys = x[p], y[p]
            t0 = time.perf_counter()
            for start in range(0, n, batch_size):
                opt.zero_grad()
                loss = mse(model(xs[start:start + batch_size])[:, 0], ys[start:start + batch_size])
                loss.backward()
                opt.step()
            elapsed += time.perf_counter() - t0
            steps += -(-n // batch_size)
            with torch.no_grad():
                history.append((float(mse(model(x)[:, 0], y)), float(mse(model(xv)[:, 0], yv))))
        return {"time_s": elapsed, "steps": steps, "history": history, "threads": torch.get_num_threads()}
    finally:
        torch.set_num_threads(old_threads)


def _warm_up(data, hidden, dtype, backend, with_torch):
    """One step of each implementation first, so that no timing includes loading compiled kernels."""
    small = tuple(a[:8] for a in data)
    net = MLP(1, hidden, seed=0, dtype=dtype, backend=backend)
    train_fastopt(net, small, 4, 1)
    train_fastopt(net, small, 4, 1, loop="python")
    if with_torch:
        train_torch(net, small, 4, 1)


def run(batch_sizes=BATCH_SIZES, epochs=100, n_train=2000, n_val=500, noise=0.1, lr=1e-3, hidden=(20, 20),
        seed=0, dtype=np.float64, backend="cpu", torch=False, progress=False):
    """Run the experiment for every batch size (the same initial network for each).

    Args:
      batch_sizes, epochs, n_train, n_val, noise, lr, hidden, seed: the set-up (the lecture's by default).
      dtype, backend: of the fastopt network.
      torch: also run the PyTorch loop (needs torch) from the same weights on the same shuffles.
      progress: a tqdm progress bar over epochs.
    Returns:
      dict: ``rows`` (one per batch size: ``batch_size, steps, time_s`` (:func:`fastopt.train.fit`),
      ``python_loop_time_s`` (the plain loop of loss_and_grad and Adam.step), ``train_loss, val_loss,
      history`` and, with ``torch``, ``torch_time_s, torch_train_loss, torch_val_loss, speedup``), and the
      set-up.
    """
    data = make_data(n_train, n_val, noise, seed, dtype)
    _warm_up(data, hidden, dtype, backend, torch)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(batch_sizes) * epochs, desc="batch-size experiment", unit="epoch", leave=False)
    rows = []
    for bs in batch_sizes:
        net = MLP(1, hidden, seed=seed, dtype=dtype, backend=backend)
        reference = net.params.copy() if torch else None
        result = train_fastopt(net, data, int(bs), epochs, lr, seed, bar)
        looped = train_fastopt(MLP(1, hidden, seed=seed, dtype=dtype, backend=backend), data, int(bs), epochs, lr,
                               seed, loop="python")
        row = {"batch_size": int(bs), "steps": result["steps"], "time_s": result["time_s"],
               "python_loop_time_s": looped["time_s"],
               "train_loss": result["history"][-1][0], "val_loss": result["history"][-1][1],
               "history": result["history"]}
        if torch:
            net.params.data[...] = reference.data      # the same start for PyTorch
            tr = train_torch(net, data, int(bs), epochs, lr, seed)
            row.update(torch_time_s=tr["time_s"], torch_train_loss=tr["history"][-1][0],
                       torch_val_loss=tr["history"][-1][1], torch_history=tr["history"],
                       speedup=tr["time_s"] / result["time_s"])
        rows.append(row)
    if bar is not None:
        bar.close()
    return {"rows": rows, "epochs": epochs, "n_train": n_train, "n_val": n_val, "noise": noise, "lr": lr,
            "hidden": tuple(hidden), "dtype": np.dtype(dtype).name, "backend": backend}
