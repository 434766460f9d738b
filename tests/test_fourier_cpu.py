r"""The Numba "fourier" kernels (``kernels/cpu/fourier.py``) against the float64 reference (``kernels/reference_nn.py``).

Every channel order (C = 1, 1 + d, 2 + d), d = 1, 2, 3, with and without the kept x, float32 and
float64, forward and both gradients; K = 0, J = 0 and the size-0 "not wanted" outputs; serial
vs threaded builds and 1 vs 2 Numba threads, bit for bit.

Tolerances: worst-case bounds, element by element, in units of ``eps`` (the dtype's machine
epsilon, twice the unit roundoff, so every bound has a factor-2 margin), from the error of each
step of the kernel. Write ``P_jk = sum_m |s x_jm B_mk|`` (the magnitude of the terms of the
argument ``psi_jk = s x_j . b_k``):

- the argument, formed in the dtype from ``d`` products ``x_m (s B_mk)`` and ``d - 1`` additions,
  is off by at most ``(d + 2) eps P`` (``s B`` rounded once, then the dot product's ``gamma_d``);
  sin and cos are 1-Lipschitz, so this moves them by as much, *absolutely*: for ``|psi| ~ 1e3``
  in float32 that is ~1e-4, far more than the <= 2 ulp of ``_vecmath.sincos`` itself (``2 eps``).
  This is the condition of evaluating the layer in the dtype, not a fault of the kernel, and it
  is why the bounds scale with ``P`` (the brief's "tolerance scaled by |arg|");
- a feature ``coef * sin`` (coef = 1, ``s B_mk`` or ``s^2 |b_k|^2``) adds a few roundings of coef
  and of the product: ``E = eps coef ((d + 2) P + d + 4)``;
- the backward's ``psib_jk`` sums ``n <= 2 d + 4`` terms ``coef_i * (sin|cos) * adjoint_i``:
  ``E_psib <= eps M_jk ((d + 2) P_jk + 2 d + 12)``, ``M_jk = sum_i coef_i |adjoint_i|``;
- a sum of ``n`` terms in *any* order is off by at most ``gamma_{n-1} sum |terms|`` (Higham,
  *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 4.4): ``n - 1 <= K`` for dL/dx
  (the K frequencies and the kept-x adjoint); for dL/dB the kernel's summation tree has depth
  at most ``min(J, BLOCK) + n_blocks + 3`` (a block's points in sequence, then the blocks).

float64 must also be within ``1e-12`` of the scale (the largest reference value of the array).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

from fastopt.kernels import reference_nn as ref
from fastopt.kernels.cpu import fourier as cpu

F32, F64 = np.float32, np.float64
TWO_PI = 2.0 * math.pi


def make(rng, J, d, K, C, keep_x, dtype, b_scale=30.0):
    """x uniform in [-1, 1]^d and B ~ b_scale N(0, 1): with s = 2 pi, |psi| reaches ~1e3."""
    x = rng.uniform(-1.0, 1.0, (J, d)).astype(dtype)
    B = (b_scale * rng.standard_normal((d, K))).astype(dtype)
    nf = (d if keep_x else 0) + 2 * K
    adj = rng.standard_normal((C, J, nf)).astype(dtype)
    return x, B, adj


def run_cpu(kernel_f, kernel_b, x, B, s, keep_x, adj, want_B=True, want_x=True):
    C, J, nf = adj.shape
    d, K = B.shape
    out = np.full((C, J, nf), np.nan, adj.dtype)  # NaN: an element the kernel forgets shows
    gB = np.full((d, K), np.nan, adj.dtype) if want_B else np.empty(0, adj.dtype)
    gx = np.full((J, d), np.nan, adj.dtype) if want_x else np.empty(0, adj.dtype)
    kernel_f(x, B, s, keep_x, out)
    kernel_b(x, B, s, keep_x, adj, gB, gx)
    return out, gB, gx


def run_ref(x, B, s, keep_x, adj):
    C, J, nf = adj.shape
    d, K = B.shape
    out, gB, gx = np.empty((C, J, nf)), np.empty((d, K)), np.empty((J, d))
    ref.fourier_forward(x, B, s, keep_x, out)
    ref.fourier_backward(x, B, s, keep_x, adj, gB, gx)
    return out, gB, gx


def bounds(x, B, s, keep_x, adj, dtype):
    """Element-wise error bounds (module docstring) for out, gB, gx, in float64."""
    eps = float(np.finfo(dtype).eps)
    x, B, A = (np.asarray(a, F64) for a in (x, B, adj))
    C, J, nf = A.shape
    d, K = B.shape
    off = d if keep_x else 0
    aB = np.abs(s * B)                                   # |s B_mk|
    nb = np.sum(aB * aB, axis=0)                         # s^2 |b_k|^2
    P = np.abs(x) @ aB                                   # (J, K): sum_m |s x_m B_mk|
    arg = (d + 2) * P
    # forward
    Eo = np.zeros((C, J, nf))
    if keep_x:
        Eo[0, :, :d] = eps * np.abs(x)
    coef = [np.ones(K)] + ([aB[m] for m in range(d)] if C > 1 else []) + ([nb] if C == d + 2 else [])
    for ch, c in enumerate(coef):
        e = eps * c * (arg + d + 4)
        Eo[ch, :, off:off + K] = e
        Eo[ch, :, off + K:] = e
    # backward: M = sum_i coef_i |adjoint_i| over the terms of psib
    Ab = np.abs(A)
    M = Ab[0, :, off:off + K] + Ab[0, :, off + K:]
    G = np.zeros((d, J, K))                              # |Cb_m| + |Sb_m|
    L = np.zeros((J, K))                                 # |Cb_L| + |Sb_L|
    if C > 1:
        for m in range(d):
            G[m] = Ab[1 + m, :, off:off + K] + Ab[1 + m, :, off + K:]
            M = M + aB[m] * G[m]
    if C == d + 2:
        L = Ab[d + 1, :, off:off + K] + Ab[d + 1, :, off + K:]
        M = M + nb * L
    n_blocks = -(-J // cpu.BLOCK)
    depth = min(J, cpu.BLOCK) + n_blocks + 3
    W_psib = arg + 2 * d + 12
    EgB = np.zeros((d, K))
    Egx = np.zeros((J, d))
    Xb = Ab[0, :, :d] if keep_x else np.zeros((J, d))
    for m in range(d):
        terms = abs(s) * np.abs(x[:, m:m + 1]) * M + abs(s) * G[m] + 2 * s * s * np.abs(B[m]) * L
        EgB[m] = eps * np.sum(terms * (W_psib + depth), axis=0)
        Egx[:, m] = eps * (np.sum(aB[m] * M * (W_psib + K), axis=1) + K * Xb[:, m])
    return Eo, EgB, Egx


def assert_within(got, want, bound, dtype, name):
    got = np.asarray(got, F64)
    err = np.abs(got - want)
    assert not np.isnan(got).any(), f"{name}: NaN (an element left unwritten?)"
    worst = np.max(err - bound) if err.size else 0.0
    i = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else None
    assert worst <= 0.0, f"{name}[{i}]: |error| {err[i]:.3g} > bound {bound[i]:.3g}"
    if dtype == F64 and err.size:
        scale = np.max(np.abs(want))
        assert np.max(err) <= 1e-12 * scale, f"{name}: error {np.max(err):.3g} > 1e-12 x scale {scale:.3g}"


ORDERS = {"value": lambda d: 1, "grad": lambda d: 1 + d, "lap": lambda d: 2 + d}


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("keep_x", [False, True], ids=["fourier", "keep_x"])
@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("d", [1, 2, 3])
def test_matches_reference(d, order, keep_x, dtype):
    """Forward and both gradients, every channel order: J spans 3 blocks (a partial one), K = 37
    is no multiple of the dL/dx partial sums (the tail runs), |psi| up to ~1e3."""
    rng = np.random.default_rng(1000 * d + 10 * len(order) + keep_x)
    C = ORDERS[order](d)
    x, B, adj = make(rng, 2 * cpu.BLOCK + 37, d, 37, C, keep_x, dtype)
    got = run_cpu(cpu.fourier_forward, cpu.fourier_backward, x, B, TWO_PI, keep_x, adj)
    want = run_ref(x, B, TWO_PI, keep_x, adj)
    for name, g, w, b in zip(("out", "gB", "gx"), got, want, bounds(x, B, TWO_PI, keep_x, adj, dtype)):
        assert g.dtype == dtype
        assert_within(g, w, b, dtype, name)


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_scale_one_and_exact_frequency_multiple(dtype):
    """s = 1 (the lecture's k_i x) and K = 32, a multiple of LANES (no tail)."""
    rng = np.random.default_rng(5)
    d, C = 1, 3
    x, B, adj = make(rng, 300, d, 2 * cpu.LANES, C, True, dtype, b_scale=100.0)
    got = run_cpu(cpu.fourier_forward, cpu.fourier_backward, x, B, 1.0, True, adj)
    want = run_ref(x, B, 1.0, True, adj)
    for name, g, w, b in zip(("out", "gB", "gx"), got, want, bounds(x, B, 1.0, True, adj, dtype)):
        assert_within(g, w, b, dtype, name)


#: (d, C) of the general path, and of the value channel alone in 1D (its own loop in the backward)
PATHS = {"general": (2, 4), "value-1d": (1, 1)}


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("want", ["gB", "gx"])
@pytest.mark.parametrize("path", list(PATHS))
def test_one_gradient_only(path, want, dtype):
    """The unwanted gradient as ``np.empty(0)`` (the reference's convention): the other is unchanged."""
    rng = np.random.default_rng(7)
    d, C = PATHS[path]
    x, B, adj = make(rng, 100, d, 9, C, True, dtype)
    _, gB_all, gx_all = run_cpu(cpu.fourier_forward, cpu.fourier_backward, x, B, TWO_PI, True, adj)
    _, gB, gx = run_cpu(cpu.fourier_forward, cpu.fourier_backward, x, B, TWO_PI, True, adj,
                        want_B=want == "gB", want_x=want == "gx")
    if want == "gB":
        assert gx.size == 0
        np.testing.assert_array_equal(gB, gB_all)
    else:
        assert gB.size == 0
        np.testing.assert_array_equal(gx, gx_all)


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("order", list(ORDERS))
def test_no_frequencies(order, dtype):
    """K = 0 with keep_x: the features are x (gradient channels e_k, Laplacian 0) and dL/dx = Xb."""
    rng = np.random.default_rng(9)
    d = 2
    C = ORDERS[order](d)
    x, B, adj = make(rng, 50, d, 0, C, True, dtype)
    out, gB, gx = run_cpu(cpu.fourier_forward, cpu.fourier_backward, x, B, TWO_PI, True, adj)
    want = run_ref(x, B, TWO_PI, True, adj)[0]
    np.testing.assert_array_equal(out, want.astype(dtype))
    assert gB.shape == (d, 0)
    np.testing.assert_array_equal(gx, adj[0])


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_no_points(dtype):
    """J = 0: nothing to write forward; dL/dB is an empty sum, 0."""
    d, K, C = 2, 5, 4
    x = np.empty((0, d), dtype)
    B = np.ones((d, K), dtype)
    out = np.empty((C, 0, d + 2 * K), dtype)
    cpu.fourier_forward(x, B, TWO_PI, True, out)
    gB, gx = np.full((d, K), np.nan, dtype), np.empty((0, d), dtype)
    cpu.fourier_backward(x, B, TWO_PI, True, out, gB, gx)
    np.testing.assert_array_equal(gB, np.zeros((d, K), dtype))


def _bits(kernel_f, kernel_b, args):
    return [a.tobytes() for a in run_cpu(kernel_f, kernel_b, *args)]


def _det_args(dtype, path):
    rng = np.random.default_rng(11)
    d, C = PATHS[path]
    x, B, adj = make(rng, 5 * cpu.BLOCK + 3, d, 21, C, True, dtype)
    return x, B, TWO_PI, True, adj


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("path", list(PATHS))
def test_serial_and_threaded_bit_identical(path, dtype):
    """The serial build, the prange twin and the size-dispatching entry point give the same bits."""
    args = _det_args(dtype, path)
    f, b = cpu.fourier_forward, cpu.fourier_backward
    serial = _bits(f.serial, b.serial, args)
    assert _bits(f.threaded, b.threaded, args) == serial
    assert _bits(f, b, args) == serial


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("path", list(PATHS))
def test_one_and_two_threads_bit_identical(path, dtype):
    """dL/dB is a sum over points: its value does not depend on the number of Numba threads."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here (NUMBA_NUM_THREADS < 2)")
    args = _det_args(dtype, path)
    f, b = cpu.fourier_forward, cpu.fourier_backward
    before = numba.get_num_threads()
    results = []
    try:
        for t in (1, 2):
            numba.set_num_threads(t)
            results.append(_bits(f.threaded, b.threaded, args))
    finally:
        numba.set_num_threads(before)
    assert results[0] == results[1]


_ASM_PROBE = textwrap.dedent("""
    import re
    from numba import types
    from fastopt.kernels.cpu import fourier as F
    for t, suf in ((types.float32, "ps"), (types.float64, "pd")):
        a2, a3 = types.Array(t, 2, "C"), types.Array(t, 3, "C")
        for name, k, sig in (("forward", F.fourier_forward.serial, (a2, a2, types.float64, types.boolean, a3)),
                             ("backward", F.fourier_backward.serial,
                              (a2, a2, types.float64, types.boolean, a3, a2, a2))):
            k.compile(sig)
            asm = k.inspect_asm(sig)
            packed = len(re.findall(r"\\bvfn?m(?:add|sub)\\d+" + suf + r"\\s+[^\\n]*%[yz]mm", asm))
            libm = [c for c in re.findall(r"\\bcall\\w*\\s+([^\\s]+)", asm) if re.search(r"sin|cos", c)]
            print(name, t, packed, libm)
""")


def test_loops_vectorise(tmp_path):
    """The sin/cos loop of each serial kernel is vectorised: packed FMAs on ymm/zmm (the polynomial
    sincos has >= 9 of them), and no libm sin/cos call.

    In a child with an empty NUMBA_CACHE_DIR: kernels loaded from Numba's cache keep no assembly.
    """
    llvm = pytest.importorskip("llvmlite.binding")
    features = llvm.get_host_cpu_features()
    if not (features.get("avx2") and features.get("fma")):
        pytest.skip("needs an x86-64 CPU with AVX2 and FMA")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _ASM_PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 4, out.stdout
    for line in lines:
        name, dtype, packed, libm = line.split(" ", 3)
        assert int(packed) >= 9, f"{name} {dtype}: only {packed} packed FMAs (loop not vectorised?)"
        assert libm == "[]", f"{name} {dtype}: calls {libm}"
