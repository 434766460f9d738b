r"""The LS system on the GPU (CuPy arrays; ``kernels/gpu/gram.py``) against the float64 reference and the CPU.

- **Gram / accumulator / operator rows** against ``kernels/reference_ls.py`` with the worst-case
  bounds of ``tests/test_ls_gram.py`` (its docstring derives them; they hold for any summation
  order, so cuBLAS's order as well as OpenBLAS's): float32 and float64 rows, J = 0, 1, J not a
  multiple of the tile, several tiles (1, 128, the default), weights None / one number / one per
  row (device array), y None / given; the kernel writes only the upper triangle; bit-identical
  reruns; a float32 accumulator; the GPU's default tile.
- **Solve on CuPy arrays**: SPD (Cholesky), ill-conditioned (the eigendecomposition's fallback),
  rank-deficient and indefinite systems: finite results, the CPU's method and rank, the warnings.
  The indefinite case checks that a failed device Cholesky is not taken for a factor (cuSOLVER
  reports the failure only in ``info``).
- **From the network**: ``ls.assemble`` with a GPU MLP equals the CPU MLP's (same seed, float64) to
  1e-10 relative, for a PINN residual (ansatz, Laplacian channel), a regression (no bias) and the
  Deep Ritz energy, in several tiles; a few LSHybrid steps on the GPU equal the CPU's; the losses
  of :mod:`fastopt.problems` on CuPy arrays equal NumPy's.
- **Backends**: a problem on the host for a GPU network, or arrays of two backends, are a TypeError.

Skips as a whole without CuPy or a CUDA device; marked ``gpu``. Under the CPU emulator
(``tests/gpu_emulator``) these run on the host, cuBLAS emulated by NumPy.
"""
from __future__ import annotations

import inspect
import math
import warnings
import zlib

import numpy as np
import pytest

import fastopt

_gpu_ok, _gpu_why = fastopt.gpu_status()      # CuPy and a usable device (the emulator's, under it)
if not _gpu_ok:
    pytest.skip(f"gpu backend unavailable: {_gpu_why}", allow_module_level=True)

import cupy  # noqa: E402

pytestmark = pytest.mark.gpu

from fastopt import ls, quadrature  # noqa: E402
from fastopt.kernels import reference_ls as ref  # noqa: E402
from fastopt.kernels.cpu import gram as cpu_gram  # noqa: E402
from fastopt.kernels.gpu import gram as gpu_gram  # noqa: E402
from fastopt.nn import MLP, Ansatz  # noqa: E402
from fastopt.problems import Energy, LeastSquares  # noqa: E402
from tests.conftest import assert_within, gram_bounds, reference_system, tile_problem, w_vector, weights_for  # noqa: E402

F32, F64 = np.float32, np.float64
EPS64 = float(np.finfo(F64).eps)
DTYPES = [F32, F64]


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(("gpu_ls",) + key).encode()))


def dev(a):
    return None if a is None else (cupy.asarray(a) if isinstance(a, np.ndarray) else a)


def host(a):
    return cupy.asnumpy(a)


