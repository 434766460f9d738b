"""The Numba "mlp" kernels (``kernels/cpu/mlp.py``) against the float64 reference (``reference_nn``).

Compared: the output channels and the basis of the forward, and the flat parameter gradient of
the backward (given random adjoints on every output channel), over the product of d in {1, 2},
channel orders C in {1, 1 + d, 2 + d}, tanh and sin, 0-3 hidden layers, no / fixed / trainable
Fourier features, float32 and float64, with the ansatz and the output bias toggled across the
grid (hidden widths <= 6); plus wider layers (a hidden width >= GEMM_MIN_WIDTH), zero points,
the serial and threaded builds (bit-identical, any thread count), the 1-20-20-1 tanh network of
the issue, the activation table, the ansatz kernels (also in place) and the private Fourier
fallback. The last part ("Code paths of the micro-kernel") reaches what that grid does not:
every column-tile shape of the register-tiled GEMM in each dtype, row tails, several blocks
per chunk, the fused Fourier layer in every order and dimension, read-only inputs.

Tolerances. The reference computes in float64 from the *same* (rounded) inputs, so a
difference is arithmetic rounding only: ``max |kernel - ref| <= rtol * max |ref|`` per array,
with

- float64: ``rtol = 1e-11`` (measured worst on the grid: 1.2 eps64 (L + 2) (1 + s |B|_max), at
  most ~1e-13: summation order, FMAs and the <= 2.6 ulp of the vectorised tanh/sin);
- float32: ``rtol = 64 eps32 (L + 2) (1 + s |B|_max)`` ~ 8e-6 per layer. Each layer adds a few
  roundings of relative size eps to every channel (GEMM-like sums, tanh, products), amplified at
  most by the layer's gain; the Fourier argument ``psi = s x B`` carries an absolute rounding of
  ~eps |psi| into sin/cos, hence the last factor. Measured worst on the grid: 1.4 in units of
  eps32 (L + 2) (1 + s |B|_max); the factor 64 leaves a ~45x margin and is still far below any
  algorithmic error (a wrong sign or term changes results by O(1) of the scale).
"""
from __future__ import annotations

import itertools
import math
import zlib

import numba
import numpy as np
import pytest

from fastopt.kernels import reference_nn as nn
from fastopt.kernels.cpu import mlp

F32, F64 = np.float32, np.float64


def n_channels(d, order):
    return (1, 1 + d, 2 + d)[order]


def rtol_for(dtype, spec, B):
    if dtype == F64:
        return 1e-11
    L = len(spec.hidden)
    arg = spec.s * float(np.max(np.abs(B))) if B.size else 0.0
    return 64 * float(np.finfo(F32).eps) * (L + 2) * (1.0 + arg)


