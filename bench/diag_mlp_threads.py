"""Diagnostic: where the threaded build of the mlp kernels starts to win (``PARALLEL_MIN_POINTS``).

Run:  OMP_WAIT_POLICY=PASSIVE /work/venv/bin/python bench/diag_mlp_threads.py [--reps 7]
      [--hidden 20,20] [--K 0] [--points 128,256,...]

For each batch size J: best-of-N wall-clock microseconds of forward + backward with the serial
build (``_forward``/``_backward``) and with the threaded build (``_forward_threaded``/
``_backward_threaded``) on Numba's threads (2 here), for C = 1 and C = 3, float64 and float32;
the ratio serial / threaded (> 1: threads win). The kernels are called directly (the public
functions choose by ``PARALLEL_MIN_POINTS``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fastopt.kernels import reference_nn as nn  # noqa: E402
from fastopt.kernels.cpu import mlp  # noqa: E402


def best(f, reps, min_time=0.02):
    f()
    n = 1
    t0 = time.perf_counter()
    f()
    dt = time.perf_counter() - t0
    n = max(1, int(min_time / max(dt, 1e-7)))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        ts.append((time.perf_counter() - t0) / n)
    return min(ts)


def runner(J, dtype, order, hidden, K, threaded):
    spec = nn.NetSpec(d=1, hidden=hidden, fourier_K=K, train_B=K > 0)
    rng = np.random.default_rng(0)
    params, B = nn.init_network(spec, rng)
    theta = params.data.astype(dtype)
    B = theta[:B.size].reshape(B.shape) if spec.train_B else B.astype(dtype)
    x = rng.uniform(0, 1, (J, 1)).astype(dtype)
    C = order + 1
    e = np.empty(0, dtype)
    out = np.empty((C, J), dtype)
    basis = np.empty((C, J, spec.n_basis), dtype)
    tape = np.empty(mlp.mlp_tape_size(J, 1, spec.widths, order), dtype)
    adj = rng.standard_normal((C, J)).astype(dtype)
    grad = np.empty_like(theta)
    fwd = mlp._forward_threaded if threaded else mlp._forward
    bwd = mlp._backward_threaded if threaded else mlp._backward
    w, s, pB = spec.widths, float(spec.s), B.size if spec.train_B else 0

    def step():
        fwd(x, B, s, True, theta, w, 0, True, e, e, out, basis, tape, pB)
        bwd(B, s, True, bool(spec.train_B), theta, w, 0, True, e, basis, tape, adj, grad)

    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--hidden", default="20,20")
    ap.add_argument("--K", type=int, default=0)
    ap.add_argument("--points", default="128,256,512,1024,2048,4096,8192,16384")
    a = ap.parse_args()
    import numba
    hidden = tuple(int(h) for h in a.hidden.split(","))
    print(f"hidden = {hidden}, K = {a.K}, {numba.get_num_threads()} threads, BLOCK_POINTS = {mlp.BLOCK_POINTS}, "
          f"PARALLEL_MIN_POINTS = {mlp.PARALLEL_MIN_POINTS}; forward + backward, best of {a.reps} (us)")
    for dtype in (np.float64, np.float32):
        for order in (0, 2):
            cells = []
            for J in (int(p) for p in a.points.split(",")):
                ts = best(runner(J, dtype, order, hidden, a.K, False), a.reps)
                tt = best(runner(J, dtype, order, hidden, a.K, True), a.reps)
                cells.append(f"J={J}: {ts * 1e6:.0f}/{tt * 1e6:.0f} ({ts / tt:.2f}x)")
            print(f"{np.dtype(dtype).name} C={order + 1} serial/threaded: " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
