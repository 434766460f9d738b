r"""GPU kernels of the "fourier" and "mlp" families against the float64 NumPy reference (``reference_nn``).

Fourier layer: every channel order (C = 1, 1 + d, 2 + d), d = 1, 2, 3 (and d = 5: more input
dims than one backward launch takes, ``fourier.MAX_D``), with and without the kept x, s = 2 pi
(the ``sincospi`` path) and s = 1, K = 5 (one 32-frequency tile: dL/dx written directly) and
K = 37 (two tiles: per-tile partials), J = 2 * 256 + 37 points (three chunks, the last partial),
forward and both gradients, float32 and float64; K = 0, J = 0, one gradient only; a large case
in which every thread of the grid-stride loops strides; bit-identical reruns.

MLP: the product of d in {1, 2, 3}, channel orders C in {1, 1 + d, 2 + d}, tanh and sin, a tiny
network (hidden 5, 3) and a wide one (hidden 64, 64, 64), no / fixed / trainable Fourier features,
float32 and float64, with the ansatz, the output bias, keep_x and the scale (2 pi or 1) toggled
across the grid by bits of a hash of the test id; every combination of keep_x, s and train_B
explicitly on one network; the ansatz (none, phi only, phi and g) and c0 both ways; no hidden
layer and one; J = 549 points (nine chunks of 64 and three of the Fourier layer's 256, the last
ones partial), a large J, J = 0, bit-identical reruns, the activation table and the ansatz
kernels (also in place).

Tolerances.

- Fourier layer: element-wise worst-case bounds in units of ``eps`` (machine epsilon, twice the
  unit roundoff: a factor-2 margin), from the error of each step, as in tests/test_fourier_cpu.py
  (read its docstring): with ``P_jk = sum_m |s x_jm B_mk|``, the argument is off by at most
  ``(d + 2) eps P`` (absolutely, in sin and cos), a feature ``coef * sin`` by
  ``eps coef ((d + 2) P + d + 4)``; the backward's ``psib`` by ``eps M ((d + 2) P + 3 d + 14)``
  (``M`` the sum of |coef adjoint| of its terms); a sum of ``n`` terms in any order by at most
  ``gamma_{n-1} sum |terms|`` (Higham 2002, eq. 4.4), where the GPU's summation trees have depth
  ``CHUNK / WARPS + WARPS + ceil(n_chunks / 256) + 8 + 3`` for dL/dB (a warp's points in order,
  the warps in order, the chunks' strided sums, the 256-thread tree, the final combination)
  and at most ``K + 7`` for dL/dx (lanes' butterfly, then tiles, then the kept-x adjoint).
  float64 must also be within ``1e-12`` of each array's scale.
- MLP: ``max |gpu - ref| <= rtol max |ref|`` per array (and per named gradient block whose
  scale is at least 1e-3 of the whole gradient's, at ``10 rtol``), with float64 ``rtol = 1e-12``
  and float32 ``rtol = 64 eps32 (L + 2)(1 + s max |B|)``: each layer adds a few roundings of
  relative size eps to every channel (the GEMMs' sums, tanh/sin, the channel products),
  amplified at most by the layer's gain, hence the factor ``L + 2``; the Fourier argument
  ``psi = s x B`` carries an absolute rounding of ~eps |psi| into sin and cos, hence the last
  factor. That is 64 (L + 2) ulp of the scale: ~320 ulp for the three-layer networks, the "few
  hundred ulp" a deep float32 network earns (the CPU kernels, tested with the same formula,
  measured a worst 1.4 of its units, i.e. ~1/45 of the tolerance; the GPU differs in summation
  order, FMA contraction and tanhf/sincosf's <= 2 ulp, the same order of error); an algorithmic
  error (a wrong sign, a missing term) changes results by O(1) of the scale.

Skips as a whole without CuPy or a CUDA device; marked ``gpu``.
"""
from __future__ import annotations

import itertools
import math
import re
import zlib

import numpy as np
import pytest

import fastopt

