"""The Fourier-feature layer alone (issue 3, section 4): J = 1e6 points, K = 64 frequencies, d = 1.

Run:  OMP_WAIT_POLICY=PASSIVE python -m pytest bench/bench_fourier.py --benchmark-only -q -p no:cacheprovider

Per dtype (float32, float64) and direction, in one run, rows:

- ``fastopt``: ``kernels/cpu/fourier.py`` (``fourier_forward`` / ``fourier_backward``, the
  size-dispatching entry point: threaded here);
- ``numpy``: the same math vectorised with NumPy, every (J, K) buffer allocated once and
  reused (``out=``); one thread (NumPy's ufuncs are single-threaded);
- ``torch``: forward with ``torch.sin/cos/mul(..., out=)`` into views of the same output buffer;
  backward with autograd (``torch.autograd.grad`` of the six feature blocks against the
  adjoints), PyTorch's default thread count (2 here);
- ``sincos-fastopt`` / ``sincos-torch``: the time to evaluate the layer's J K sines and cosines
  once, from precomputed arguments into preallocated outputs: ``_vecmath.sincos_array``
  (threaded) and ``torch.sin/cos(out=)``; ``sincos once`` is the faster of the two;
- ``write-probe`` (forward) / ``read-probe`` (backward): ``prange`` loops that write every byte
  of the output once / read every byte of the adjoint once: the memory ceiling of any
  implementation. With C = 3 channels the layer writes (reads) 3x the bytes of the outputs of
  one sin/cos evaluation, so at C = 3 the 1.5x target is below the memory ceiling;
- ``fastopt-C1``: fastopt with the value channel only (C = 1): the layer's features themselves,
  whose traffic is that of the sin/cos evaluation (the "within 1.5x" verdict).

Forward and backward carry all channels (C = 2 + d = 3: u, u', u''), without the kept x (Tancik
et al.'s layer), frequencies B ~ N(0, 10^2), s = 2 pi, x uniform in [-1, 1] (|psi| up to ~200).

Targets (issue 3): ``time(best of numpy, torch) / time(fastopt) >= 2`` (C = 3), and
``time(sincos once) / time(fastopt-C1) >= 1 / 1.5`` ("within 1.5x of the time to evaluate its
sines and cosines once", judged on the layer's features, C = 1: at C = 3 the layer writes / reads
3x the bytes, and the write / read probe of those bytes alone takes ~3x the sincos evaluation, so
no implementation can meet it there; that row and its ceiling are reported beside the verdict).
Every row's result is checked against fastopt's on the first points.
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
from numba import prange

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import best_of, fmt_n, ratio, summary_section  # noqa: E402

from fastopt.kernels import reference_nn as ref  # noqa: E402
from fastopt.kernels.cpu import _vecmath as V  # noqa: E402
from fastopt.kernels.cpu import fourier as F  # noqa: E402
from fastopt.kernels.cpu._jit import jit  # noqa: E402

J, K, D = 10**6, 64, 1
C = D + 2
S = 2.0 * math.pi
SIGMA = 10.0
DTYPES = {"float32": np.float32, "float64": np.float64}
DIRECTIONS = ["forward", "backward"]
IMPLS = {"forward": ["fastopt", "numpy", "torch", "sincos-fastopt", "sincos-torch", "write-probe", "fastopt-C1"],
         "backward": ["fastopt", "numpy", "torch", "sincos-fastopt", "sincos-torch", "read-probe", "fastopt-C1"]}
COLUMNS = ["fastopt", "numpy", "torch", "sincos-fastopt", "sincos-torch", "write-probe", "read-probe", "fastopt-C1"]
SLOW = ("numpy", "torch")
RIVALS = "best of numpy, torch"
SINCOS = "sincos once"


def group(direction, dtype):
    return f"fourier {direction} {dtype} J={fmt_n(J)} K={K} d={D} C={C}"


for _dir in DIRECTIONS:
    for _d in DTYPES:
        _g = group(_dir, _d)
        best_of(_g, RIVALS, ("numpy", "torch"))
        best_of(_g, SINCOS, ("sincos-fastopt", "sincos-torch"))
        ratio(f"fourier {_dir} {_d}: fastopt vs best of NumPy / PyTorch", (_g, "fastopt"), (_g, RIVALS), at_least=2.0)
        ratio(f"fourier {_dir} {_d}: sincos once / fastopt-C1 (the layer's features, C = 1: within 1.5x)",
              (_g, "fastopt-C1"), (_g, SINCOS), at_least=1 / 1.5)
        probe = "write-probe" if _dir == "forward" else "read-probe"
        ratio(f"fourier {_dir} {_d}: sincos once / fastopt (with derivative channels, C = 3)", (_g, "fastopt"),
              (_g, SINCOS), info_at_least=1 / 1.5,
              note="3x the bytes of one sincos evaluation: see the ceiling on the next line")
        ratio(f"fourier {_dir} {_d}: sincos once / {probe} (the most any C = 3 layer can reach)", (_g, probe),
              (_g, SINCOS), note="< 1/1.5: the 1.5x target is beyond the memory ceiling at C = 3")
        ratio(f"fourier {_dir} {_d}: {probe} / fastopt (fraction of the memory ceiling)", (_g, "fastopt"),
              (_g, probe), note="1.0 = fastopt moves its C = 3 channels at the probe's bandwidth")


@summary_section
def _table(results):
    lines = [f"### Fourier layer, J = {fmt_n(J)}, K = {K}, d = {D}, C = {C}: ms per call and "
             "time(row) / time(fastopt) (best of rounds, this run)", "",
             "| direction | dtype | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for direction in DIRECTIONS:
        for d in DTYPES:
            g = group(direction, d)
            base = results.get((g, "fastopt"))
            if base is None:
                continue
            cells = []
            for impl in COLUMNS:
                st = results.get((g, impl))
                cells.append("-" if st is None else f"{st['min'] * 1e3:.1f} ({st['min'] / base['min']:.2f}x)")
            lines.append(f"| {direction} | {d} | " + " | ".join(cells) + " |")
    return lines


@jit(parallel=True)
def _write_probe(out, v):
    for i in prange(out.size):
        out[i] = v


@jit(parallel=True)
def _read_probe(a):
    """Sum of a 1-D array in blocks, eight scalar accumulators each: every byte read once."""
    n = a.size
    nb = (n + 16383) // 16384
    part = np.empty(nb, a.dtype)
    for b in prange(nb):
        lo = b * 16384
        hi = min(lo + 16384, n)
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a.dtype.type(0)
        i = lo
        while i + 8 <= hi:
            a0 += a[i]
            a1 += a[i + 1]
            a2 += a[i + 2]
            a3 += a[i + 3]
            a4 += a[i + 4]
            a5 += a[i + 5]
            a6 += a[i + 6]
            a7 += a[i + 7]
            i += 8
        part[b] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    return part.sum()


# -- data -----------------------------------------------------------------------------------------
def _data(dtype):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, (J, D)).astype(dtype)
    B = (SIGMA * rng.standard_normal((D, K))).astype(dtype)
    return x, B


def _constants(B):
    sB = (S * B).astype(B.dtype)
    nb = np.sum(sB * sB, axis=0).astype(B.dtype)
    return sB, nb


# -- NumPy ----------------------------------------------------------------------------------------
class NumpyFourier:
    """The layer in vectorised NumPy, every temporary allocated once."""

    def __init__(self, x, B):
        self.x, self.B = x, B
        self.s = B.dtype.type(S)
        self.sB, self.nb = _constants(B)
        self.psi = np.empty((J, K), B.dtype)

    def forward(self, out):
        x, sB, nb, psi = self.x, self.sB, self.nb, self.psi
        np.matmul(x, sB, out=psi)
        cs, sn = out[0, :, :K], out[0, :, K:]
        np.cos(psi, out=cs)
        np.sin(psi, out=sn)
        for m in range(D):
            np.multiply(sn, -sB[m], out=out[1 + m, :, :K])
            np.multiply(cs, sB[m], out=out[1 + m, :, K:])
        np.multiply(cs, -nb, out=out[D + 1, :, :K])
        np.multiply(sn, -nb, out=out[D + 1, :, K:])

    def setup_backward(self):
        self.cs, self.sn, self.pb, self.t = (np.empty((J, K), self.B.dtype) for _ in range(4))

    def backward(self, adj, gB, gx):
        x, B, sB, nb, s = self.x, self.B, self.sB, self.nb, self.s
        psi, cs, sn, pb, t = self.psi, self.cs, self.sn, self.pb, self.t
        np.matmul(x, sB, out=psi)
        np.cos(psi, out=cs)
        np.sin(psi, out=sn)
        np.multiply(cs, adj[0, :, K:], out=pb)
        np.multiply(sn, adj[0, :, :K], out=t)
        pb -= t
        explicit = np.empty((D, K), B.dtype)
        for m in range(D):
            cb, sb = adj[1 + m, :, :K], adj[1 + m, :, K:]
            np.multiply(cs, cb, out=t)
            t += sn * sb
            t *= sB[m]
            pb -= t
            np.multiply(cs, sb, out=t)
            t -= sn * cb
            explicit[m] = s * t.sum(axis=0)
        cb, sb = adj[D + 1, :, :K], adj[D + 1, :, K:]
        np.multiply(sn, cb, out=t)
        t -= cs * sb
        t *= nb
        pb += t
        np.multiply(cs, cb, out=t)
        t += sn * sb
        lap = t.sum(axis=0)
        gB[...] = s * (x.T @ pb) + explicit - 2 * s * s * B * lap
        np.matmul(pb, sB.T, out=gx)


# -- PyTorch --------------------------------------------------------------------------------------
class TorchFourier:
    """Forward with ``out=`` into the shared buffer; backward by autograd."""

    def __init__(self, torch, x, B):
        self.torch = torch
        self.x, self.B = torch.from_numpy(x), torch.from_numpy(B)
        sB, nb = _constants(B)
        self.sB, self.nb = torch.from_numpy(sB), torch.from_numpy(nb)
        self.s = S
        self.psi = torch.empty((J, K), dtype=self.x.dtype)

    def forward(self, out):
        torch, sB, nb = self.torch, self.sB, self.nb
        o = torch.from_numpy(out)
        torch.matmul(self.x, sB, out=self.psi)
        cs, sn = o[0, :, :K], o[0, :, K:]
        torch.cos(self.psi, out=cs)
        torch.sin(self.psi, out=sn)
        for m in range(D):
            torch.mul(sn, -sB[m], out=o[1 + m, :, :K])
            torch.mul(cs, sB[m], out=o[1 + m, :, K:])
        torch.mul(cs, -nb, out=o[D + 1, :, :K])
        torch.mul(sn, -nb, out=o[D + 1, :, K:])

    def backward(self, adj, gB, gx):
        torch, s = self.torch, self.s
        a = torch.from_numpy(adj)
        x = self.x.detach().requires_grad_(True)
        B = self.B.detach().requires_grad_(True)
        psi = s * (x @ B)
        cs, sn = torch.cos(psi), torch.sin(psi)
        feats, adjs = [cs, sn], [a[0, :, :K], a[0, :, K:]]
        for m in range(D):
            sBm = s * B[m]
            feats += [-sBm * sn, sBm * cs]
            adjs += [a[1 + m, :, :K], a[1 + m, :, K:]]
        nb = s * s * (B * B).sum(0)
        feats += [-nb * cs, -nb * sn]
        adjs += [a[D + 1, :, :K], a[D + 1, :, K:]]
        dB, dx = torch.autograd.grad(feats, (B, x), adjs)
        gB[...] = dB.numpy()
        gx[...] = dx.numpy()


# -- the rows -------------------------------------------------------------------------------------
def _sincos_row(impl, x, B, torch):
    psi = (x @ _constants(B)[0]).ravel()  # the layer's arguments, computed once outside the timing
    so, co = np.empty_like(psi), np.empty_like(psi)
    if impl == "sincos-fastopt":
        return lambda: V.sincos_array(psi, so, co)
    pt, st, ct = torch.from_numpy(psi), torch.from_numpy(so), torch.from_numpy(co)
    return lambda: (torch.sin(pt, out=st), torch.cos(pt, out=ct))


CASES = [(dr, d, i) for dr in DIRECTIONS for d in DTYPES for i in IMPLS[dr]]


@pytest.mark.parametrize("direction,dtype,impl", CASES, ids=[f"{dr}-{d}-{i}" for dr, d, i in CASES])
def test_fourier(benchmark, timed, request, direction, dtype, impl):
    torch = request.getfixturevalue("torch") if impl.endswith("torch") else None
    T = DTYPES[dtype]
    x, B = _data(T)
    g = group(direction, dtype)
    tol = 2e-3 if T == np.float32 else 1e-9
    if impl.startswith("sincos"):
        fn = _sincos_row(impl, x, B, torch)
        timed(benchmark, fn, group=g, label=impl, budget_s=1.0, min_rounds=3, n=J * K)
        return
    if direction == "forward":
        out = np.empty((C, J, 2 * K), T)
        if impl == "write-probe":
            flat = out.reshape(-1)
            fn = lambda: _write_probe(flat, T(1))  # noqa: E731
        elif impl == "fastopt":
            fn = lambda: F.fourier_forward(x, B, S, False, out)  # noqa: E731
        elif impl == "fastopt-C1":
            out1 = out[:1]
            fn = lambda: F.fourier_forward(x, B, S, False, out1)  # noqa: E731
        elif impl == "numpy":
            nf = NumpyFourier(x, B)
            fn = lambda: nf.forward(out)  # noqa: E731
        else:
            tf = TorchFourier(torch, x, B)
            fn = lambda: tf.forward(out)  # noqa: E731
        timed(benchmark, fn, group=g, label=impl, budget_s=1.0, min_rounds=3, warmup=1 if impl in SLOW else 2,
              n=J * K)
        if impl != "write-probe":  # the rows compute the same function
            n = 2000
            ch = 1 if impl == "fastopt-C1" else C
            want = np.empty((ch, n, 2 * K))
            ref.fourier_forward(x[:n], B, S, False, want)
            scale = np.abs(want).max(axis=(1, 2), keepdims=True)
            assert np.max(np.abs(out[:ch, :n] - want) / scale) <= tol
        return
    rng = np.random.default_rng(1)
    adj = rng.standard_normal((C, J, 2 * K), dtype=np.float32).astype(T)
    gB, gx = np.empty((D, K), T), np.empty((J, D), T)
    if impl == "read-probe":
        flat = adj.reshape(-1)
        timed(benchmark, lambda: _read_probe(flat), group=g, label=impl, budget_s=1.0, min_rounds=3, n=J * K)
        return
    a_used = adj[:1] if impl == "fastopt-C1" else adj
    if impl.startswith("fastopt"):
        fn = lambda: F.fourier_backward(x, B, S, False, a_used, gB, gx)  # noqa: E731
    elif impl == "numpy":
        nf = NumpyFourier(x, B)
        nf.setup_backward()
        fn = lambda: nf.backward(adj, gB, gx)  # noqa: E731
    else:
        tf = TorchFourier(torch, x, B)
        fn = lambda: tf.backward(adj, gB, gx)  # noqa: E731
    timed(benchmark, fn, group=g, label=impl, budget_s=1.0, min_rounds=3, warmup=1 if impl in SLOW else 2, n=J * K)
    if impl == "fastopt-C1":
        return
    gB_f, gx_f = np.empty_like(gB), np.empty_like(gx)
    F.fourier_backward(x, B, S, False, adj, gB_f, gx_f)
    assert np.max(np.abs(gB - gB_f)) <= tol * np.abs(gB_f).max()
    assert np.max(np.abs(gx - gx_f)) <= tol * np.abs(gx_f).max()
