"""Diagnostic: per-call times of mlp_forward / mlp_backward on the lecture's 1-20-20-1 tanh network.

Run:  OMP_WAIT_POLICY=PASSIVE /work/venv/bin/python bench/diag_mlp_small.py [--J 100] [--reps 7] [--clock thread]

Prints best-of-N microseconds per call (forward, backward, forward+backward) for C = 1, 2, 3
(orders 0, 1, 2), float64 and float32, a whole training step as ``fastopt.nn.MLP`` + ``Adam`` do it,
and the FLOP floor: the dense layers' MACs (forward C J sum n_l n_{l+1}, backward 2x) at the
dgemm/sgemm rate measured in the same run (a NumPy GEMM 8192 x 64 x 64, one thread).
``--clock thread`` times with ``time.thread_time`` (CPU time of this thread: on a shared machine
it leaves out the time other processes take the core; the default is wall-clock).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

# one BLAS thread: the floor is per core (the small kernels run serially; OpenBLAS does not thread
# GEMMs this small anyway). Set before NumPy/SciPy load OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fastopt.kernels import reference_nn as nn  # noqa: E402
from fastopt.kernels.cpu import mlp  # noqa: E402


CLOCK = time.perf_counter


def best(f, n_inner, reps):
    f()
    ts = []
    for _ in range(reps):
        t0 = CLOCK()
        for _ in range(n_inner):
            f()
        ts.append((CLOCK() - t0) / n_inner)
    return min(ts)


def gemm_rate(dtype, reps, n=64, m=8192):
    """MACs per second of a one-thread GEMM (m x n) (n x n) (OPENBLAS_NUM_THREADS=1)."""
    a = np.random.default_rng(0).standard_normal((m, n)).astype(dtype)
    w = np.random.default_rng(1).standard_normal((n, n)).astype(dtype)
    o = np.empty((m, n), dtype)
    t = best(lambda: np.dot(a, w, out=o), max(1, 20 * 64 * 64 * 8192 // (m * n * n)), reps)
    return m * n * n / t


def problem(J, dtype, order, hidden=(20, 20), d=1):
    spec = nn.NetSpec(d=d, hidden=hidden, activation="tanh")
    rng = np.random.default_rng(0)
    params, B = nn.init_network(spec, rng)
    theta = params.data.astype(dtype)
    B = B.astype(dtype)
    x = rng.uniform(0, 1, (J, d)).astype(dtype)
    C = (1, 1 + d, 2 + d)[order]
    e = np.empty(0, dtype)
    out = np.empty((C, J), dtype)
    basis = np.empty((C, J, spec.n_basis), dtype)
    tape = np.empty(mlp.mlp_tape_size(J, d, spec.widths, order), dtype)
    adj = rng.standard_normal((C, J)).astype(dtype)
    grad = np.empty_like(theta)
    cfg = spec.config

    def fwd():
        mlp.mlp_forward(x, B, theta, *cfg, e, e, out, basis, tape)

    def bwd():
        mlp.mlp_backward(x, B, theta, *cfg, e, basis, tape, adj, grad)

    def both():
        fwd()
        bwd()

    return spec, fwd, bwd, both


def step_fn(J, dtype, order):
    """A whole step through the public API: MLP.forward, the loss adjoints, MLP.backward, Adam."""
    from fastopt.nn import MLP
    from fastopt.optim import Adam
    net = MLP(1, hidden=(20, 20), dtype=dtype, seed=0)
    x = np.linspace(0, 1, J, dtype=dtype)[:, None]
    y = np.sin(3 * x[:, 0])
    opt = Adam(net.params, lr=1e-3)
    grad = net.params.zeros_like()
    C = (1, 2, 3)[order]
    adj = np.zeros((C, J), dtype)
    sc = dtype(2.0 / J)

    def step():
        u = net.forward(x, order).u
        np.subtract(u[0], y, out=adj[0])
        adj[0] *= sc
        net.backward(adj, grad)
        opt.step(grad)

    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--J", type=int, default=100)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--hidden", type=str, default="20,20")
    ap.add_argument("--no-step", action="store_true")
    ap.add_argument("--clock", choices=["wall", "thread"], default="wall")
    a = ap.parse_args()
    global CLOCK
    CLOCK = time.thread_time if a.clock == "thread" else time.perf_counter
    hidden = tuple(int(h) for h in a.hidden.split(","))
    J = a.J
    n_inner = max(20, 200000 // max(J, 1) // 10)
    print(f"J = {J}, hidden = {hidden}, best of {a.reps} x {n_inner} calls (us per call, {a.clock} clock)")
    for dtype in (np.float64, np.float32):
        rate = gemm_rate(dtype, a.reps)
        peak = gemm_rate(dtype, 3, n=1024, m=1024)
        name = np.dtype(dtype).name
        print(f"{name}: one-thread GEMM rate 8192x64x64 {rate / 1e9:.2f} GMAC/s, 1024^3 {peak / 1e9:.2f} GMAC/s "
              f"(the floors below use the first)")
        for order in (0, 1, 2):
            spec, fwd, bwd, both = problem(J, dtype, order, hidden)
            C = order + 1
            w = spec.widths
            macs = C * J * sum(int(w[l]) * int(w[l + 1]) for l in range(len(w) - 1)) + C * J * int(w[-1])
            tf, tb, tfb = (best(f, n_inner, a.reps) for f in (fwd, bwd, both))
            floor = 3 * macs / rate
            line = (f"  C={C}: fwd {tf * 1e6:7.2f}  bwd {tb * 1e6:7.2f}  fwd+bwd {tfb * 1e6:7.2f} us;"
                    f" MAC floor (3 x fwd MACs at the GEMM rate) {floor * 1e6:6.2f} us ({tfb / floor:.1f}x)")
            if not a.no_step and hidden == (20, 20) and order in (0, 2):
                ts = best(step_fn(J, dtype, order), n_inner, a.reps)
                line += f";  MLP+Adam step {ts * 1e6:7.2f} us"
            print(line, flush=True)


if __name__ == "__main__":
    main()
