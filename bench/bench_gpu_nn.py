"""GPU Fourier layer and whole MLP passes beside their ceilings and PyTorch CUDA.

Groups (each row's time is per call; every timed call makes ``reps`` calls and then
synchronises the device, and the median of ``ROUNDS`` such calls is reported):

- ``fourier {forward,backward} {dtype}``: the Fourier layer, J = 1e6 points, K = 64
  frequencies, d = 1, all channels (C = 3: u, u', u''), s = 2 pi, no kept x:

  - ``fastopt``: ``kernels/gpu/fourier.py`` (forward; backward to B and x);
  - ``fastopt-C1``: the value channel only: the same bytes as one sin/cos evaluation;
  - ``cupy-sincos``: ``cupy.sin`` and ``cupy.cos`` of the layer's J K arguments (precomputed),
    into preallocated outputs: the time to evaluate the sines and cosines once, with CuPy's
    own elementwise kernels: the ceiling of a layer that must evaluate them (at C = 3 the layer
    also writes or reads 3x those outputs' bytes, so compare ``fastopt-C1`` with it);
  - ``torch``: PyTorch CUDA, forward with ``out=`` into the same layout, backward by autograd.

- ``mlp {name} {dtype}``: forward (u, u', u'' and the tape) plus backward (every parameter's
  gradient from given adjoints of the three channels) of

  - ``1-20-20-1``: the lecture's 1-20-20-1 tanh network, J = 100 (launch-bound: the time is
    the host's cost of the ~15 launches);
  - ``fourier64-3x64``: d = 1, Fourier features K = 64 (fixed B, s = 2 pi), 3 tanh layers of 64,
    J = 1e5;

  rows ``fastopt`` (``kernels/gpu/mlp.py``) and ``torch`` (PyTorch CUDA autograd: u' and u'' by
  double backward with ``create_graph=True``, then ``torch.autograd.grad`` of the three channels
  against the adjoints). Before timing, the torch gradient is checked against fastopt's.

Ratios printed: ``time(row) / time(fastopt)`` for every row of a group once fastopt's exists.

Run on a GPU machine (skips without one)::

    python -m pytest bench/bench_gpu_nn.py --benchmark-only -s
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

import fastopt

_gpu_ok, _gpu_why = fastopt.gpu_status()      # CuPy and a usable device (the emulator's, under it)
if not _gpu_ok:
    pytest.skip(f"gpu backend unavailable: {_gpu_why}", allow_module_level=True)

import cupy  # noqa: E402

pytestmark = pytest.mark.gpu

from fastopt.kernels import reference_nn as nn  # noqa: E402
from fastopt.kernels.gpu import fourier as gf  # noqa: E402
from fastopt.kernels.gpu import mlp as gm  # noqa: E402

ROUNDS = 5
S = 2.0 * math.pi
DTYPES = {"float32": np.float32, "float64": np.float64}

#: (group, row) -> seconds per call (median over ROUNDS).
RESULTS: dict[tuple[str, str], float] = {}


def _synchronize():
    cupy.cuda.Device().synchronize()


def _seconds_per_call(run_reps, reps) -> float:
    run_reps()  # warm-up: NVRTC compilation / loading, cuBLAS handles, memory pools
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        run_reps()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / reps


def _timed(benchmark, group, row, step, reps, sync=_synchronize):
    """Time ``step`` (``reps`` calls then a device synchronisation per timed call); report."""
    def run_reps():
        for _ in range(reps):
            step()
        sync()

    seconds = _seconds_per_call(run_reps, reps)
    RESULTS[(group, row)] = seconds
    benchmark.extra_info.update({"group": group, "row": row, "us_per_call": seconds * 1e6})
    line = f"{group:>36} {row:>12}: {seconds * 1e6:10.1f} us/call"
    base = RESULTS.get((group, "fastopt"))
    if base and row != "fastopt":
        benchmark.extra_info["ratio_to_fastopt"] = seconds / base
        line += f"   {seconds / base:6.2f}x fastopt's time"
    print("\n" + line, flush=True)
    benchmark.pedantic(run_reps, rounds=ROUNDS, iterations=1, warmup_rounds=0)


@pytest.fixture(autouse=True)
def _free_memory():
    yield
    _synchronize()
    cupy.get_default_memory_pool().free_all_blocks()


def _torch_cuda():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here")
    return torch


# =========================================================================== Fourier layer
FJ, FK, FD = 10**6, 64, 1
FC = FD + 2
FOURIER_ROWS = ["fastopt", "fastopt-C1", "cupy-sincos", "torch"]


def _fourier_data(dtype):
    rs = cupy.random.RandomState(0)
    x = rs.uniform(-1.0, 1.0, (FJ, FD)).astype(dtype)
    B = (10.0 * rs.standard_normal((FD, FK))).astype(dtype)
    adj = rs.standard_normal((FC, FJ, 2 * FK), dtype=np.float32).astype(dtype)
    return x, B, adj


class _TorchFourier:
    """The layer in PyTorch CUDA: forward with ``out=`` into the (C, J, 2K) layout, backward by autograd."""

    def __init__(self, torch, x, B):
        self.torch = torch
        self.x, self.B = torch.as_tensor(x, device="cuda"), torch.as_tensor(B, device="cuda")
        self.sB = S * self.B
        self.nb = (self.sB * self.sB).sum(0)
        self.psi = torch.empty((FJ, FK), dtype=self.x.dtype, device="cuda")

    def forward(self, o):
        torch, sB, nb = self.torch, self.sB, self.nb
        torch.matmul(self.x, sB, out=self.psi)
        cs, sn = o[0, :, :FK], o[0, :, FK:]
        torch.cos(self.psi, out=cs)
        torch.sin(self.psi, out=sn)
        for m in range(FD):
            torch.mul(sn, -sB[m], out=o[1 + m, :, :FK])
            torch.mul(cs, sB[m], out=o[1 + m, :, FK:])
        torch.mul(cs, -nb, out=o[FD + 1, :, :FK])
        torch.mul(sn, -nb, out=o[FD + 1, :, FK:])

    def backward(self, a):
        torch = self.torch
        x = self.x.detach().requires_grad_(True)
        B = self.B.detach().requires_grad_(True)
        psi = S * (x @ B)
        cs, sn = torch.cos(psi), torch.sin(psi)
        feats, adjs = [cs, sn], [a[0, :, :FK], a[0, :, FK:]]
        for m in range(FD):
            sBm = S * B[m]
            feats += [-sBm * sn, sBm * cs]
            adjs += [a[1 + m, :, :FK], a[1 + m, :, FK:]]
        nb = S * S * (B * B).sum(0)
        feats += [-nb * cs, -nb * sn]
        adjs += [a[FD + 1, :, :FK], a[FD + 1, :, FK:]]
        return torch.autograd.grad(feats, (B, x), adjs)


@pytest.mark.parametrize("row", FOURIER_ROWS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_fourier_layer(benchmark, direction, dtype, row):
    T = DTYPES[dtype]
    group = f"fourier {direction} {dtype}"
    x, B, adj = _fourier_data(T)
    reps = 5
    if row == "cupy-sincos":
        psi = S * (x @ B)  # the layer's arguments, once, outside the timing
        so, co = cupy.empty_like(psi), cupy.empty_like(psi)

        def step():
            cupy.sin(psi, out=so)
            cupy.cos(psi, out=co)

        _timed(benchmark, group, row, step, reps)
        return
    if row == "torch":
        torch = _torch_cuda()
        tf = _TorchFourier(torch, x, B)
        if direction == "forward":
            o = torch.empty((FC, FJ, 2 * FK), dtype=tf.x.dtype, device="cuda")
            step = lambda: tf.forward(o)  # noqa: E731
        else:
            a = torch.as_tensor(adj, device="cuda")
            step = lambda: tf.backward(a)  # noqa: E731
        try:
            _timed(benchmark, group, row, step, reps, sync=torch.cuda.synchronize)
        finally:
            del tf
            torch.cuda.empty_cache()
        return
    ch = 1 if row == "fastopt-C1" else FC
    if direction == "forward":
        out = cupy.empty((ch, FJ, 2 * FK), T)
        step = lambda: gf.fourier_forward(x, B, S, False, out)  # noqa: E731
    else:
        a = adj[:ch]
        gB, gx = cupy.empty((FD, FK), T), cupy.empty((FJ, FD), T)
        step = lambda: gf.fourier_backward(x, B, S, False, a, gB, gx)  # noqa: E731
    _timed(benchmark, group, row, step, reps)


# =========================================================================== whole MLP passes
MLP_CASES = {
    "1-20-20-1": (nn.NetSpec(d=1, hidden=(20, 20), activation="tanh"), 100, 50),
    "fourier64-3x64": (nn.NetSpec(d=1, hidden=(64, 64, 64), activation="tanh", fourier_K=64, keep_x=False),
                       10**5, 5),
}


def _mlp_data(spec, J, dtype):
    rng = np.random.default_rng(0)
    params, B = nn.init_network(spec, rng)
    theta = params.data.astype(dtype)
    x = rng.uniform(0.0, 1.0, (J, spec.d)).astype(dtype)
    adj = (rng.standard_normal((spec.d + 2, J)) / J).astype(dtype)
    return params, theta, np.asarray(B, dtype), x, adj


class _TorchMLP:
    """The same network in PyTorch CUDA; u' and u'' by double backward."""

    def __init__(self, torch, spec, params, B, x, adj, dtype):
        tdt = {np.float64: torch.float64, np.float32: torch.float32}[dtype]
        self.torch, self.spec = torch, spec
        self.leaves = {k: torch.tensor(np.asarray(v, dtype), dtype=tdt, device="cuda", requires_grad=True)
                       for k, v in params.to_dict().items()}
        self.B = torch.tensor(B, dtype=tdt, device="cuda")
        self.x = torch.tensor(x, dtype=tdt, device="cuda")
        self.adj = [torch.tensor(a, dtype=tdt, device="cuda") for a in adj]

    def grad(self):
        torch, p, spec = self.torch, self.leaves, self.spec
        x = self.x.detach().requires_grad_(True)
        if spec.fourier_K:
            psi = spec.s * (x @ self.B)
            z = torch.cat([torch.cos(psi), torch.sin(psi)], dim=1)
            if spec.keep_x:
                z = torch.cat([x, z], dim=1)
        else:
            z = x
        for l in range(len(spec.hidden)):
            z = torch.tanh(z @ p[f"dense{l}.W"] + p[f"dense{l}.b"])
        u = z @ p["out.c"]
        if spec.out_bias:
            u = u + p["out.c0"]
        du = torch.autograd.grad(u.sum(), x, create_graph=True)[0][:, 0]
        d2u = torch.autograd.grad(du.sum(), x, create_graph=True)[0][:, 0]
        return torch.autograd.grad([u, du, d2u], list(p.values()), self.adj)