_gpu_ok, _gpu_why = fastopt.gpu_status()      # CuPy and a usable device (the emulator's, under it)
if not _gpu_ok:
    pytest.skip(f"gpu backend unavailable: {_gpu_why}", allow_module_level=True)

import cupy  # noqa: E402

pytestmark = pytest.mark.gpu

from fastopt.kernels import reference_nn as nn  # noqa: E402
from fastopt.kernels.gpu import _module  # noqa: E402
from fastopt.kernels.gpu import fourier as gf  # noqa: E402
from fastopt.kernels.gpu import mlp as gm  # noqa: E402

F32, F64 = np.float32, np.float64
DTYPES = [F32, F64]
TWO_PI = 2.0 * math.pi
#: Points of the grids: 2 Fourier chunks + 37 (3 chunks of 256, the last partial), 9 MLP chunks of 64
#: (the last partial); no multiple of any block size.
J_GRID = 2 * gf.CHUNK + 37


def dev(a):
    return cupy.asarray(a)


def host(a):
    return cupy.asnumpy(a)


def _bits(*arrays):
    return [host(a).tobytes() for a in arrays]


# =========================================================================== Fourier layer
def make_fourier(rng, J, d, K, C, keep_x, dtype, b_scale=30.0):
    """x uniform in [-1, 1]^d and B ~ b_scale N(0, 1): with s = 2 pi, |psi| reaches ~1e3."""
    x = rng.uniform(-1.0, 1.0, (J, d)).astype(dtype)
    B = (b_scale * rng.standard_normal((d, K))).astype(dtype)
    nf = (d if keep_x else 0) + 2 * K
    adj = rng.standard_normal((C, J, nf)).astype(dtype)
    return x, B, adj


def run_fourier_gpu(x, B, s, keep_x, adj, want_B=True, want_x=True):
    C, J, nf = adj.shape
    d, K = B.shape
    dt = adj.dtype
    out = cupy.full((C, J, nf), np.nan, dt)  # NaN: an element the kernel forgets shows
    gB = cupy.full((d, K), np.nan, dt) if want_B else cupy.empty(0, dt)
    gx = cupy.full((J, d), np.nan, dt) if want_x else cupy.empty(0, dt)
    xd, Bd = dev(x), dev(B)
    gf.fourier_forward(xd, Bd, s, keep_x, out)
    gf.fourier_backward(xd, Bd, s, keep_x, dev(adj), gB, gx)
    return host(out), host(gB), host(gx)


def run_fourier_ref(x, B, s, keep_x, adj):
    C, J, nf = adj.shape
    d, K = B.shape
    out, gB, gx = np.empty((C, J, nf)), np.empty((d, K)), np.empty((J, d))
    nn.fourier_forward(x, B, s, keep_x, out)
    nn.fourier_backward(x, B, s, keep_x, adj, gB, gx)
    return out, gB, gx


