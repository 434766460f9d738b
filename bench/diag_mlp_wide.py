"""Diagnostic: the wide case of issue 3 against PyTorch CPU autograd (forward + backward).

Run:  OMP_WAIT_POLICY=PASSIVE /work/venv/bin/python bench/diag_mlp_wide.py [--J 100000] [--reps 3]
      [--dtypes float64,float32] [--threads 1,2] [--fixed-B] [--no-torch]

The network: d = 1, Fourier features gamma(x) = [x, cos(2 pi x B), sin(2 pi x B)] with K = 64
trainable frequencies (n_0 = 129), three tanh layers of 64, u = z_3 c + c0; J = 1e5 points and
the channels u, u', u'' (C = 3). One "step" is the forward with all channels, the adjoints of the
loss L = mean(u^2) + mean(u'^2) + mean((u'' - 1)^2) and the backward to every parameter.

- ``fastopt``: ``kernels/cpu/mlp.py`` ``mlp_forward`` (u, u', u'' and the tape), the adjoints (NumPy),
  ``mlp_backward`` into the flat gradient; Numba's thread count set with ``numba.set_num_threads``;
- ``torch``: the same network with the same weights: the features, ``torch.nn.functional.linear``
  layers, u' and u'' by ``torch.autograd.grad(..., create_graph=True)``, the loss, ``.backward()``;
  PyTorch's thread count set to the same number.

Both gradients are compared (relative to the largest entry) before timing. Times are best-of-N
seconds per step; the ratio is time(torch) / time(fastopt) (issue 3 asks for >= 2).

Also printed, for the fused-versus-materialised choice of ``mlp.py``: the Fourier layer alone on
whole arrays (``kernels/cpu/fourier.py``: ``fourier_forward`` into a (3, J, 129) array and
``fourier_backward`` from one), what an unfused first layer costs before its GEMMs read the
310 MB (float64) of features; ``mlp.py`` computes the features per block instead.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fastopt.kernels import reference_nn as nn  # noqa: E402
from fastopt.kernels.cpu import mlp  # noqa: E402


def best(f, reps):
    f()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def problem(J, dtype, train_B=True, K=64, hidden=(64, 64, 64)):
    spec = nn.NetSpec(d=1, hidden=hidden, fourier_K=K, keep_x=True, two_pi=True, train_B=train_B)
    rng = np.random.default_rng(0)
    params, B = nn.init_network(spec, rng, fourier_sigma=1.0)
    for name in params.names:  # non-zero biases: every term of the gradient is exercised
        if name.endswith(".b") or name == "out.c0":
            params[name] = rng.uniform(-0.2, 0.2, params[name].shape)
    theta = params.data.astype(dtype)
    B = theta[:B.size].reshape(B.shape) if train_B else np.ascontiguousarray(B, dtype=dtype)
    x = rng.uniform(0.0, 1.0, (J, 1)).astype(dtype)
    return spec, params, theta, B, x


class Fastopt:
    """One step (forward, adjoints of L, backward) on preallocated buffers; ``self()`` returns the gradient.

    ``kernels``: a module with ``mlp_tape_size``, ``mlp_forward`` and ``mlp_backward`` (the mirrored
    trees: ``kernels/cpu/mlp.py`` by default, ``reference_nn`` for the NumPy reference).
    """

    def __init__(self, spec, theta, B, x, kernels=mlp):
        dt = theta.dtype
        J = x.shape[0]
        self.spec, self.theta, self.B, self.x, self.k = spec, theta, B, x, kernels
        self.e = np.empty(0, dt)
        self.out = np.empty((3, J), dt)
        self.basis = np.empty((3, J, spec.n_basis), dt)
        self.tape = np.empty(kernels.mlp_tape_size(J, 1, spec.widths, 2), dt)
        self.adj = np.empty((3, J), dt)
        self.grad = np.empty_like(theta)

    def forward(self):
        self.k.mlp_forward(self.x, self.B, self.theta, *self.spec.config, self.e, self.e, self.out, self.basis,
                           self.tape)

    def adjoints(self):
        J = self.x.shape[0]
        two = self.theta.dtype.type(2.0 / J)
        np.multiply(self.out[:2], two, out=self.adj[:2])
        np.subtract(self.out[2], 1, out=self.adj[2])
        self.adj[2] *= two

    def backward(self):
        self.k.mlp_backward(self.x, self.B, self.theta, *self.spec.config, self.e, self.basis, self.tape, self.adj,
                            self.grad)

    def __call__(self):
        self.forward()
        self.adjoints()
        self.backward()
        return self.grad


class Torch:
    def __init__(self, torch, spec, params, theta, B, x):
        tdt = torch.float64 if theta.dtype == np.float64 else torch.float32
        self.torch, self.spec = torch, spec
        views = spec.views(theta)
        self.names = [n for n, _ in spec.layout()]
        self.leaves = {n: torch.tensor(np.array(views[n]), dtype=tdt, requires_grad=True) for n in self.names}
        self.Bfix = None if spec.train_B else torch.tensor(np.array(B), dtype=tdt)
        self.x = torch.tensor(x, dtype=tdt, requires_grad=True)
        self.L = len(spec.hidden)

    def loss(self):
        torch, p, x = self.torch, self.leaves, self.x
        B = p["fourier.B"] if self.spec.train_B else self.Bfix
        psi = (2 * math.pi) * (x @ B)
        z = torch.cat([x, torch.cos(psi), torch.sin(psi)], dim=1)
        for l in range(self.L):
            z = torch.tanh(z @ p[f"dense{l}.W"] + p[f"dense{l}.b"])
        u = z @ p["out.c"] + p["out.c0"]
        du = torch.autograd.grad(u.sum(), x, create_graph=True)[0][:, 0]
        d2u = torch.autograd.grad(du.sum(), x, create_graph=True)[0][:, 0]
        return (u ** 2).mean() + (du ** 2).mean() + ((d2u - 1) ** 2).mean()

    def __call__(self):
        for v in self.leaves.values():
            v.grad = None
        self.loss().backward()

    def flat_grad(self):
        self()
        return np.concatenate([self.leaves[n].grad.detach().numpy().ravel() for n in self.names])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--J", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--fixed-B", action="store_true", help="frequencies not trained (no dL/dB)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--hidden", default="64,64,64")
    ap.add_argument("--K", type=int, default=64)
    a = ap.parse_args()
    import numba
    torch = None
    if not a.no_torch:
        import torch
    hidden = tuple(int(h) for h in a.hidden.split(","))
    print(f"J = {a.J}, d = 1, K = {a.K}, hidden = {hidden}, C = 3, train_B = {not a.fixed_B}; "
          f"best of {a.reps} (seconds per forward + backward)")
    for name in a.dtypes.split(","):
        dt = np.dtype(name).type
        spec, params, theta, B, x = problem(a.J, dt, not a.fixed_B, a.K, hidden)
        fo = Fastopt(spec, theta, B, x)
        th = Torch(torch, spec, params, theta, B, x) if torch is not None else None
        if th is not None:
            g_t = th.flat_grad()
            g_f = fo().copy()
            err = np.max(np.abs(g_f - g_t)) / np.max(np.abs(g_t))
            print(f"{name}: max |grad fastopt - grad torch| / max |grad torch| = {err:.2e}")
        if a.K:
            from fastopt.kernels.cpu import fourier
            numba.set_num_threads(1)
            feats = np.empty((3, a.J, spec.n_features), dt)
            gB = np.empty(B.shape, dt)
            t_ff = best(lambda: fourier.fourier_forward(x, B, spec.s, True, feats), a.reps)
            t_fb = best(lambda: fourier.fourier_backward(x, B, spec.s, True, feats, gB, np.empty(0, dt)), a.reps)
            print(f"  {name} materialised Fourier layer alone (1 thread): forward {t_ff * 1e3:.1f} ms, "
                  f"backward {t_fb * 1e3:.1f} ms")
        for n in (int(t) for t in a.threads.split(",")):
            numba.set_num_threads(n)
            t_f = best(fo, a.reps)
            t_fwd = best(fo.forward, a.reps)
            fo.forward()
            fo.adjoints()
            t_bwd = best(fo.backward, a.reps)
            line = (f"  {name} {n} thread(s): fastopt {t_f * 1e3:8.1f} ms "
                    f"(fwd {t_fwd * 1e3:.1f}, bwd {t_bwd * 1e3:.1f})")
            if th is not None:
                old = torch.get_num_threads()
                torch.set_num_threads(n)
                try:
                    t_t = best(th, a.reps)
                finally:
                    torch.set_num_threads(old)
                line += f"  torch {t_t * 1e3:8.1f} ms   torch / fastopt = {t_t / t_f:.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