@pytest.mark.parametrize("row", ["fastopt", "torch"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", list(MLP_CASES))
def test_mlp_pass(benchmark, case, dtype, row):
    spec, J, reps = MLP_CASES[case]
    T = DTYPES[dtype]
    group = f"mlp {case} J={J} {dtype}"
    params, theta_h, B_h, x_h, adj_h = _mlp_data(spec, J, T)
    C = spec.d + 2
    theta, B, x, adj = (cupy.asarray(a) for a in (theta_h, B_h, x_h, adj_h))
    empty = cupy.empty(0, T)
    out, basis = cupy.empty((C, J), T), cupy.empty((C, J, spec.n_basis), T)
    tape = cupy.empty(gm.mlp_tape_size(J, spec.d, spec.widths, 2), T)
    grad = cupy.empty_like(theta)

    def fastopt_step():
        gm.mlp_forward(x, B, theta, *spec.config, empty, empty, out, basis, tape)
        gm.mlp_backward(x, B, theta, *spec.config, empty, basis, tape, adj, grad)

    if row == "fastopt":
        _timed(benchmark, group, row, fastopt_step, reps)
        return
    torch = _torch_cuda()
    tm = _TorchMLP(torch, spec, params, B_h, x_h, adj_h, T)
    try:
        # Both rows compute the same gradient (checked in the layout of theta).
        fastopt_step()
        want = cupy.asnumpy(grad).astype(np.float64)
        got = np.concatenate([g.detach().cpu().numpy().ravel() for g in tm.grad()]).astype(np.float64)
        tol = 5e-3 if T == np.float32 else 1e-9
        assert np.max(np.abs(got - want)) <= tol * np.max(np.abs(want)), "torch and fastopt gradients differ"
        _timed(benchmark, group, row, tm.grad, reps, sync=torch.cuda.synchronize)
    finally:
        del tm
        torch.cuda.empty_cache()