def fourier_bounds(x, B, s, keep_x, adj, dtype):
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
    Eo = np.zeros((C, J, nf))
    if keep_x:
        Eo[0, :, :d] = eps * np.abs(x)
    coef = [np.ones(K)] + ([aB[m] for m in range(d)] if C > 1 else []) + ([nb] if C == d + 2 else [])
    for ch, c in enumerate(coef):
        e = eps * c * (arg + d + 4)
        Eo[ch, :, off:off + K] = e
        Eo[ch, :, off + K:] = e
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
    n_chunks = -(-J // gf.CHUNK)
    depth_B = gf.CHUNK // gf.WARPS + gf.WARPS + -(-n_chunks // gf.FINISH_THREADS) + 8 + 3
    W_psib = arg + 3 * d + 14
    EgB = np.zeros((d, K))
    Egx = np.zeros((J, d))
    Xb = Ab[0, :, :d] if keep_x else np.zeros((J, d))
    for m in range(d):
        terms = abs(s) * np.abs(x[:, m:m + 1]) * M + abs(s) * G[m] + 2 * s * s * np.abs(B[m]) * L
        EgB[m] = eps * np.sum(terms * (W_psib + depth_B), axis=0)
        Egx[:, m] = eps * (np.sum(aB[m] * M * (W_psib + K + 7), axis=1) + (K + 7) * Xb[:, m])
    return Eo, EgB, Egx


def assert_within(got, want, bound, dtype, name):
    got = np.asarray(got, F64)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert not np.isnan(got).any(), f"{name}: NaN (an element left unwritten?)"
    if got.size == 0:
        return
    err = np.abs(got - want)
    i = np.unravel_index(np.argmax(err - bound), err.shape)
    assert err[i] <= bound[i], f"{name}[{i}]: |error| {err[i]:.3g} > bound {bound[i]:.3g}"
    if dtype == F64:
        scale = np.max(np.abs(want))
        assert np.max(err) <= 1e-12 * scale, f"{name}: error {np.max(err):.3g} > 1e-12 x scale {scale:.3g}"


ORDERS = {"value": lambda d: 1, "grad": lambda d: 1 + d, "lap": lambda d: 2 + d}


def check_fourier(rng, J, d, K, C, keep_x, s, dtype, b_scale=30.0):
    x, B, adj = make_fourier(rng, J, d, K, C, keep_x, dtype, b_scale)
    got = run_fourier_gpu(x, B, s, keep_x, adj)
    want = run_fourier_ref(x, B, s, keep_x, adj)
    for name, g, w, b in zip(("out", "gB", "gx"), got, want, fourier_bounds(x, B, s, keep_x, adj, dtype)):
        assert g.dtype == dtype, name
        assert_within(g, w, b, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("s", [TWO_PI, 1.0], ids=["2pi", "s1"])
@pytest.mark.parametrize("K", [5, 37], ids=["K5", "K37"])
@pytest.mark.parametrize("keep_x", [False, True], ids=["fourier", "keep_x"])
@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("d", [1, 2, 3])
def test_fourier_matches_reference(d, order, keep_x, K, s, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{d}{order}{keep_x}{K}{s}{np.dtype(dtype).name}".encode()))
    check_fourier(rng, J_GRID, d, K, ORDERS[order](d), keep_x, s, dtype, b_scale=30.0 if s != 1.0 else 100.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("order", ["value", "lap"])
def test_fourier_more_dims_than_one_launch(order, dtype):
    """d = 5 > MAX_D: dL/dB comes from two launches (dims 0-3, then 4)."""
    assert 5 > gf.MAX_D
    rng = np.random.default_rng(3)
    check_fourier(rng, 300, 5, 33, ORDERS[order](5), True, TWO_PI, dtype, b_scale=5.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("J,d,K", [(16_411, 2, 70), (70_001, 1, 3)], ids=["strided-forward", "many-chunks"])
def test_fourier_large(J, d, K, dtype):
    """16411 x 72 work items exceed 32 blocks/SM x 132 SMs x 256 threads (H100/H200): the forward's
    grid-stride loop strides, over three frequency tiles; 70001 points make 274 chunks, so the
    finish's threads add more than one chunk each."""
    rng = np.random.default_rng(4)
    check_fourier(rng, J, d, K, d + 2, True, TWO_PI, dtype, b_scale=3.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("want", ["gB", "gx"])
@pytest.mark.parametrize("K", [9, 40])
def test_fourier_one_gradient_only(want, K, dtype):
    """The unwanted gradient as a size-0 array: the other comes out bit for bit the same."""
    rng = np.random.default_rng(7)
    x, B, adj = make_fourier(rng, 300, 2, K, 4, True, dtype)
    _, gB_all, gx_all = run_fourier_gpu(x, B, TWO_PI, True, adj)
    _, gB, gx = run_fourier_gpu(x, B, TWO_PI, True, adj, want_B=want == "gB", want_x=want == "gx")
    if want == "gB":
        assert gx.size == 0
        np.testing.assert_array_equal(gB, gB_all)
    else:
        assert gB.size == 0
        np.testing.assert_array_equal(gx, gx_all)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("order", list(ORDERS))
def test_fourier_no_frequencies(order, dtype):
    """K = 0 with keep_x: the features are x (gradient channels e_k, Laplacian 0) and dL/dx = Xb."""
    rng = np.random.default_rng(9)
    d = 2
    C = ORDERS[order](d)
    x, B, adj = make_fourier(rng, 50, d, 0, C, True, dtype)
    out, gB, gx = run_fourier_gpu(x, B, TWO_PI, True, adj)
    want = run_fourier_ref(x, B, TWO_PI, True, adj)[0]
    np.testing.assert_array_equal(out, want.astype(dtype))
    assert gB.shape == (d, 0)
    np.testing.assert_array_equal(gx, adj[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_fourier_no_points(dtype):
    """J = 0: nothing to write forward; dL/dB is an empty sum, 0."""
    d, K, C = 2, 5, 4
    x = cupy.empty((0, d), dtype)
    B = cupy.ones((d, K), dtype)
    out = cupy.empty((C, 0, d + 2 * K), dtype)
    gf.fourier_forward(x, B, TWO_PI, True, out)
    gB, gx = cupy.full((d, K), np.nan, dtype), cupy.empty((0, d), dtype)
    gf.fourier_backward(x, B, TWO_PI, True, out, gB, gx)
    np.testing.assert_array_equal(host(gB), np.zeros((d, K), dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_fourier_deterministic(dtype):
    """Two runs give the same bits (dL/dB: fixed chunks and trees; dL/dx: fixed butterflies)."""
    rng = np.random.default_rng(11)
    x, B, adj = make_fourier(rng, 20 * gf.CHUNK + 3, 2, 70, 4, True, dtype, b_scale=3.0)
    first = run_fourier_gpu(x, B, TWO_PI, True, adj)
    second = run_fourier_gpu(x, B, TWO_PI, True, adj)
    for a, b in zip(first, second):
        assert a.tobytes() == b.tobytes()


# =========================================================================== MLP
def n_channels(d, order):
    return (1, 1 + d, 2 + d)[order]


def rtol_for(dtype, spec, B):
    if dtype == F64:
        return 1e-12
    L = len(spec.hidden)
    arg = spec.s * float(np.max(np.abs(B))) if B.size else 0.0
    return 64 * float(np.finfo(F32).eps) * (L + 2) * (1.0 + arg)


def assert_close(actual, expected, rtol, what):
    actual, expected = np.asarray(actual, F64), np.asarray(expected, F64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    if expected.size == 0:
        return
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values (an element left unwritten?)"
    scale = float(np.max(np.abs(expected)))
    err = float(np.max(np.abs(actual - expected)))
    assert err <= rtol * max(scale, 1e-300), f"{what}: max error {err:.3g} > {rtol:.3g} * {scale:.3g}"


def mlp_setup(spec, J, dtype, order, ansatz, rng):
    """Host inputs rounded to ``dtype`` (the reference then sees exactly what the kernels see).

    ``ansatz``: False (none), True (phi and g) or "phi" (phi, and g = 0 given as size 0).
    """
    params, B = nn.init_network(spec, rng)
    for name in params.names:
        if name.endswith(".b") or name == "out.c0":
            params[name] = rng.uniform(-0.5, 0.5, params[name].shape)
    theta = params.data.astype(dtype)
    B = theta[:B.size].reshape(B.shape) if spec.train_B else B.astype(dtype)
    x = rng.uniform(0.05, 0.95, (J, spec.d)).astype(dtype)
    C = n_channels(spec.d, order)
    empty = np.empty(0, dtype)
    phi = rng.standard_normal((C, J)).astype(dtype) if ansatz else empty
    g = rng.standard_normal((C, J)).astype(dtype) if ansatz and ansatz != "phi" else empty
    adj = rng.standard_normal((C, J)).astype(dtype)
    return x, B, theta, phi, g, adj


def mlp_reference(spec, x, B, theta, phi, g, adj):
    C, J = adj.shape
    E = np.empty(0)
    out, basis = np.empty((C, J)), np.empty((C, J, spec.n_basis))
    args = [np.asarray(a, F64) for a in (x, B, theta)]
    phi64 = np.asarray(phi, F64)
    nn.mlp_forward(*args, *spec.config, phi64, np.asarray(g, F64), out, basis, E)
    grad = np.empty(theta.size)
    nn.mlp_backward(*args, *spec.config, phi64, basis, E, np.asarray(adj, F64), grad)
    return out, basis, grad


def mlp_gpu(spec, x, B, theta, phi, g, adj):
    """Forward and backward on the device, every output and the tape pre-filled with NaN."""
    C, J = adj.shape
    dt = theta.dtype
    order = [1, 1 + spec.d, 2 + spec.d].index(C)
    xd, thd = dev(x), dev(theta)
    Bd = thd[:B.size].reshape(B.shape) if spec.train_B else dev(B)
    phid, gd = dev(phi), dev(g)
    out = cupy.full((C, J), np.nan, dt)
    basis = cupy.full((C, J, spec.n_basis), np.nan, dt)
    tape = cupy.full(gm.mlp_tape_size(J, spec.d, spec.widths, order), np.nan, dt)
    gm.mlp_forward(xd, Bd, thd, *spec.config, phid, gd, out, basis, tape)
    grad = cupy.full(theta.size, np.nan, dt)
    gm.mlp_backward(xd, Bd, thd, *spec.config, phid, basis, tape, dev(adj), grad)
    return host(out), host(basis), host(grad)


def mlp_compare(spec, J, dtype, order, ansatz, rng, what=""):
    x, B, theta, phi, g, adj = mlp_setup(spec, J, dtype, order, ansatz, rng)
    out, basis, grad = mlp_gpu(spec, x, B, theta, phi, g, adj)
    r_out, r_basis, r_grad = mlp_reference(spec, x, B, theta, phi, g, adj)
    rtol = rtol_for(dtype, spec, B)
    assert out.dtype == dtype and basis.dtype == dtype and grad.dtype == dtype
    assert_close(out, r_out, rtol, f"{what} out")
    assert_close(basis, r_basis, rtol, f"{what} basis")
    assert_close(grad, r_grad, rtol, f"{what} grad")
    # every named block of the gradient on its own scale (a small block cannot hide in a big one)
    r_views = spec.views(r_grad)
    for name, view in spec.views(grad).items():
        ref = r_views[name]
        if np.max(np.abs(ref)) > 1e-3 * np.max(np.abs(r_grad)):
            assert_close(view, ref, 10 * rtol, f"{what} grad[{name}]")


HIDDEN = {"tiny": (5, 3), "wide": (64, 64, 64)}
FOURIER = ["none", "fixed", "train"]
GRID = list(itertools.product([1, 2, 3], [0, 1, 2], ["tanh", "sin"], list(HIDDEN), FOURIER, DTYPES))


def grid_id(p):
    d, order, act, hidden, fourier, dtype = p
    return f"d{d}-o{order}-{act}-{hidden}-{fourier}-{np.dtype(dtype).name}"


@pytest.mark.parametrize("d,order,act,hidden,fourier,dtype", GRID, ids=[grid_id(p) for p in GRID])
def test_mlp_matches_reference(d, order, act, hidden, fourier, dtype):
    key = zlib.crc32(grid_id((d, order, act, hidden, fourier, dtype)).encode())
    rng = np.random.default_rng(key)
    K = 0 if fourier == "none" else (3 if hidden == "tiny" else 40)
    spec = nn.NetSpec(d=d, hidden=HIDDEN[hidden], activation=act, fourier_K=K,
                      keep_x=True if K == 0 else bool(key & 4), two_pi=bool(key & 8),
                      train_B=fourier == "train", out_bias=bool(key & 2))
    mlp_compare(spec, J_GRID, dtype, order, bool(key & 1), rng, grid_id((d, order, act, hidden, fourier, dtype)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("train_B", [False, True], ids=["fixedB", "trainB"])
@pytest.mark.parametrize("two_pi", [False, True], ids=["s1", "2pi"])
@pytest.mark.parametrize("keep_x", [False, True], ids=["nox", "keepx"])
def test_mlp_fourier_options(keep_x, two_pi, train_B, dtype):
    """Every combination of keep_x, the scale and trainable frequencies, with every channel."""
    rng = np.random.default_rng(zlib.crc32(f"{keep_x}{two_pi}{train_B}{np.dtype(dtype).name}".encode()))
    spec = nn.NetSpec(d=2, hidden=(20, 7), fourier_K=6, keep_x=keep_x, two_pi=two_pi, train_B=train_B)
    mlp_compare(spec, J_GRID, dtype, 2, True, rng, "fourier options")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("ansatz", [False, "phi", True], ids=["plain", "phi-only", "phi-and-g"])
@pytest.mark.parametrize("out_bias", [False, True], ids=["noc0", "c0"])
def test_mlp_ansatz_and_bias_both_ways(ansatz, out_bias, dtype):
    rng = np.random.default_rng(7)
    spec = nn.NetSpec(d=2, hidden=(6, 5), fourier_K=2, train_B=True, out_bias=out_bias)
    for order in (0, 1, 2):
        mlp_compare(spec, 97, dtype, order, ansatz, rng, f"ansatz={ansatz} c0={out_bias} order={order}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("hidden", [(), (33,)], ids=["no-hidden", "one-layer"])
def test_mlp_shallow(hidden, dtype):
    """No hidden layer (the basis is the features) and one layer of 33 units (two column tiles)."""
    rng = np.random.default_rng(8)
    spec = nn.NetSpec(d=1, hidden=hidden, fourier_K=4, keep_x=True, train_B=True)
    for order in (0, 2):
        mlp_compare(spec, 130, dtype, order, order == 2, rng, f"hidden={hidden} order={order}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_mlp_lecture_1_20_20_1_tanh(dtype):
    """The issue's main case: 1-20-20-1 tanh, 100 points, u, u', u''."""
    rng = np.random.default_rng(1)
    spec = nn.NetSpec(d=1, hidden=(20, 20))
    mlp_compare(spec, 100, dtype, 2, False, rng, "1-20-20-1")
    mlp_compare(spec, 100, dtype, 2, True, rng, "1-20-20-1 ansatz")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_mlp_large(dtype):
    """J n > 32 blocks/SM x SMs x 256 threads (H100/H200): the elementwise grid-stride loops stride,
    and with n = 37 (no divisor of the stride 1081344) the column index wraps; 1251 chunks, so
    sum_chunks' threads add several chunks each."""
    rng = np.random.default_rng(12)
    spec = nn.NetSpec(d=1, hidden=(64, 37), fourier_K=8, train_B=True)
    mlp_compare(spec, 80_011, dtype, 2, True, rng, "large")


@pytest.mark.parametrize("hidden", [(6, 5), (20, 20)])
def test_mlp_zero_points(hidden):
    """J = 0: empty outputs, a zero gradient (a sum over no points), nothing non-finite."""
    rng = np.random.default_rng(3)
    spec = nn.NetSpec(d=1, hidden=hidden, fourier_K=2, train_B=True)
    x, B, theta, phi, g, adj = mlp_setup(spec, 0, F64, 2, False, rng)
    out, basis, grad = mlp_gpu(spec, x, B, theta, phi, g, adj)
    assert out.shape == (3, 0) and basis.shape == (3, 0, hidden[-1])
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_mlp_deterministic(dtype):
    """Two forward + backward passes give the same bits: fixed-order partial sums, and the same
    cuBLAS calls (deterministic for a fixed configuration)."""
    rng = np.random.default_rng(13)
    spec = nn.NetSpec(d=2, hidden=(64, 64, 64), fourier_K=16, train_B=True)
    args = mlp_setup(spec, 5 * 1024 + 17, dtype, 2, True, rng)
    first = mlp_gpu(spec, *args)
    second = mlp_gpu(spec, *args)
    for a, b in zip(first, second):
        assert a.tobytes() == b.tobytes()


def test_tape_size_grows_with_points_and_order():
    w = np.array([1, 20, 20], np.int64)
    assert gm.mlp_tape_size(0, 1, w, 2) < gm.mlp_tape_size(100, 1, w, 2)
    assert gm.mlp_tape_size(100, 1, w, 0) < gm.mlp_tape_size(100, 1, w, 1) < gm.mlp_tape_size(100, 1, w, 2)


# --------------------------------------------------------------------------- building blocks
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("act", ["tanh", "sin"])
def test_activation_derivatives(act, dtype):
    a = np.linspace(-4.0, 4.0, 3 * 37).reshape(3, 37).astype(dtype)
    out, ref = cupy.empty((4,) + a.shape, dtype), np.empty((4,) + a.shape)
    gm.activation_derivatives(nn.ACTIVATIONS[act], dev(a), out)
    nn.activation_derivatives(nn.ACTIVATIONS[act], a.astype(F64), ref)
    tol = 1e-14 if dtype == F64 else 8 * float(np.finfo(F32).eps)
    out = host(out)
    for k in range(4):
        assert_close(out[k], ref[k], tol, f"sigma^({k})")
    few = cupy.empty((2,) + a.shape, dtype)
    gm.activation_derivatives(nn.ACTIVATIONS[act], dev(a), few)
    np.testing.assert_array_equal(host(few), out[:2])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("d,order", [(1, 0), (1, 2), (2, 1), (3, 2)])
@pytest.mark.parametrize("shape", ["output", "basis"])
def test_ansatz_kernels(d, order, shape, dtype):
    rng = np.random.default_rng(6)
    C, J, n = n_channels(d, order), 300, 37
    v = rng.standard_normal((C, J) if shape == "output" else (C, J, n)).astype(dtype)
    phi, g = rng.standard_normal((C, J)).astype(dtype), rng.standard_normal((C, J)).astype(dtype)
    tol = 1e-14 if dtype == F64 else 16 * float(np.finfo(F32).eps)
    for gg in (g, np.empty(0, dtype)):
        ref = np.empty(v.shape)
        nn.ansatz_forward(d, v.astype(F64), phi.astype(F64), gg.astype(F64), ref)
        out = cupy.full(v.shape, np.nan, dtype)
        gm.ansatz_forward(d, dev(v), dev(phi), dev(gg), out)
        assert_close(host(out), ref, tol, "ansatz_forward")
        inplace = dev(v)
        gm.ansatz_forward(d, inplace, dev(phi), dev(gg), inplace)
        np.testing.assert_array_equal(host(inplace), host(out))
    ref = np.empty(v.shape)
    nn.ansatz_backward(d, v.astype(F64), phi.astype(F64), ref)
    out = cupy.full(v.shape, np.nan, dtype)
    gm.ansatz_backward(d, dev(v), dev(phi), out)
    assert_close(host(out), ref, tol, "ansatz_backward")
    inplace = dev(v)
    gm.ansatz_backward(d, inplace, dev(phi), inplace)
    np.testing.assert_array_equal(host(inplace), host(out))


# --------------------------------------------------------------------------- launch constants
@pytest.mark.parametrize("filename,module,names", [
    ("fourier.cu", gf, {"FB_CHUNK": "CHUNK", "FB_LANES": "LANES", "FB_WARPS": "WARPS", "FB_MAX_D": "MAX_D",
                        "FINISH_THREADS": "FINISH_THREADS"}),
    ("mlp.cu", gm, {"MLP_CHUNK": "CHUNK", "MLP_LANES": "LANES", "MLP_WARPS": "WARPS",
                    "FINISH_THREADS": "FINISH_THREADS"}),
])
def test_launch_constants_match_sources(filename, module, names):
    source = _module.read_source(filename)
    for c_name, py_name in names.items():
        value = int(re.search(rf"constexpr (?:int|i64) {c_name} = (\d+);", source).group(1))
        assert getattr(module, py_name) == value, (filename, c_name)