def assert_rel(actual, expected, rtol, what):
    actual, expected = np.asarray(actual, F64), np.asarray(expected, F64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = float(np.max(np.abs(expected), initial=0.0))
    err = float(np.max(np.abs(actual - expected), initial=0.0))
    assert np.all(np.isfinite(actual)) and err <= rtol * max(scale, 1e-300), \
        f"{what}: max error {err:.3g} > {rtol:g} x {scale:.3g}"


# =========================================================================== Gram from given rows
@pytest.mark.parametrize("with_y", [False, True], ids=["no_y", "y"])
@pytest.mark.parametrize("wmode", ["none", "scalar", "array"])
@pytest.mark.parametrize("J,N,tile", [(0, 7, 128), (1, 7, 128), (300, 1, 128), (1000, 7, 128), (1000, 64, None),
                                      (77, 9, 1)], ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_gram_matches_reference(dtype, J, N, tile, wmode, with_y):
    rng = _rng("gram", dtype.__name__, J, N, tile, wmode, with_y)
    Phi = rng.standard_normal((J, N)).astype(dtype)
    y = rng.standard_normal(J).astype(dtype) if with_y else None
    weights = weights_for(wmode, J, rng)
    s = ls.gram(dev(Phi), dev(weights), dev(y), tile=tile)
    assert isinstance(s.A, cupy.ndarray) and s.A.dtype == F64 and s.A.shape == (N, N) and s.n_rows == J
    A = host(s.A)
    assert np.array_equal(A, A.T), "A must be exactly symmetric"
    wv = w_vector(wmode, weights, J)
    A_ref, b_ref, ywy_ref = reference_system(Phi, wv, y)
    bA, bb, bywy = gram_bounds(Phi, wv, y)
    assert_within(A, A_ref, bA, "A")
    if with_y:
        assert isinstance(s.b, cupy.ndarray) and s.b.dtype == F64
        assert_within(host(s.b), b_ref, bb, "b")
        assert isinstance(s.ywy, float) and abs(s.ywy - ywy_ref) <= 2 * bywy + 1e-300
    else:
        assert s.b is None and s.ywy == 0.0


@pytest.mark.parametrize("wmode", ["scalar", "array"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_gram_tiles_are_deterministic_and_match_the_cpu(dtype, wmode):
    rng = _rng("tiles", dtype.__name__, wmode)
    Phi, y, weights, wv = tile_problem(rng, dtype, wmode)
    bA, bb, bywy = gram_bounds(Phi, wv, y)
    for tile in (7, 1499, 100000, None):
        s = ls.gram(dev(Phi), dev(weights), dev(y), tile=tile)
        again = ls.gram(dev(Phi), dev(weights), dev(y), tile=tile)
        assert host(s.A).tobytes() == host(again.A).tobytes() and host(s.b).tobytes() == host(again.b).tobytes(), \
            f"tile={tile}: not bit-identical across runs"
        c = ls.gram(Phi, weights, y, tile=tile)
        assert_within(host(s.A), c.A, 2 * bA, f"A vs cpu, tile={tile}", k=1.0)
        assert_within(host(s.b), c.b, 2 * bb, f"b vs cpu, tile={tile}", k=1.0)
        assert abs(s.ywy - c.ywy) <= 4 * bywy + 1e-300


def test_gram_strided_rows_out_and_float32_accumulator():
    rng = _rng("strided")
    big, y400, w = rng.standard_normal((400, 12)), rng.standard_normal(400), rng.uniform(0, 1, 200)
    Phi, y = big[::2, 1:8], y400[::2]                     # neither C- nor F-contiguous
    got = ls.gram(dev(big)[::2, 1:8], dev(w), dev(y400)[::2], tile=64)
    want = ls.gram(np.ascontiguousarray(Phi), w, np.ascontiguousarray(y), tile=64)
    assert_rel(host(got.A), want.A, 1e-13, "strided A")
    assert_rel(host(got.b), want.b, 1e-13, "strided b")
    # one weight, contiguous rows, strided y: not the zero-copy path (cuBLAS gemv would misread y's stride)
    got = ls.gram(dev(np.ascontiguousarray(Phi)), 0.5, dev(y400)[::2], tile=64)
    want = ls.gram(np.ascontiguousarray(Phi), 0.5, y, tile=64)
    assert_rel(host(got.b), want.b, 1e-13, "strided y, one weight")
    out = cupy.full((7, 7), np.nan)
    s = ls.gram(dev(np.ascontiguousarray(Phi)), 0.1, out=out)
    assert s.A is out
    assert_rel(host(out), 0.1 * Phi.T @ Phi, 1e-13, "out")
    # a float32 accumulator (ssyrk): float32-accurate, dtype kept
    P32 = Phi.astype(F32)
    s32 = ls.gram(dev(P32), dev(w), dtype=F32)
    assert s32.A.dtype == F32
    assert_rel(host(s32.A), ls.gram(P32, w).A, 200 * 8 * float(np.finfo(F32).eps), "float32 accumulator")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_kernel_updates_the_upper_triangle_only(dtype):
    """gram_accumulate writes A's upper triangle (syrk lower=False on a C-ordered A); symmetrize completes it."""
    rng = _rng("upper", dtype.__name__)
    rows = rng.standard_normal((50, 5)).astype(dtype)
    lower = np.tril_indices(5, -1)
    for w in (np.array([0.5]), rng.uniform(0, 1, 50)):  # the zero-copy path and the scaled-tile path
        for acc_dtype in (F64, F32):
            A0 = np.zeros((5, 5), acc_dtype)
            A0[lower] = -7.0
            A = dev(A0)
            ywy = gpu_gram.gram_accumulate(dev(rows), dev(w) if w.size > 1 else w, cupy.empty(0, dtype), A,
                                           cupy.empty(0, acc_dtype), 16)
            assert float(ywy) == 0.0
            Ah = host(A)
            assert np.all(Ah[lower] == -7.0), "the strictly lower triangle was written"
            want = rows.astype(F64).T @ (np.broadcast_to(w, (50,))[:, None] * rows.astype(F64))
            upper = np.triu_indices(5)
            assert_rel(Ah[upper], want[upper], 1e-13 if acc_dtype == F64 else 1e-5, "upper triangle")
            gpu_gram.symmetrize(A)
            Ah = host(A)
            assert np.array_equal(Ah, Ah.T)


def test_default_tile_and_kernel_signatures():
    assert ls.default_tile(64, "gpu") == 131072 and ls.default_tile(1, "gpu") == 1 << 20
    assert ls.default_tile(10**6, "gpu") == 4096
    for name in ref.__all__:
        assert inspect.signature(getattr(gpu_gram, name)) == inspect.signature(getattr(cpu_gram, name)), name


# =========================================================================== accumulator
def test_accumulator_equals_the_gram_of_the_stacked_blocks():
    rng = _rng("acc")
    N = 7
    blocks = [(300, "array", True, F64), (41, "scalar", True, F32), (5, "none", False, F64), (0, "none", True, F64),
              (129, "none", True, F32)]
    acc = ls.GramAccumulator(N, tile=64)
    Ps, ws, ys = [], [], []
    for J, mode, with_y, dt in blocks:
        P = rng.standard_normal((J, N)).astype(dt)
        y = rng.standard_normal(J).astype(dt) if with_y else None
        weights = weights_for(mode, J, rng)
        assert acc.add(dev(P), dev(weights), dev(y)) is acc
        Ps.append(P.astype(F64))
        ws.append(w_vector(mode, weights, J))
        ys.append(y.astype(F64) if with_y else np.zeros(J))
    s = acc.finish()
    P, wv, y = np.vstack(Ps), np.concatenate(ws), np.concatenate(ys)
    A_ref, b_ref, ywy_ref = reference_system(P, wv, y)
    bA, bb, bywy = gram_bounds(P, wv, y)
    assert isinstance(s.A, cupy.ndarray) and s.n_rows == P.shape[0]
    A = host(s.A)
    assert np.array_equal(A, A.T)
    assert_within(A, A_ref, bA, "A")
    assert_within(host(s.b), b_ref, bb, "b")
    assert abs(s.ywy - ywy_ref) <= 2 * bywy
    assert s.loss(cupy.zeros(N)) == pytest.approx(s.ywy, rel=1e-15)
    # finish hands the buffers over and starts again; an empty gpu accumulator is zero on the device
    s2 = acc.add(dev(P[:10]), None, dev(y[:10])).finish()
    assert s2.n_rows == 10 and s2.A is not s.A
    empty = ls.GramAccumulator(3, backend="gpu").finish()
    assert isinstance(empty.A, cupy.ndarray) and not host(empty.A).any() and empty.b is None


def test_accumulator_refuses_mixed_backends_and_bad_blocks():
    rng = _rng("acc_bad")
    P = rng.standard_normal((20, 3))
    acc = ls.GramAccumulator(3).add(dev(P), 1.0, dev(np.ones(20)))
    bad = P.copy()
    bad[4, 1] = np.nan
    for args, exc in [((P, 1.0, None), TypeError),                       # a host block after a device one
                      ((dev(P), 1.0, np.ones(20)), TypeError),           # y on the host
                      ((dev(P), np.ones(20), None), TypeError),          # weights on the host
                      ((dev(bad), 1.0, None), ValueError),
                      ((dev(P), dev(-np.ones(20)), None), ValueError)]:
        with pytest.raises(exc):
            acc.add(*args)
    s = acc.finish()
    assert s.n_rows == 20
    assert_rel(host(s.A), P.T @ P, 1e-13, "A after refused blocks")


# =========================================================================== operator rows
@pytest.mark.parametrize("per_point", [True, False], ids=["coef_CJ", "coef_C"])
@pytest.mark.parametrize("C", [1, 3, 4])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_operator_rows_match_reference(dtype, C, per_point):
    rng = _rng("oprows", dtype.__name__, C, per_point)
    J, N = 333, 17
    channels = rng.standard_normal((C, J, N)).astype(dtype)
    coef = rng.standard_normal((C, J) if per_point else (C,)).astype(dtype)
    if C > 2:
        (coef[1] if per_point else coef[1:2])[...] = 0
    got = ls.operator_rows(dev(channels), dev(coef))
    assert isinstance(got, cupy.ndarray) and got.dtype == dtype and got.shape == (J, N)
    coef_cj = coef if per_point else np.broadcast_to(coef[:, None], (C, J))
    want = np.empty((J, N))
    ref.operator_rows(channels, np.ascontiguousarray(coef_cj), want)
    bound = (C + 1) * float(np.finfo(dtype).eps) * np.einsum("cj,cjn->jn", np.abs(coef_cj.astype(F64)),
                                                               np.abs(channels.astype(F64)))
    assert_within(host(got), want, bound, "operator rows", k=1.0)
    out = cupy.full((J, N), np.nan, dtype)
    assert ls.operator_rows(dev(channels), dev(coef), out=out) is out
    assert np.array_equal(host(out), host(got))
    with pytest.raises(TypeError, match="coef"):
        ls.operator_rows(dev(channels), coef)                             # coefficients on the host
    assert np.array_equal(host(ls.operator_rows(dev(channels), coef.tolist())), host(got))   # a list is fine


# =========================================================================== solve
def _spd(N, kappa, rng):
    Q, _ = np.linalg.qr(rng.standard_normal((N, N)))
    s = np.logspace(0.0, -math.log10(kappa), N)
    A = (Q * s) @ Q.T
    return 0.5 * (A + A.T)


def _solve_both(A, b, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = ls.solve(dev(A), dev(b), **kw)
    ill_g = [w for w in caught if issubclass(w.category, ls.IllConditionedWarning)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = ls.solve(A, b, **kw)
    ill_c = [w for w in caught if issubclass(w.category, ls.IllConditionedWarning)]
    assert isinstance(g.c, cupy.ndarray) and g.c.dtype == F64
    assert np.all(np.isfinite(host(g.c)))
    return g, c, len(ill_g), len(ill_c)


@pytest.mark.parametrize("kappa", [1e2, 1e10])
def test_solve_spd(kappa):
    rng = _rng("spd", kappa)
    A = _spd(20, kappa, rng)
    x = rng.standard_normal(20)
    g, c, ill_g, ill_c = _solve_both(A, A @ x)
    assert g.method == c.method == "cholesky" and g.rank == 20 and ill_g == ill_c == 0
    assert g.condition_number == pytest.approx(c.condition_number, rel=1e-6)
    assert_rel(host(g.c), c.c, 100 * 20 * kappa * EPS64, "c")


def test_solve_ill_conditioned_falls_back_to_eigh_and_warns():
    rng = _rng("ill")
    A = _spd(20, 1e18, rng)
    x = rng.standard_normal(20)
    g, c, ill_g, ill_c = _solve_both(A, A @ x)
    assert g.method == c.method == "eigh" and ill_g == ill_c == 1 and g.rank == c.rank < 20
    N = 20
    assert np.linalg.norm(A @ host(g.c) - A @ x) <= 10 * N * EPS64 * np.linalg.norm(A, 2) * (
        np.linalg.norm(host(g.c)) + np.linalg.norm(x))


def test_solve_rank_deficient_gives_the_minimum_norm_solution():
    Phi = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])     # two equal columns: rank 1
    s = ls.gram(dev(Phi), 1.0, dev(np.array([2.0, 4.0, 6.0])))
    g, c, ill_g, ill_c = _solve_both(host(s.A), host(s.b))
    assert g.method == "eigh" and g.rank == 1 and ill_g == 1
    np.testing.assert_allclose(host(g.c), [1.0, 1.0], rtol=1e-12)
    zero = ls.solve(cupy.zeros((3, 3)), cupy.ones(3), method="eigh")
    assert not host(zero.c).any() and zero.rank == 0


def test_solve_indefinite_never_trusts_a_failed_device_cholesky():
    """cuSOLVER's potrf reports a non-positive pivot only in info: the partial factor is finite.

    The solve must notice (errstate "raise") and fall back like the CPU; method="cholesky" raises."""
    A = np.diag([4.0, 1.0, -1e-3, 2.0])
    A[0, 1] = A[1, 0] = 0.5
    b = np.ones(4)
    g, c, _, _ = _solve_both(A, b)
    assert g.method == c.method == "eigh" and g.rank == c.rank == 3
    assert any("not numerically positive definite" in n for n in g.warnings)
    assert_rel(host(g.c), c.c, 1e-12, "c")
    with pytest.raises(np.linalg.LinAlgError):
        ls.solve(dev(A), dev(b), method="cholesky")


# =========================================================================== from the network
def _pair(seed, hidden, ansatz=False, out_bias=True):
    kw = dict(seed=seed, out_bias=out_bias, ansatz=Ansatz.box(0.0, 1.0) if ansatz else None)
    return MLP(1, hidden, **kw), MLP(1, hidden, backend="gpu", **kw)


def _problems(kind, x, w):
    """The same problem on the host and on the device."""
    f = np.cos(3 * x[:, 0])
    if kind == "pinn":
        return LeastSquares.pinn(x, f, w, k=2.0), LeastSquares.pinn(dev(x), dev(f), dev(w), k=2.0)
    if kind == "regression":
        return LeastSquares.regression(f, w), LeastSquares.regression(dev(f), dev(w))
    return Energy(x, f, w, k=0.5), Energy(dev(x), dev(f), dev(w), k=0.5)


@pytest.mark.parametrize("kind,ansatz,out_bias", [("pinn", True, True), ("pinn", False, False),
                                                  ("regression", False, False), ("energy", True, True)])
@pytest.mark.parametrize("tile", [13, None])
def test_assemble_gpu_equals_cpu(kind, ansatz, out_bias, tile):
    cpu, gpu = _pair(1, (6, 5), ansatz, out_bias)
    np.testing.assert_array_equal(host(gpu.params.data), cpu.params.data)   # same seed, same network
    x, w = quadrature.gauss_legendre(5, 0.0, 1.0, cells=9)
    p_cpu, p_gpu = _problems(kind, x, w)
    assert p_gpu.backend == "gpu" and p_cpu.backend == "cpu"
    sc = ls.assemble(cpu, x, p_cpu, tile=tile)
    sg = ls.assemble(gpu, dev(x), p_gpu, tile=tile)
    assert isinstance(sg.A, cupy.ndarray) and isinstance(sg.b, cupy.ndarray)
    assert sg.A.shape == sc.A.shape == (5 + out_bias,) * 2 and sg.n_rows == sc.n_rows
    assert_rel(host(sg.A), sc.A, 1e-10, "A")
    assert_rel(host(sg.b), sc.b, 1e-10, "b")
    assert sg.ywy == pytest.approx(sc.ywy, rel=1e-10, abs=1e-300)


def test_problems_on_device_arrays_equal_numpy():
    rng = _rng("problems")
    x, w = quadrature.gauss_legendre(4, 0.0, 1.0, cells=10)
    J = x.shape[0]
    for kind in ("pinn", "regression", "energy"):
        p_cpu, p_gpu = _problems(kind, x, w)
        C = {"pinn": 3, "regression": 1, "energy": 2}[kind]
        U = rng.standard_normal((C, J))
        adj_c, adj_g = np.full((C, J), np.nan), cupy.full((C, J), np.nan)
        vc, vg = p_cpu(U, adj_c), p_gpu(dev(U), adj_g)
        assert isinstance(vg, float) and vg == pytest.approx(vc, rel=1e-13)
        assert_rel(host(adj_g), adj_c, 1e-14, f"{kind} adjoint")
        assert isinstance(p_gpu.weights, cupy.ndarray)


def test_backends_are_not_mixed():
    x, w = quadrature.gauss_legendre(4, 0.0, 1.0, cells=5)
    _, gpu = _pair(0, (4,))
    f = np.sin(x[:, 0])
    with pytest.raises(TypeError, match="problem's arrays are cpu"):
        ls.assemble(gpu, dev(x), LeastSquares.regression(f, w))
    with pytest.raises(TypeError, match="different backends"):
        LeastSquares.regression(dev(f), w)
    with pytest.raises(TypeError, match="different backends"):
        Energy(dev(x), f, dev(w))


def test_ls_hybrid_steps_gpu_equal_cpu():
    """Three steps (solve, write c, Adam on the hidden parameters) at fixed points, float64."""
    cpu, gpu = _pair(3, (8, 6), ansatz=True)
    x, w = quadrature.gauss_legendre(6, 0.0, 1.0, cells=8)
    f = -4 * math.pi ** 2 * np.sin(2 * math.pi * x[:, 0])
    tc = ls.LSHybrid(cpu, (x, w), lambda x, w: LeastSquares.pinn(x, f, w), lr=1e-2, reg=1e-10,
                     exact=lambda x: (np.sin(2 * math.pi * x[:, 0]), 2 * math.pi * np.cos(2 * math.pi * x[:, :1])),
                     eval_points=(x, w))
    fd, xd, wd = dev(f), dev(x), dev(w)
    tg = ls.LSHybrid(gpu, (xd, wd), lambda x, w: LeastSquares.pinn(x, fd, w), lr=1e-2, reg=1e-10,
                     exact=lambda x: (cupy.sin(2 * math.pi * x[:, 0]), 2 * math.pi * cupy.cos(2 * math.pi * x[:, :1])),
                     eval_points=(xd, wd))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ls.IllConditionedWarning)
        hc, hg = tc.run(3), tg.run(3)
    cond = max(hc["condition"])
    rtol = max(1e-10, 100 * cond * EPS64)   # the solve amplifies rounding differences by cond(A)
    for key in ("loss", "coef_norm", "l2_error", "h1_error"):
        np.testing.assert_allclose(hg[key], hc[key], rtol=rtol, err_msg=key)
    assert hg["method"] == hc["method"] and hg["rank"] == hc["rank"]
    assert_rel(host(gpu.params.data), cpu.params.data, rtol, "parameters after 3 steps")
