"""The LS system on the GPU: Gram from a given Phi, and fused from the network, beside CuPy's materialise-then-matmul.

Every timed call makes ``reps`` calls and then synchronises the device; the median of ``ROUNDS``
such calls is reported per call. float64 accumulation throughout (the library's default).

Groups and rows:

- ``gram J={1e5,1e6} N={32..256}``: ``A = Phi^T W Phi``, ``b = Phi^T W y`` of a given float64
  ``Phi`` (J x N on the device), one weight per row:

  - ``fastopt``: ``fastopt.ls.gram(Phi, w, y)`` (validation, then ``kernels/gpu/gram.py``: per tile a
    ``sqrt(w)`` scaling pass, cuBLAS ``dsyrk`` and ``dgemv``);
  - ``kernel``: the kernel alone (``kernels/gpu/gram.gram`` into preallocated A, b): the price of
    the public call's checks is the difference;
  - ``cupy-matmul``: CuPy materialise-then-matmul, ``Phi.T @ (w[:, None] * Phi)`` and
    ``Phi.T @ (w * y)`` (a J x N temporary and a full GEMM);
  - ``syrk-alone``: one ``cupy.cublas.syrk`` over the whole, already scaled matrix: the ceiling of
    any syrk-based assembly;
  - ``gemm-alone``: one ``cupy.cublas.gemm`` of the same: whether cuBLAS's syrk beats its GEMM on
    these tall, thin shapes (it does half the flops, but GEMM kernels are the better tuned).

- ``gram tiles J=1e6 N=64``: ``kernel`` with tiles of 2^12 .. 2^20 rows (the default is
  ``fastopt.ls.default_tile(64, "gpu")`` = 131072): checks the default on the device.

- ``fused J={1e5,1e6} N={32..256} {dtype}``: the LS system of a regression (value rows,
  quadrature weights) from the last hidden layer of the d = 1 tanh network 1 -> 64 -> N on the GPU:

  - ``fastopt``: ``fastopt.ls.assemble(net, x, problem)``: tile by tile, the network's GPU forward,
    the rows, the accumulator's cuBLAS syrk; the J x N matrix never exists;
  - ``cupy-materialise``: Phi by CuPy (``tanh(tanh(x W1 + b1) W2 + b2)`` with the network's
    weights), then ``Phi.T @ (w[:, None] * Phi)`` and ``Phi.T @ (w * y)``;
  - ``layer+syrk``: fastopt's forward over all J points at once (the layer evaluated once,
    materialised) plus one ``syrk`` of the scaled basis: the ceiling of the fused path.

Before timing, fastopt's A is checked against CuPy's (``1e-10`` relative). Ratios printed:
``time(row) / time(fastopt)``.

Run on a GPU machine (skips without one)::

    python -m pytest bench/bench_gpu_ls.py --benchmark-only -s
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import fastopt

_gpu_ok, _gpu_why = fastopt.gpu_status()      # CuPy and a usable device (the emulator's, under it)
if not _gpu_ok:
    pytest.skip(f"gpu backend unavailable: {_gpu_why}", allow_module_level=True)

import cupy  # noqa: E402

pytestmark = pytest.mark.gpu

from cupy import cublas  # noqa: E402

from fastopt import ls  # noqa: E402
from fastopt.kernels.gpu import gram as gg  # noqa: E402
from fastopt.nn import MLP  # noqa: E402
from fastopt.problems import LeastSquares  # noqa: E402

ROUNDS = 3
SIZES = [(10**5, 32), (10**5, 64), (10**5, 128), (10**5, 256), (10**6, 32), (10**6, 64), (10**6, 128),
         (10**6, 256)]
WIDTH = 64
RESULTS: dict[tuple[str, str], float] = {}


def _fmt(J):
    return f"1e{int(round(np.log10(J)))}"


def _synchronize():
    cupy.cuda.Device().synchronize()


def _timed(benchmark, group, row, step, reps):
    """Median seconds per call of ``step`` (``reps`` calls, then a synchronisation, per timed call)."""
    def run_reps():
        for _ in range(reps):
            step()
        _synchronize()

    run_reps()  # warm-up: cuBLAS handles, NVRTC / loading, memory pool
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        run_reps()
        times.append(time.perf_counter() - t0)
    seconds = float(np.median(times)) / reps
    RESULTS[(group, row)] = seconds
    benchmark.extra_info.update({"group": group, "row": row, "ms_per_call": seconds * 1e3})
    line = f"{group:>34} {row:>16}: {seconds * 1e3:9.3f} ms/call"
    base = RESULTS.get((group, "fastopt")) or RESULTS.get((group, "kernel default"))
    if base and row not in ("fastopt", "kernel default"):
        benchmark.extra_info["ratio_to_fastopt"] = seconds / base
        line += f"   {seconds / base:6.2f}x fastopt's time"
    print("\n" + line, flush=True)
    benchmark.pedantic(run_reps, rounds=1, iterations=1, warmup_rounds=0)


@pytest.fixture(autouse=True)
def _free_memory():
    yield
    _synchronize()
    cupy.get_default_memory_pool().free_all_blocks()


def _reps(J, N):
    return 2 if J * N >= 10**8 else 5


# =========================================================================== Gram from a given Phi
def _gram_data(J, N):
    rs = cupy.random.RandomState(0)
    Phi = rs.standard_normal((J, N))
    w = rs.uniform(0.5, 1.5, J) / J
    y = rs.standard_normal(J)
    return Phi, w, y


GRAM_ROWS = ["fastopt", "kernel", "cupy-matmul", "syrk-alone", "gemm-alone"]


@pytest.mark.parametrize("row", GRAM_ROWS)
@pytest.mark.parametrize("J,N", SIZES, ids=[f"J{_fmt(J)}-N{N}" for J, N in SIZES])
def test_gram_from_phi(benchmark, J, N, row):
    group = f"gram J={_fmt(J)} N={N}"
    Phi, w, y = _gram_data(J, N)
    reps = _reps(J, N)
    if row == "fastopt":
        s = ls.gram(Phi, w, y)
        A_ref = Phi.T @ (w[:, None] * Phi)
        err = float(cupy.abs(s.A - A_ref).max() / cupy.abs(A_ref).max())
        assert err <= 1e-10, f"fastopt and CuPy disagree: {err:.3g}"
        _timed(benchmark, group, row, lambda: ls.gram(Phi, w, y), reps)
    elif row == "kernel":
        A, b = cupy.empty((N, N)), cupy.empty(N)
        tile = ls.default_tile(N, "gpu")
        _timed(benchmark, group, row, lambda: gg.gram(Phi, w, y, A, b, tile), reps)
    elif row == "cupy-matmul":
        def step():
            Phi.T @ (w[:, None] * Phi)
            Phi.T @ (w * y)
        _timed(benchmark, group, row, step, reps)
    else:
        R = cupy.sqrt(w)[:, None] * Phi
        A = cupy.zeros((N, N))
        if row == "syrk-alone":
            step = lambda: cublas.syrk("T", R, out=A, alpha=1.0, beta=0.0, lower=False)  # noqa: E731
        else:
            step = lambda: cublas.gemm("T", "N", R, R, out=A)  # noqa: E731
        _timed(benchmark, group, row, step, reps)


TILES = [1 << 12, 1 << 14, 1 << 16, 1 << 17, 1 << 18, 1 << 20]


@pytest.mark.parametrize("tile", TILES)
def test_gram_tile_sizes(benchmark, tile):
    J, N = 10**6, 64
    group = f"gram tiles J={_fmt(J)} N={N}"
    Phi, w, y = _gram_data(J, N)
    A, b = cupy.empty((N, N)), cupy.empty(N)
    row = "kernel default" if tile == ls.default_tile(N, "gpu") else f"tile {tile}"
    _timed(benchmark, group, row, lambda: gg.gram(Phi, w, y, A, b, tile), 2)


# =========================================================================== fused from the network
FUSED_CASES = [(J, N, "float64") for J, N in SIZES] + [(10**6, 128, "float32")]
FUSED_ROWS = ["fastopt", "cupy-materialise", "layer+syrk"]


def _fused_setup(J, N, dtype):
    T = np.dtype(dtype)
    net = MLP(1, (WIDTH, N), seed=0, dtype=T, out_bias=False, first_init="uniform", uniform_range=(-4, 4),
              backend="gpu")
    x = cupy.sort(cupy.random.RandomState(1).uniform(0, 1, (J, 1)), axis=0).astype(T)
    w = cupy.full(J, 1.0 / J)
    y = cupy.sin(6.0 * x[:, 0]).astype(np.float64)
    return net, x, w, y, LeastSquares.regression(y, w)


def _materialised_phi(net, x):
    p = net.params
    z = cupy.tanh(x @ p["dense0.W"] + p["dense0.b"])
    return cupy.tanh(z @ p["dense1.W"] + p["dense1.b"]).astype(np.float64)


@pytest.mark.parametrize("row", FUSED_ROWS)
@pytest.mark.parametrize("J,N,dtype", FUSED_CASES, ids=[f"J{_fmt(J)}-N{N}-{d}" for J, N, d in FUSED_CASES])
def test_fused_assembly(benchmark, J, N, dtype, row):
    group = f"fused J={_fmt(J)} N={N} {dtype}"
    net, x, w, y, problem = _fused_setup(J, N, dtype)
    reps = _reps(J, N)
    if row == "fastopt":
        s = ls.assemble(net, x, problem)
        Phi = _materialised_phi(net, x)
        A_ref = Phi.T @ (w[:, None] * Phi)
        err = float(cupy.abs(s.A - A_ref).max() / cupy.abs(A_ref).max())
        assert err <= (1e-10 if dtype == "float64" else 1e-4), f"fused and materialised A disagree: {err:.3g}"
        _timed(benchmark, group, row, lambda: ls.assemble(net, x, problem), reps)
    elif row == "cupy-materialise":
        def step():
            Phi = _materialised_phi(net, x)
            Phi.T @ (w[:, None] * Phi)
            Phi.T @ (w * y)
        _timed(benchmark, group, row, step, reps)
    else:
        A = cupy.zeros((N, N))
        sw = cupy.sqrt(w)[:, None]

        def step():
            basis = net.forward(x, 0).basis[0]
            cublas.syrk("T", (sw * basis).astype(np.float64, copy=False), out=A, alpha=1.0, beta=0.0)
        _timed(benchmark, group, row, step, reps)