def assert_close(actual, expected, rtol, what):
    actual, expected = np.asarray(actual, F64), np.asarray(expected, F64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    if expected.size == 0:
        return
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
    scale = float(np.max(np.abs(expected)))
    err = float(np.max(np.abs(actual - expected)))
    assert err <= rtol * max(scale, 1e-300), f"{what}: max error {err:.3g} > {rtol:.3g} * {scale:.3g}"


def ansatz_channels(rng, C, J):
    return rng.standard_normal((C, J)), rng.standard_normal((C, J))


def setup(spec, J, dtype, order, ansatz, rng):
    """Inputs rounded to ``dtype`` (the reference then sees exactly what the kernel sees)."""
    params, B = nn.init_network(spec, rng, uniform_range=(-1.5, 1.5))
    for name in params.names:
        if name.endswith(".b") or name == "out.c0":
            params[name] = rng.uniform(-0.5, 0.5, params[name].shape)
    theta = params.data.astype(dtype)
    B = theta[:B.size].reshape(B.shape) if spec.train_B else B.astype(dtype)
    x = rng.uniform(0.05, 0.95, (J, spec.d)).astype(dtype)
    C = n_channels(spec.d, order)
    empty = np.empty(0, dtype)
    phi, g = (a.astype(dtype) for a in ansatz_channels(rng, C, J)) if ansatz else (empty, empty)
    adj = rng.standard_normal((C, J)).astype(dtype)
    return x, B, theta, phi, g, adj


def reference(spec, x, B, theta, phi, g, adj):
    C, J = adj.shape
    E = np.empty(0)
    out, basis = np.empty((C, J)), np.empty((C, J, spec.n_basis))
    args = [np.asarray(a, F64) for a in (x, B, theta)]
    phi64 = np.asarray(phi, F64)
    nn.mlp_forward(*args, *spec.config, phi64, np.asarray(g, F64), out, basis, E)
    grad = np.empty(theta.size)
    nn.mlp_backward(*args, *spec.config, phi64, basis, E, np.asarray(adj, F64), grad)
    return out, basis, grad


def run_cpu(spec, x, B, theta, phi, g, adj, fwd=mlp.mlp_forward, bwd=mlp.mlp_backward):
    C, J = adj.shape
    dt = theta.dtype
    order = [1, 1 + spec.d, 2 + spec.d].index(C)
    out = np.full((C, J), np.nan, dt)
    basis = np.full((C, J, spec.n_basis), np.nan, dt)
    tape = np.full(mlp.mlp_tape_size(J, spec.d, spec.widths, order), np.nan, dt)
    fwd(x, B, theta, *spec.config, phi, g, out, basis, tape)
    grad = np.full_like(theta, np.nan)
    bwd(x, B, theta, *spec.config, phi, basis, tape, adj, grad)
    return out, basis, grad, tape


def compare(spec, J, dtype, order, ansatz, rng, what=""):
    x, B, theta, phi, g, adj = setup(spec, J, dtype, order, ansatz, rng)
    out, basis, grad, _ = run_cpu(spec, x, B, theta, phi, g, adj)
    r_out, r_basis, r_grad = reference(spec, x, B, theta, phi, g, adj)
    rtol = rtol_for(dtype, spec, B)
    assert out.dtype == dtype and basis.dtype == dtype and grad.dtype == dtype
    assert_close(out, r_out, rtol, f"{what} out")
    assert_close(basis, r_basis, rtol, f"{what} basis")
    assert_close(grad, r_grad, rtol, f"{what} grad")
    # every named block of the gradient on its own scale (a small block cannot hide in a big one)
    for name, view in spec.views(grad).items():
        ref = spec.views(r_grad)[name]
        if np.max(np.abs(ref)) > 1e-3 * np.max(np.abs(r_grad)):
            assert_close(view, ref, 10 * rtol, f"{what} grad[{name}]")


# --------------------------------------------------------------------------- the grid
HIDDEN = [(), (5,), (6, 5), (5, 4, 3)]
FOURIER = ["none", "fixed", "train"]
GRID = list(itertools.product([1, 2], [0, 1, 2], ["tanh", "sin"], HIDDEN, FOURIER, [F64, F32]))


def grid_id(p):
    d, order, act, hidden, fourier, dtype = p
    return f"d{d}-o{order}-{act}-h{len(hidden)}-{fourier}-{np.dtype(dtype).name}"


@pytest.mark.parametrize("d,order,act,hidden,fourier,dtype", GRID, ids=[grid_id(p) for p in GRID])
def test_matches_reference(d, order, act, hidden, fourier, dtype):
    key = zlib.crc32(grid_id((d, order, act, hidden, fourier, dtype)).encode())
    rng = np.random.default_rng(key)
    # ansatz, output bias and keep_x / two_pi toggled across the grid (every value appears with
    # every (d, order, act, depth, Fourier) combination over the two dtypes and bits of the key)
    ansatz = bool(key & 1)
    out_bias = bool(key & 2)
    K = 0 if fourier == "none" else 3
    keep_x = True if K == 0 else bool(key & 4)
    spec = nn.NetSpec(d=d, hidden=hidden, activation=act, fourier_K=K, keep_x=keep_x, two_pi=bool(key & 8),
                      train_B=fourier == "train", out_bias=out_bias)
    compare(spec, 11, dtype, order, ansatz, rng, grid_id((d, order, act, hidden, fourier, dtype)))


@pytest.mark.parametrize("ansatz", [False, True], ids=["plain", "ansatz"])
@pytest.mark.parametrize("out_bias", [False, True], ids=["noc0", "c0"])
def test_options_both_ways(ansatz, out_bias):
    """The ansatz and the output bias, each way, on a Fourier network with every channel."""
    rng = np.random.default_rng(7)
    spec = nn.NetSpec(d=2, hidden=(6, 5), fourier_K=2, train_B=True, out_bias=out_bias)
    for dtype in (F64, F32):
        compare(spec, 13, dtype, 2, ansatz, rng, f"ansatz={ansatz} c0={out_bias}")


@pytest.mark.parametrize("dtype", [F64, F32])
def test_lecture_1_20_20_1_tanh(dtype):
    """The issue's main case: 1-20-20-1 tanh, 100 points, u, u', u'' (more than one block; BLAS path)."""
    assert 20 >= mlp.GEMM_MIN_WIDTH
    rng = np.random.default_rng(1)
    spec = nn.NetSpec(d=1, hidden=(20, 20))
    compare(spec, 100, dtype, 2, False, rng, "1-20-20-1")
    compare(spec, 100, dtype, 2, True, rng, "1-20-20-1 ansatz")


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("d,hidden,K", [(1, (64, 64), 0), (2, (70, 5), 4), (2, (16, 3, 16), 2)],
                         ids=["64x64", "70-5-fourier", "16-3-16-fourier"])
def test_gemm_path(dtype, d, hidden, K):
    """Layers of width >= GEMM_MIN_WIDTH go through BLAS over the stacked channels."""
    assert max(hidden) >= mlp.GEMM_MIN_WIDTH
    rng = np.random.default_rng(2)
    spec = nn.NetSpec(d=d, hidden=hidden, fourier_K=K, train_B=K > 0)
    for order in (0, 2):
        compare(spec, 150, dtype, order, order == 2, rng, f"gemm o{order}")


@pytest.mark.parametrize("hidden", [(6, 5), (20, 20)], ids=["hand", "gemm"])
def test_zero_points(hidden):
    """J = 0: empty outputs, a zero gradient (a sum over no points), nothing non-finite."""
    rng = np.random.default_rng(3)
    spec = nn.NetSpec(d=1, hidden=hidden, fourier_K=2, train_B=True)
    x, B, theta, phi, g, adj = setup(spec, 0, F64, 2, False, rng)
    out, basis, grad, _ = run_cpu(spec, x, B, theta, phi, g, adj)
    assert out.shape == (3, 0) and basis.shape == (3, 0, hidden[-1])
    np.testing.assert_array_equal(grad, 0.0)


def _bits(*arrays):
    return [a.view(np.uint8).copy() for a in arrays]


@pytest.mark.parametrize("hidden", [(6, 5), (20, 20)], ids=["hand", "gemm"])
@pytest.mark.parametrize("dtype", [F64, F32])
def test_serial_and_threaded_bit_identical(hidden, dtype):
    """The serial and threaded builds, on 1 and 2 threads, give the same bits (blocks fixed; on the
    BLAS path the GEMMs are the same calls in both builds)."""
    rng = np.random.default_rng(4)
    spec = nn.NetSpec(d=1, hidden=hidden)
    J = 5 * mlp.BLOCK_POINTS + 7  # several blocks and a partial one
    x, B, theta, phi, g, adj = setup(spec, J, dtype, 2, True, rng)

    def with_kernels(fwd_k, bwd_k):
        def fwd(x, B, theta, widths, act, s, keep_x, train_B, has_c0, phi, g, out, basis, tape):
            fwd_k(x, theta, widths, act, has_c0, phi, g, out, basis, tape, False, 0)

        def bwd(x, B, theta, widths, act, s, keep_x, train_B, has_c0, phi, basis, tape, adj, grad):
            bwd_k(x.shape[1], theta, widths, act, has_c0, phi, basis, tape, adj, grad, False, 0)

        return run_cpu(spec, x, B, theta, phi, g, adj, fwd, bwd)[:3]

    serial = with_kernels(mlp._mlp_forward, mlp._mlp_backward)
    saved = numba.get_num_threads()
    try:
        for n in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(n)
            threaded = with_kernels(mlp._mlp_forward_threaded, mlp._mlp_backward_threaded)
            for a, b in zip(_bits(*serial), _bits(*threaded)):
                np.testing.assert_array_equal(a, b)
    finally:
        numba.set_num_threads(saved)
    r_out, r_basis, r_grad = reference(spec, x, B, theta, phi, g, adj)
    assert_close(serial[2], r_grad, rtol_for(dtype, spec, B), "grad")


def test_public_entry_uses_threads_for_large_batches():
    """From PARALLEL_MIN_POINTS points the public functions run the threaded build: same bits."""
    rng = np.random.default_rng(5)
    spec = nn.NetSpec(d=1, hidden=(6, 5))
    J = mlp.PARALLEL_MIN_POINTS + 3
    x, B, theta, phi, g, adj = setup(spec, J, F64, 2, False, rng)
    out, basis, grad, _ = run_cpu(spec, x, B, theta, phi, g, adj)
    r_out, r_basis, r_grad = reference(spec, x, B, theta, phi, g, adj)
    assert_close(out, r_out, 1e-11, "out")
    assert_close(grad, r_grad, 1e-11, "grad")


def test_tape_size_grows_with_points_and_order():
    w = np.array([1, 20, 20], np.int64)
    assert mlp.mlp_tape_size(0, 1, w, 2) < mlp.mlp_tape_size(100, 1, w, 2)
    assert mlp.mlp_tape_size(100, 1, w, 0) < mlp.mlp_tape_size(100, 1, w, 1) < mlp.mlp_tape_size(100, 1, w, 2)


# --------------------------------------------------------------------------- building blocks
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("act", ["tanh", "sin"])
def test_activation_derivatives(act, dtype):
    a = np.linspace(-4.0, 4.0, 3 * 37).reshape(3, 37).astype(dtype)
    out, ref = np.empty((4,) + a.shape, dtype), np.empty((4,) + a.shape)
    mlp.activation_derivatives(nn.ACTIVATIONS[act], a, out)
    nn.activation_derivatives(nn.ACTIVATIONS[act], a.astype(F64), ref)
    tol = 1e-14 if dtype == F64 else 8 * float(np.finfo(F32).eps)
    for k in range(4):
        assert_close(out[k], ref[k], tol, f"sigma^({k})")
    few = np.empty((2,) + a.shape, dtype)
    mlp.activation_derivatives(nn.ACTIVATIONS[act], a, few)
    np.testing.assert_array_equal(few, out[:2])


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("d,order", [(1, 0), (1, 2), (2, 1), (3, 2)])
@pytest.mark.parametrize("shape", ["output", "basis"])
def test_ansatz_kernels(d, order, shape, dtype):
    rng = np.random.default_rng(6)
    C, J, n = n_channels(d, order), 9, 4
    v = rng.standard_normal((C, J) if shape == "output" else (C, J, n)).astype(dtype)
    phi, g = (a.astype(dtype) for a in ansatz_channels(rng, C, J))
    tol = 1e-14 if dtype == F64 else 16 * float(np.finfo(F32).eps)
    for gg in (g, np.empty(0, dtype)):
        ref = np.empty(v.shape)
        nn.ansatz_forward(d, v.astype(F64), phi.astype(F64), gg.astype(F64), ref)
        out = np.empty_like(v)
        mlp.ansatz_forward(d, v, phi, gg, out)
        assert_close(out, ref, tol, "ansatz_forward")
        inplace = v.copy()
        mlp.ansatz_forward(d, inplace, phi, gg, inplace)
        np.testing.assert_array_equal(inplace, out)
    ref = np.empty(v.shape)
    nn.ansatz_backward(d, v.astype(F64), phi.astype(F64), ref)
    out = np.empty_like(v)
    mlp.ansatz_backward(d, v, phi, out)
    assert_close(out, ref, tol, "ansatz_backward")
    inplace = v.copy()
    mlp.ansatz_backward(d, inplace, phi, inplace)
    np.testing.assert_array_equal(inplace, out)


@pytest.mark.parametrize("keep_x", [True, False])
@pytest.mark.parametrize("order", [0, 2])
def test_private_fourier_fallback(keep_x, order):
    """The fallback used when ``kernels/cpu/fourier.py`` cannot be imported matches the reference."""
    rng = np.random.default_rng(8)
    J, d, K, s = 6, 2, 3, 2 * math.pi
    x, B = rng.uniform(0, 1, (J, d)), rng.standard_normal((d, K))
    C, n0 = n_channels(d, order), (d if keep_x else 0) + 2 * K
    out, ref = np.empty((C, J, n0)), np.empty((C, J, n0))
    mlp._fourier_forward_fallback(x, B, s, keep_x, out)
    nn.fourier_forward(x, B, s, keep_x, ref)
    assert_close(out, ref, 1e-13, "features")
    adj = rng.standard_normal((C, J, n0))
    gB, gx, rB, rx = np.empty((d, K)), np.empty((J, d)), np.empty((d, K)), np.empty((J, d))
    mlp._fourier_backward_fallback(x, B, s, keep_x, adj, gB, gx)
    nn.fourier_backward(x, B, s, keep_x, adj, rB, rx)
    assert_close(gB, rB, 1e-12, "dL/dB")
    assert_close(gx, rx, 1e-12, "dL/dx")


# --------------------------------------------------------------------------- code paths of the micro-kernel
# ``kernels/cpu/mlp.py`` runs every dense layer through one register-tiled micro-kernel whose column
# tile is chosen from the layer's width (whole chunks of four native vectors, then 1, 2, 3 or 4
# vectors of which the last is masked; 8 float64 / 16 float32 lanes per vector), rows in tiles of
# four plus a one-row tail, and points in blocks of BLOCK_POINTS grouped into at most MAX_CHUNKS
# chunks. Widths: float64 remainders of 1..4 vectors and float32 ones, a whole chunk (32 / 64
# lanes) plus a remainder; the first layer also gets a wide Fourier input (129 features).
PATH_WIDTHS = [(9, 30), (24, 50), (33, 100), (64, 7), (130, 17)]


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("hidden", PATH_WIDTHS, ids=["-".join(map(str, h)) for h in PATH_WIDTHS])
def test_column_tiles(hidden, dtype):
    spec = nn.NetSpec(d=1, hidden=hidden, fourier_K=3, train_B=True)
    for order, J in ((0, 37), (2, 45)):      # J not a multiple of 4: a row tail
        compare(spec, J, dtype, order, order == 2, np.random.default_rng(order), f"{hidden} order {order}")


@pytest.mark.parametrize("dtype", [F64, F32])
def test_wide_fourier_input(dtype):
    """n_0 = 129 (K = 64 with x): the issue's wide case, on a few points."""
    spec = nn.NetSpec(d=1, hidden=(64, 64), fourier_K=64, train_B=True)
    compare(spec, 70, dtype, 2, False, np.random.default_rng(1))


@pytest.mark.parametrize("dtype", [F64, F32])
def test_several_blocks_per_chunk(dtype):
    J = mlp.MAX_CHUNKS * mlp.BLOCK_POINTS * 2 + 5  # 2 blocks per chunk (some 3), a partial last block
    compare(nn.NetSpec(d=1, hidden=(20, 20), fourier_K=2, train_B=True), J, dtype, 2, False, np.random.default_rng(2))
    compare(nn.NetSpec(d=1, hidden=(20, 20)), J, dtype, 0, False, np.random.default_rng(3))


@pytest.mark.parametrize("act", ["tanh", "sin"])
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("order", [0, 1, 2])
def test_fourier_orders_and_dimensions(order, d, act):
    spec = nn.NetSpec(d=d, hidden=(12, 20), activation=act, fourier_K=4, keep_x=d != 2, train_B=True)
    for dtype in (F64, F32):
        compare(spec, 29, dtype, order, d == 2, np.random.default_rng(order + 3 * d))


@pytest.mark.parametrize("d", [1, 3])
def test_no_hidden_layer_trainable_frequencies(d):
    spec = nn.NetSpec(d=d, hidden=(), fourier_K=5, train_B=True)
    for dtype in (F64, F32):
        compare(spec, 33, dtype, 2, True, np.random.default_rng(d))


def _run_block_kernels(spec, x, B, theta, phi, g, adj, fwd_k, bwd_k):
    """run_cpu through the block kernels ``_forward``/``_backward`` (or their threaded twins)."""
    pB = B.size if spec.train_B else 0

    def fwd(x, B, theta, widths, act, s, keep_x, train_B, has_c0, phi, g, out, basis, tape):
        fwd_k(x, B, float(s), keep_x, theta, widths, act, has_c0, phi, g, out, basis, tape, pB)

    def bwd(x, B, theta, widths, act, s, keep_x, train_B, has_c0, phi, basis, tape, adj, grad):
        bwd_k(B, float(s), keep_x, train_B, theta, widths, act, has_c0, phi, basis, tape, adj, grad)

    return run_cpu(spec, x, B, theta, phi, g, adj, fwd, bwd)[:3]


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("case", ["fourier", "many-blocks"])
def test_serial_and_threaded_bit_identical_fourier_and_many_blocks(case, dtype):
    if case == "fourier":
        spec, J = nn.NetSpec(d=2, hidden=(20, 9), fourier_K=6, keep_x=False, train_B=True), 5 * mlp.BLOCK_POINTS + 3
    else:
        spec, J = nn.NetSpec(d=1, hidden=(20, 20)), mlp.MAX_CHUNKS * mlp.BLOCK_POINTS * 2 + 5
    x, B, theta, phi, g, adj = setup(spec, J, dtype, 2, True, np.random.default_rng(11))
    serial = _run_block_kernels(spec, x, B, theta, phi, g, adj, mlp._forward, mlp._backward)
    saved = numba.get_num_threads()
    try:
        for n in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(n)
            threaded = _run_block_kernels(spec, x, B, theta, phi, g, adj, mlp._forward_threaded,
                                          mlp._backward_threaded)
            for a, b in zip(_bits(*serial), _bits(*threaded)):
                np.testing.assert_array_equal(a, b)
    finally:
        numba.set_num_threads(saved)


@pytest.mark.parametrize("hidden", [(20, 20), ()], ids=["20-20", "no-hidden"])
def test_read_only_inputs(hidden):
    """x, B, theta, phi and g may be read-only (the kernels only read them)."""
    spec = nn.NetSpec(d=1, hidden=hidden, fourier_K=2, train_B=False)
    for dtype in (F64, F32):
        x, B, theta, phi, g, adj = setup(spec, 21, dtype, 2, True, np.random.default_rng(5))
        ref = run_cpu(spec, x, B, theta, phi, g, adj)[:3]
        for a in (x, B, theta, phi, g, adj):
            a.flags.writeable = False
        got = run_cpu(spec, x, B, theta, phi, g, adj)[:3]
        for a, b in zip(_bits(*ref), _bits(*got)):
            np.testing.assert_array_equal(a, b)
